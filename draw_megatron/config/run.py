"""The run's config tree: one section per component, loaded from YAML plus overrides.

``load_run_config(path, overrides)`` reads the YAML, applies ``dotted.key=value``
overrides, builds :class:`RunConfig` with type checks and runs the checks that need no
environment (``validate``). A launcher then calls ``validate_layout(world_size)`` for the
checks that need the world size and the file system, and the DGA launcher also calls
``validate_dga_pass()``. Each component receives only its own section.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from draw_megatron.config.base import Config, ConfigError, apply_overrides, join_key, load_yaml
from draw_megatron.config.model import ModelConfig
from draw_megatron.data.remote import is_remote

MANIFEST_NAME = "manifest.json"  # DESIGN.md Contract 1 (draw_megatron.data.manifest)


def _key(prefix: str | None, section: str, name: str) -> str:
    return join_key(section if prefix is None else prefix, name)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_positive(cfg: Config, prefix: str | None, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _require(value > 0, f"{_key(prefix, cfg.SECTION, name)}={value} must be > 0")


def _check_non_negative(cfg: Config, prefix: str | None, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        _require(value >= 0, f"{_key(prefix, cfg.SECTION, name)}={value} must be >= 0")


@dataclass(kw_only=True)
class RunSection(Config):
    """Where the run lives and how it starts."""

    SECTION: ClassVar[str] = "run"

    dir: str
    """Run directory: config.yaml, metrics.jsonl, checkpoints/ (DESIGN.md Contract 5)."""

    name: str | None = None
    """Display name (logs, TensorBoard); null: the run directory's base name."""

    seed: int = 1234
    """Seed of every random stream (model init, mixture draws, data order)."""

    resume: str = "auto"
    """"auto": from the latest complete checkpoint in run.dir if any; "never"; or a path."""

    def validate(self, prefix: str | None = None) -> None:
        _require(bool(self.dir), f"{_key(prefix, self.SECTION, 'dir')} must not be empty")
        _check_non_negative(self, prefix, "seed")
        _require(bool(self.resume), f"{_key(prefix, self.SECTION, 'resume')} must be 'auto', "
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
        _check_positive(self, prefix, "tp")


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
        _require(self.stage in (0, 1, 2, 3), f"{stage_key}={self.stage} must be 0, 1, 2 or 3")
        _require(not self.offload or self.stage >= 1,
                 f"{_key(prefix, self.SECTION, 'offload')}=true needs {stage_key} >= 1")


@dataclass(kw_only=True)
class DataConfig(Config):
    """The converted data (DESIGN.md Contract 1)."""

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

    def validate(self, prefix: str | None = None) -> None:
        for name in ("root", "split", "eval_split"):
            _require(bool(getattr(self, name)),
                     f"{_key(prefix, self.SECTION, name)} must not be empty")
        self._validate_cache(prefix)

    def _validate_cache(self, prefix: str | None) -> None:
        root_key, cache_key = (_key(prefix, self.SECTION, n) for n in ("root", "cache_dir"))
        remote_root = is_remote(self.root)
        if remote_root:
            _require(bool(self.cache_dir), f"{root_key}={self.root!r} is remote: set {cache_key} "
                                           "to a local folder for its cache")
            _require(not is_remote(str(self.cache_dir)),
                     f"{cache_key}={self.cache_dir!r} must be a local folder")
        limit_key = _key(prefix, self.SECTION, "cache_limit")
        _require(self.cache_limit is None
                 or re.fullmatch(r"\d+(\.\d+)?\s*[kmgtp]?b", self.cache_limit.lower()) is not None,
                 f"{limit_key}={self.cache_limit!r} is not a size such as 500mb or 20gb")
        for name in ("cache_dir", "cache_limit"):
            _require(remote_root or getattr(self, name) is None,
                     f"{_key(prefix, self.SECTION, name)} applies to a remote {root_key} only "
                     f"(it is the local folder {self.root!r})")


MixtureKind = Literal["natural", "uniform", "static", "dirichlet", "random", "online"]
_KINDS_WITH_FILE = ("static", "dirichlet")
_KINDS_WITHOUT_FILE = ("natural", "uniform", "random")


@dataclass(kw_only=True)
class MixtureConfig(Config):
    """The training mixture α_t (DESIGN.md Contract 3)."""

    SECTION: ClassVar[str] = "mixture"

    kind: MixtureKind = "natural"
    """natural / uniform weights, a file's static weights or Dirichlet concentration,
    random (Dir((√n/k)·1) redrawn), or online (DRO / DGA update α)."""

    file: str | None = None
    """Mixture file (DESIGN.md Contract 2); required by static and dirichlet; for online,
    optional initial weights."""

    redraw_every: int = 10
    """Dirichlet / random: steps between draws of α_t (DRAW's N)."""

    evidence: float = 1.0
    """DRAW posterior evidence s: pseudo-counts given to α* (SPEC.md §1.3)."""

    def validate(self, prefix: str | None = None) -> None:
        kind_key, file_key = (_key(prefix, self.SECTION, n) for n in ("kind", "file"))
        _require(self.kind not in _KINDS_WITH_FILE or bool(self.file),
                 f"{kind_key}={self.kind} needs {file_key} (a draw-mixture/v1 JSON)")
        # A file with a kind that ignores it is almost always a forgotten kind=static.
        _require(self.kind not in _KINDS_WITHOUT_FILE or self.file is None,
                 f"{file_key}={self.file!r} is ignored by {kind_key}={self.kind}; set "
                 f"{kind_key} to static or dirichlet, or drop {file_key}")
        _check_positive(self, prefix, "redraw_every")
        _require(math.isfinite(self.evidence) and self.evidence > 0,
                 f"{_key(prefix, self.SECTION, 'evidence')}={self.evidence} must be > 0")


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

    def validate(self, prefix: str | None = None) -> None:
        key = functools.partial(_key, prefix, self.SECTION)
        _check_positive(self, prefix, "steps", "global_batch", "micro_batch", "lr")
        _require(self.micro_batch <= self.global_batch,
                 f"{key('micro_batch')}={self.micro_batch} exceeds "
                 f"{key('global_batch')}={self.global_batch}")
        _require(0 <= self.min_lr <= self.lr,
                 f"{key('min_lr')}={self.min_lr} must be in [0, {key('lr')}={self.lr}]")
        _require(0 <= self.warmup_fraction < 1,
                 f"{key('warmup_fraction')}={self.warmup_fraction} must be in [0, 1)")
        _check_non_negative(self, prefix, "weight_decay", "grad_clip")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                 f"{key('betas')}={self.betas} must be two values in [0, 1)")


