"""The training loop: loader → micro-batches → DeepSpeed engine, with per-domain losses,
evaluation, metrics and checkpoints (docs/architecture.md, Contracts 3–5).

Everything stateful is resumable: the engine (DeepSpeed), the loader (cursors, schedule)
and the train state go into every checkpoint; per-step randomness (dropout) is seeded by
(seed, step, DP rank), so a resumed run needs no RNG state.

Training variants (the DRO proxy, DGA, ODM, online DRAW's evidence, monitors) are step
passes (``draw_megatron.passes``), chosen by the config's ``passes`` list. The step below
calls their hooks through a narrow context and holds no variant's logic itself; the one
mixture-owning pass's weights go to the mixture schedule, which alone holds α.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from draw_megatron.config.base import ConfigError, save_config
from draw_megatron.config.run import RunConfig
from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import Batch, MixtureLoader
from draw_megatron.data.manifest import Manifest
from draw_megatron.engine.deepspeed_engine import DistEnv, build_engine
from draw_megatron.eval.validation import Evaluator
from draw_megatron.losses import DomainLoss, domain_means
from draw_megatron.mixture.kinds import schedule_for
from draw_megatron.mixture.schedule import Schedule
from draw_megatron.model import (CONSOLIDATED_NAME, GPT, flops_per_token, load_consolidated_into,
                                 save_consolidated)
from draw_megatron.parallel import ParallelTopology, rank0_broadcaster
from draw_megatron.passes.base import PassContext, StepInfo, StepPass, check_roles, owner
from draw_megatron.passes.registry import build_passes
from draw_megatron.train.checkpoint import CheckpointManager, Layout
from draw_megatron.train.metrics import MetricsLog
from draw_megatron.train.stopping import NonFiniteLoss, Preempted, StopSignals, control_group
from draw_megatron.utils.log import get_logger

log = get_logger(__name__)

# Dense bf16 peak of one H100 SXM (datasheet), the MFU denominator, as the public stacks use it.
PEAK_FLOPS = 989e12


# The most steps whose records wait on the device (a log.every of 0 or 10,000 must not hold
# that many [2, k] tensors).
MAX_WINDOW = 100


@dataclass
class _PendingStep:
    """A step whose per-domain losses are still on the device."""

    step: int
    alpha: np.ndarray
    lr: float
    losses: torch.Tensor | None
    """[2, k] (sums; counts) over the global batch, until read."""
    grad_norm: torch.Tensor | float | None
    sums: np.ndarray | None = None
    counts: np.ndarray | None = None
    skipped: bool = False

    def record(self, tokens_per_s: float | None, mfu: float | None) -> dict:
        """The step's ``train`` record (Contract 5)."""
        means = domain_means(self.sums, self.counts)
        record = {"kind": "train", "step": self.step, "loss": float(self.sums.sum()
                                                                   / self.counts.sum()),
                  "domain_loss": means, "domain_tokens": self.counts.tolist(),
                  "alpha": self.alpha.tolist(), "lr": self.lr, "grad_norm": self.grad_norm,
                  "tokens_per_s": tokens_per_s, "mfu": mfu}
        if self.skipped:
            finite = np.isfinite(self.sums)
            record.update(loss=None, domain_loss=[v if f else None for v, f in
                                                  zip(means, finite)],
                          grad_norm=None, tokens_per_s=None, mfu=None, skipped=True)
        return record


@dataclass
class _Window:
    """The records since the last host read, in order (pending steps and host records)."""

    start: float | None = None
    queue: list = dataclasses.field(default_factory=list)

    def steps(self) -> list[_PendingStep]:
        return [item for item in self.queue if isinstance(item, _PendingStep)]


@dataclass
class TrainState:
    step: int = 0
    """Optimizer steps completed (skipped non-finite steps included)."""
    tokens: int = 0
    """Training tokens consumed (global)."""
    skipped: int = 0
    """Steps skipped for a non-finite loss (train.nonfinite=skip)."""
    skipped_in_row: int = 0
    """Of those, how many in a row up to now."""


