"""In-loop downstream evaluation with the lm-eval harness: an observing pass.

Every ``eval.lm_every`` steps (after steps t with (t + 1) % every == 0, and after the last
step) the live model — the engine's own module, no second copy of the weights — is wrapped
as lm-eval's ``draw_megatron`` model (draw_megatron/eval/lm_eval_model.py, requests split
over the DP ranks) and evaluated on ``eval.lm_tasks``. Global rank 0 writes one
``lm_eval`` record per (task, metric) — ``task``, ``metric``, ``value``, ``stderr``,
``step`` (steps completed) — and lm-eval's results JSON as ``<run.dir>/lm_eval/step_N.json``.

It observes only: it owns neither the loss nor the mixture, reads no training batch, and the
trainer reseeds its RNG at every step, so training losses are bitwise those of a run without
it. Enabled by listing tasks in ``eval.lm_tasks`` (the pass joins ``passes`` by itself); its
section ``lm_eval`` holds the finer settings. Tasks and datasets are checked before any
process group: an unknown task or a dataset that cannot be loaded (no Hub, no cache) is a
one-line error naming it, never a silent zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from draw_megatron.config.base import ConfigError, check_positive, join_key, require
from draw_megatron.passes.base import PassConfig, PassContext, StepInfo, StepOutput, StepPass
from draw_megatron.utils.fs import atomic_write_text
from draw_megatron.utils.log import get_logger

if TYPE_CHECKING:
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.manifest import Manifest

log = get_logger(__name__)


class LMEvalPass(StepPass):
    """Observes: lm-eval tasks on the live model every ``every`` steps."""

    name = "lm_eval"

    def __init__(self, cfg: LMEvalConfig, tasks: list[str], every: int, last_step: int):
        self.cfg, self.task_names, self.every, self.last_step = cfg, tasks, every, last_step

    def setup(self, ctx: PassContext) -> None:
        from draw_megatron.data.tokenizer import Tokenizer
        from draw_megatron.eval import lm_eval_tasks as lmt
        from draw_megatron.eval.lm_eval_model import DrawMegatronLM

        self.manager = lmt.task_manager(self.cfg.include_path,
                                        include_defaults=not self.cfg.only_include_path)
        specs = [lmt.TaskSpec(name) for name in self.task_names]
        self.tasks = lmt.load_tasks(self.manager, specs, self.cfg.num_fewshot)
        self.lm = DrawMegatronLM(ctx.model, ctx.topology,
                                 Tokenizer(ctx.manifest.tokenizer_path),
                                 batch_size=self.cfg.batch_size)
        self.run_dir, self.is_writer = ctx.run_dir, ctx.is_writer

    def acts_at(self, step: int) -> bool:
        done = step + 1
        return done % self.every == 0 or done == self.last_step

    def after_step(self, info: StepInfo) -> StepOutput:
        if not self.acts_at(info.step):
            return StepOutput()
        done = info.step + 1
        from draw_megatron.eval import lm_eval_tasks as lmt

        results = lmt.run_tasks(self.lm, self.tasks, self.manager, limit=self.cfg.limit,
                                bootstrap_iters=self.cfg.bootstrap_iters)
        if results is None or not self.is_writer:
            return StepOutput()
        path = os.path.join(self.run_dir, "lm_eval", f"step_{done:08d}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(results, indent=1, default=str))
        rows = lmt.metric_rows(results)
        for row in rows:
            log.info("lm_eval step %d: %s %s = %s", done, row["task"], row["metric"],
                     row["value"])
        return StepOutput([{"kind": "lm_eval", "step": done, **row} for row in rows])


@dataclass(kw_only=True)
class LMEvalConfig(PassConfig):
    """In-loop lm-eval (on when ``eval.lm_tasks`` lists tasks, every ``eval.lm_every``)."""

    SECTION: ClassVar[str] = "lm_eval"
    PASS: ClassVar[type[StepPass]] = LMEvalPass

    num_fewshot: int | None = None
    """Examples per prompt for every task; null: each task's own default."""

    limit: int | None = None
    """At most this many documents per task (null: all)."""

    include_path: list[str] = field(default_factory=list)
    """Folders of the user's own task YAMLs (lm-eval's --include_path)."""

    only_include_path: bool = False
    """Index only ``include_path`` (skips lm-eval's own task index, which is slow to build)."""

    batch_size: int = 8
    """Requests per forward pass on each DP rank."""

    bootstrap_iters: int = 1000
    """lm-eval's bootstrap resamples for the standard errors (0: none)."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "batch_size")
        key = prefix if prefix is not None else self.SECTION
        for name in ("num_fewshot", "limit", "bootstrap_iters"):
            value = getattr(self, name)
            require(value is None or value >= 0,
                    f"{join_key(key, name)}={value} must be >= 0")

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        super().check(run_cfg, manifest)
        from draw_megatron.eval import lm_eval_tasks as lmt

        require(bool(run_cfg.eval.lm_tasks), "the lm_eval pass needs eval.lm_tasks (task names)")
        try:
            manager = lmt.task_manager(self.include_path,
                                       include_defaults=not self.only_include_path)
            lmt.load_tasks(manager, [lmt.TaskSpec(n) for n in run_cfg.eval.lm_tasks],
                           self.num_fewshot)
        except lmt.TaskError as exc:
            raise ConfigError(f"eval.lm_tasks: {exc}") from None

    def build(self, run_cfg: RunConfig | None = None) -> StepPass:
        if run_cfg is None:
            raise ValueError("the lm_eval pass takes its tasks from the run config")
        return LMEvalPass(self, list(run_cfg.eval.lm_tasks),
                          run_cfg.eval.lm_every or run_cfg.train.steps, run_cfg.train.steps)