@dataclass(kw_only=True)
class EvalConfig(Config):
    """Per-domain validation on a fixed set of sequences (SPEC.md §5)."""

    SECTION: ClassVar[str] = "eval"

    every: int = 200
    """Steps between evaluations; 0 disables (the final step is still evaluated)."""

    sequences_per_domain: int = 64
    """The first M sequences of each domain's split, so runs compare the same tokens."""

    split: str | None = None
    """Split to evaluate; null: data.eval_split."""

    def validate(self, prefix: str | None = None) -> None:
        _check_non_negative(self, prefix, "every")
        _check_positive(self, prefix, "sequences_per_domain")


@dataclass(kw_only=True)
class CheckpointConfig(Config):
    """DeepSpeed checkpoints under run.dir/checkpoints/."""

    SECTION: ClassVar[str] = "checkpoint"

    every: int = 1000
    """Steps between checkpoints; 0: only the final one."""

    keep: int = 2
    """Latest complete checkpoints kept on disk; 0 keeps all."""

    def validate(self, prefix: str | None = None) -> None:
        _check_non_negative(self, prefix, "every", "keep")


@dataclass(kw_only=True)
class DGAConfig(Config):
    """Dynamic Gradient Alignment (SPEC.md §3); read by the DGA pass only."""

    SECTION: ClassVar[str] = "dga"

    every: int = 100
    """T_r: steps between alignment updates."""

    eta: float | None = None
    """Step size of α ← α ⊙ exp(η a). No default on purpose: raw products scale with the
    model, so a run with the DGA pass must set it (validate_for_pass)."""

    ema_weight: float = 0.1
    """w in α_EMA ← (1 − w) α_EMA + w α (the paper's β)."""

    specific: str | None = None
    """The specific (target) set y: its data location or domain, as the DGA launcher reads it."""

    basis: str | None = None
    """Basis file (draw-basis/v1) for distribution reweighting; null: reweight domains."""

    alignment: Literal["raw", "cosine"] = "raw"
    """a_i as the paper's raw inner product, or the scale-free cosine."""

    probe_batch: int | None = None
    """Sequences of each probe (one per unit, one of the specific set) over all DP ranks; a
    multiple of the DP size. null: one micro-batch per rank (train.micro_batch × DP, SPEC.md
    §3). Set it to make the α trajectory independent of the DP size."""

    def validate(self, prefix: str | None = None) -> None:
        _check_positive(self, prefix, "every")
        eta_key = _key(prefix, self.SECTION, "eta")
        _require(self.eta is None or (math.isfinite(self.eta) and self.eta > 0),
                 f"{eta_key}={self.eta} must be finite and > 0")
        _require(0 < self.ema_weight <= 1,
                 f"{_key(prefix, self.SECTION, 'ema_weight')}={self.ema_weight} must be in (0, 1]")
        _require(self.probe_batch is None or self.probe_batch > 0,
                 f"{_key(prefix, self.SECTION, 'probe_batch')}={self.probe_batch} must be > 0")

    def validate_for_pass(self, prefix: str | None = None) -> None:
        """Checks for a run that has the DGA pass on (the DGA launcher calls this)."""
        self.validate(prefix)
        _require(self.eta is not None,
                 f"{_key(prefix, self.SECTION, 'eta')} is not set: the DGA pass has no default "
                 "step size (SPEC.md §3); set it in the config or as dga.eta=<value>")
        _require(self.specific is not None,
                 f"{_key(prefix, self.SECTION, 'specific')} is not set: the DGA pass needs "
                 "a specific (target) set to align with")


