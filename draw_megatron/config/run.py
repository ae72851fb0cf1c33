"""The run's config tree: one section per component, loaded from YAML plus overrides.

``load_run_config(path, overrides)`` reads the YAML, applies ``dotted.key=value``
overrides, builds :class:`RunConfig` with type checks and runs the checks that need no
environment (``validate``). A launcher then calls ``validate_layout(world_size)`` for the
checks that need the world size and the file system, and
``draw_megatron.passes.registry.check_passes`` for the step passes (their sections are
contributed by the pass registry). Each component receives only its own section.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from draw_megatron.config.base import (Config, ConfigError, apply_overrides, check_non_negative,
                                       check_positive, join_key, load_yaml, require,
                                       suggest)
from draw_megatron.config.model import ModelConfig
from draw_megatron.data.remote import is_remote

MANIFEST_NAME = "manifest.json"  # docs/architecture.md, Contract 1 (draw_megatron.data.manifest)


def _key(prefix: str | None, section: str, name: str) -> str:
    return join_key(section if prefix is None else prefix, name)


@dataclass(kw_only=True)
class RunSection(Config):
    """Where the run lives and how it starts."""

    SECTION: ClassVar[str] = "run"

    dir: str
    """Run directory: config.yaml, metrics.jsonl, checkpoints/ (docs/architecture.md, Contract 5)."""

    name: str | None = None
    """Display name (logs, TensorBoard); null: the run directory's base name."""

    seed: int = 1234
    """Seed of every random stream (model init, mixture draws, data order)."""

    resume: str = "auto"
    """"auto": from the latest complete checkpoint in run.dir if any; "never"; or a path."""

    resume_layout: Literal["strict", "reshape"] = "strict"
    """A checkpoint saved at another (tp, dp, ZeRO stage) layout: "strict" stops with an
    error naming both layouts; "reshape" re-shards the model and optimizer state through
    DeepSpeed's universal checkpoint (ZeRO 1/2 to any tp, dp and ZeRO 1/2; ZeRO 0 to
    another dp; ZeRO 3 not)."""

    def validate(self, prefix: str | None = None) -> None:
        require(bool(self.dir), f"{_key(prefix, self.SECTION, 'dir')} must not be empty")
        check_non_negative(self, prefix, "seed")
        require(bool(self.resume), f"{_key(prefix, self.SECTION, 'resume')} must be 'auto', "
                                    "'never' or a checkpoint path")


