"""The proxy DRO pass on CPU/gloo (docs/algorithms.md §2): exact gradient, α dynamics, ranks agree,
frozen reference, exact resume, the α* file.

One spawn of two ranks runs everything: a reference on the natural weights, then DRO
proxies at DP = 2 (with gradient accumulation 2) and TP = 2. The toy data: domains 0–2 are
random tokens (nobody can learn them), domain 3 is arithmetic the reference has learnt and
the fresh proxy has not — the domain much harder for the proxy than for the reference.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from draw_megatron.config.run import RunConfig
from draw_megatron.passes import StepOutput, StepPass
from tests.distributed.harness import fit_until_killed, run_distributed
from tests.unit.data.synthetic import make_synthetic_root

VOCAB = 384
SIZES = [30, 30, 30, 60]
RANDOM_DOMAINS = (0, 1, 2)
HARD = 3
STEPS = 8
GRAD_STAGES = (0, 1, 2, 3)  # ZeRO stages of the gradient check


class MicroCounter(StepPass):
    """A pass that only observes (does not own the loss): counts micro-batches per step."""

    name = "counter"

    def __init__(self):
        self.micro = 0

    def micro_loss(self, loss_BT, micro):
        self.micro += 1
        return None

    def after_step(self, info):
        return StepOutput([{"kind": "counter", "step": info.step, "micro": self.micro}])

    def state_dict(self):
        return {"micro": self.micro}

    def load_state_dict(self, state):
        self.micro = state["micro"]


def _cfg(root: str, run_dir: str, *, reference: str | None = None, **over) -> RunConfig:
    tree = {
        "run": {"dir": run_dir, "seed": 11},
        "model": {"n_layers": 2, "n_heads": 4, "head_dim": 16, "d_model": 64, "ffn_hidden": 256,
                  "vocab_size": VOCAB, "seq_len": 16},
        "parallel": {"tp": over.pop("tp", 1)},
        "zero": {"stage": over.pop("stage", 1)},
        "data": {"root": root},
        "mixture": {"kind": "online" if reference else "natural"},
        "train": {"steps": over.pop("steps", STEPS), "global_batch": 8, "micro_batch": 2,
                  "lr": 3e-3, "min_lr": 3e-4, "precision": "fp32", "grad_clip": 1.0},
        "eval": {"every": 4, "sequences_per_domain": 4},
        "checkpoint": {"every": 4, "keep": 2},
        "dro": {"reference": reference},
        "log": {"every": 4, "tensorboard": False},
    }
    assert not over, over
    return RunConfig.from_dict(tree)


def _build(cfg: RunConfig, dro: bool, passes=()):
    from draw_megatron.engine.deepspeed_engine import init_distributed
    from draw_megatron.parallel import ParallelTopology
    from draw_megatron.passes.dro import DROPass
    from draw_megatron.train.trainer import Trainer

    passes = [DROPass(cfg.dro)] if dro else list(passes)
    return Trainer(cfg, init_distributed(), ParallelTopology.from_dist(cfg.parallel.tp), passes)


def _records(cfg: RunConfig, kind: str) -> list[dict]:
    from draw_megatron.train.metrics import read_metrics

    return read_metrics(os.path.join(cfg.run.dir, "metrics.jsonl"), kind)


def _losses(cfg: RunConfig) -> list[float]:
    return [r["loss"] for r in _records(cfg, "train")]


def _capture_accumulated_grads(trainer) -> dict[str, np.ndarray]:
    """Full gradients of the first step, as DeepSpeed holds them (accumulated over the
    micro-batches, averaged over DP) just before the optimizer step (and clipping)."""
    from deepspeed.utils import safe_get_full_grad

    engine, captured = trainer.engine, {}
    real_step = engine.step

    def step(*args, **kwargs):
        if not captured and engine.is_gradient_accumulation_boundary():
            captured.update({name: safe_get_full_grad(p).detach().clone().numpy()
                             for name, p in engine.module.named_parameters()})
        return real_step(*args, **kwargs)

    engine.step = step
    return captured


def _dro_result(trainer, cfg: RunConfig) -> dict:
    from draw_megatron.model import full_state_dict, load_consolidated
    from draw_megatron.train.metrics import read_metrics

    dro = trainer.passes[0]
    on_file, _ = load_consolidated(cfg.dro.reference_file)
    now = full_state_dict(dro.reference, trainer.topology)
    path = os.path.join(cfg.run.dir, "metrics.jsonl")
    return {
        "alpha_init": dro.state.alpha_init.tolist(),
        "trajectory": [a.tolist() for a in dro.state.trajectory],
        "loss": [r["loss"] for r in read_metrics(path, "train")],
        "domain_loss": [r["domain_loss"] for r in read_metrics(path, "train")],
        "train_alpha": [r["alpha"] for r in read_metrics(path, "train")],
        "dro": read_metrics(path, "dro"),
        "reference_unchanged": now.keys() == on_file.keys()
        and all(torch.equal(now[k], on_file[k]) for k in on_file),
        "reference_frozen": not dro.reference.training
        and not any(p.requires_grad for p in dro.reference.parameters()),
    }


def _world2(rank, world, root, out):
    ref_cfg = _cfg(root, f"{out}/reference", steps=24)
    fit_until_killed(_build(ref_cfg, dro=False))
    reference = f"{out}/reference/model.safetensors"
    res = {"reference_loss": _losses(ref_cfg)}
    # A pass that does not own the loss leaves the step's maths alone.
    observed = _cfg(root, f"{out}/observed", steps=24)
    fit_until_killed(_build(observed, dro=False, passes=[MicroCounter()]), kill_at=3)
    res["observed_loss"], res["observed_records"] = _losses(observed), _records(observed, "counter")
    for stage in GRAD_STAGES:  # one DRO step, gradients captured before the optimizer step
        cfg = _cfg(root, f"{out}/grad_zero{stage}", reference=reference, stage=stage, steps=1)
        trainer = _build(cfg, dro=True)
        grads = _capture_accumulated_grads(trainer)
        fit_until_killed(trainer)
        res[f"grad_zero{stage}"] = {"grads": grads,
                                    "alpha_init": trainer.passes[0].state.alpha_init}
    cfg = _cfg(root, f"{out}/dp2", reference=reference)
    trainer = _build(cfg, dro=True)
    fit_until_killed(trainer)
    res["dp2"] = _dro_result(trainer, cfg)
    # Killed after the step-4 checkpoint, restarted with the same command.
    cfg = _cfg(root, f"{out}/resumed", reference=reference)
    fit_until_killed(_build(cfg, dro=True), kill_at=6)
    trainer = _build(cfg, dro=True)
    fit_until_killed(trainer)
    res["resumed"] = _dro_result(trainer, cfg)
    cfg = _cfg(root, f"{out}/uniform_init", reference=reference)
    cfg.dro.init = "uniform"  # DoReMi's own start
    trainer = _build(cfg, dro=True)
    fit_until_killed(trainer)
    res["uniform_init"] = _dro_result(trainer, cfg)
    cfg = _cfg(root, f"{out}/tp2", reference=reference, tp=2)
    trainer = _build(cfg, dro=True)
    fit_until_killed(trainer)
    res["tp2"] = _dro_result(trainer, cfg)
    return res


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthetic_root(str(tmp_path_factory.mktemp("dro_data")), SIZES, seq_len=16,
                               vocab_size=VOCAB, splits=("train", "val"),
                               random_domains=RANDOM_DOMAINS)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dro_runs"))


@pytest.fixture(scope="module")
def ranks(data_root, out_dir):
    return run_distributed(_world2, 2, data_root, out_dir, timeout=900)


def _single_process_grads(root: str, alpha: np.ndarray, weighted: bool) -> dict[str, np.ndarray]:
    """∇ Σ_i α_i L_i (or ∇ of the plain token mean) on the whole first global batch, in this
    one process at TP = 1 (the proxy's seeded initialisation is the same at any layout)."""
    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.schedule import StaticSchedule
    from draw_megatron.model import GPT
    from draw_megatron.parallel import ParallelTopology

    cfg = _cfg(root, "unused", reference="unused")
    model = GPT(cfg.model, ParallelTopology.single(), seed=cfg.run.seed)
    data = DomainData(Manifest.load(root), "train")
    try:
        k = data.num_domains
        loader = MixtureLoader(data, StaticSchedule(np.full(k, 1 / k)), cfg.train.global_batch,
                               cfg.run.seed, stratified=True)
        batch = loader.next_batch()
    finally:
        data.close()
    loss_BT = model(batch.tokens, batch.labels)
    if weighted:
        sums = torch.zeros(k).index_add(0, batch.domain_ids, loss_BT.sum(dim=1))
        counts = torch.zeros(k).index_add(0, batch.domain_ids,
                                          torch.full((len(batch.domain_ids),), 16.0))
        objective = (torch.from_numpy(alpha).float() * sums / counts).sum()
    else:
        objective = loss_BT.mean()
    objective.backward()
    return {name: p.grad.numpy() for name, p in model.named_parameters()}


def _flat(grads: dict[str, np.ndarray], names) -> np.ndarray:
    return np.concatenate([grads[n].astype(np.float64).ravel() for n in names])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("stage", GRAD_STAGES)
def test_gradient_is_exactly_that_of_the_alpha_weighted_objective(ranks, data_root, stage):
    """DP = 2 × accumulation 2: DeepSpeed's averaged gradient equals ∇ Σ_i α_i L_i computed in
    one process on the whole global batch."""
    got = ranks[0][f"grad_zero{stage}"]
    names = sorted(got["grads"])
    want = _single_process_grads(data_root, got["alpha_init"], weighted=True)
    plain = _single_process_grads(data_root, got["alpha_init"], weighted=False)
    assert _rel(_flat(got["grads"], names), _flat(want, names)) <= 1e-5
    for name in names:
        assert np.allclose(got["grads"][name], want[name], rtol=1e-4, atol=1e-7), name
    # The observable is sensitive: the unweighted mean's gradient is far from it.
    assert _rel(_flat(plain, names), _flat(want, names)) > 1e-2
    assert np.array_equal(ranks[1][f"grad_zero{stage}"]["alpha_init"], got["alpha_init"])


def test_an_observing_pass_changes_nothing(ranks):
    res = ranks[0]
    assert res["observed_loss"] == res["reference_loss"][:3]  # bitwise
    # DP = 2, global batch 8, micro 2: two micro-batches per rank and step.
    assert [(r["step"], r["micro"]) for r in res["observed_records"]] == [(0, 2), (1, 4), (2, 6)]


def test_alpha_moves_toward_the_domain_the_reference_learnt(ranks):
    run = ranks[0]["dp2"]
    alpha0, trajectory = np.array(run["alpha_init"]), np.array(run["trajectory"])
    excess = np.array([r["excess"] for r in run["dro"]])
    assert excess.shape == (STEPS, len(SIZES))
    # The proxy is far worse than the reference on the learnt domain, not on the noise.
    assert np.all(excess[:, HARD] > excess[:, list(RANDOM_DOMAINS)].max(axis=1))
    assert trajectory[0, HARD] > alpha0[HARD]
    assert np.all(np.diff(trajectory[:, HARD]) > 0)
    assert trajectory[-1, HARD] > 0.9
    for d in RANDOM_DOMAINS:
        assert trajectory[-1, d] < alpha0[d]


def test_alpha_is_identical_on_all_ranks(ranks):
    for name in ("dp2", "tp2", "resumed"):
        assert ranks[0][name]["alpha_init"] == ranks[1][name]["alpha_init"], name
        assert ranks[0][name]["trajectory"] == ranks[1][name]["trajectory"], name
        assert len(ranks[0][name]["trajectory"]) == STEPS
    # TP = 2 (accumulation 4) follows the same trajectory as DP = 2 up to float round-off.
    np.testing.assert_allclose(ranks[0]["tp2"]["trajectory"], ranks[0]["dp2"]["trajectory"],
                               rtol=1e-4, atol=1e-7)


def test_reference_is_frozen_and_never_updated(ranks):
    for res in ranks:
        for name in ("dp2", "tp2", "resumed"):
            assert res[name]["reference_unchanged"] and res[name]["reference_frozen"], name


def test_resume_reproduces_alpha_and_losses(ranks):
    full, resumed = ranks[0]["dp2"], ranks[0]["resumed"]
    assert resumed["dro"] == full["dro"]  # excess, alpha and objective, bitwise
    assert resumed["loss"] == full["loss"]
    assert resumed["trajectory"] == full["trajectory"]


def test_records_and_train_alpha(ranks):
    run = ranks[0]["dp2"]
    assert [r["step"] for r in run["dro"]] == list(range(STEPS))
    assert all(set(r) == {"kind", "step", "excess", "alpha", "objective"} for r in run["dro"])
    assert [r["alpha"] for r in run["dro"]] == run["trajectory"]
    # Step t's train record shows the weights its loss used: α_{t−1} (α_0 at step 0).
    used = [run["alpha_init"], *run["trajectory"][:-1]]
    np.testing.assert_allclose(run["train_alpha"], used, rtol=1e-12)


def test_alpha_star_file_is_the_trajectory_mean(ranks, data_root, out_dir):
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.files import load_mixture

    names = Manifest.load(data_root).domain_names
    spec = load_mixture(os.path.join(out_dir, "dp2", "alpha_star.json"), names)
    with open(os.path.join(out_dir, "dp2", "dro_trajectory.json")) as fh:
        saved = json.load(fh)
    trajectory = np.array(ranks[0]["dp2"]["trajectory"])
    assert spec.kind == "static" and saved["trajectory"] == trajectory.tolist()
    np.testing.assert_allclose(spec.values, trajectory.mean(axis=0), rtol=1e-12, atol=1e-15)
    assert saved["alpha_star"] == spec.values.tolist()
    prov = spec.provenance
    assert prov["reference"].endswith("reference/model.safetensors")
    assert (prov["n1"], prov["k"], prov["eta"], prov["smoothing"], prov["steps"]) == \
        (64, len(SIZES), 1.0, 1e-3, STEPS)
    assert prov["run_dir"] == os.path.abspath(os.path.join(out_dir, "dp2"))
    np.testing.assert_allclose(prov["prior"], np.full(len(SIZES), 8 / len(SIZES)))
    # The resumed run wrote the same α*.
    again = load_mixture(os.path.join(out_dir, "resumed", "alpha_star.json"), names)
    assert again.values.tolist() == spec.values.tolist()


def _step0_excess(root: str, reference: str) -> tuple[np.ndarray, np.ndarray]:
    """Step 0's per-domain clipped excess, recomputed in this one process: the proxy at its
    seeded initialisation (the same at any layout) and the reference on the whole first
    stratified global batch."""
    from draw_megatron.data.domains import DomainData
    from draw_megatron.data.loader import MixtureLoader
    from draw_megatron.data.manifest import Manifest
    from draw_megatron.mixture.schedule import StaticSchedule
    from draw_megatron.model import GPT, load_consolidated_into
    from draw_megatron.parallel import ParallelTopology

    cfg = _cfg(root, "unused", reference="unused")
    topology = ParallelTopology.single()
    proxy = GPT(cfg.model, topology, seed=cfg.run.seed)
    ref = GPT(cfg.model, topology, seed=cfg.run.seed)
    load_consolidated_into(reference, ref, topology)
    data = DomainData(Manifest.load(root), "train")
    try:
        k = data.num_domains
        batch = MixtureLoader(data, StaticSchedule(np.full(k, 1 / k)), cfg.train.global_batch,
                              cfg.run.seed, stratified=True).next_batch()
        with torch.no_grad():
            gap = (proxy(batch.tokens, batch.labels) - ref(batch.tokens, batch.labels)).double()
        ids = batch.domain_ids.numpy()
        counts = np.bincount(ids, minlength=k) * gap.shape[1]
        clipped, unclipped = (np.bincount(ids, weights=g.sum(dim=1).numpy(), minlength=k) / counts
                              for g in (gap.clamp_min(0), gap))
        return clipped, unclipped
    finally:
        data.close()


def test_dro_records_replay_independently(ranks, data_root, out_dir):
    """The logged numbers against an independent computation: step 0's clipped excess from
    the two models' losses (clipped per token: the unclipped mean differs); every α_t = the update rule (η = 1, c = 1e-3) applied to α_{t−1}
    and step t's excess; every objective = α_{t−1} · step t's per-domain losses."""
    run = ranks[0]["dp2"]
    records = run["dro"]
    excess0, unclipped = _step0_excess(data_root,
                                       os.path.join(out_dir, "reference", "model.safetensors"))
    np.testing.assert_allclose(records[0]["excess"], excess0, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(unclipped - excess0)) > 1e-3  # the data makes clipping matter
    k = len(SIZES)
    alpha = np.array(run["alpha_init"])
    for rec, domain_loss in zip(records, run["domain_loss"]):
        assert rec["objective"] == pytest.approx(float(np.dot(alpha, domain_loss)), rel=1e-12)
        tilted = alpha * np.exp(1.0 * np.array(rec["excess"]))
        alpha = (1 - 1e-3) * tilted / tilted.sum() + 1e-3 / k
        np.testing.assert_allclose(rec["alpha"], alpha, rtol=1e-12)


def test_doremi_starts_from_uniform_and_ends_elsewhere(ranks):
    """dro.init=uniform: α_0 = 1/k (DoReMi), and its α* differs from the prior-drawn start's."""
    uniform, prior = ranks[0]["uniform_init"], ranks[0]["dp2"]
    np.testing.assert_allclose(uniform["alpha_init"], 1 / len(SIZES))
    assert not np.allclose(prior["alpha_init"], 1 / len(SIZES))
    a, b = np.mean(uniform["trajectory"], axis=0), np.mean(prior["trajectory"], axis=0)
    assert np.abs(a - b).sum() > 1e-3
