"""The step-pass interface: what a training variant may change in the step.

The trainer's step is fixed — loader → micro-batches → engine forward → backward →
optimizer step → per-domain (sum, count) all-reduced over DP. A pass plugs in at these
points, and sees the run only through a narrow :class:`PassContext` (never the trainer):

- ``setup(ctx)``: once, after the engine and the loader exist, before any resume;
- ``initial_weights()``: a mixture owner's α_0 (``None``: keep the schedule's start);
- ``micro_loss(loss_BT, micro)``: after each micro-batch's forward; the loss owner returns
  the scalar to back-propagate (without one the step back-propagates the token mean);
- ``after_step(info)``: after the optimizer step, with the per-domain loss sums and token
  counts over the global batch; returns a :class:`StepOutput`: metrics records and, for
  the mixture owner only, new mixture weights, which the trainer hands to the schedule
  (they apply from the next step);
- ``finish(ctx)``: once, when training reached ``train.steps``; ``close()`` always.

Roles, declared as class attributes and checked when the run is built
(:func:`check_roles`): at most one pass owns the loss, at most one owns the mixture;
observers (neither) combine with any owner. State goes through ``state_dict()`` /
``load_state_dict()``, stored in every checkpoint under ``client_state["passes"][name]``.

Each pass has a config section (:class:`PassConfig`) of the same name in the run config,
with ``check(run_cfg, manifest)`` (run before any process group) and ``build()``; the
registry in ``draw_megatron.passes.registry`` maps names to sections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from draw_megatron.config.base import Config

if TYPE_CHECKING:
    from draw_megatron.config.model import ModelConfig
    from draw_megatron.config.run import RunConfig
    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.loader import Batch, ProbeSampler
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.parallel import ParallelTopology


@dataclass(frozen=True)
class PassContext:
    """What a pass may use of the run: no trainer, no engine, no whole config."""

    model: torch.nn.Module
    """The live model (DeepSpeed's ``engine.module``): ``model(tokens, labels)`` gives
    per-token losses [B, T]; for ``torch.autograd.grad`` over its parameters."""
    topology: ParallelTopology
    """The TP and DP groups, ranks and sizes."""
    manifest: Manifest
    """The data's manifest (domains, splits, tokenizer)."""
    train_data: DomainData
    """The training split (probe samplers read it; never the training stream)."""
    model_cfg: ModelConfig
    device: torch.device
    seed: int
    """run.seed."""
    run_dir: str
    is_writer: bool
    """True on global rank 0, which alone writes files."""
    micro_batch: int
    """train.micro_batch: sequences per rank per forward."""
    gradient_accumulation_steps: int
    train_split: str
    eval_split: str
    initial_weights: np.ndarray
    """The mixture schedule's weights at step 0 (its mean for Dirichlet kinds)."""
    load_frozen: Callable[[str], torch.nn.Module] = field(repr=False)
    """A frozen copy of the model's architecture in this run's TP layout with weights from
    a consolidated file (a reference model): eval mode, no gradients, the live dtype."""

    def probe_sampler(self, stream: int | None = None) -> ProbeSampler:
        """A sampler over the training split on its own random stream (own cursors)."""
        from draw_megatron.data.loader import PROBE_STREAM, ProbeSampler

        return ProbeSampler(self.train_data, self.seed, self.topology.dp_rank,
                            self.topology.dp_size,
                            stream=PROBE_STREAM if stream is None else stream)


class StepInfo:
    """What ``after_step`` sees of the step that just ended.

    ``sums`` and ``counts`` are read from the device when first used: at a step that no
    pass acts at (:meth:`StepPass.acts_at`) and no record is due, nothing reads them and the
    step makes no host synchronisation.
    """

    def __init__(self, step: int, batch: Batch, sums: np.ndarray | None = None,
                 counts: np.ndarray | None = None, *,
                 read: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None):
        if (sums is None) != (counts is None) or (sums is None) == (read is None):
            raise ValueError("StepInfo takes sums and counts, or a function that reads them")
        self.step, self.batch = step, batch
        """``batch``: this rank's batch (its ``alpha`` is the mixture the step used)."""
        self._values = None if sums is None else (sums, counts)
        self._read = read

    def _host(self) -> tuple[np.ndarray, np.ndarray]:
        if self._values is None:
            self._values = self._read()
        return self._values

    @property
    def sums(self) -> np.ndarray:
        """[k] per-domain token-loss sums over the whole global batch."""
        return self._host()[0]

    @property
    def counts(self) -> np.ndarray:
        """[k] per-domain token counts over the whole global batch."""
        return self._host()[1]


@dataclass
class StepOutput:
    records: list[dict] = field(default_factory=list)
    """Records for metrics.jsonl."""
    weights: np.ndarray | None = None
    """The mixture owner's new weights (or evidence, for online_draw), from the next step."""


class StepPass:
    """Base class: every hook is optional and does nothing."""

    name: ClassVar[str] = "pass"
    """Key of the pass's state in checkpoints and of its config section; unique."""

    owns_loss: ClassVar[bool] = False
    """True: :meth:`micro_loss` returns the loss the step back-propagates."""

    owns_mixture: ClassVar[bool] = False
    """True: the pass sets the mixture (its ``after_step`` may return weights); the run's
    mixture.kind must then be an online kind."""

    stratified_batches: ClassVar[bool] = False
    """True: the loader gives every domain ⌊G/k⌋ (or one more) sequences of each global
    batch (stratified batches)."""

    def setup(self, ctx: PassContext) -> None:
        """Called once the engine and the loader exist, before any resume."""

    def initial_weights(self) -> np.ndarray | None:
        """A mixture owner's α_0 (after setup); None keeps the schedule's start."""
        return None

    def micro_loss(self, loss_BT: torch.Tensor, micro: Batch) -> torch.Tensor | None:
        """``loss_BT``: the per-token losses [B, T] of this rank's micro-batch ``micro``
        (tensors on the training device); the scalar to back-propagate if ``owns_loss``."""
        return None

    def acts_at(self, step: int) -> bool:
        """Whether ``after_step`` of ``step`` does anything (reads the step's losses, runs the
        model, returns records or weights). At such a step the trainer first reads the
        step's losses on the host and checks them for inf/NaN, so a pass never acts on a
        broken step; at the other steps they stay on the device and the step makes no host
        synchronisation. The default, every step, is always correct; a pass that acts every
        N steps says so to keep the steps between free of synchronisation."""
        return True

    def after_step(self, info: StepInfo) -> StepOutput:
        """After step ``info.step``'s optimizer step."""
        return StepOutput()

    def finish(self, ctx: PassContext) -> None:
        """Once, after the last step (not after an interrupted run)."""

    def close(self) -> None:
        """Release what the pass opened (datasets)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass(kw_only=True)
class PassConfig(Config):
    """Base of a pass's config section: a pass is chosen by listing its name in ``passes``;
    its section (``<name>.<key>=...``) exists in every run config, used or not."""

    PASS: ClassVar[type[StepPass]] = StepPass
    """The pass class this section configures (its roles are read before building it)."""

    def check(self, run_cfg: RunConfig, manifest: Manifest) -> None:
        """Checks of a run that has this pass on, before any process group (ConfigError).
        The base validates the section and the mixture kind against the pass's role."""
        self.validate(self.SECTION)
        check_mixture_role(self.PASS, run_cfg.mixture.kind)

    def build(self, run_cfg: RunConfig | None = None) -> StepPass:
        """The pass; ``run_cfg`` for the few that read settings of other sections."""
        return self.PASS(self)


def check_mixture_role(pass_cls: type[StepPass], kind: str) -> None:
    """A mixture owner needs an online kind (its weights must go somewhere)."""
    from draw_megatron.config.base import ConfigError
    from draw_megatron.mixture.kinds import KINDS

    online = [n for n, k in KINDS.items() if k.online]
    if pass_cls.owns_mixture and kind not in online:
        raise ConfigError(f"the {pass_cls.name!r} pass sets the mixture, but mixture.kind={kind}"
                          f" cannot take its weights; use one of {', '.join(online)}")


def check_roles(passes: Sequence[type[StepPass] | StepPass]) -> None:
    """ValueError for repeated names or for two owners of the loss or of the mixture,
    naming them."""
    names = [p.name for p in passes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"step passes must have distinct names; repeated: {duplicates}")
    for role, attr in (("the loss", "owns_loss"), ("the mixture", "owns_mixture")):
        owners = [p.name for p in passes if getattr(p, attr)]
        if len(owners) > 1:
            raise ValueError(f"only one step pass may own {role}: {' and '.join(owners)} both "
                             "do; keep one, or use an observing pass")


def owner(passes: Sequence[StepPass], attr: str) -> StepPass | None:
    """The pass with role ``attr`` (``owns_loss`` / ``owns_mixture``), if any."""
    return next((p for p in passes if getattr(p, attr)), None)
