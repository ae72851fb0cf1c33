import json

import numpy as np
import pytest

from draw_megatron.mixture.basis import BASIS_FORMAT, BasisSpec, load_basis
from draw_megatron.mixture.files import MixtureFileError

NAMES = ["c0", "c1", "c2"]


def _write(tmp_path, obj):
    path = tmp_path / "basis.json"
    path.write_text(json.dumps(obj))
    return str(path)


def _basis(rows, domains=NAMES, names=None):
    names = names or [f"b{j}" for j in range(len(rows))]
    return {"format": BASIS_FORMAT, "domains": domains,
            "bases": [{"name": n, "weights": r} for n, r in zip(names, rows)]}


def test_round_trip_matrix_and_reorder_to_manifest_order(tmp_path):
    spec = BasisSpec(["c2", "c0", "c1"], ["Wiki", "Code"],
                     [[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]], provenance={"k": 3})
    path = str(tmp_path / "b.json")
    spec.save(path)
    loaded = load_basis(path, NAMES)
    assert loaded.domains == NAMES and loaded.names == ["Wiki", "Code"]
    np.testing.assert_array_equal(loaded.weights, [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    assert loaded.matrix.shape == (3, 2)  # P in R^{k x N}: columns are the bases
    np.testing.assert_array_equal(loaded.matrix[:, 0], [0.25, 0.25, 0.5])
    assert loaded.provenance == {"k": 3}
    unordered = load_basis(path)
    assert unordered.domains == ["c2", "c0", "c1"]


def test_mix_of_bases_is_a_mixture():
    spec = BasisSpec(NAMES, ["a", "b"], [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    alpha_domain = spec.matrix @ np.array([0.25, 0.75])
    np.testing.assert_allclose(alpha_domain, [0.25, 0.375, 0.375])


@pytest.mark.parametrize("obj, message", [
    (_basis([[1, 0, 0]]) | {"format": "draw-mixture/v1"}, "format is 'draw-mixture/v1'"),
    ({"format": BASIS_FORMAT, "domains": NAMES}, "missing required key 'bases'"),
    (_basis([[1, 0]], domains=["c0", "c1"]), r"k=2 domains but the data has 3"),
    (_basis([[0.5, 0.5]], domains=["c0", "c1"]), r"missing domain\(s\) \['c2'\]"),
    (_basis([[0.25] * 4], domains=NAMES + ["c9"]), r"unknown domain\(s\) \['c9'\]"),
    (_basis([[0.5, 0.5, 0.0], [0.5, 0.5]]), "basis 'b1' has 2 weights but the file has k=3"),
    (_basis([[0.5, 0.5, 0.5]]), "basis 'b0': weights sum to 1.5"),
    (_basis([[1.0, 0.0, 0.0], [1.2, -0.2, 0.0]]), "basis 'b1': weight of 'c1' is -0.2"),
    (_basis([[0.5, float("nan"), 0.5]]), "weight.* of 'c1' is nan"),
    (_basis([[1, 0, 0], [0, 1, 0]], names=["x", "x"]), "duplicate name 'x'"),
    (_basis([[0.5, 0.5, 0.0]], domains=["c0", "c0", "c1"]), "duplicate name 'c0'"),
    (_basis([]), "'bases' must be a non-empty list"),
    (_basis([["a", 0, 0]]), "weights of basis 'b0' must be numbers"),
    ({"format": BASIS_FORMAT, "domains": NAMES, "bases": [{"weights": [1, 0, 0]}]},
     "basis #0 must be an object with keys 'name' and 'weights'"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, obj, message):
    path = _write(tmp_path, obj)
    with pytest.raises(MixtureFileError, match=message) as err:
        load_basis(path, NAMES)
    assert path in str(err.value)


def test_count_mismatch_names_the_first_missing_names(tmp_path):
    many = [f"c{i:04d}" for i in range(4096)]
    few = many[:64]
    path = _write(tmp_path, _basis([[1 / 64] * 64], domains=few))
    with pytest.raises(MixtureFileError,
                       match=r"k=64 domains but the data has 4096; missing domain\(s\) "
                             r"\['c0064', 'c0065', 'c0066', 'c0067', 'c0068'\] and 4027 more"):
        load_basis(path, many)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(MixtureFileError, match="basis file .* does not exist"):
        load_basis(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MixtureFileError, match="cannot read basis file"):
        load_basis(str(bad))


def test_spec_validates_in_memory():
    with pytest.raises(MixtureFileError, match="no bases"):
        BasisSpec(NAMES, [], np.zeros((0, 3)))
    with pytest.raises(MixtureFileError, match=r"shape \(1, 2\), expected \[N=1, k=3\]"):
        BasisSpec(NAMES, ["a"], [[0.5, 0.5]])
