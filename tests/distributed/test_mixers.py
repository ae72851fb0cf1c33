"""Mixers composed by config on CPU/gloo: online DRAW with DRO evidence (β after M steps,
windows, DP = 2 against DP = 1, exact resume, s = 0 equal to plain DRAW), the proxy DRO with
an alignment monitor (the monitor observes only, and its scores are DGA's at the same
parameters), and the ODM bandit (exact resume).

One spawn of two ranks trains a reference on the natural weights and every run; a spawn of
one rank repeats the online DRAW run for the DP comparison. Toy data as in the DRO tests:
domains 0–2 are random tokens, domain 3 arithmetic that the reference has learnt.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from draw_megatron.config.run import RunConfig
from tests.distributed.harness import fit_until_killed, run_distributed
from tests.unit.data.synthetic import make_synthetic_root

VOCAB = 384
SIZES = [30, 30, 30, 60]
RANDOM_DOMAINS = (0, 1, 2)
STEPS = 12
REDRAW = 3  # N
EVERY = 4  # M: evidence after steps 3, 7, 11
EVIDENCE = 2.0
MONITOR_EVERY = 5


def _cfg(root: str, run_dir: str, **tree) -> RunConfig:
    base = {
        "run": {"dir": run_dir, "seed": 11},
        "model": {"n_layers": 2, "n_heads": 4, "head_dim": 16, "d_model": 64, "ffn_hidden": 256,
                  "vocab_size": VOCAB, "seq_len": 16},
        "zero": {"stage": 1},
        "data": {"root": root},
        "train": {"steps": STEPS, "global_batch": 8, "micro_batch": 2, "lr": 3e-3,
                  "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0},
        "eval": {"every": 0, "sequences_per_domain": 4},
        "checkpoint": {"every": 4, "keep": 2},
        "log": {"every": 4, "tensorboard": False},
    }
    return RunConfig.from_dict({**base, **tree})


def _online_draw(root, run_dir, reference, **mixture):
    return _cfg(root, run_dir, passes=["dro_evidence"],
                mixture={"kind": "online_draw", "redraw_every": REDRAW, "evidence": EVIDENCE,
                         **mixture},
                dro_evidence={"reference": reference, "every": EVERY, "probe_batch": 4})


def _trainer(cfg: RunConfig):
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.registry import check_passes
    from draw_megatron.train.trainer import Trainer

    check_passes(cfg, Manifest.load(cfg.data.root))
    return Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp))


def _records(cfg: RunConfig) -> dict[str, list[dict]]:
    from draw_megatron.train.metrics import read_metrics

    path = os.path.join(cfg.run.dir, "metrics.jsonl")
    return {kind: read_metrics(path, kind) for kind in
            ("train", "mixture", "dro_evidence", "dro", "alignment", "odm")}


def _fit(cfg: RunConfig, kill_at: int | None = None) -> dict[str, list[dict]]:
    if kill_at is not None:
        fit_until_killed(_trainer(cfg), kill_at=kill_at)
    fit_until_killed(_trainer(cfg))
    return _records(cfg)


def _monitored_dro(cfg: RunConfig) -> tuple[dict, list[float]]:
    """The DRO proxy with the alignment monitor; at the monitor's last update, the DGA pass's
    own computation (a standalone DGA pass on the same context, its probes at the monitor's
    cursors) scores the same parameters first."""
    from draw_megatron.passes.dga import DGAConfig

    trainer = _trainer(cfg)
    monitor = trainer.passes[1]
    standalone = DGAConfig.from_dict({"eta": 1.0, **cfg.alignment_monitor.to_dict()}).build()
    standalone.setup(trainer.context)
    seen: list[float] = []
    real_after_step = monitor.after_step

    def after_step(info):
        if info.step == STEPS - 2:  # the monitor's last update (MONITOR_EVERY = 5: 0, 5, 10)
            standalone.align.load_state_dict(copy.deepcopy(monitor.align.state_dict()))
            seen.extend(standalone.align.scores(len(standalone.units))[0].tolist())
        return real_after_step(info)

    monitor.after_step = after_step
    fit_until_killed(trainer)
    standalone.close()
    return _records(cfg), seen


def _runs(rank: int, world: int, root: str, out: str) -> dict:
    reference = os.path.join(out, "reference", "model.safetensors")
    if world == 1:
        return {"od": _fit(_online_draw(root, f"{out}/od_dp1", reference))}
    _fit(_cfg(root, f"{out}/reference", train={"steps": 24, "global_batch": 8,
                                                "micro_batch": 2, "lr": 3e-3, "min_lr": 3e-4,
                                                "precision": "fp32"}))
    res = {"od": _fit(_online_draw(root, f"{out}/od", reference)),
           "od_resumed": _fit(_online_draw(root, f"{out}/od_resumed", reference), kill_at=6)}
    res["od_s0"] = _fit(_online_draw(root, f"{out}/od_s0", reference, evidence=0.0))
    prior = os.path.join(out, "prior.json")
    if rank == 0:
        from draw_megatron.mixture.files import MixtureSpec

        MixtureSpec("dirichlet", [f"Domain {d}" for d in range(len(SIZES))],
                    np.full(len(SIZES), np.sqrt(64) / len(SIZES))).save(prior)
    import torch.distributed as dist

    dist.barrier()
    res["dirichlet"] = _fit(_cfg(root, f"{out}/dirichlet",
                                 mixture={"kind": "dirichlet", "file": prior,
                                          "redraw_every": REDRAW}))
    dro = {"passes": ["dro"], "mixture": {"kind": "online"}, "dro": {"reference": reference}}
    res["dro"] = _fit(_cfg(root, f"{out}/dro", **dro))
    res["dro_monitored"], res["standalone"] = _monitored_dro(_cfg(
        root, f"{out}/dro_monitored", **{**dro, "passes": ["dro", "alignment_monitor"]},
        alignment_monitor={"specific": "val:Domain 3", "every": MONITOR_EVERY,
                           "probe_batch": 4}, data={"root": root, "eval_split": "val2"}))
    odm = {"passes": ["odm"], "mixture": {"kind": "online"}}
    res["odm"] = _fit(_cfg(root, f"{out}/odm", **odm))
    res["odm_resumed"] = _fit(_cfg(root, f"{out}/odm_resumed", **odm), kill_at=5)
    return res


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("mixers_data")), SIZES, seq_len=16,
                               vocab_size=VOCAB, splits=("train", "val", "val2"),
                               random_domains=RANDOM_DOMAINS)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mixers_runs"))


@pytest.fixture(scope="module")
def ranks(data_root, out_dir):
    return run_distributed(_runs, 2, data_root, out_dir, timeout=900)


@pytest.fixture(scope="module")
def single(ranks, data_root, out_dir):  # after `ranks`: it reads the reference trained there
    return run_distributed(_runs, 1, data_root, out_dir, timeout=600)[0]


def _alphas(records: list[dict]) -> np.ndarray:
    return np.array([r["alpha"] for r in records])


def test_beta_after_m_steps_is_the_hand_computed_update(ranks):
    run = ranks[0]["od"]
    k = len(SIZES)
    beta = np.full(k, np.sqrt(64) / k)  # the prior: no mixture.file
    alpha = beta / beta.sum()  # the evidence pass starts from the schedule's mean
    evidence = run["dro_evidence"]
    assert [r["step"] for r in evidence] == [EVERY - 1, 2 * EVERY - 1, 3 * EVERY - 1]
    by_step = {r["step"]: r for r in run["mixture"]}
    updates = [by_step[rec["step"] + 1] for rec in evidence if rec["step"] + 1 < STEPS]
    assert [m["updates"] for m in updates] == [1, 2]
    for rec, mix in zip(evidence, updates):
        # One DRO mirror step from the logged excess (η = 1, c = 1e-3), by hand.
        step = alpha * np.exp(np.array(rec["excess"]))
        alpha = 0.999 * step / step.sum() + 1e-3 / k
        np.testing.assert_allclose(rec["alpha"], alpha, rtol=1e-12)
        beta = 1.0 * beta + EVIDENCE * alpha  # ρ = 1
        np.testing.assert_allclose(mix["concentration"], beta, rtol=1e-12)
        np.testing.assert_allclose(mix["mean"], beta / beta.sum(), rtol=1e-12)
        total = beta.sum()
        np.testing.assert_allclose(mix["var"], beta * (total - beta) / (total**2 * (total + 1)),
                                   rtol=1e-12)
    # The reference learnt domain 3 and the fresh model has not: the evidence moves there.
    assert evidence[-1]["alpha"][3] == max(evidence[-1]["alpha"])
    assert updates[-1]["mean"][3] > 1 / k


def test_alpha_is_constant_within_each_window(ranks):
    used = _alphas(ranks[0]["od"]["train"])
    for start in range(0, STEPS, REDRAW):
        window = used[start:start + REDRAW]
        assert np.all(window == window[0])
    assert len({tuple(a) for a in used}) == STEPS // REDRAW
    assert ranks[0]["od"] == ranks[1]["od"]  # every rank holds rank 0's draw and the same β


def test_online_draw_does_not_depend_on_the_dp_size(ranks, single):
    dp2, dp1 = ranks[0]["od"], single["od"]
    for key in ("dro_evidence", "mixture"):
        for a, b in zip(dp2[key], dp1[key]):
            for field in ("excess", "alpha", "concentration"):
                if field in a:
                    np.testing.assert_allclose(a[field], b[field], rtol=0, atol=1e-5,
                                               err_msg=f"{key} {field} step {a['step']}")
    np.testing.assert_allclose(_alphas(dp2["train"]), _alphas(dp1["train"]), atol=1e-5)


def test_online_draw_resumes_exactly(ranks):
    full, resumed = ranks[0]["od"], ranks[0]["od_resumed"]
    assert resumed["dro_evidence"] == full["dro_evidence"]
    assert resumed["mixture"] == full["mixture"]
    assert [r["loss"] for r in resumed["train"]] == [r["loss"] for r in full["train"]]


def test_no_evidence_is_plain_draw(ranks):
    s0, plain = ranks[0]["od_s0"], ranks[0]["dirichlet"]
    assert _alphas(s0["train"]).tolist() == _alphas(plain["train"]).tolist()
    assert [r["loss"] for r in s0["train"]] == [r["loss"] for r in plain["train"]]


def test_the_monitor_observes_and_scores_as_dga(ranks):
    dro, monitored = ranks[0]["dro"], ranks[0]["dro_monitored"]
    assert monitored["dro"] == dro["dro"]  # the weights are DRO's
    assert [r["loss"] for r in monitored["train"]] == [r["loss"] for r in dro["train"]]
    records = monitored["alignment"]
    assert [r["step"] for r in records] == list(range(0, STEPS, MONITOR_EVERY))
    assert all(len(r["alignment"]) == len(SIZES) and np.isfinite(r["specific_loss"])
               for r in records)
    np.testing.assert_allclose(records[-1]["alignment"], ranks[0]["standalone"], rtol=1e-6)
    assert records[-1]["alignment"] == ranks[1]["dro_monitored"]["alignment"][-1]["alignment"]
    # The specific set is domain 3: its gradient aligns best with domain 3's.
    assert np.argmax(records[-1]["alignment"]) == 3


def test_odm_sets_the_mixture_and_resumes_exactly(ranks):
    full, resumed = ranks[0]["odm"], ranks[0]["odm_resumed"]
    assert [r["step"] for r in full["odm"]] == list(range(STEPS))
    used = _alphas(full["train"])
    np.testing.assert_allclose(used[0], 0.25)
    for rec in full["odm"][:-1]:
        np.testing.assert_allclose(used[rec["step"] + 1], rec["alpha"], rtol=1e-12)
    assert resumed["odm"] == full["odm"]
    assert [r["loss"] for r in resumed["train"]] == [r["loss"] for r in full["train"]]
