"""The DGA pass on CPU/gloo (docs/algorithms.md §3): exact alignment scores under TP and DP, the α
trajectory independent of the DP size, the sign of the update, an untouched training
stream, exact resume, records and the α* file.

One spawn of two ranks runs the alignment checks (TP = 2, TP = 2 with sequence parallelism,
DP = 2; raw and cosine) and the trainer runs (DP = 2 under ZeRO-2, killed and resumed, TP = 2);
one single-process spawn runs DP = 1. The toy data: domains 0–2 are random tokens, domain 3
is arithmetic; the specific set is domain 3's `test` split.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import fit_until_killed, run_distributed
from tests.unit.data.synthetic import make_synthetic_root

VOCAB = 384
SEQ = 16
SIZES = [30, 30, 30, 60]
RANDOM_DOMAINS = (0, 1, 2)
TARGET = 3
STEPS = 8
EVERY = 2
SEED = 11
MODEL = {"n_layers": 2, "n_heads": 4, "head_dim": 16, "d_model": 64, "ffn_hidden": 256,
         "vocab_size": VOCAB, "seq_len": SEQ}

# ----------------------------------------------------------------------------- alignment


def _probe_tokens(unit: int, dp_rank: int) -> torch.Tensor:
    """Fixed probe sequences [2, SEQ + 1] of one unit (the last is the target) and DP rank."""
    g = torch.Generator().manual_seed(1000 * unit + dp_rank)
    return torch.randint(0, VOCAB, (2, SEQ + 1), generator=g)


def _loss(model, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, :-1], tokens[:, 1:]).mean()


K_PROBES = 3  # units 0..2; unit 3 is the target


def _alignment_on_ranks(rank: int, world: int) -> dict:
    from draw_megatron.config.model import ModelConfig
    from draw_megatron.model import GPT
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.alignment import GradientAlignment

    torch.manual_seed(0)
    out = {}
    for layout, tp, sp in (("tp2", 2, False), ("tp2_sp", 2, True), ("dp2", 1, False)):
        topo = ParallelTopology.from_dist(tp)
        model = GPT(ModelConfig(**MODEL), topo, sequence_parallel=sp, seed=SEED)
        for mode in ("raw", "cosine"):
            aligner = GradientAlignment(model, topo, mode)
            aligner.set_target(_loss(model, _probe_tokens(K_PROBES, topo.dp_rank)))
            scores = aligner.scores(lambda i: _loss(model, _probe_tokens(i, topo.dp_rank)),
                                    K_PROBES)
            out[(layout, mode)] = scores.double().numpy()
            assert all(p.grad is None for p in model.parameters())  # no .grad was touched
    return out


def _brute_force(dp: int) -> dict[str, np.ndarray]:
    """One process, TP = 1: flattened full gradients averaged over the DP ranks' batches."""
    from draw_megatron.config.model import ModelConfig
    from draw_megatron.model import GPT
    from draw_megatron.parallel import ParallelTopology

    model = GPT(ModelConfig(**MODEL), ParallelTopology.single(), seed=SEED)
    params = [p for p in model.parameters() if p.requires_grad]

    def flat_grad(unit: int) -> np.ndarray:
        total = 0
        for r in range(dp):
            grads = torch.autograd.grad(_loss(model, _probe_tokens(unit, r)), params)
            total = total + torch.cat([g.reshape(-1) for g in grads]).double().numpy()
        return total / dp

    target = flat_grad(K_PROBES)
    probes = [flat_grad(i) for i in range(K_PROBES)]
    raw = np.array([g @ target for g in probes])
    cosine = raw / (np.array([np.linalg.norm(g) for g in probes]) * np.linalg.norm(target))
    return {"raw": raw, "cosine": cosine}


@pytest.fixture(scope="module")
def alignment():
    return run_distributed(_alignment_on_ranks, 2, timeout=300)


@pytest.mark.parametrize("layout", ["tp2", "tp2_sp", "dp2"])
@pytest.mark.parametrize("mode", ["raw", "cosine"])
def test_alignment_equals_brute_force(alignment, layout, mode):
    want = _brute_force(dp=2 if layout == "dp2" else 1)[mode]
    for rank in (0, 1):
        got = alignment[rank][(layout, mode)]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-5, (rank, got, want)
    # Sensitive: the scores of different units differ well beyond the tolerance.
    assert np.ptp(want) > 1e-3 * np.abs(want).max()


def test_mean_of_local_products_would_be_wrong(alignment):
    """docs/algorithms.md §3: mean_r ⟨g_i^r, g_y^r⟩ is not the DP answer; ours is not that."""
    local = [_brute_force_local(r) for r in (0, 1)]
    wrong = np.mean(local, axis=0)
    got = alignment[0][("dp2", "raw")]
    assert np.linalg.norm(got - wrong) / np.linalg.norm(wrong) > 1e-3


