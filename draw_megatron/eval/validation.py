"""Per-domain validation loss on a fixed set of sequences (docs/algorithms.md §5).

The set is the first M sequences of each domain's evaluation split, so every run compares
the same tokens. Positions are dealt to DP ranks round-robin and every rank runs the same
number of forward passes (ZeRO-3 gathers parameters collectively), padding with repeats
that are not counted. TP peers share a DP rank and so read the same sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from draw_megatron.data.domains import DomainData
from draw_megatron.losses import DomainLoss, domain_means


class Evaluator:
    def __init__(self, data: DomainData, sequences_per_domain: int, micro_batch: int,
                 dp_rank: int, dp_size: int, dp_group, device: torch.device):
        self.data, self.micro_batch = data, micro_batch
        self.dp_group, self.device = dp_group, device
        domains, indices = [], []
        for d in range(data.num_domains):
            num = min(sequences_per_domain, int(data.num_sequences[d]))
            domains.extend([d] * num)
            indices.extend(data.offsets[d] + np.arange(num))
        if not domains:
            raise ValueError(f"evaluation split {data.split!r} has no sequence")
        per_rank = -(-len(domains) // dp_size)
        mine = list(range(dp_rank, len(domains), dp_size))
        pad = per_rank - len(mine)
        self.domains = np.array([domains[i] for i in mine] + [-1] * pad, dtype=np.int64)
        self.indices = np.array([indices[i] for i in mine] + [indices[mine[-1] if mine else 0]] * pad,
                                dtype=np.int64)

    @property
    def domain_names(self) -> list[str]:
        return self.data.manifest.domain_names

    @torch.no_grad()
    def evaluate(self, forward) -> dict:
        """``forward(tokens, labels) -> per-token loss``; returns domain_loss, avg, worst."""
        acc = DomainLoss(self.data.num_domains, self.device)
        for start in range(0, len(self.indices), self.micro_batch):
            rows = self.data.read(self.indices[start:start + self.micro_batch])
            seqs = torch.from_numpy(rows.astype(np.int64)).to(self.device)
            loss_BT = forward(seqs[:, :-1], seqs[:, 1:])
            ids = torch.from_numpy(self.domains[start:start + self.micro_batch])
            keep = ids >= 0
            acc.add(loss_BT[keep.to(loss_BT.device)], ids[keep])
        sums, counts = acc.all_reduce(self.dp_group)
        losses = domain_means(sums, counts)
        present = [(v, i) for i, v in enumerate(losses) if v is not None]
        worst, worst_i = max(present)
        return {"domain_loss": losses, "avg": float(np.mean([v for v, _ in present])),
                "worst": worst, "worst_domain": self.domain_names[worst_i]}
