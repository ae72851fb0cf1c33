"""The mixture data loader (docs/architecture.md, Contract 3).

Step t of a run with global batch G:
  1. α_t comes from the mixture schedule (static, Dirichlet redrawn every N steps on rank 0
     and broadcast, or set online by DRO/DGA);
  2. the domains of the G positions are drawn independently from α_t by a generator seeded
     by (seed, t) — one vectorised inverse-CDF draw for the whole global batch;
  3. the j-th use of domain d takes item j mod n_d of that domain's permutation for epoch
     ⌊j / n_d⌋, keyed by (seed, d, epoch) (an O(1)-memory Feistel permutation);
  4. DP rank r reads positions [r·G/DP, (r+1)·G/DP).
Stratified batches (``stratified=True``, the DRO proxy, docs/algorithms.md §2) replace step 2: every
domain gets ⌊G/k⌋ positions, the G mod k left over go to distinct domains, and the positions
are shuffled, all by a generator seeded by (seed, t); α_t is then reported, not sampled from.
Every rank computes steps 1–3 for the whole global batch, so all ranks hold the same
cursors, and the global stream depends only on the seed, the schedule and the data — not
on DP size, TP size or micro-batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from draw_megatron.data.domains import DomainData
from draw_megatron.data.permutation import derive_key, permute
from draw_megatron.mixture.schedule import Schedule

# Independent randomness streams derived from the run seed.
TRAIN_STREAM = 0x545241494E  # "TRAIN"
PROBE_STREAM = 0x50524F4245  # "PROBE"
_DRAW, _PERM, _STRATIFY = 1, 2, 3


@dataclass
class Batch:
    """This rank's sequences of one step (or one probe), as torch tensors."""

    tokens: torch.Tensor
    """[B, seq_len] int64 inputs."""
    labels: torch.Tensor
    """[B, seq_len] int64 next tokens."""
    domain_ids: torch.Tensor
    """[B] int64 domain of each sequence, in manifest order."""
    step: int
    alpha: np.ndarray
    """The mixture this step used (stratified batches: the schedule's weights, which an
    online method such as DRO weights the loss with; the domains were not drawn from it)."""
    domain_counts: np.ndarray | None = None
    """[k] sequences of each domain in the whole global batch (all DP ranks), known before
    any forward pass; None for probe batches."""
    probe_weight: float = 1.0
    """Probe batches: the factor on this rank's mean loss that makes the DP mean the mean
    over the whole probe (ranks may hold unequal shares; see ProbeSampler)."""

    def micro_batches(self, micro_batch: int) -> list[Batch]:
        """Consecutive slices of ``micro_batch`` sequences (gradient accumulation)."""
        num = self.tokens.shape[0]
        if micro_batch < 1 or num % micro_batch:
            raise ValueError(f"{num} sequences per rank do not split into micro batches of "
                             f"{micro_batch}")
        return [Batch(self.tokens[i:i + micro_batch], self.labels[i:i + micro_batch],
                      self.domain_ids[i:i + micro_batch], self.step, self.alpha,
                      self.domain_counts)
                for i in range(0, num, micro_batch)]


def occurrence_index(domains: np.ndarray, k: int) -> np.ndarray:
    """For each position, how many earlier positions drew the same domain."""
    order = np.argsort(domains, kind="stable")
    counts = np.bincount(domains, minlength=k)
    starts = np.cumsum(counts) - counts
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(domains)) - starts[domains[order]]
    return ranks


