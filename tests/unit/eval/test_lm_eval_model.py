"""DrawMegatronLM against the model itself: loglikelihoods are sums of the GPT's own per-token
losses, greedy generation is a hand-written argmax loop, bad inputs are named errors."""

from __future__ import annotations

import os

import pytest
import torch
from lm_eval.api.registry import get_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from draw_megatron.data.tokenizer import Tokenizer
from draw_megatron.eval.lm_eval_model import DrawMegatronLM, EvalModelError
from draw_megatron.model import GPT, save_consolidated
from draw_megatron.parallel import ParallelTopology
from tests.unit.eval.tiny_lm import (CONTEXTS, generation_requests, loglikelihood_requests,
                                     requests, rolling_requests, tiny_config)
from tests.unit.model.tiny import one_thread  # noqa: F401  (fixture)

TOL = 1e-5


@pytest.fixture(scope="module")
def lm(tiny_run) -> DrawMegatronLM:
    return DrawMegatronLM.from_pretrained(tiny_run, batch_size=3)


def _losses(model: GPT, ids: list[int]) -> torch.Tensor:
    """The model's per-token losses of ``ids[1:]`` given the ids before each."""
    seq = torch.tensor(ids)[None]
    with torch.no_grad():
        return model(seq[:, :-1], seq[:, 1:])[0]


def _greedy(model: GPT, ids: list[int], vocab: int) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(ids)[None, :-1])[0, :, :vocab].argmax(-1)


def test_registered_with_lm_eval(tiny_run):
    built = get_model("draw_megatron").create_from_arg_string(f"pretrained={tiny_run}",
                                                              {"batch_size": 2})
    assert isinstance(built, DrawMegatronLM) and built.batch_size == 2
    assert built.max_length == 64 and next(built.module.parameters()).dtype == torch.float32


def test_loglikelihood_is_the_models_own_loss(lm):
    model, tok = lm.module, lm.tokenizer
    reqs = loglikelihood_requests()
    got = lm.loglikelihood(reqs)
    assert len(got) == len(reqs) and lm.num_requests >= len(reqs)
    for (context, continuation), (logprob, greedy) in zip((r.args for r in reqs), got):
        if context:
            whole, ctx = tok.encode(context + continuation), tok.encode(context)
        else:  # lm-eval conditions an empty context on the prefix token (EOS)
            whole, ctx = [tok.eos_id] + tok.encode(continuation), [tok.eos_id]
        num_cont = len(whole) - len(ctx)
        want = -_losses(model, whole)[-num_cont:].double().sum().item()
        assert abs(logprob - want) <= TOL, (context, logprob, want)
        want_greedy = bool((_greedy(model, whole, tok.vocab_size)[-num_cont:]
                            == torch.tensor(whole[-num_cont:])).all())
        assert greedy == want_greedy


def test_document_mask_model_gets_the_tokenizers_eos(demo_tokenizer_path, tmp_path):
    """A document-masked model whose file names no EOS id: loading takes the tokenizer's, and
    the EOS that conditions an empty context ends a document as in training."""
    single = ParallelTopology.single()
    masked = GPT(tiny_config(attention_mask="document", eos_id=2), single, seed=5)
    save_consolidated(str(tmp_path), masked, single, tiny_config(attention_mask="document"))
    lm = DrawMegatronLM.from_pretrained(str(tmp_path / "model.safetensors"),
                                        tokenizer=demo_tokenizer_path)
    assert lm.cfg.eos_id == lm.tokenizer.eos_id == 2
    reqs, tok = loglikelihood_requests(), lm.tokenizer
    for (context, continuation), (logprob, _) in zip((r.args for r in reqs),
                                                     lm.loglikelihood(reqs)):
        whole = tok.encode(context + continuation) if context else [2] + tok.encode(continuation)
        num_cont = len(whole) - (len(tok.encode(context)) if context else 1)
        want = -_losses(masked, whole)[-num_cont:].double().sum().item()
        assert abs(logprob - want) <= TOL


def test_long_context_is_truncated_from_the_left(tiny_run):
    lm = DrawMegatronLM.from_pretrained(tiny_run, max_length=12)
    tok = lm.tokenizer
    context, continuation = CONTEXTS[0] * 3, " a green fish"
    [(logprob, _)] = lm.loglikelihood(requests("loglikelihood", [(context, continuation)]))
    whole = tok.encode(context + continuation)
    num_cont = len(whole) - len(tok.encode(context))
    want = -_losses(lm.module, whole[-13:])[-num_cont:].double().sum().item()
    assert len(whole) > 13 and abs(logprob - want) <= TOL
    with pytest.raises(EvalModelError, match="continuation of .* tokens is longer than the "
                                             "model's context of 12"):
        lm.loglikelihood(requests("loglikelihood", [("x", continuation * 4)]))


