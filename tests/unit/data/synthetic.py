"""A synthetic data root in Contract 1's layout whose sequences say who they are.

Sequence j of domain d holds tokens [d, j, j+1, ...] (mod the dtype), so a test can tell
from a batch which item of which domain it received. A domain listed in ``random_domains``
holds [d, j, then seeded random tokens]: noise no model can learn.
"""

from __future__ import annotations

import json
import os

import numpy as np
from streaming import MDSWriter

from draw_megatron.data.manifest import MANIFEST_FORMAT, SHARD_HASH, natural_weights


def make_synthetic_root(root: str, sizes: list[int], seq_len: int = 8, split: str = "train",
                        names: list[str] | None = None, vocab_size: int = 65536,
                        splits: tuple[str, ...] | None = None,
                        random_domains: tuple[int, ...] = (), shard_size: int = 1 << 26,
                        hashes: bool = True) -> str:
    """Write the root; ``splits`` (default: just ``split``) each get the same sequences.
    Token values are taken mod ``vocab_size`` (decode_items needs the default). Shards hold
    about ``shard_size`` bytes and record their xxh64 hashes as the converter's do, unless
    ``hashes`` is False (a root written before the converter recorded them)."""
    names = names or [f"Domain {d}" for d in range(len(sizes))]
    splits = splits or (split,)
    domains = []
    weights = natural_weights(sizes, [1.0] * len(sizes))
    for d, (name, n) in enumerate(zip(names, sizes)):
        slug = f"d{d:05d}"
        for s in splits:
            if n:
                with MDSWriter(out=os.path.join(root, s, slug),
                               columns={"tokens": "ndarray:uint16"}, compression=None,
                               size_limit=shard_size,
                               hashes=[SHARD_HASH] if hashes else None) as w:
                    for j in range(n):
                        row = np.arange(j, j + seq_len + 1, dtype=np.int64)
                        if d in random_domains:
                            row = np.random.default_rng([d, j]).integers(
                                0, vocab_size, seq_len + 1)
                        row[0], row[1] = d, j
                        w.write({"tokens": (row % vocab_size).astype(np.uint16)})
        counts = {"documents": n, "tokens": n * seq_len + 1, "sequences": n, "dropped_tokens": 0,
                  "natural_weight": weights[d]}
        domains.append({"name": name, "slug": slug, "epochs": 1.0,
                        "splits": {s: dict(counts) for s in splits}})
    manifest = {"format": MANIFEST_FORMAT, "seq_len": seq_len, "dtype": "uint16",
                "tokenizer": {"path": "none", "sha256": "", "vocab_size": vocab_size,
                              "eos_id": 2},
                "splits": list(splits), "domains": domains}
    with open(os.path.join(root, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)
    return root


def decode_items(batch) -> list[tuple[int, int]]:
    """(domain, item) of each sequence of a batch built from a synthetic root."""
    return [(int(t[0]), int(t[1])) for t in batch.tokens]
