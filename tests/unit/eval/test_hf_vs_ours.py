"""lm-eval's own `hf` model on our Hugging Face export and our `draw_megatron` model give the
same scores on the local tasks (fp32, CPU): the export, the tokenizer and our lm-eval model
agree end to end."""

import pytest

from draw_megatron.eval.compare_hf import evaluate, hf_model, scores
from draw_megatron.eval.lm_eval_model import DrawMegatronLM
from draw_megatron.export.hf import export_hf
from tests.unit.eval.tiny_lm import TASKS_DIR

TASKS = ["draw_tiny_mc", "draw_tiny_text"]


def test_hf_export_scores_equal_ours(tiny_run, tmp_path):
    out = export_hf(tiny_run, str(tmp_path / "hf"))
    lm = DrawMegatronLM.from_pretrained(tiny_run, batch_size=4)
    ours, _ = evaluate(lm, TASKS, TASKS_DIR)
    theirs, _ = evaluate(hf_model(out, batch_size=4, max_length=lm.max_length,
                                    prefix_token_id=lm.eot_token_id), TASKS, TASKS_DIR)
    a, b = scores(ours), scores(theirs)
    assert a.keys() == b.keys() and ("draw_tiny_mc", "acc") in a
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