@dataclass(kw_only=True)
class ParallelConfig(Config):
    """Megatron-style tensor parallelism; data parallelism takes the rest of the world."""

    SECTION: ClassVar[str] = "parallel"

    tp: int = 1
    """Tensor-parallel size; DP = world size / tp."""

    sequence_parallel: bool = False
    """Shard norms and dropout along the sequence over the TP group (no effect at tp=1)."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "tp")


@dataclass(kw_only=True)
class ZeroConfig(Config):
    """DeepSpeed ZeRO: what is sharded over data-parallel ranks."""

    SECTION: ClassVar[str] = "zero"

    stage: int = 1
    """0: nothing sharded; 1: optimizer states; 2: + gradients; 3: + parameters."""

    offload: bool = False
    """Offload optimizer states (and at stage 3 parameters) to CPU memory."""

    def validate(self, prefix: str | None = None) -> None:
        stage_key = _key(prefix, self.SECTION, "stage")
        require(self.stage in (0, 1, 2, 3), f"{stage_key}={self.stage} must be 0, 1, 2 or 3")
        require(not self.offload or self.stage >= 1,
                 f"{_key(prefix, self.SECTION, 'offload')}=true needs {stage_key} >= 1")


@dataclass(kw_only=True)
class DataConfig(Config):
    """The converted data (docs/architecture.md, Contract 1)."""

    SECTION: ClassVar[str] = "data"

    root: str
    """Data root holding manifest.json and one MDS dataset per split and domain: a local
    folder, or a URL of object storage (s3://bucket/prefix, gs://...)."""

    split: str = "train"
    """Split the training stream reads."""

    eval_split: str = "val"
    """Split that validation reads (unless eval.split says otherwise)."""

    cache_dir: str | None = None
    """Local folder caching a remote root's tokenizer and shards; required when root is a
    URL (shards are downloaded on first read)."""

    cache_limit: str | None = None
    """Remote root only: the most shard bytes each split keeps in cache_dir, e.g. "20gb"
    (the coldest shards are evicted); null: no limit."""

    verify_shards: bool = True
    """Check each shard the first time a process reads from it: present, the size index.json
    records and the xxh64 hash the converter recorded (roots converted without hashes: size
    only). A damaged shard stops the run with one line naming it; false skips the check."""

    def validate(self, prefix: str | None = None) -> None:
        for name in ("root", "split", "eval_split"):
            require(bool(getattr(self, name)),
                     f"{_key(prefix, self.SECTION, name)} must not be empty")
        self._validate_cache(prefix)

    def _validate_cache(self, prefix: str | None) -> None:
        root_key, cache_key = (_key(prefix, self.SECTION, n) for n in ("root", "cache_dir"))
        remote_root = is_remote(self.root)
        if remote_root:
            require(bool(self.cache_dir), f"{root_key}={self.root!r} is remote: set {cache_key} "
                                          "to a local folder for its cache")
            require(not is_remote(str(self.cache_dir)),
                    f"{cache_key}={self.cache_dir!r} must be a local folder")
        limit_key = _key(prefix, self.SECTION, "cache_limit")
        require(self.cache_limit is None
                or re.fullmatch(r"\d+(\.\d+)?\s*[kmgtp]?b", self.cache_limit.lower()) is not None,
                f"{limit_key}={self.cache_limit!r} is not a size such as 500mb or 20gb")
        for name in ("cache_dir", "cache_limit"):
            require(remote_root or getattr(self, name) is None,
                    f"{_key(prefix, self.SECTION, name)} applies to a remote {root_key} only "
                    f"(it is the local folder {self.root!r})")


@dataclass(kw_only=True)
class MixtureConfig(Config):
    """The training mixture α_t (docs/architecture.md, Contract 3); the kinds are listed,
    with what each reads, in ``draw_megatron.mixture.kinds``."""

    SECTION: ClassVar[str] = "mixture"

    kind: str = "natural"
    """natural | uniform | static (file) | dirichlet (file) | random |
    hierarchical_dirichlet (file) | online (set by a pass) | online_draw (Dirichlet whose
    concentration a pass's evidence updates; file optional)."""

    file: str | None = None
    """Mixture file (docs/architecture.md, Contract 2): required by static, dirichlet and
    hierarchical_dirichlet; online_draw's starting concentration (default: the prior)."""

    redraw_every: int = 10
    """Dirichlet kinds: steps between draws of α_t (DRAW's N)."""

    evidence: float = 1.0
    """s, the pseudo-counts given to one unit of evidence: the posterior's β1 + s·α*
    (tools/draw_posterior.py and tools/run_pipeline.py default to it) and online_draw's
    β ← ρ·β + s·α_ev."""

    forget: float = 1.0
    """ρ in online_draw's β ← ρ·β + s·α_ev: 1 keeps all evidence; < 1 discounts old evidence
    and bounds the total concentration (docs/algorithms.md §7.1)."""

    def validate(self, prefix: str | None = None) -> None:
        from draw_megatron.mixture.kinds import KINDS

        kind_key, file_key = (join_key(self.SECTION if prefix is None else prefix, n)
                              for n in ("kind", "file"))
        require(self.kind in KINDS, f"{kind_key}={self.kind!r} is not a mixture kind"
                                    f"{suggest(self.kind, KINDS)}; known: {', '.join(KINDS)}")
        reads_file = KINDS[self.kind].file
        require(reads_file != "required" or bool(self.file),
                f"{kind_key}={self.kind} needs {file_key} (a draw-mixture/v1 JSON)")
        # A file with a kind that ignores it is almost always a forgotten kind=static.
        require(reads_file != "none" or self.file is None,
                f"{file_key}={self.file!r} is ignored by {kind_key}={self.kind}; set "
                f"{kind_key} to one that reads it "
                f"({', '.join(n for n, k in KINDS.items() if k.file != 'none')}), "
                f"or drop {file_key}")
        check_positive(self, prefix, "redraw_every")
        require(math.isfinite(self.evidence) and self.evidence >= 0,
                f"{join_key(self.SECTION if prefix is None else prefix, 'evidence')}="
                f"{self.evidence} must be finite and >= 0")
        require(0 < self.forget <= 1,
                f"{join_key(self.SECTION if prefix is None else prefix, 'forget')}="
                f"{self.forget} must be in (0, 1]")


@dataclass(kw_only=True)
class TrainConfig(Config):
    """Optimisation: steps, batch, AdamW and the LR schedule (DRAW App. E.3 defaults)."""

    SECTION: ClassVar[str] = "train"

    steps: int = 50000
    """Optimizer steps."""

    global_batch: int = 256
    """Sequences per optimizer step: micro_batch × gradient accumulation × DP."""

    micro_batch: int = 8
    """Sequences per forward/backward on one DP rank."""

    lr: float = 1e-3
    """Peak learning rate, reached after warm-up."""

    min_lr: float = 1e-4
    """Learning rate at the last step (exponential decay from lr)."""

    warmup_fraction: float = 0.02
    """Fraction of steps of linear warm-up."""

    weight_decay: float = 0.1
    """AdamW decoupled weight decay."""

    grad_clip: float = 1.0
    """Gradient-norm clipping threshold; 0 disables."""

    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW (beta1, beta2)."""

    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Training precision; auto: bf16 on a GPU that supports it, else fp32."""

    compile: bool = False
    """torch.compile each transformer block (in place, per block, as torchtitan does:
    parameter names and checkpoints unchanged); ZeRO 0-2."""

    nonfinite: Literal["stop", "skip"] = "stop"
    """A step whose loss is inf/NaN: stop (checkpoint the last good state, exit non-zero,
    naming the step and domains) or skip it (no update; the batch counts as consumed)."""

    max_skipped: int = 10
    """With nonfinite=skip: stop after this many skipped steps in a row."""

    def validate(self, prefix: str | None = None) -> None:
        key = functools.partial(_key, prefix, self.SECTION)
        check_positive(self, prefix, "steps", "global_batch", "micro_batch", "lr")
        require(self.micro_batch <= self.global_batch,
                 f"{key('micro_batch')}={self.micro_batch} exceeds "
                 f"{key('global_batch')}={self.global_batch}")
        # The decay is exponential toward min_lr: it must be > 0 (log(0) has no value).
        require(0 < self.min_lr <= self.lr,
                f"{key('min_lr')}={self.min_lr} must be in (0, {key('lr')}={self.lr}]")
        require(0 <= self.warmup_fraction < 1,
                 f"{key('warmup_fraction')}={self.warmup_fraction} must be in [0, 1)")
        check_non_negative(self, prefix, "weight_decay", "grad_clip")
        check_positive(self, prefix, "max_skipped")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                 f"{key('betas')}={self.betas} must be two values in [0, 1)")