class Trainer:
    """``passes``: the step passes; None builds the config's ``passes`` list."""

    def __init__(self, cfg: RunConfig, env: DistEnv, topology: ParallelTopology,
                 passes: Sequence[StepPass] | None = None):
        self.cfg, self.env, self.topology = cfg, env, topology
        self.set_passes(build_passes(cfg) if passes is None else passes)
        self.is_writer = env.rank == 0
        self.manifest = Manifest.from_config(cfg.data)
        check_config_against_data(cfg, self.manifest)
        self.model_cfg = model_cfg = model_config_for_data(cfg, self.manifest)
        model = GPT(model_cfg, topology, sequence_parallel=cfg.parallel.sequence_parallel,
                    seed=cfg.run.seed, device=env.device)
        if cfg.train.compile:
            compile_blocks(model)
        self.engine = build_engine(model, cfg, topology, env.on_gpu)
        if hasattr(self.engine.optimizer, "check_grad_overflow"):
            # ZeRO 1/2: withhold an update whose gradients are inf/NaN, in every precision
            # (train.nonfinite; see draw_megatron/train/stopping.py).
            self.engine.optimizer.check_grad_overflow = True
        schedule = make_schedule(cfg, self.manifest)
        self.train_data = DomainData(self.manifest, cfg.data.split, cfg.data.verify_shards)
        self.loader = MixtureLoader(self.train_data, schedule, cfg.train.global_batch,
                                    cfg.run.seed, topology.dp_rank, topology.dp_size,
                                    stratified=any(p.stratified_batches for p in self.passes))
        self.eval_data = DomainData(self.manifest, cfg.eval_split, cfg.data.verify_shards)
        self.evaluator = Evaluator(self.eval_data, cfg.eval.sequences_per_domain,
                                   cfg.train.micro_batch, topology.dp_rank, topology.dp_size,
                                   topology.dp_group, env.device)
        self.checkpoints = CheckpointManager(os.path.join(cfg.run.dir, "checkpoints"),
                                             cfg.checkpoint.keep, self.is_writer, self.layout)
        self.state = TrainState()
        self.metrics: MetricsLog | None = None
        self.flops_per_token = flops_per_token(model_cfg)
        self.step_tokens = cfg.train.global_batch * self.manifest.seq_len
        self._window = _Window()
        self.context = self._pass_context()
        for step_pass in self.passes:
            step_pass.setup(self.context)
        self._start_mixture()

    def set_passes(self, passes: Sequence[StepPass]) -> None:
        """The step passes from the next step on (benchmarks detach and reattach them)."""
        self.passes = tuple(passes)
        check_roles(self.passes)
        self._loss_owner = owner(self.passes, "owns_loss")
        self._mixture_owner = owner(self.passes, "owns_mixture")

    @property
    def schedule(self) -> Schedule:
        """The one holder of the mixture α_t."""
        return self.loader.schedule

    def _pass_context(self) -> PassContext:
        cfg = self.cfg
        return PassContext(
            model=self.engine.module, topology=self.topology, manifest=self.manifest,
            train_data=self.train_data, model_cfg=self.model_cfg, device=self.env.device,
            seed=cfg.run.seed, run_dir=cfg.run.dir, is_writer=self.is_writer,
            micro_batch=cfg.train.micro_batch,
            gradient_accumulation_steps=self.engine.gradient_accumulation_steps(),
            train_split=cfg.data.split, eval_split=cfg.eval_split,
            initial_weights=self.loader.schedule.expected_weights(),
            load_frozen=self._load_frozen)

    def _load_frozen(self, path: str) -> torch.nn.Module:
        """A frozen model of this run's architecture and TP layout, weights from ``path``."""
        model = GPT(self.model_cfg, self.topology,
                    sequence_parallel=self.cfg.parallel.sequence_parallel, seed=self.cfg.run.seed,
                    device=self.env.device)
        load_consolidated_into(path, model, self.topology)
        dtype = next(self.engine.module.parameters()).dtype
        return model.to(dtype).eval().requires_grad_(False)

    def _start_mixture(self) -> None:
        """Check that the schedule and the passes agree on who sets α, and hand the owner's
        α_0 to the schedule."""
        schedule, owner_pass = self.loader.schedule, self._mixture_owner
        if owner_pass is not None and not schedule.accepts_updates:
            raise ValueError(f"the {owner_pass.name!r} pass sets the mixture, but "
                             f"mixture.kind={schedule.kind} takes no updates")
        if owner_pass is None and schedule.accepts_updates:
            raise ValueError(f"mixture.kind={schedule.kind} is set by a pass, but no pass of "
                             f"this run sets the mixture")
        if owner_pass is not None:
            alpha0 = owner_pass.initial_weights()
            if alpha0 is not None:
                schedule.start_from(alpha0)

    # ------------------------------------------------------------------ set-up / resume

    def resume(self) -> None:
        """Restore from run.resume: auto (latest complete checkpoint), never, or a path."""
        mode = self.cfg.run.resume
        if mode == "never":
            if self.checkpoints.latest() is not None:
                raise RuntimeError(f"run.resume=never but {self.checkpoints.root} holds "
                                   "checkpoints: use another run.dir or run.resume=auto")
            return
        reshape = self.cfg.run.resume_layout == "reshape"
        if mode == "auto":
            step = self.checkpoints.latest_valid()
            if step is None:
                return
            client = self.checkpoints.load(self.engine, step, reshape)
        else:
            root, tag = os.path.split(os.path.abspath(mode))
            client = CheckpointManager(root, self.cfg.checkpoint.keep, False, self.layout).load(
                self.engine, int(tag.removeprefix("step_")), reshape)
        self.loader.load_state_dict(client["loader"])
        self.state = TrainState(**client["train_state"])
        self._load_pass_states(client.get("passes", {}))

    @property
    def layout(self) -> Layout:
        """This run's parallel layout, as checkpoints record it."""
        topo = self.topology
        return Layout(tp=topo.tp_size, dp=topo.dp_size, zero_stage=self.cfg.zero.stage,
                      world_size=topo.world_size)

    def _load_pass_states(self, states: dict) -> None:
        for step_pass in self.passes:
            if step_pass.name not in states:
                raise RuntimeError(f"the checkpoint holds no state for the {step_pass.name!r} "
                                   f"pass (it has {sorted(states) or 'none'}): it was not "
                                   "written by a run with that pass")
            step_pass.load_state_dict(states[step_pass.name])
        ignored = sorted(set(states) - {p.name for p in self.passes})
        if ignored:
            log.warning("the checkpoint's state of pass(es) %s is ignored: this run does not "
                        "have them", ignored)

    def _client_state(self) -> dict:
        return {"loader": self.loader.state_dict(), "train_state": asdict(self.state),
                "config": self.cfg.to_dict(),
                "passes": {p.name: p.state_dict() for p in self.passes}}

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        cfg = self.cfg
        if self.is_writer:
            os.makedirs(cfg.run.dir, exist_ok=True)
            save_config(cfg, os.path.join(cfg.run.dir, "config.yaml"))
        self.resume()
        self.metrics = MetricsLog(cfg.run.dir, self.is_writer, cfg.log.tensorboard)
        log.info("training %s from step %d to %d (%d ranks: tp %d x dp %d)", cfg.run_name,
                 self.state.step, cfg.train.steps, self.env.world_size, self.topology.tp_size,
                 self.topology.dp_size)
        signals = StopSignals(control_group())
        try:
            signame = signals.agreed()  # a signal that came while the run was starting
            if signame is not None and self.state.step < cfg.train.steps:
                self._stop_for_signal(self.state.step, signame,
                                      self.checkpoints.latest() == self.state.step)
            while self.state.step < cfg.train.steps:
                records = self.train_step()
                step = self.state.step
                train = [r for r in records if r["kind"] == "train"]
                if (is_due(step, cfg.log.every, cfg.train.steps) and train
                        and train[-1]["loss"] is not None):
                    record = train[-1]
                    log.info("step %d loss %.4f lr %.3g %.0f tokens/s%s", record["step"],
                             record["loss"], record["lr"], record["tokens_per_s"],
                             "" if record["mfu"] is None else f" MFU {record['mfu']:.3f}")
                if is_due(step, cfg.eval.every, cfg.train.steps):
                    self.evaluate()
                saved = is_due(step, cfg.checkpoint.every, cfg.train.steps)
                if saved:
                    self.checkpoints.save(self.engine, step, self._client_state())
                signame = signals.agreed()
                if signame is not None and step < cfg.train.steps:
                    self._stop_for_signal(step, signame, saved)
            for step_pass in self.passes:
                step_pass.finish(self.context)
            self.export()
        finally:
            signals.restore()
            self.metrics.close()

    def _stop_for_signal(self, step: int, signame: str, saved: bool) -> None:
        self._emit_window()
        if not saved:
            self.checkpoints.save(self.engine, step, self._client_state())
        self.metrics.write({"kind": "preempted", "step": step, "signal": signame})
        log.warning("%s received: checkpoint of step %d saved; stopping", signame, step)
        raise Preempted(step, signame)

    def train_step(self) -> list[dict]:
        """One optimizer step. Its records are written when a record is due (a log, eval
        or checkpoint step, a pass that acts at this step, a withheld update, or a full
        window): then every step since the last such read is read from the device at once
        and written exactly; between them the step makes no host synchronisation. Returns
        the records written by this call (often none)."""
        cfg, step = self.cfg, self.state.step
        # Per-step seeding: dropout (if any) is reproducible across resume without RNG state.
        torch.manual_seed(((cfg.run.seed * 1_000_003 + step) * 65_537 + self.topology.dp_rank)
                          % (1 << 63))
        window = self._window
        if window.start is None:
            window.start = time.perf_counter()
        loader_before = self.loader.state_dict()  # the last good state, if this step fails
        skipped_before = getattr(self.engine, "skipped_steps", 0)
        batch = self.loader.next_batch()
        if self.loader.schedule.changes_at(step):
            window.queue.append({"kind": "mixture", "step": step, "alpha": batch.alpha.tolist(),
                                 **self.loader.schedule.record()})
        lr = self.engine.get_lr()[0]
        acc = DomainLoss(self.manifest.num_domains, self.env.device)
        for micro in batch.micro_batches(cfg.train.micro_batch):
            tokens = micro.tokens.to(self.env.device, non_blocking=True)
            labels = micro.labels.to(self.env.device, non_blocking=True)
            loss_BT = self.engine(tokens, labels)
            self.engine.backward(self._micro_loss(loss_BT, micro, tokens, labels))
            self.engine.step()
            acc.add(loss_BT, micro.domain_ids)
        pending = _PendingStep(step, batch.alpha, lr, acc.reduced(self.topology.dp_group),
                               self.engine.get_global_grad_norm())
        window.queue.append(pending)
        withheld = getattr(self.engine, "skipped_steps", 0) > skipped_before
        done = step + 1
        due = (withheld or len(window.steps()) >= MAX_WINDOW
               or any(is_due(done, every, cfg.train.steps)
                      for every in (cfg.log.every, cfg.eval.every, cfg.checkpoint.every))
               or any(p.acts_at(step) for p in self.passes))
        if due:
            self._read_window()
            if not np.isfinite(pending.sums).all():
                return self._nonfinite_step(pending, batch, withheld, loader_before)
        self.state.skipped_in_row = 0
        self._after_step(StepInfo(step, batch, read=self._read_current))
        self.state.step += 1
        self.state.tokens += self.step_tokens
        return self._emit_window() if due else []

    def _read_window(self) -> None:
        """Read the window's pending steps from the device (one transfer) and check them in
        order: a non-finite step before the current one stops the run (its update was
        applied, as no withheld update goes unread)."""
        window = self._window
        unread = [p for p in window.steps() if p.sums is None]
        if not unread:
            return
        host = torch.stack([p.losses for p in unread]).cpu().numpy()
        for pending, values in zip(unread, host):
            pending.sums, pending.counts = values[0], values[1]
            pending.losses = None
            if pending.grad_norm is not None:
                pending.grad_norm = float(pending.grad_norm)
        for pending in window.steps()[:-1]:
            if not np.isfinite(pending.sums).all():
                self._stop_nonfinite(pending, applied=True)

    def _read_current(self) -> tuple[np.ndarray, np.ndarray]:
        """The current step's (sums, counts) for a pass that reads them at a step where no
        record was due: the window is read and checked first."""
        self._read_window()
        current = self._window.steps()[-1]
        if not np.isfinite(current.sums).all():
            self._stop_nonfinite(current, applied=True)
        return current.sums, current.counts

    def _emit_window(self) -> list[dict]:
        """Write the window's records in order; its train records share its tokens/s (the
        host waited for the device only at the window's end)."""
        window = self._window
        if not window.queue:
            return []
        self._read_window()
        steps = window.steps()
        seconds = (time.perf_counter() - window.start) / max(len(steps), 1)
        tokens_per_s = self.step_tokens / seconds
        mfu = (self.flops_per_token * tokens_per_s / (self.env.world_size * PEAK_FLOPS)
               if self.env.on_gpu else None)
        records = [item.record(tokens_per_s, mfu) if isinstance(item, _PendingStep) else item
                   for item in window.queue]
        self._window = _Window()
        for record in records:
            self.metrics.write(record)
        return records

    def _nonfinite_step(self, pending: _PendingStep, batch: Batch, withheld: bool,
                        loader_before: dict) -> list[dict]:
        """The current step's loss is inf/NaN: skip it, or stop (train.nonfinite)."""
        cfg = self.cfg.train
        bad = ~np.isfinite(pending.sums)
        names = [n for n, b in zip(self.manifest.domain_names, bad) if b]
        if not (cfg.nonfinite == "skip" and withheld
                and self.state.skipped_in_row < cfg.max_skipped):
            self._stop_nonfinite(pending, applied=not withheld, loader_before=loader_before)
        self.state.step += 1
        self.state.tokens += self.step_tokens
        self.state.skipped += 1
        self.state.skipped_in_row += 1
        log.warning("step %d skipped: non-finite loss in %s (%d in a row)", pending.step, names,
                    self.state.skipped_in_row)
        pending.skipped = True
        self._window.queue.append({"kind": "skipped", "step": pending.step,
                                   "nonfinite_domains": names,
                                   "in_row": self.state.skipped_in_row})
        return self._emit_window()

    def _stop_nonfinite(self, pending: _PendingStep, applied: bool,
                        loader_before: dict | None = None) -> None:
        """Write the records of the good steps before ``pending``, keep the last good state
        and raise NonFiniteLoss naming the step and domains."""
        names = [n for n, b in zip(self.manifest.domain_names, ~np.isfinite(pending.sums)) if b]
        step = pending.step
        message = f"step {step}: the loss of domain(s) {names} is not finite (inf/NaN)"
        if not applied:  # the parameters are still those before the step: keep them
            state = self._client_state()
            state["loader"] = loader_before
            if self.checkpoints.latest() != step:
                self.checkpoints.save(self.engine, step, state)
            message += f"; the last good state is checkpoint step {step}"
        else:
            message += (f"; the update was applied (zero.stage={self.cfg.zero.stage}), so the "
                        f"last good state is the latest complete checkpoint "
                        f"(step {self.checkpoints.latest()})")
        if self.cfg.train.nonfinite == "skip" and not applied:
            message += f" ({self.state.skipped_in_row} skipped steps in a row before it)"
        queue = self._window.queue
        good = queue[:queue.index(pending)]
        for item in good:
            self.metrics.write(item.record(None, None) if isinstance(item, _PendingStep)
                               else item)
        self._window = _Window()
        self.metrics.write({"kind": "nonfinite", "step": step, "nonfinite_domains": names})
        raise NonFiniteLoss(message)

    def _after_step(self, info: StepInfo) -> None:
        """The passes' hooks; the mixture owner's weights go to the schedule (from the next
        step, so no batch already drawn is stale)."""
        for step_pass in self.passes:
            out = step_pass.after_step(info)
            self._window.queue.extend(out.records)
            if out.weights is None:
                continue
            if step_pass is not self._mixture_owner:
                raise RuntimeError(f"the {step_pass.name!r} pass returned mixture weights but "
                                   "does not own the mixture")
            self.loader.schedule.update(out.weights, info.step + 1)

    def _micro_loss(self, loss_BT: torch.Tensor, micro: Batch, tokens: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
        """The scalar to back-propagate: the loss-owning pass's, else the token mean."""
        owned = None
        if self.passes:
            on_device = dataclasses.replace(micro, tokens=tokens, labels=labels,
                                            domain_ids=micro.domain_ids.to(self.env.device))
            for step_pass in self.passes:
                loss = step_pass.micro_loss(loss_BT, on_device)
                owned = loss if step_pass is self._loss_owner else owned
        if self._loss_owner is None:
            # Every sequence has the same length: the mean over micro-batches (DeepSpeed's
            # accumulation) and DP ranks (its gradient averaging) is the global token mean.
            return loss_BT.mean()
        if owned is None:
            raise RuntimeError(f"the {self._loss_owner.name!r} pass owns the loss but returned "
                               "none")
        return owned

    def evaluate(self) -> dict:
        self.engine.eval()
        try:
            result = self.evaluator.evaluate(lambda x, y: self.engine(x, y))
        finally:
            self.engine.train()
        record = {"kind": "eval", "split": self.eval_data.split, "step": self.state.step,
                  **result}
        self.metrics.write(record)
        log.info("eval step %d: avg %.4f worst %.4f (%s)", self.state.step, result["avg"],
                 result["worst"], result["worst_domain"])
        return record

    def export(self, path: str | None = None) -> str:
        """The full, unsharded model as safetensors (any TP layout can load it); by default
        ``<run.dir>/model.safetensors``."""
        path = path or os.path.join(self.cfg.run.dir, CONSOLIDATED_NAME)
        module = self.engine.module
        if self.cfg.zero.stage == 3:  # parameters are partitioned: gather them for the save
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters())):
                save_consolidated(path, module, self.topology, self.model_cfg)
        else:
            save_consolidated(path, module, self.topology, self.model_cfg)
        return path

    def close(self) -> None:
        for step_pass in self.passes:
            step_pass.close()
        self.train_data.close()
        self.eval_data.close()


