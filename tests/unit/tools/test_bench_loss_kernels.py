"""tools/bench_loss_kernels.py runs its CPU smoke path: every row timed, all losses agreeing."""

import pytest

from tests.unit.kernels.reference import TOL  # sets TRITON_INTERPRET before any kernel import
from tests.unit.tools.conftest import load_tool


def test_cpu_smoke(capsys):
    assert load_tool("bench_loss_kernels").main(["--smoke", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "N=32, d=32], W [V=128, d], float32" in out and "interpreter" in out
    rows = {line[:26].strip(): line[26:].split() for line in out.splitlines()[3:]}
    assert set(rows) == {"torch", "fused, Triton", "fused, PyTorch reference", "liger"}
    assert rows["torch"][1] == "1.00"  # the baseline of the ratios
    for name, (ms, _, peak, diff) in rows.items():
        assert float(ms) > 0 and peak == "n/a" and float(diff) < TOL, name


def test_bad_shape_is_one_error_line(capsys):
    with pytest.raises(SystemExit):
        load_tool("bench_loss_kernels").main(["--vocab", "0"])
    assert "--vocab must be > 0" in capsys.readouterr().err
