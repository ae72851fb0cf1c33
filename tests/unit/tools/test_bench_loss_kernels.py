"""tools/bench_loss_kernels.py runs its smoke path: every row timed, all losses agreeing."""

import pytest

from tests.unit.kernels.reference import DEVICE, TOL  # no GPU: the Triton interpreter
from tests.unit.tools.conftest import load_tool


def test_smoke(capsys):
    cpu = DEVICE.type == "cpu"
    argv = ["--smoke", "--iters", "1", "--dtype", "fp32"]
    assert load_tool("bench_loss_kernels").main(argv) == 0
    out = capsys.readouterr().out
    assert "N=32, d=32], W [V=128, d], float32" in out and ("interpreter" in out) == cpu
    rows = {line[:26].strip(): line[26:].split() for line in out.splitlines()[2 + cpu:]}
    assert {"torch", "fused, Triton", "fused, Triton atomic bwd", "fused, PyTorch reference",
            "liger"} <= set(rows)
    assert rows["torch"][1] == "1.00"  # the baseline of the ratios
    for name, (ms, _, peak, diff) in rows.items():
        assert float(ms) > 0 and (peak == "n/a") == cpu and float(diff) < TOL, name


def test_bad_shape_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        load_tool("bench_loss_kernels").main(["--vocab", "0"])
    assert "--vocab must be > 0" in capsys.readouterr().err
