#!/usr/bin/env python3
"""Run the mixture loader over a converted data root and summarise what it produced.

Prints the data (domains, sequences per split), the mixture schedule's α at each redraw,
how many sequences each domain contributed against what α predicts, the loader's
throughput, the state it would checkpoint, and a decoded excerpt per domain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="data root (manifest.json)")
    p.add_argument("--split", default="train")
    p.add_argument("--mixture", default="dirichlet",
                   choices=["natural", "uniform", "random", "dirichlet", "static"],
                   help="schedule; dirichlet without --mixture-file uses Dir((sqrt(n)/k)*1)")
    p.add_argument("--mixture-file", help="mixture file (Contract 2) for static / dirichlet")
    p.add_argument("--width", type=int, default=256, help="model width n for the prior")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--redraw-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)

    import numpy as np

    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.kinds import schedule_for as build_schedule
    from draw_megatron.data.tokenizer import Tokenizer

    manifest = Manifest.load(args.data)
    names = manifest.domain_names
    kind = args.mixture
    if kind == "dirichlet" and not args.mixture_file:
        kind = "random"  # the DRAW prior Dir((sqrt(n)/k) * 1) until a posterior exists
    schedule = build_schedule(kind, manifest, file=args.mixture_file, width=args.width,
                              redraw_every=args.redraw_every, seed=args.seed, split=args.split)
    data = DomainData(manifest, args.split)
    loader = MixtureLoader(data, schedule, args.global_batch, seed=args.seed)

    print(f"data root {manifest.root}: {len(names)} domains, seq_len {manifest.seq_len}, "
          f"{manifest.dtype}, vocab {manifest.vocab_size}")
    print(f"{'domain':<22}" + "".join(f"{s:>10}" for s in manifest.splits) + f"{'natural':>10}")
    for d, name in enumerate(names):
        counts = "".join(f"{int(manifest.num_sequences(s)[d]):>10}" for s in manifest.splits)
        print(f"{name[:21]:<22}{counts}{manifest.natural_weights(args.split)[d]:>10.4f}")

    print(f"\nmixture: {kind}, redrawn every {args.redraw_every} steps; global batch "
          f"{args.global_batch}, {args.steps} steps")
    drawn = np.zeros(len(names))
    expected = np.zeros(len(names))
    excerpt: dict[int, list[int]] = {}
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step = loader.step
        batch = loader.next_batch()
        if schedule.changes_at(step):
            print(f"  step {step:>4}: alpha = [" + ", ".join(f"{a:.3f}" for a in batch.alpha) + "]")
        ids = batch.domain_ids.numpy()
        drawn += np.bincount(ids, minlength=len(names))
        expected += batch.alpha * len(ids)
        for row, d in zip(batch.tokens, ids):
            excerpt.setdefault(int(d), row[:48].tolist())
    seconds = time.perf_counter() - t0
    tokens = args.steps * args.global_batch * manifest.seq_len
    print(f"\n{'domain':<22}{'drawn':>8}{'expected':>10}{'epochs':>8}")
    for d, name in enumerate(names):
        print(f"{name[:21]:<22}{int(drawn[d]):>8}{expected[d]:>10.1f}"
              f"{loader.sampler.epochs()[d]:>8.3f}")
    print(f"\nloader: {tokens / seconds / 1e6:.2f} M tokens/s over {args.steps} steps "
          f"({tokens} tokens)")
    state = loader.state_dict()
    print(f"checkpointed loader state: {len(json.dumps(state))} bytes (step {state['step']})")

    tok = Tokenizer(manifest.tokenizer_path)
    print("\none sequence per domain, decoded (first 48 tokens):")
    for d in sorted(excerpt):
        text = tok.decode(excerpt[d]).replace("\n", "\\n")
        print(f"  {names[d][:20]:<21}| {text[:100]}")
    data.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