@dataclass(kw_only=True)
class EvalConfig(Config):
    """Per-domain validation on a fixed set of sequences (docs/algorithms.md §5)."""

    SECTION: ClassVar[str] = "eval"

    every: int = 200
    """Steps between evaluations; 0 disables (the final step is still evaluated)."""

    sequences_per_domain: int = 64
    """The first M sequences of each domain's split, so runs compare the same tokens."""

    split: str | None = None
    """Split to evaluate; null: data.eval_split."""

    lm_tasks: list[str] = field(default_factory=list)
    """lm-eval tasks evaluated on the live model during training (off when empty; the
    ``lm_eval`` section has the finer settings)."""

    lm_every: int = 0
    """Steps between in-loop lm-eval evaluations; 0: only after the last step."""

    def validate(self, prefix: str | None = None) -> None:
        check_non_negative(self, prefix, "every", "lm_every")
        check_positive(self, prefix, "sequences_per_domain")


@dataclass(kw_only=True)
class CheckpointConfig(Config):
    """DeepSpeed checkpoints under run.dir/checkpoints/."""

    SECTION: ClassVar[str] = "checkpoint"

    every: int = 1000
    """Steps between checkpoints; 0: only the final one."""

    keep: int = 2
    """Latest complete checkpoints kept on disk; 0 keeps all."""

    def validate(self, prefix: str | None = None) -> None:
        check_non_negative(self, prefix, "every", "keep")


@dataclass(kw_only=True)
class LogConfig(Config):
    """metrics.jsonl and TensorBoard (global rank 0 only)."""

    SECTION: ClassVar[str] = "log"

    every: int = 10
    """Steps between train records."""

    tensorboard: bool = True
    """Also write TensorBoard events under run.dir."""

    def validate(self, prefix: str | None = None) -> None:
        check_positive(self, prefix, "every")


