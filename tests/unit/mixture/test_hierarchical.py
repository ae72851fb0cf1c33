"""Hierarchical Dirichlet priors: reduction to flat DRAW, exact moments, posterior per level,
groups files, mixture files and the schedule."""

import json
import os

import numpy as np
import pytest

from draw_megatron.mixture.draw import dirichlet_moments, draw_posterior, prior_concentration
from draw_megatron.mixture.files import MixtureFileError, load_mixture
from draw_megatron.mixture.hierarchical import (
    DomainGroups,
    GroupsFileError,
    HierarchicalDirichlet,
    HierarchicalDirichletSchedule,
    groups_from_mapping,
    hierarchical_posterior,
    hierarchical_prior,
    load_groups,
    load_hierarchical,
)
from draw_megatron.mixture.schedule import DirichletSchedule

NAMES = ["A", "B", "C", "D", "E"]
ALPHA_STAR = [0.4, 0.3, 0.2, 0.1, 0.0]
# Worked example: groups x = {A, C}, y = {B, D, E}; n1 = 256 (√n1 = 16), n2 = 1024 (×2).
TWO = {"x": ["A", "C"], "y": ["B", "D", "E"]}


def _groups(mapping=TWO, names=NAMES) -> DomainGroups:
    return groups_from_mapping(mapping, names, "test")


def _one_group(names=NAMES) -> DomainGroups:
    return _groups({"all": list(names)}, names)


# --------------------------------------------------------------------------- one group = flat


def test_one_group_prior_posterior_and_moments_are_flat():
    groups = _one_group()
    np.testing.assert_array_equal(hierarchical_prior(groups, 256).concentration,
                                  prior_concentration(5, 256))
    hier = hierarchical_posterior(ALPHA_STAR, groups, 256, 1024, evidence=3.0)
    flat = draw_posterior(ALPHA_STAR, 256, 1024, evidence=3.0)
    np.testing.assert_allclose(hier.main.concentration, flat.main, rtol=1e-15)
    np.testing.assert_allclose(hier.main.mean(), flat.mean, rtol=1e-15)
    np.testing.assert_allclose(hier.main.var(), flat.var, rtol=1e-15)


@pytest.mark.parametrize("beta", [[0.5, 1.0, 2.0, 4.0, 8.0], [0.05, 0.02, 0.08, 0.01, 0.03]])
def test_one_group_draws_are_the_flat_dirichlet_bit_for_bit(beta):
    # The second β takes numpy's small-concentration algorithm: still the same stream.
    spec = HierarchicalDirichlet(_one_group(), [7.0], beta)
    for seed in range(5):
        rng_h, rng_f = np.random.default_rng(seed), np.random.default_rng(seed)
        np.testing.assert_array_equal(spec.draw(rng_h), rng_f.dirichlet(beta))
        np.testing.assert_array_equal(spec.sample(rng_h, 50), rng_f.dirichlet(beta, 50))
    mean, var = dirichlet_moments(beta)
    np.testing.assert_array_equal(spec.mean(), mean)
    np.testing.assert_array_equal(spec.var(), var)


def test_one_group_schedule_is_the_dirichlet_schedule():
    beta = [0.5, 1.0, 2.0, 4.0, 8.0]
    hier = HierarchicalDirichletSchedule(HierarchicalDirichlet(_one_group(), [3.0], beta),
                                         redraw_every=3, seed=11)
    flat = DirichletSchedule(beta, redraw_every=3, seed=11)
    for step in range(20):
        np.testing.assert_array_equal(hier.weights(step), flat.weights(step))


