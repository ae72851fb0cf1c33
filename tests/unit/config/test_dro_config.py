"""The dro section: dro.reference is required (and must exist) only for the DRO pass."""

import pytest

from draw_megatron.config.base import ConfigError
from draw_megatron.config.run import DROConfig


def test_plain_runs_need_no_reference():
    cfg = DROConfig.from_dict({})
    assert cfg.reference is None and cfg.eta == 1.0 and cfg.smoothing == 1e-3


def test_the_pass_needs_a_reference():
    with pytest.raises(ConfigError, match=r"dro.reference is not set"):
        DROConfig.from_dict({}).validate_for_pass("dro")


def test_the_reference_file_must_exist(tmp_path):
    cfg = DROConfig.from_dict({"reference": str(tmp_path / "nope.safetensors")})
    with pytest.raises(ConfigError, match=r"dro.reference='.*nope.safetensors': no such file"):
        cfg.validate_for_pass("dro")
    run_dir = DROConfig.from_dict({"reference": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"model.safetensors"):
        run_dir.validate_for_pass("dro")


def test_a_file_or_its_run_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    for ref in (str(tmp_path), str(tmp_path / "model.safetensors")):
        cfg = DROConfig.from_dict({"reference": ref})
        cfg.validate_for_pass("dro")
        assert cfg.reference_file == str(tmp_path / "model.safetensors")


def test_eta_and_smoothing_are_checked_too():
    with pytest.raises(ConfigError, match=r"dro.smoothing=1.0"):
        DROConfig.from_dict({"smoothing": 1.0})