@dataclass(kw_only=True)
class RunConfig(Config):
    """The whole tree, saved resolved as run.dir/config.yaml and in every checkpoint."""

    SECTION: ClassVar[str] = ""

    run: RunSection
    """Run directory, seed, resume policy."""

    model: ModelConfig
    """The GPT: a preset and/or explicit fields."""

    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Tensor (and sequence) parallelism."""

    zero: ZeroConfig = field(default_factory=ZeroConfig)
    """DeepSpeed ZeRO stage and offload."""

    data: DataConfig
    """The converted data."""

    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    """The training mixture schedule."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Steps, batch sizes, optimizer, schedule, precision."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    """Per-domain validation."""

    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""

    passes: list[str] = field(default_factory=list)
    """Step passes that plug into the step, by name (draw_megatron/passes/registry.py):
    e.g. [dro] (the proxy DRO), [dga], [odm], [dro_evidence] (online DRAW's evidence),
    [dro, alignment_monitor]. At most one owns the loss and one the mixture. Each pass's
    settings are in the section of its name (dro:, dga:, …), which every config has."""

    log: LogConfig = field(default_factory=LogConfig)
    """Logging cadence and sinks."""

    @classmethod
    def extra_sections(cls):
        from draw_megatron.passes.registry import section_classes

        return section_classes()

    def __getattr__(self, name: str):
        # The step passes' sections read as attributes (cfg.dga.eta), like the fields.
        sections = self.__dict__.get("_sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def active_passes(self) -> list[str]:
        """``passes`` plus those implied by other settings (``lm_eval`` by eval.lm_tasks)."""
        implied = ["lm_eval"] if self.eval.lm_tasks and "lm_eval" not in self.passes else []
        return [*self.passes, *implied]

    @property
    def run_name(self) -> str:
        """run.name, or the run directory's base name."""
        return self.run.name or os.path.basename(os.path.normpath(self.run.dir))

    @property
    def eval_split(self) -> str:
        """eval.split, or data.eval_split."""
        return self.eval.split or self.data.eval_split

    def validate(self, prefix: str | None = None) -> None:
        """Every section's checks, then those across sections that need no environment."""
        super().validate("")
        from draw_megatron.passes.registry import check_names

        check_names(self.passes)
        tp, heads, vocab = self.parallel.tp, self.model.n_heads, self.model.padded_vocab_size
        require(heads % tp == 0, f"parallel.tp={tp} does not divide model.n_heads={heads}")
        require(self.train.nonfinite != "skip" or self.zero.stage in (1, 2),
                f"train.nonfinite=skip needs zero.stage 1 or 2 (DeepSpeed withholds a "
                f"non-finite update only there); zero.stage={self.zero.stage}: use stop")
        require(not self.train.compile or self.zero.stage <= 2,
                f"train.compile=true supports zero.stage 0-2 (ZeRO-3 gathers parameters in "
                f"hooks that compiled blocks do not run); zero.stage={self.zero.stage}")
        require(vocab % tp == 0,
                 f"parallel.tp={tp} does not divide the padded vocabulary {vocab} "
                 f"(model.vocab_size={self.model.vocab_size} rounded up to a multiple of "
                 f"model.vocab_multiple={self.model.vocab_multiple})")

    def data_parallel_size(self, world_size: int) -> int:
        """DP = world size / parallel.tp (after validate_layout)."""
        return world_size // self.parallel.tp

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """global_batch / (micro_batch × DP) (after validate_layout)."""
        return self.train.global_batch // (self.train.micro_batch
                                           * self.data_parallel_size(world_size))

    def validate_layout(self, world_size: int, *, check_data_root: bool = True) -> None:
        """validate(), then the checks that need the world size and the file system.

        ``check_data_root=False`` skips only the data root's existence (for checking shipped
        configs on a machine without their data).
        """
        self.validate()
        require(world_size >= 1, f"world size {world_size} must be >= 1")
        tp = self.parallel.tp
        require(world_size % tp == 0, f"parallel.tp={tp} does not divide the world size "
                                       f"{world_size}")
        dp = self.data_parallel_size(world_size)
        micro, batch = self.train.micro_batch, self.train.global_batch
        require(batch % (micro * dp) == 0,
                 f"train.global_batch={batch} is not divisible by train.micro_batch={micro} × "
                 f"DP={dp} = {micro * dp} (DP = world size {world_size} / parallel.tp={tp})")
        if check_data_root:
            self._check_data_root()

    def _check_data_root(self) -> None:
        root = self.data.root
        if is_remote(root):
            from draw_megatron.data.manifest import Manifest, ManifestError

            try:  # downloads the manifest: a missing bucket or bad credentials fail here
                Manifest.from_config(self.data)
            except ManifestError as exc:
                raise ConfigError(f"data.root={root!r}: {exc}") from None
            return
        require(os.path.isdir(root), f"data.root={root!r} does not exist (or is not a folder); "
                                      "convert data with tools/convert_pile.py first")
        require(os.path.isfile(os.path.join(root, MANIFEST_NAME)),
                 f"data.root={root!r} holds no {MANIFEST_NAME}: not a converted data root")


def load_run_config(yaml_path: str, overrides: Sequence[str] = (),
                    launcher_keys: Sequence[str] = ()) -> RunConfig:
    """Read ``yaml_path``, apply ``dotted.key=value`` overrides, build and validate().

    Precedence: model preset < YAML field < ``launcher_keys`` (what a launch script is for,
    e.g. ``passes=[dro]`` for launch/proxy_dro.py, so any base config serves it) <
    command-line override (later overrides win).
    """
    raw = apply_overrides(RunConfig, load_yaml(yaml_path), [*launcher_keys, *overrides])
    return RunConfig.from_dict(raw, prefix="")