def test_aggregation_property_groups_summing_beta_are_the_flat_dirichlet():
    # Dir(β) has group sums ~ Dir(Σ_g β) independent of the compositions: the moments of the
    # hierarchy with γ_g = Σ_{i∈g} β_i must be the flat Dirichlet's, covariance included.
    beta = np.array([1.5, 0.7, 2.0, 3.1, 0.4])
    groups = _groups()
    spec = HierarchicalDirichlet(groups, np.bincount(groups.group_of, weights=beta), beta)
    mean, var = dirichlet_moments(beta)
    total = beta.sum()
    flat_cov = (np.diag(beta) * total - np.outer(beta, beta)) / (total**2 * (total + 1))
    np.testing.assert_allclose(spec.mean(), mean, rtol=1e-13)
    np.testing.assert_allclose(spec.var(), var, rtol=1e-13)
    np.testing.assert_allclose(spec.cov(), flat_cov, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- exact moments


def test_exact_moments_match_monte_carlo_within_standard_errors():
    spec = HierarchicalDirichlet(_groups(), [2.0, 0.8], [1.0, 3.0, 0.5, 1.5, 0.3])
    n = 100_000
    x_NK = spec.sample(np.random.default_rng(2024), n)
    np.testing.assert_allclose(x_NK.sum(axis=1), 1.0, rtol=1e-12)
    centred = x_NK - spec.mean()
    # Each estimate is within 5 standard errors (SE from the same draws).
    se_mean = x_NK.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(x_NK.mean(axis=0) - spec.mean()) < 5 * se_mean)
    sq = centred**2
    se_var = sq.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(sq.mean(axis=0) - spec.var()) < 5 * se_var)
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(products.mean(axis=0) - spec.cov()) < 5 * se_cov)
    np.testing.assert_array_equal(np.diag(spec.cov()), spec.var())


def test_summary_says_what_is_exact_and_what_is_monte_carlo():
    spec = HierarchicalDirichlet(_groups(), [2.0, 0.8], [1.0, 3.0, 0.5, 1.5, 0.3])
    s = spec.summary(num_draws=20_000, seed=5)
    assert s.method["mean"] == s.method["var"] == s.method["cov"] == "exact"
    assert s.method["quantiles"] == "Monte Carlo (20000 draws, seed 5)"
    assert s.quantiles.shape == (2, 5) and np.all(s.quantiles[0] < s.mean)
    np.testing.assert_array_equal(s.quantiles, spec.summary(num_draws=20_000, seed=5).quantiles)
    draws = spec.sample(np.random.default_rng(5), 20_000)
    np.testing.assert_array_equal(s.quantiles, np.quantile(draws, [0.05, 0.95], axis=0))
    np.testing.assert_allclose(s.group_mean, [2.0 / 2.8, 0.8 / 2.8])


# --------------------------------------------------------------------------- posterior


def test_posterior_and_scaling_per_level_by_hand():
    post = hierarchical_posterior(ALPHA_STAR, _groups(), 256, 1024)
    # prior: γ1 = (16/2)·1; β_x1 = (16/2)·1, β_y1 = (16/3)·1
    np.testing.assert_allclose(post.prior.group_concentration, [8, 8])
    np.testing.assert_allclose(post.prior.concentration, [8, 16 / 3, 8, 16 / 3, 16 / 3])
    # A = (0.4 + 0.2, 0.3 + 0.1 + 0) = (0.6, 0.4)
    np.testing.assert_allclose(post.group_mass, [0.6, 0.4])
    np.testing.assert_allclose(post.posterior.group_concentration, [8.6, 8.4])
    # within x: + (0.4, 0.2)/0.6; within y: + (0.3, 0.1, 0)/0.4
    np.testing.assert_allclose(post.posterior.concentration,
                               [8 + 2 / 3, 16 / 3 + 0.75, 8 + 1 / 3, 16 / 3 + 0.25, 16 / 3])
    np.testing.assert_allclose(post.main.group_concentration, [17.2, 16.8])
    np.testing.assert_allclose(post.main.concentration,
                               2 * post.posterior.concentration, rtol=1e-15)
    # E[α_A] = E[w_x]·E[v_A] = (17.2/34)·((52/3)/34)
    assert post.main.mean()[0] == pytest.approx(17.2 / 34 * (52 / 3) / 34, rel=1e-13)