class DomainSampler:
    """Per-domain cursors over seeded per-epoch permutations of one split.

    ``take(domains)`` consumes one item per position of a global draw and returns the global
    sample indices; the cursors (uses per domain) are the whole state.
    """

    def __init__(self, data: DomainData, seed: int, stream: int):
        self.data, self.seed, self.stream = data, int(seed), int(stream)
        self.cursors = np.zeros(data.num_domains, dtype=np.int64)

    def take(self, domains: np.ndarray) -> np.ndarray:
        k = self.data.num_domains
        sizes = self.data.num_sequences[domains]
        if np.any(sizes == 0):
            empty = self.data.manifest.domain_names[int(domains[sizes == 0][0])]
            raise ValueError(f"the mixture draws from domain {empty!r}, which has no sequence "
                             f"in split {self.data.split!r}: give it weight 0")
        uses = self.cursors[domains] + occurrence_index(domains, k)
        self.cursors += np.bincount(domains, minlength=k)
        epochs = uses // sizes
        keys = derive_key(self.seed, self.stream, _PERM, domains, epochs)
        return self.data.offsets[domains] + permute(uses % sizes, sizes, keys)

    def epochs(self) -> np.ndarray:
        """Completed passes over each domain (a float: 1.5 = half way through epoch 2)."""
        sizes = np.maximum(self.data.num_sequences, 1)
        return self.cursors / sizes

    def state_dict(self) -> dict:
        return {"cursors": self.cursors.tolist(), "num_sequences": self.data.num_sequences.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state["num_sequences"] != self.data.num_sequences.tolist():
            raise ValueError("the checkpoint's loader state belongs to other data (per-domain "
                             "sequence counts differ from this data root's)")
        self.cursors = np.asarray(state["cursors"], dtype=np.int64)


def draw_domains(alpha: np.ndarray, num: int, seed: int, stream: int, counter: int) -> np.ndarray:
    """``num`` independent categorical draws from ``alpha``, seeded by (seed, stream, counter)."""
    rng = np.random.default_rng([seed, stream, _DRAW, counter])
    cdf = np.cumsum(alpha)
    # side="right" never lands on a zero-weight domain.
    domains = np.searchsorted(cdf, rng.random(num) * cdf[-1], side="right")
    return np.minimum(domains, alpha.size - 1)


def stratified_domains(num_domains: int, num: int, seed: int, stream: int,
                       counter: int) -> np.ndarray:
    """``num`` positions with ⌊num/k⌋ of every domain, the ``num mod k`` left over given to
    distinct domains, in shuffled order; seeded by (seed, stream, counter)."""
    if num < num_domains:
        raise ValueError(f"a stratified batch needs every one of the {num_domains} domains: "
                         f"train.global_batch={num} is smaller")
    rng = np.random.default_rng([seed, stream, _STRATIFY, counter])
    counts = np.full(num_domains, num // num_domains, dtype=np.int64)
    counts[rng.choice(num_domains, size=num % num_domains, replace=False)] += 1
    # Shuffled, so each DP rank's slice (and each micro-batch) mixes the domains.
    return np.repeat(np.arange(num_domains), counts)[rng.permutation(num)]


def _to_batch(rows: np.ndarray, domains: np.ndarray, step: int, alpha: np.ndarray,
              domain_counts: np.ndarray | None = None) -> Batch:
    seqs = torch.from_numpy(rows.astype(np.int64))
    domain_ids = torch.from_numpy(domains.astype(np.int64))
    if torch.cuda.is_available():
        seqs, domain_ids = seqs.pin_memory(), domain_ids.pin_memory()
    return Batch(tokens=seqs[:, :-1], labels=seqs[:, 1:], domain_ids=domain_ids, step=step,
                 alpha=alpha, domain_counts=domain_counts)


class MixtureLoader:
    """The training stream: this rank's G/DP sequences of each step, from the mixture α_t
    (or, ``stratified``, the same number of sequences from every domain)."""

    def __init__(self, data: DomainData, schedule: Schedule, global_batch: int,
                 seed: int, dp_rank: int = 0, dp_size: int = 1, stratified: bool = False):
        if schedule.num_domains != data.num_domains:
            raise ValueError(f"the mixture has {schedule.num_domains} domains, the data "
                             f"{data.num_domains}")
        if global_batch < 1 or global_batch % dp_size:
            raise ValueError(f"global batch {global_batch} is not a positive multiple of the "
                             f"data-parallel size {dp_size}")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} is outside [0, {dp_size})")
        if stratified:
            _check_stratifiable(data, global_batch)
        self.stratified = stratified
        self.data, self.schedule = data, schedule
        self.global_batch, self.seed = global_batch, int(seed)
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.sampler = DomainSampler(data, seed, TRAIN_STREAM)
        self.step = 0

    @property
    def per_rank(self) -> int:
        return self.global_batch // self.dp_size

    def next_batch(self) -> Batch:
        """This rank's sequences for the next step; advances the step and the cursors."""
        step = self.step
        alpha = self.schedule.weights(step)
        if self.stratified:
            domains = stratified_domains(alpha.size, self.global_batch, self.seed, TRAIN_STREAM,
                                         step)
        else:
            domains = draw_domains(alpha, self.global_batch, self.seed, TRAIN_STREAM, step)
        indices = self.sampler.take(domains)
        mine = slice(self.dp_rank * self.per_rank, (self.dp_rank + 1) * self.per_rank)
        rows = self.data.read(indices[mine])
        self.step += 1
        return _to_batch(rows, domains[mine], step, alpha,
                         np.bincount(domains, minlength=alpha.size))

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "global_batch": self.global_batch,
                "stratified": self.stratified, "sampler": self.sampler.state_dict(),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"the checkpoint's loader used seed {state['seed']}, this run "
                             f"{self.seed}: resuming would not continue the same stream")
        if state["global_batch"] != self.global_batch:
            raise ValueError(f"the checkpoint's loader used global batch {state['global_batch']}"
                             f", this run {self.global_batch}")
        if state.get("stratified", False) != self.stratified:
            raise ValueError(f"the checkpoint's loader drew {_draw_mode(not self.stratified)} "
                             f"batches, this run {_draw_mode(self.stratified)} ones")
        self.sampler.load_state_dict(state["sampler"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])


