"""Choosing, loading and reporting lm-eval tasks (docs/algorithms.md §5: downstream scores).

- :data:`SUITES`: named task lists with their few-shot counts (lm-eval's task names);
- :func:`load_tasks`: every task built (its dataset loaded) before the model runs, with a
  one-line :class:`TaskError` for a name lm-eval does not know (with close matches) or a
  dataset that cannot be loaded (offline and not cached: the task and the dataset named),
  never a silent zero score;
- :func:`run_tasks`: lm-eval's ``simple_evaluate`` over loaded tasks;
- :func:`metric_rows` / :func:`markdown_table`: (task, metric, value, stderr) rows.
"""

from __future__ import annotations

import difflib
import os
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lm_eval.api.group import Group
from lm_eval.api.model import LM
from lm_eval.api.task import Task
from lm_eval.tasks import TaskManager


@dataclass(frozen=True)
class TaskSpec:
    """One task (or group, or tag) of lm-eval and its few-shot count."""

    name: str
    """lm-eval's name of a task, group or tag (``lm_eval --tasks list``)."""
    num_fewshot: int | None = None
    """Examples in each prompt; None: the task's own default (0 where it has none)."""


SUITES: dict[str, tuple[TaskSpec, ...]] = {
    # The DRAW paper's downstream set and shots (docs/algorithms.md §5; BoolQ has none given).
    "draw": (TaskSpec("mmlu", 5), TaskSpec("mmlu_pro", 5), TaskSpec("nq_open", 5),
             TaskSpec("arc_challenge", 5), TaskSpec("gsm8k", 10), TaskSpec("boolq"),
             TaskSpec("drop", 0)),
    # The DGA paper's.
    "dga": (TaskSpec("mmlu"),),
}


class TaskError(ValueError):
    """A task that cannot run: unknown to lm-eval, or its dataset cannot be loaded."""


def task_manager(include_paths: Sequence[str] = (), include_defaults: bool = True) -> TaskManager:
    """lm-eval's index of tasks: its own (unless ``include_defaults`` is false) and the YAML
    tasks under ``include_paths``."""
    for path in include_paths:
        if not os.path.isdir(path):
            raise TaskError(f"--include-path {path} is not a folder of lm-eval task YAML files")
    return TaskManager(include_path=list(include_paths) or None,
                       include_defaults=include_defaults)


def check_known(manager: TaskManager, specs: Sequence[TaskSpec]) -> None:
    """Raise TaskError naming the first spec lm-eval does not know, with close matches."""
    known = set(manager.all_tasks)
    for spec in specs:
        if spec.name in known:
            continue
        close = difflib.get_close_matches(spec.name, manager.all_tasks, n=5, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else " (no close match)"
        raise TaskError(f"lm-eval does not know the task {spec.name!r}{hint}")


def load_tasks(manager: TaskManager, specs: Sequence[TaskSpec],
               num_fewshot: int | None = None) -> list[Task | Group]:
    """Build every spec (loading its datasets) and set its few-shot count.

    ``num_fewshot``, when given, replaces every spec's own. Raises TaskError for an unknown
    name or a dataset that cannot be loaded.
    """
    check_known(manager, specs)
    built: list[Task | Group] = []
    for spec in specs:
        try:
            loaded = manager.load([spec.name])
        except Exception as exc:
            error = _dataset_error(spec.name, exc)
            if error is None:
                raise
            raise error from exc
        shots = spec.num_fewshot if num_fewshot is None else num_fewshot
        if shots is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=shots)
        group = loaded["groups"].get(spec.name)
        built.extend([group] if group is not None else loaded["tasks"].values())
    return built


def _dataset_error(requested: str, exc: BaseException) -> TaskError | None:
    """A TaskError naming the task and dataset if ``exc`` came from loading a dataset."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        task = frame.f_locals.get("self")
        if frame.f_code.co_name != "download" or not isinstance(task, Task):
            continue
        cfg = task.config
        if cfg.dataset_path:
            subset = f" ({cfg.dataset_name})" if cfg.dataset_name else ""
            dataset = repr(cfg.dataset_path) + subset
        else:
            dataset = f"from {getattr(cfg.custom_dataset, '__name__', cfg.custom_dataset)!r}"
        via = f" (part of {requested!r})" if cfg.task != requested else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (". Offline, it must be in the Hugging Face datasets cache (HF_HOME / "
                "HF_DATASETS_CACHE): load it once where the Hub is reachable"
                if isinstance(exc, ConnectionError) or "Hub" in reason else "")
        return TaskError(f"task {cfg.task!r}{via}: its dataset {dataset} cannot be loaded: "
                         f"{reason}{hint}")
    return None


def run_tasks(lm: LM, tasks: Sequence[Task | Group], manager: TaskManager, *,
              limit: float | None = None, bootstrap_iters: int = 100_000) -> dict | None:
    """lm-eval's ``simple_evaluate`` over built tasks; its results dict, or None on the
    processes where lm-eval returns none (all but local rank 0)."""
    from lm_eval.evaluator import simple_evaluate

    return simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=None, limit=limit,
                           batch_size=getattr(lm, "batch_size", None),
                           bootstrap_iters=bootstrap_iters, task_manager=manager,
                           log_samples=False)


def metric_rows(results: dict) -> list[dict[str, Any]]:
    """One row per (task or group, metric): task, metric, value, stderr (None if none).

    A metric computed under a filter other than lm-eval's "none" is named
    ``metric,filter`` (e.g. ``exact_match,strict-match``).
    """
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or metric == "alias" or not filt:
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": metric if filt == "none" else key,
                         "value": value, "stderr": stderr if _is_number(stderr) else None})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| task | metric | value | stderr |", "|---|---|---|---|"]
    for row in rows:
        stderr = "" if row["stderr"] is None else f"{row['stderr']:.4f}"
        value = f"{row['value']:.4f}" if _is_number(row["value"]) else str(row["value"])
        lines.append(f"| {row['task']} | {row['metric']} | {value} | {stderr} |")
    return "\n".join(lines) + "\n"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