@dataclass(kw_only=True)
class DROConfig(Config):
    """Proxy DRO weight update (SPEC.md §2); read by the DRO pass only."""

    SECTION: ClassVar[str] = "dro"

    eta: float = 1.0
    """Step size of α' = α ⊙ exp(η λ)."""

    smoothing: float = 1e-3
    """c in α = (1 − c) α'/Σα' + c/k."""

    reference: str | None = None
    """The reference model (same architecture, trained on the natural weights): its run's
    consolidated ``model.safetensors``, or the run folder holding it. Required by the DRO
    pass (validate_for_pass)."""

    def validate(self, prefix: str | None = None) -> None:
        _check_positive(self, prefix, "eta")
        _require(0 <= self.smoothing < 1,
                 f"{_key(prefix, self.SECTION, 'smoothing')}={self.smoothing} must be in [0, 1)")

    def validate_for_pass(self, prefix: str | None = None) -> None:
        """Checks for a run that has the DRO pass on (the DRO launcher calls this)."""
        self.validate(prefix)
        key = _key(prefix, self.SECTION, "reference")
        _require(bool(self.reference),
                 f"{key} is not set: the DRO pass needs the reference run's model "
                 f"(launch/train_reference.py writes <run.dir>/model.safetensors); set "
                 f"{key}=PATH")
        _require(os.path.isfile(self.reference_file),
                 f"{key}={self.reference!r}: no such file ({self.reference_file}); train the "
                 "reference first (launch/train_reference.py)")

    @property
    def reference_file(self) -> str:
        """``reference`` itself if it names a .safetensors file, else its model.safetensors."""
        ref = self.reference or ""
        return ref if ref.endswith(".safetensors") else os.path.join(ref, "model.safetensors")


@dataclass(kw_only=True)
class LogConfig(Config):
    """metrics.jsonl and TensorBoard (global rank 0 only)."""

    SECTION: ClassVar[str] = "log"

    every: int = 10
    """Steps between train records."""

    tensorboard: bool = True
    """Also write TensorBoard events under run.dir."""

    def validate(self, prefix: str | None = None) -> None:
        _check_positive(self, prefix, "every")


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

    dga: DGAConfig = field(default_factory=DGAConfig)
    """The DGA pass (used only by the DGA launcher)."""

    dro: DROConfig = field(default_factory=DROConfig)
    """The proxy DRO pass (used only by the DRO launcher)."""

    log: LogConfig = field(default_factory=LogConfig)
    """Logging cadence and sinks."""

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
        tp, heads, vocab = self.parallel.tp, self.model.n_heads, self.model.padded_vocab_size
        _require(heads % tp == 0, f"parallel.tp={tp} does not divide model.n_heads={heads}")
        _require(vocab % tp == 0,
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
        _require(world_size >= 1, f"world size {world_size} must be >= 1")
        tp = self.parallel.tp
        _require(world_size % tp == 0, f"parallel.tp={tp} does not divide the world size "
                                       f"{world_size}")
        dp = self.data_parallel_size(world_size)
        micro, batch = self.train.micro_batch, self.train.global_batch
        _require(batch % (micro * dp) == 0,
                 f"train.global_batch={batch} is not divisible by train.micro_batch={micro} × "
                 f"DP={dp} = {micro * dp} (DP = world size {world_size} / parallel.tp={tp})")
        probe = self.dga.probe_batch
        _require(probe is None or probe % dp == 0,
                 f"dga.probe_batch={probe} does not split over DP={dp} ranks (DP = world size "
                 f"{world_size} / parallel.tp={tp})")
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
        _require(os.path.isdir(root), f"data.root={root!r} does not exist (or is not a folder); "
                                      "convert data with tools/convert_pile.py first")
        _require(os.path.isfile(os.path.join(root, MANIFEST_NAME)),
                 f"data.root={root!r} holds no {MANIFEST_NAME}: not a converted data root")

    def validate_dro_pass(self) -> None:
        """Checks for a run with the DRO pass on; the DRO launcher calls this."""
        self.dro.validate_for_pass("dro")

    def validate_dga_pass(self) -> None:
        """Checks for a run with the DGA pass on; the DGA launcher calls this."""
        self.dga.validate_for_pass("dga")
        _require(self.zero.stage <= 2, f"zero.stage={self.zero.stage}: the DGA pass supports "
                                       "ZeRO stages 0-2 only (DESIGN.md)")


def load_run_config(yaml_path: str, overrides: Sequence[str] = ()) -> RunConfig:
    """Read ``yaml_path``, apply ``dotted.key=value`` overrides, build and validate().

    Precedence: model preset < YAML field < command-line override (later overrides win).
    """
    raw = apply_overrides(RunConfig, load_yaml(yaml_path), overrides)
    return RunConfig.from_dict(raw, prefix="")
