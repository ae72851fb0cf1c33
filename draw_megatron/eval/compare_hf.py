"""Our lm-eval model against lm-eval's own ``hf`` model on the Hugging Face export of the same
weights: the same tasks through the same harness, scores and requests per second side by
side (tools/bench_lm_eval.py; the tests check the scores agree)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from draw_megatron.eval import lm_eval_tasks as lmt


def evaluate(lm, task_names: Sequence[str], include_path: str, *, limit: int | None = None,
             bootstrap_iters: int = 0) -> tuple[dict, float]:
    """(lm-eval's results dict, requests per second) of ``lm`` on local tasks."""
    manager = lmt.task_manager([include_path], include_defaults=False)
    tasks = lmt.load_tasks(manager, [lmt.TaskSpec(n) for n in task_names])
    start = time.perf_counter()
    results = lmt.run_tasks(lm, tasks, manager, limit=limit, bootstrap_iters=bootstrap_iters)
    seconds = time.perf_counter() - start
    requests = sum(n["effective"] for n in results["n-samples"].values())
    return results, requests / seconds


def hf_model(export_dir: str, batch_size: int, max_length: int, prefix_token_id: int,
             device: str = "cpu"):
    """lm-eval's stock ``hf`` model on a folder written by tools/export_hf.py (fp32), with
    our model's context length and the EOS as the token before a text: the model was trained
    on documents joined by EOS, with no BOS (lm-eval's hf model would otherwise prefix the
    SentencePiece <s>, which the model never saw)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=export_dir, dtype="float32", batch_size=batch_size, device=device,
                max_length=max_length, prefix_token_id=prefix_token_id)


def scores(results: dict) -> dict[tuple[str, str], float]:
    """{(task, metric): value} of a results dict."""
    return {(r["task"], r["metric"]): r["value"] for r in lmt.metric_rows(results)}