def is_due(step: int, every: int, last_step: int) -> bool:
    """Whether a periodic action (log, eval, checkpoint) runs after ``step``: every
    ``every`` steps (0: never periodically) and always at the last step."""
    return step == last_step or (every > 0 and step % every == 0)


def compile_blocks(model: GPT) -> None:
    """torch.compile every transformer block in place (``nn.Module.compile``: the module and
    its parameter names stay as they are, so DeepSpeed, checkpoints and the consolidated
    export see the same model). Collectives inside a block (TP) are graph breaks."""
    for block in model.blocks:
        block.compile()


def model_config_for_data(cfg: RunConfig, manifest: Manifest):
    """The model config with what the data decides: the EOS id a document mask splits on."""
    model = cfg.model
    if getattr(model, "attention_mask", "causal") != "document":
        return model
    if model.eos_id is None:
        return dataclasses.replace(model, eos_id=manifest.eos_id)
    if model.eos_id != manifest.eos_id:
        raise ConfigError(f"model.eos_id={model.eos_id} but the data's tokenizer EOS is "
                          f"{manifest.eos_id} ({manifest.tokenizer_path})")
    return model


def make_schedule(cfg: RunConfig, manifest: Manifest) -> Schedule:
    """The run's mixture schedule (``mixture.*``), its random draws made on global rank 0."""
    broadcast, is_source = rank0_broadcaster()
    mix = cfg.mixture
    return schedule_for(mix.kind, manifest, file=mix.file, redraw_every=mix.redraw_every,
                        seed=cfg.run.seed, width=cfg.model.d_model, split=cfg.data.split,
                        evidence=mix.evidence, forget=mix.forget, broadcast=broadcast,
                        is_source=is_source)


def check_config_against_data(cfg: RunConfig, manifest: Manifest | None = None) -> None:
    """The vocabulary must hold every token id of the data and the sequence length must be
    the data's; the splits must exist. Cheap: launchers call it before any process group."""
    manifest = manifest or Manifest.from_config(cfg.data)
    model = cfg.model
    if model.vocab_size < manifest.vocab_size:
        raise ConfigError(f"model.vocab_size={model.vocab_size} is smaller than the data's "
                          f"tokenizer ({manifest.vocab_size} ids, {manifest.tokenizer_path})")
    if model.seq_len != manifest.seq_len:
        raise ConfigError(f"model.seq_len={model.seq_len} but the data at {manifest.root} "
                          f"was packed with seq_len {manifest.seq_len}")
    for key, split in (("data.split", cfg.data.split), ("eval.split", cfg.eval_split)):
        if split not in manifest.splits:
            raise ConfigError(f"{key}={split!r} is not a split of {manifest.root} "
                              f"(it has {', '.join(manifest.splits)})")