def test_a_group_without_proxy_mass_keeps_its_prior_split():
    post = hierarchical_posterior([0.5, 0.0, 0.5, 0.0, 0.0], _groups(), 256, 256, evidence=4.0)
    np.testing.assert_allclose(post.posterior.group_concentration, [8 + 4, 8])
    np.testing.assert_allclose(post.posterior.concentration, [10, 16 / 3, 10, 16 / 3, 16 / 3])


def test_posterior_validation():
    with pytest.raises(ValueError, match="simplex"):
        hierarchical_posterior([0.5, 0.5, 0.5, 0, 0], _groups(), 256, 1024)
    with pytest.raises(ValueError, match="k=5"):
        hierarchical_posterior([0.5, 0.5], _groups(), 256, 1024)
    with pytest.raises(ValueError, match="evidence"):
        hierarchical_posterior(ALPHA_STAR, _groups(), 256, 1024, evidence=0)


# --------------------------------------------------------------------------- groups files


MANIFEST = ["Pile-CC", "Github", "ArXiv", "StackExchange", "Wikipedia (en)"]


def _groups_file(tmp_path, obj) -> str:
    path = tmp_path / "groups.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def test_load_groups_keeps_file_order_of_groups_and_manifest_order_of_domains(tmp_path):
    path = _groups_file(tmp_path, {"format": "draw-groups/v1", "groups": {
        "web": ["Wikipedia (en)", "Pile-CC"], "code": ["StackExchange", "Github"],
        "academic": ["ArXiv"]}})
    groups = load_groups(path, MANIFEST)
    assert groups.names == ("web", "code", "academic") and groups.domains == tuple(MANIFEST)
    assert groups.group_of.tolist() == [0, 1, 2, 1, 0]
    assert groups.members(0).tolist() == [0, 4] and groups.sizes().tolist() == [2, 2, 1]


def _mapping(**groups):
    return {"format": "draw-groups/v1", "groups": groups}


GOOD = {"web": ["Pile-CC", "Wikipedia (en)"], "code": ["Github", "StackExchange"],
        "academic": ["ArXiv"]}


@pytest.mark.parametrize("obj, message", [
    (_mapping(web=["Pile-CC", "Wikipedia (en)"], code=["Github", "StackExchange"]),
     r"domain\(s\) \['ArXiv'\] are in no group"),
    (_mapping(**GOOD | {"code": ["Github", "StackExchange", "Pile-CC"]}),
     "domain 'Pile-CC' is in two groups, 'web' and 'code'"),
    (_mapping(**GOOD | {"code": ["Github", "StackExchange", "Github"]}),
     "domain 'Github' is listed twice in group 'code'"),
    (_mapping(**GOOD | {"code": ["Gitub", "StackExchange"]}),
     "unknown domain 'Gitub' \\(did you mean 'Github'\\?\\)"),
    (_mapping(**GOOD | {"misc": ["Enron Emails"]}), "unknown domain 'Enron Emails'"),
    (_mapping(**GOOD | {"misc": []}), "group 'misc' is empty"),
    (_mapping(**GOOD | {"misc": "ArXiv"}), "group 'misc' must be a list"),
    (_mapping(), "must be a non-empty object"),
    ({"format": "draw-groups/v2", "groups": GOOD}, "format is 'draw-groups/v2'"),
    ({"groups": GOOD}, "format is None"),
    ({"format": "draw-groups/v1"}, "missing required key 'groups'"),
    ([1, 2], "format is 'list'"),
    ('{"format": "draw-groups/v1", "groups": {"web": ["Pile-CC"], "web": ["ArXiv"]}}',
     r"key\(s\) \['web'\] appear more than once"),
    ('{"format": "draw-groups/v1", "groups": {', "cannot read groups file"),
])
def test_bad_groups_files_are_named_errors(tmp_path, obj, message):
    with pytest.raises(GroupsFileError, match=message) as exc:
        load_groups(_groups_file(tmp_path, obj), MANIFEST)
    assert isinstance(exc.value, ValueError) and "\n" not in str(exc.value)


def test_missing_groups_file(tmp_path):
    with pytest.raises(GroupsFileError, match="does not exist"):
        load_groups(str(tmp_path / "nope.json"), MANIFEST)