def _brute_force_local(r: int) -> np.ndarray:
    from draw_megatron.config.model import ModelConfig
    from draw_megatron.model import GPT
    from draw_megatron.parallel import ParallelTopology

    model = GPT(ModelConfig(**MODEL), ParallelTopology.single(), seed=SEED)
    params = [p for p in model.parameters() if p.requires_grad]

    def flat(unit):
        grads = torch.autograd.grad(_loss(model, _probe_tokens(unit, r)), params)
        return torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    target = flat(K_PROBES)
    return np.array([flat(i) @ target for i in range(K_PROBES)])


# ----------------------------------------------------------------------------- trainer runs


BASES = {"noise": [0.5, 0.5, 0.0, 0.0], "with target": [0.0, 0.0, 0.5, 0.5]}


def _write_basis(root: str) -> str:
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.basis import BasisSpec

    path = os.path.join(root, "basis.json")
    BasisSpec(Manifest.load(root).domain_names, list(BASES), np.array(list(BASES.values())),
              provenance={"test": True}).save(path)
    return path


def _cfg(root: str, run_dir: str, **over) -> RunConfig:
    tree = {
        "run": {"dir": run_dir, "seed": SEED},
        "model": dict(MODEL),
        "parallel": {"tp": over.pop("tp", 1)},
        "zero": {"stage": over.pop("stage", 2)},
        "data": {"root": root},
        "mixture": {"kind": over.pop("kind", "online")},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0},
        "eval": {"every": 4, "sequences_per_domain": 4},
        "checkpoint": {"every": 4, "keep": 2},
        "dga": {"every": EVERY, "eta": over.pop("eta", 20.0), "ema_weight": 0.5,
                "specific": f"test:Domain {TARGET}", "probe_batch": over.pop("probe", 4),
                "basis": over.pop("basis", None)},
        "log": {"every": 4, "tensorboard": False},
    }
    assert not over, over
    return RunConfig.from_dict(tree)


def _build(cfg: RunConfig, dga: bool = True):
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.dga import DGAPass
    from draw_megatron.train.trainer import Trainer

    passes = [DGAPass(cfg.dga)] if dga else []
    return Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp), passes)


def _result(cfg: RunConfig) -> dict:
    from draw_megatron.train.metrics import read_metrics

    path = os.path.join(cfg.run.dir, "metrics.jsonl")
    return {"loss": [r["loss"] for r in read_metrics(path, "train")],
            "train_alpha": [r["alpha"] for r in read_metrics(path, "train")],
            "dga": read_metrics(path, "dga")}


def _runs(rank: int, world: int, root: str, out: str) -> dict:
    res = {}
    if world == 1:
        for name, probe in (("dp1", 4), ("dp1_odd", 3)):
            cfg = _cfg(root, f"{out}/{name}", probe=probe)
            fit_until_killed(_build(cfg))
            res[name] = _result(cfg)
        return res
    # 3 probe sequences over 2 ranks: shares of 1 and 2, weighted so the products are still
    # those of the whole probe.
    cfg = _cfg(root, f"{out}/dp2_odd", probe=3)
    fit_until_killed(_build(cfg))
    res["dp2_odd"] = _result(cfg)
    for name, over in (("dp2", {}), ("tp2", {"tp": 2})):
        cfg = _cfg(root, f"{out}/{name}", **over)
        fit_until_killed(_build(cfg))
        res[name] = _result(cfg)
    cfg = _cfg(root, f"{out}/resumed")
    fit_until_killed(_build(cfg), kill_at=5)  # after the step-4 checkpoint
    fit_until_killed(_build(cfg))
    res["resumed"] = _result(cfg)
    # A vanishing step size: the probes run but the weights stay natural, so the training
    # stream must be that of a plain natural-mixture run — the probes touch nothing.
    cfg = _cfg(root, f"{out}/tiny_eta", eta=1e-12)
    fit_until_killed(_build(cfg))
    res["tiny_eta"] = _result(cfg)
    cfg = _cfg(root, f"{out}/natural", kind="natural")
    fit_until_killed(_build(cfg, dga=False))
    res["natural"] = _result(cfg)
    cfg = _cfg(root, f"{out}/basis", basis=os.path.join(root, "basis.json"))
    fit_until_killed(_build(cfg))
    res["basis"] = _result(cfg)
    return res


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("dga_data")), SIZES, seq_len=SEQ,
                               vocab_size=VOCAB, splits=("train", "val", "test"),
                               random_domains=RANDOM_DOMAINS)
    _write_basis(root)
    return root


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dga_runs"))


@pytest.fixture(scope="module")
def ranks(data_root, out_dir):
    return run_distributed(_runs, 2, data_root, out_dir, timeout=900)


@pytest.fixture(scope="module")
def single(data_root, out_dir):
    return run_distributed(_runs, 1, data_root, out_dir, timeout=600)[0]


def _alphas(run: dict, key: str = "alpha_ema") -> np.ndarray:
    return np.array([r[key] for r in run["dga"]])