def test_rolling_loglikelihood_sums_disjoint_windows(lm):
    tok, reqs = lm.tokenizer, rolling_requests()
    got = lm.loglikelihood_rolling(reqs)
    for (text,), logprob in zip((r.args for r in reqs), got):
        ids = tok.encode(text)
        windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
            ids, prefix_token=tok.eos_id, max_seq_len=64, context_len=1)]
        assert sum(len(pred) for _, pred in windows) == len(ids)  # each token once
        want = sum(-_losses(lm.module, ctx + pred)[-len(pred):].double().sum().item()
                   for ctx, pred in windows)
        assert abs(logprob - want) <= TOL * len(windows)
    assert len(tok.encode(reqs[1].args[0])) > 64  # the long text needs several windows


def _hand_generate(model: GPT, tok: Tokenizer, context: str, until: list[str],
                   max_new: int, max_length: int = 64) -> str:
    ids = tok.encode(context)[-(max_length - max_new):]
    out: list[int] = []
    while len(out) < max_new:
        with torch.no_grad():
            logits = model(torch.tensor(ids + out)[None, -max_length:])[0, -1, :tok.vocab_size]
        token = int(logits.argmax())
        if token == tok.eos_id:
            break
        out.append(token)
        if any(s in tok.decode(out) for s in until):
            break
    text = tok.decode(out)
    for stop in until:
        text = text.split(stop)[0]
    return text


def test_greedy_generation_is_the_hand_loop(lm):
    free = lm.generate_until(generation_requests(until=[], max_gen_toks=6))
    assert free == [_hand_generate(lm.module, lm.tokenizer, c, [], 6) for c in CONTEXTS]
    assert all(free)
    # A stop string from inside the first continuation must cut it there.
    stop = free[0][2:4]
    cut = lm.generate_until(generation_requests(until=[stop], max_gen_toks=6))
    assert cut[0] == free[0][:free[0].index(stop)]
    assert cut == [_hand_generate(lm.module, lm.tokenizer, c, [stop], 6) for c in CONTEXTS]


def test_generation_longer_than_the_context_slides(tiny_run):
    lm = DrawMegatronLM.from_pretrained(tiny_run, max_length=8)
    got = lm.generate_until(generation_requests(until=[], max_gen_toks=10)[:2])
    want = []
    for context in CONTEXTS[:2]:  # context keeps max_length - 1 tokens, the window slides
        ids, out = lm.tokenizer.encode(context)[-7:], []
        for _ in range(10):
            with torch.no_grad():
                logits = lm.module(torch.tensor(ids + out)[None, -8:])[0, -1, :1000]
            if int(logits.argmax()) == lm.tokenizer.eos_id:
                break
            out.append(int(logits.argmax()))
        want.append(lm.tokenizer.decode(out))
    assert got == want


def test_live_module_keeps_its_training_mode(demo_tokenizer_path):
    model = GPT(tiny_config(dropout=0.5), ParallelTopology.single(), seed=1)
    model.train()
    lm = DrawMegatronLM(model, ParallelTopology.single(), Tokenizer(demo_tokenizer_path))
    first = lm.loglikelihood(loglikelihood_requests())
    assert model.training  # restored after the call
    assert lm.loglikelihood(loglikelihood_requests()) == first  # dropout was off


def test_vocabulary_smaller_than_the_tokenizer_is_refused(demo_tokenizer_path, tmp_path):
    small, single = tiny_config(vocab_size=500), ParallelTopology.single()
    save_consolidated(str(tmp_path), GPT(small, single), single, small)
    with pytest.raises(EvalModelError, match=r"vocabulary \(500 ids\) is smaller than the "
                                             r"tokenizer's \(1000"):
        DrawMegatronLM.from_pretrained(str(tmp_path / "model.safetensors"),
                                       tokenizer=demo_tokenizer_path)


def test_bad_model_paths_are_named(tiny_run, tmp_path):
    with pytest.raises(EvalModelError, match="has no consolidated model.safetensors"):
        DrawMegatronLM.from_pretrained(str(tmp_path))
    with pytest.raises(EvalModelError, match="does not exist"):
        DrawMegatronLM.from_pretrained(str(tmp_path / "absent"))
    alone = tmp_path / "alone"
    alone.mkdir()
    os.link(os.path.join(tiny_run, "model.safetensors"), alone / "model.safetensors")
    with pytest.raises(EvalModelError, match="no config.yaml beside it.*--tokenizer"):
        DrawMegatronLM.from_pretrained(str(alone / "model.safetensors"))
    with pytest.raises(EvalModelError, match="batch_size must be an integer >= 1, got 'auto'"):
        DrawMegatronLM.from_pretrained(tiny_run, batch_size="auto")
    with pytest.raises(EvalModelError, match="dtype must be one of"):
        DrawMegatronLM.from_pretrained(tiny_run, dtype="int8")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EvalModelError, match="is not a safetensors file"):
        DrawMegatronLM.from_pretrained(str(tmp_path / "junk.safetensors"), tokenizer="x")