# --------------------------------------------------------------------------- mixture files


def _main_spec() -> HierarchicalDirichlet:
    main = hierarchical_posterior(ALPHA_STAR, _groups(), 256, 1024).main
    return HierarchicalDirichlet(main.groups, main.group_concentration, main.concentration,
                                 {"mean": main.mean().tolist()}, {"n1": 256, "n2": 1024})


def test_mixture_file_round_trip_and_reorder(tmp_path):
    spec = _main_spec()
    path = str(tmp_path / "out" / "hier.json")
    spec.save(path)
    assert os.listdir(tmp_path / "out") == ["hier.json"]  # no temporary left behind
    raw = json.loads(open(path).read())
    assert raw["kind"] == "hierarchical_dirichlet" and raw["format"] == "draw-mixture/v1"
    assert raw["groups"][1] == {"name": "y", "domains": ["B", "D", "E"],
                                "concentration": spec.concentration[[1, 3, 4]].tolist()}
    order = ["E", "D", "C", "B", "A"]
    loaded = load_hierarchical(path, order)
    assert loaded.domains == order and loaded.groups.names == ("x", "y")
    np.testing.assert_array_equal(loaded.concentration, spec.concentration[::-1])
    np.testing.assert_array_equal(loaded.group_concentration, spec.group_concentration)
    np.testing.assert_array_equal(loaded.mean(), spec.mean()[::-1])
    np.testing.assert_allclose(loaded.stats["mean"], spec.mean()[::-1])
    assert loaded.provenance == {"n1": 256, "n2": 1024}
    via_dispatch = load_mixture(path, order)  # files.load_mixture hands the kind over
    assert via_dispatch.kind == "hierarchical_dirichlet"
    np.testing.assert_array_equal(via_dispatch.concentration, loaded.concentration)


def _bad_file(tmp_path, edit) -> str:
    raw = _main_spec().to_dict()
    edit(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _set(key, value):
    return lambda raw: raw.__setitem__(key, value)


def _set_group(g, key, value):
    return lambda raw: raw["groups"][g].__setitem__(key, value)


@pytest.mark.parametrize("edit, message", [
    (_set_group(0, "concentration", [1.0, 0.0]), "concentration of 'C' is 0.0"),
    (_set_group(1, "concentration", [1.0, float("inf"), 1.0]), "'D' is inf"),
    (_set_group(1, "concentration", [1.0, 2.0]), "group 'y' needs 'domains' and as many"),
    (_set_group(0, "concentration", [1.0, "x"]), "concentration of 'C' must be a number"),
    (_set_group(0, "domains", ["A", "B"]), "'B' is in two groups, 'x' and 'y'"),
    (_set_group(0, "domains", ["A", "Q"]), "unknown domain 'Q'"),
    (_set_group(1, "name", "x"), "group name 'x' is missing, not a string or repeated"),
    (_set("group_concentration", [1.0]), "2 groups but 1 group concentrations"),
    (_set("group_concentration", [1.0, float("nan")]), "group concentration of 'y' is nan"),
    (_set("group_concentration", 3.0), "must be a list of numbers"),
    (_set("groups", {"x": ["A"]}), "'groups' must be a list of objects"),
    (lambda raw: raw.pop("group_concentration"), "needs key 'group_concentration'"),
    (_set("stats", {"mean": [0.2]}), "stats 'mean' must be a list of 5 numbers"),
])
def test_bad_mixture_files_name_the_problem(tmp_path, edit, message):
    with pytest.raises(MixtureFileError, match=message):
        load_hierarchical(_bad_file(tmp_path, edit), NAMES)


def test_mixture_file_must_match_the_data(tmp_path):
    path = str(tmp_path / "hier.json")
    _main_spec().save(path)
    with pytest.raises(MixtureFileError, match=r"missing domain\(s\) \['F'\]"):
        load_mixture(path, NAMES[:4] + ["F"])
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"format": "draw-mixture/v1", "domains": NAMES,
                                "kind": "dirichlet", "concentration": [1.0] * 5}))
    with pytest.raises(MixtureFileError, match="expected 'hierarchical_dirichlet'"):
        load_hierarchical(str(flat))


