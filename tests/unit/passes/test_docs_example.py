"""The worked example in docs/architecture.md ("Adding a mixing algorithm") is real code: a
new file and one registry entry make a working mixer, checked like every other pass."""

import os
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from draw_megatron.config.base import ConfigError
from draw_megatron.config.run import RunConfig
from draw_megatron.data.manifest import Manifest
from draw_megatron.passes import registry
from draw_megatron.passes.base import StepInfo
from tests.unit.data.synthetic import make_synthetic_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def _blocks() -> list[str]:
    with open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8") as fh:
        text = fh.read()
    section = text[text.index("### Adding a mixing algorithm"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def example(tmp_path, monkeypatch):
    module_code, entry = _blocks()[:2]
    (tmp_path / "doc_loss_mixer.py").write_text(module_code)
    monkeypatch.syspath_prepend(str(tmp_path))
    name, target = re.match(r'\s*"(\w+)": "([\w.]+):(\w+)"', entry).group(1, 3)
    monkeypatch.setitem(registry.PASSES, name, f"doc_loss_mixer:{target}")
    registry.section_classes.cache_clear()
    yield name
    registry.section_classes.cache_clear()
    sys.modules.pop("doc_loss_mixer", None)


def test_the_documented_mixer_runs(example, tmp_path):
    root = make_synthetic_root(str(tmp_path / "data"), [4, 4, 4], seq_len=8, vocab_size=64,
                               splits=("train", "val"))
    manifest = Manifest.load(root)
    base = {"run": {"dir": str(tmp_path / "run")}, "model": {"preset": "tiny-64"},
            "data": {"root": root}, "train": {"global_batch": 4, "micro_batch": 2}}
    cfg = RunConfig.from_dict({**base, "passes": [example], "mixture": {"kind": "online"},
                               example: {"temperature": 2.0}})
    registry.check_passes(cfg, manifest)
    (mixer,) = registry.build_passes(cfg)
    assert mixer.owns_mixture
    mixer.setup(SimpleNamespace(manifest=manifest))
    counts = np.array([8.0, 8.0, 16.0])
    out = mixer.after_step(StepInfo(0, None, np.array([8.0, 16.0, 16.0]), counts))
    ema = 0.9 + 0.1 * np.array([1.0, 2.0, 1.0])
    np.testing.assert_allclose(out.weights, np.sqrt(ema) / np.sqrt(ema).sum())
    with pytest.raises(ConfigError, match="temperature=0"):
        RunConfig.from_dict({**base, example: {"temperature": 0}})
    with pytest.raises(ConfigError, match=f"odm and {example} both do"):
        registry.check_passes(RunConfig.from_dict({**base, "passes": ["odm", example],
                                                   "mixture": {"kind": "online"}}), manifest)