def _check_probe_size(num: int) -> int:
    if num < 1:
        raise ValueError(f"a probe needs at least one sequence, got {num}")
    return int(num)


def check_stratifiable_size(num_domains: int, global_batch: int) -> None:
    """ValueError unless a global batch can hold every domain (stratified batches)."""
    if global_batch < num_domains:
        raise ValueError(f"train.global_batch={global_batch} is smaller than the {num_domains} "
                         "domains: a stratified batch holds at least one sequence of every "
                         "domain")


def _check_stratifiable(data: DomainData, global_batch: int) -> None:
    check_stratifiable_size(data.num_domains, global_batch)
    empty = [name for name, n in zip(data.manifest.domain_names, data.num_sequences) if n == 0]
    if empty:
        raise ValueError(f"stratified batches take every domain, but {empty} have no sequence "
                         f"in split {data.split!r}")


def _draw_mode(stratified: bool) -> str:
    return "stratified" if stratified else "mixture-drawn"


class ProbeSampler:
    """Probe batches (DGA's one batch per domain, a specific set) with their own cursors.

    Separate from the training stream: drawing probes never shifts it. A probe of ``num``
    sequences is drawn globally and DP rank r keeps the share [⌊r·num/DP⌋, ⌊(r+1)·num/DP⌋),
    so probes are independent of the DP size. Shares may be unequal: the batch's
    ``probe_weight`` = share·DP/num makes the DP mean of per-rank mean losses (and of their
    gradients) the mean over all ``num`` sequences. A rank with an empty share gets one
    sequence with weight 0, so every rank still runs the same collectives.
    """

    def __init__(self, data: DomainData, seed: int, dp_rank: int = 0, dp_size: int = 1,
                 stream: int = PROBE_STREAM):
        self.data, self.seed, self.stream = data, int(seed), int(stream)
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.sampler = DomainSampler(data, seed, stream)
        self.num_draws = 0  # counter seeding the mixed draws

    def _local(self, domains: np.ndarray, alpha: np.ndarray) -> Batch:
        num = domains.size
        indices = self.sampler.take(domains)
        start, stop = (self.dp_rank * num // self.dp_size,
                       (self.dp_rank + 1) * num // self.dp_size)
        weight = (stop - start) * self.dp_size / num
        if start == stop:
            start, stop = 0, 1
        batch = _to_batch(self.data.read(indices[start:stop]), domains[start:stop], -1, alpha)
        batch.probe_weight = weight
        return batch

    def domain_batch(self, domain: int, num: int) -> Batch:
        """This rank's share of ``num`` sequences of one domain."""
        alpha = np.zeros(self.data.num_domains)
        alpha[domain] = 1.0
        return self._local(np.full(_check_probe_size(num), domain, dtype=np.int64), alpha)

    def mixed_batch(self, num: int, alpha: np.ndarray | None = None) -> Batch:
        """This rank's share of ``num`` sequences drawn from ``alpha`` (default: uniform over
        sequences)."""
        if alpha is None:
            alpha = self.data.num_sequences / self.data.num_sequences.sum()
        domains = draw_domains(alpha, _check_probe_size(num), self.seed, self.stream,
                               self.num_draws)
        self.num_draws += 1
        return self._local(domains, alpha)

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "num_draws": self.num_draws}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.num_draws = int(state["num_draws"])
