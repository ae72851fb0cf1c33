"""tools/bench_gpu_step.py runs its whole path on the CPU with a tiny preset."""

from tests.unit.tools.conftest import load_tool


def test_cpu_smoke(capsys):
    assert load_tool("bench_gpu_step").main(["--preset", "tiny-64", "--steps", "2",
                                              "--seq-len", "32", "--micro-batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "preset tiny-64" in out and "tokens/s" in out and "MFU" in out
