"""The mixture loader on 2 gloo ranks: the same global stream as one process, and one α."""

from draw_megatron.data.domains import DomainData
from draw_megatron.data.loader import MixtureLoader
from draw_megatron.data.manifest import Manifest
from draw_megatron.mixture.kinds import schedule_for
from draw_megatron.parallel import rank0_broadcaster
from draw_megatron.mixture.files import MixtureSpec
from tests.distributed.harness import run_distributed
from tests.unit.data.synthetic import decode_items, make_synthetic_root

SIZES = [5, 30, 11, 60]


def _stream(root, dp_rank, dp_size, steps, schedule_seed):
    data = DomainData(Manifest.load(root), "train")
    try:
        broadcast, is_source = rank0_broadcaster()
        sched = schedule_for("dirichlet", data.manifest, file=f"{root}/mixture.json",
                             redraw_every=2, seed=schedule_seed, broadcast=broadcast,
                             is_source=is_source)
        loader = MixtureLoader(data, sched, global_batch=8, seed=3, dp_rank=dp_rank,
                               dp_size=dp_size)
        out = []
        for _ in range(steps):
            batch = loader.next_batch()
            out.append((decode_items(batch), batch.alpha.tolist()))
        return out
    finally:
        data.close()


def _rank_fn(rank, world_size, root):
    # Rank-dependent schedule seeds: only rank 0's draws may reach the batches.
    return _stream(root, rank, world_size, steps=6, schedule_seed=100 + rank)


def test_dp2_matches_dp1_and_alpha_is_rank0s(tmp_path):
    root = make_synthetic_root(str(tmp_path), SIZES)
    names = Manifest.load(root).domain_names
    MixtureSpec("dirichlet", names, [0.5, 1.0, 2.0, 0.7]).save(f"{root}/mixture.json")
    r0, r1 = run_distributed(_rank_fn, 2, root)
    single = _stream(root, 0, 1, steps=6, schedule_seed=100)
    for step in range(6):
        items0, alpha0 = r0[step]
        items1, alpha1 = r1[step]
        assert alpha0 == alpha1 == single[step][1]
        assert items0 + items1 == single[step][0]