# --------------------------------------------------------------------------- schedule


def _schedule(**kw) -> HierarchicalDirichletSchedule:
    return HierarchicalDirichletSchedule(_main_spec(), kw.pop("redraw_every", 5),
                                         kw.pop("seed", 3), **kw)


def test_schedule_redraws_exactly_every_n_steps():
    sched = _schedule()
    assert sched.kind == "hierarchical_dirichlet" and sched.num_domains == 5
    alphas = [sched.weights(t).copy() for t in range(23)]
    for t in range(1, 23):
        assert np.array_equal(alphas[t], alphas[t - 1]) == (t % 5 != 0), t
        assert sched.changes_at(t) == (t % 5 == 0)
    for a in alphas:
        assert abs(a.sum() - 1) < 1e-12 and np.all(a >= 0)
    # the draw depends on (seed, window) only
    np.testing.assert_array_equal(_schedule().weights(37), _schedule(redraw_every=10).weights(75))
    assert not np.array_equal(_schedule().weights(37), _schedule(seed=4).weights(37))


def test_schedule_state_round_trip_and_broadcast():
    sent = []

    def broadcast(alpha):
        sent.append(alpha.copy())
        return np.array([0.1, 0.2, 0.3, 0.2, 0.2])  # what rank 0 would have sent

    sched = _schedule(broadcast=broadcast, is_source=False)
    assert sched.weights(0).tolist() == [0.1, 0.2, 0.3, 0.2, 0.2]
    assert sent[0].tolist() == [0.0] * 5  # a non-source rank sends nothing of its own
    sched.weights(4)
    assert len(sent) == 1  # same window: no broadcast
    source = _schedule(broadcast=broadcast)
    source.weights(0)
    np.testing.assert_array_equal(sent[1], _schedule().weights(0))  # the source's own draw
    again = _schedule()
    again.load_state_dict(sched.state_dict())
    assert again.weights(3).tolist() == [0.1, 0.2, 0.3, 0.2, 0.2]  # resumed mid-window
    with pytest.raises(ValueError, match="'dirichlet' mixture schedule"):
        again.load_state_dict(DirichletSchedule([1.0] * 5, 5, 3).state_dict())


def test_domain_groups_check_their_partition():
    with pytest.raises(GroupsFileError, match=r"group\(s\) \['z'\] have no domains"):
        DomainGroups(("x", "y", "z"), ("A", "B"), np.array([0, 1]))
    with pytest.raises(GroupsFileError, match="a group index in"):
        DomainGroups(("x",), ("A", "B"), np.array([0, 1]))


def test_schedule_fits_the_protocol_and_the_kinds_registry(tmp_path):
    from draw_megatron.mixture.kinds import ScheduleInputs, build_schedule
    from draw_megatron.mixture.schedule import Schedule

    path = str(tmp_path / "hier.json")
    _main_spec().save(path)
    order = ["E", "D", "C", "B", "A"]
    inputs = ScheduleInputs(domain_names=order, natural_weights=np.full(5, 0.2), file=path,
                            redraw_every=4, seed=3)
    sched = build_schedule("hierarchical_dirichlet", inputs)
    assert isinstance(sched, Schedule) and not sched.accepts_updates and sched.record() == {}
    np.testing.assert_allclose(sched.expected_weights(), _main_spec().mean()[::-1], rtol=1e-15)
    assert sched.weights(0).shape == (5,) and abs(sched.weights(0).sum() - 1) < 1e-12
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"format": "draw-mixture/v1", "domains": NAMES,
                                "kind": "dirichlet", "concentration": [1.0] * 5}))
    with pytest.raises(MixtureFileError, match="expected 'hierarchical_dirichlet'"):
        build_schedule("hierarchical_dirichlet",
                       ScheduleInputs(NAMES, np.full(5, 0.2), file=str(flat)))
