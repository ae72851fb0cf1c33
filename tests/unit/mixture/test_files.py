import json

import numpy as np
import pytest

from draw_megatron.mixture.files import MixtureFileError, MixtureSpec, load_mixture

NAMES = ["A", "B", "C"]


def _write(tmp_path, obj):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(obj))
    return str(path)


def _static(weights, domains=NAMES):
    return {"format": "draw-mixture/v1", "domains": domains, "kind": "static", "weights": weights}


def test_round_trip_and_reorder_to_manifest_order(tmp_path):
    spec = MixtureSpec("dirichlet", ["C", "A", "B"], [3.0, 1.0, 2.0],
                       stats={"mean": [0.5, 1 / 6, 1 / 3]}, provenance={"n1": 256})
    path = str(tmp_path / "m.json")
    spec.save(path)
    loaded = load_mixture(path, NAMES)
    assert loaded.domains == NAMES
    assert loaded.values.tolist() == [1.0, 2.0, 3.0]
    assert np.allclose(loaded.stats["mean"], [1 / 6, 1 / 3, 0.5])
    assert loaded.provenance == {"n1": 256}


@pytest.mark.parametrize("obj, message", [
    (_static([0.5, 0.5], ["A", "B"]), r"missing domain\(s\) \['C'\]"),
    (_static([0.25] * 4, NAMES + ["D"]), r"unknown domain\(s\) \['D'\]"),
    (_static([0.5, 0.5, 0.5]), "not on the simplex"),
    (_static([1.2, -0.2, 0.0]), "weight of 'B' is -0.2"),
    (_static([0.5, 0.5, float("nan")]), "'C' is nan"),
    ({"format": "draw-mixture/v1", "domains": NAMES, "kind": "dirichlet",
      "concentration": [1.0, 0.0, 2.0]}, "concentration of 'B' is 0.0"),
    ({"format": "draw-mixture/v1", "domains": NAMES, "kind": "dirichlet",
      "concentration": [1.0, float("inf"), 2.0]}, "'B' is inf"),
    ({"format": "draw-mixture/v1", "domains": NAMES, "kind": "static"}, "needs key 'weights'"),
    ({"domains": NAMES, "kind": "static", "weights": [1, 0, 0]}, "missing required key 'format'"),
    ({"format": "v0", "domains": NAMES, "kind": "static", "weights": [1, 0, 0]}, "format is"),
    (_static([0.5, 0.5, 0.0], ["A", "A", "B"]), "duplicate"),
])
def test_bad_files_name_the_problem(tmp_path, obj, message):
    with pytest.raises(MixtureFileError, match=message):
        load_mixture(_write(tmp_path, obj), NAMES)


def test_unknown_top_level_keys_are_ignored(tmp_path):
    obj = _static([0.2, 0.3, 0.5]) | {"comment": "hand made"}
    assert load_mixture(_write(tmp_path, obj), NAMES).values.tolist() == [0.2, 0.3, 0.5]


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(MixtureFileError, match="does not exist"):
        load_mixture(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MixtureFileError, match="cannot read"):
        load_mixture(str(tmp_path / "bad.json"))