def test_alpha_moves_toward_the_specific_domain(ranks):
    run = ranks[0]["dp2"]
    alignment, ema = np.array([r["alignment"] for r in run["dga"]]), _alphas(run)
    natural = np.array(SIZES) / sum(SIZES)
    # The specific set is domain 3's sequences: its gradient aligns best with domain 3's.
    assert np.all(np.argmax(alignment, axis=1) == TARGET)
    assert np.all(np.diff(ema[:, TARGET]) > 0) and ema[0, TARGET] > natural[TARGET]
    assert _alphas(run, "alpha")[-1, TARGET] > 0.9
    for d in RANDOM_DOMAINS:
        assert ema[-1, d] < natural[d]


def test_dp2_and_dp1_give_the_same_trajectory(ranks, single):
    for name, base in (("tp2", "dp1"), ("dp2", "dp1"), ("dp2_odd", "dp1_odd")):
        for key in ("alpha", "alpha_ema", "specific_loss"):
            np.testing.assert_allclose(_alphas(ranks[0][name], key), _alphas(single[base], key),
                                       rtol=0, atol=1e-4, err_msg=f"{name} {key}")
    assert ranks[0]["dp2"]["dga"] == ranks[1]["dp2"]["dga"]  # every rank holds the same α


def test_records_and_the_weights_the_loader_used(ranks):
    run = ranks[0]["dp2"]
    assert [r["step"] for r in run["dga"]] == list(range(0, STEPS, EVERY))
    assert all(set(r) == {"kind", "step", "alignment", "alpha", "alpha_ema", "specific_loss"}
               for r in run["dga"])
    # The specific set (domain 3's sequences) gets easier as α moves onto domain 3.
    specific = [r["specific_loss"] for r in run["dga"]]
    assert specific[-1] < specific[0]
    np.testing.assert_allclose(specific, [r["specific_loss"] for r in ranks[1]["dp2"]["dga"]])
    natural = np.array(SIZES) / sum(SIZES)
    # The update after step t applies from step t + 1 (EVERY = 2: steps t + 1 and t + 2).
    used = np.array(run["train_alpha"])
    np.testing.assert_allclose(used[0], natural, rtol=1e-12)
    for rec in run["dga"]:
        for s in range(rec["step"] + 1, min(rec["step"] + EVERY + 1, STEPS)):
            np.testing.assert_allclose(used[s], rec["alpha_ema"], rtol=1e-12)


def test_probes_leave_the_training_stream_untouched(ranks):
    res = ranks[0]
    assert res["tiny_eta"]["loss"] == res["natural"]["loss"]  # bitwise, ZeRO-2
    assert len(res["tiny_eta"]["dga"]) == STEPS // EVERY


def test_resume_reproduces_losses_and_alpha(ranks):
    full, resumed = ranks[0]["dp2"], ranks[0]["resumed"]
    assert resumed["dga"] == full["dga"]
    assert resumed["loss"] == full["loss"]


def test_alpha_star_file_is_the_mean_of_the_sampling_weights(ranks, data_root, out_dir):
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.files import load_mixture

    names = Manifest.load(data_root).domain_names
    spec = load_mixture(os.path.join(out_dir, "dp2", "dga_alpha_star.json"), names)
    np.testing.assert_allclose(spec.values, _alphas(ranks[0]["dp2"]).mean(axis=0), rtol=1e-12)
    with open(os.path.join(out_dir, "dp2", "dga_trajectory.json")) as fh:
        saved = json.load(fh)
    assert saved["format"] == "draw-dga-trajectory/v1" and saved["units"] == names
    assert saved["emas"] == _alphas(ranks[0]["dp2"]).tolist()
    assert spec.provenance["specific"].startswith("domain 'Domain 3' of split 'test'")
    assert spec.provenance["updates"] == STEPS // EVERY


def test_distribution_reweighting_over_a_basis(ranks, data_root, out_dir):
    """dga.basis: α lives on the N = 2 bases, batches come from P α_EMA over the 4 domains;
    the basis holding the specific set's domain is up-weighted."""
    run = ranks[0]["basis"]
    P = np.array(list(BASES.values())).T  # [k, N]
    ema = _alphas(run)
    assert ema.shape == (STEPS // EVERY, len(BASES))
    assert np.all(np.diff(ema[:, 1]) > 0) and ema[0, 1] > 0.5  # α_0 uniform over the bases
    used = np.array(run["train_alpha"])
    np.testing.assert_allclose(used[0], P @ np.full(2, 0.5), rtol=1e-12)
    for rec in run["dga"]:
        np.testing.assert_allclose(rec["weights"], P @ np.array(rec["alpha_ema"]), rtol=1e-12)
        np.testing.assert_allclose(used[rec["step"] + 1], rec["weights"], rtol=1e-12)
    with open(os.path.join(out_dir, "basis", "dga_trajectory.json")) as fh:
        saved = json.load(fh)
    assert saved["units"] == list(BASES) and len(saved["domains"]) == len(SIZES)
