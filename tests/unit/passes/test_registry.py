"""Passes chosen by config: the registry, the checks run before any process group (roles,
mixture kinds, each pass's own check), and that a new pass needs only a file and an entry."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from draw_megatron.config.base import ConfigError
from draw_megatron.config.run import RunConfig
from draw_megatron.data.manifest import Manifest
from draw_megatron.passes import registry
from draw_megatron.passes.base import PassConfig, StepOutput, StepPass
from tests.unit.data.synthetic import make_synthetic_root


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = make_synthetic_root(str(tmp_path_factory.mktemp("registry")), [6, 6, 6], seq_len=16,
                               vocab_size=64, splits=("train", "val", "test"))
    return Manifest.load(root)


@pytest.fixture
def reference(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    return str(path)


def _cfg(manifest, tmp_path, **tree) -> RunConfig:
    base = {"run": {"dir": str(tmp_path / "run")}, "model": {"preset": "tiny-64"},
            "data": {"root": manifest.root}, "train": {"global_batch": 4, "micro_batch": 2}}
    return RunConfig.from_dict({**base, **tree})


def test_every_entry_resolves_to_its_section_and_pass(manifest, tmp_path):
    classes = registry.section_classes()
    assert set(classes) == set(registry.PASSES)
    cfg = _cfg(manifest, tmp_path, eval={"lm_tasks": ["x"]})
    for name, cls in classes.items():
        assert cls.SECTION == name and cls.PASS.name == name
        assert cls().build(cfg).name == name


def test_lm_tasks_imply_the_lm_eval_observer(manifest, tmp_path):
    assert _cfg(manifest, tmp_path).active_passes == []
    cfg = _cfg(manifest, tmp_path, passes=["odm"], mixture={"kind": "online"},
               eval={"lm_tasks": ["arc_easy"], "lm_every": 5})
    assert cfg.active_passes == ["odm", "lm_eval"]
    (_, lm) = registry.build_passes(cfg)
    assert (lm.task_names, lm.every, lm.last_step) == (["arc_easy"], 5, cfg.train.steps)


def test_a_composition_of_an_owner_and_an_observer_passes(manifest, tmp_path, reference):
    cfg = _cfg(manifest, tmp_path, passes=["dro", "alignment_monitor"],
               mixture={"kind": "online"}, dro={"reference": reference},
               alignment_monitor={"specific": "test:Domain 1"})
    registry.check_passes(cfg, manifest)
    passes = registry.build_passes(cfg)
    assert [p.name for p in passes] == ["dro", "alignment_monitor"]
    assert passes[0].owns_mixture and not passes[1].owns_mixture


@pytest.mark.parametrize("tree, message", [
    ({"passes": ["dga", "odm"], "mixture": {"kind": "online"}},
     "only one step pass may own the mixture: dga and odm both do"),
    ({"passes": ["odm", "dro_evidence"], "mixture": {"kind": "online_draw"}},
     "only one step pass may own the mixture: odm and dro_evidence both do"),
    ({"mixture": {"kind": "online"}}, "mixture.kind=online is set by a pass, but passes=[] has "
                                      "none that sets the mixture"),
    ({"passes": ["alignment_monitor"], "mixture": {"kind": "online_draw"},
      "alignment_monitor": {"specific": "test"}}, "has none that sets the mixture"),
    ({"passes": ["odm"]}, "the 'odm' pass sets the mixture, but mixture.kind=natural cannot "
                          "take its weights"),
    ({"passes": ["dro_evidence"], "mixture": {"kind": "online_draw"}},
     "dro_evidence.reference is not set"),
    ({"passes": ["alignment_monitor"]}, "alignment_monitor.specific is not set"),
    ({"passes": ["alignment_monitor"], "alignment_monitor": {"specific": "test:Domian 1"}},
     "alignment_monitor.specific='test:Domian 1'"),
    ({"passes": ["alignment_monitor"], "alignment_monitor": {"specific": "val"}},
     "alignment_monitor.specific='val'"),
])
def test_bad_compositions_are_named_before_any_process_group(manifest, tmp_path, tree, message):
    with pytest.raises(ConfigError) as err:
        registry.check_passes(_cfg(manifest, tmp_path, **tree), manifest)
    assert message in str(err.value), str(err.value)


# --- a new pass: one class and one registry entry ------------------------------------------


class CountingPass(StepPass):
    """Observes: counts steps and logs every ``every``-th."""

    name = "counting"

    def __init__(self, cfg):
        self.cfg, self.steps = cfg, 0

    def after_step(self, info):
        self.steps += 1
        due = info.step % self.cfg.every == 0
        return StepOutput([{"kind": "counting", "step": info.step}] if due else [])


@dataclass(kw_only=True)
class CountingConfig(PassConfig):
    SECTION: ClassVar[str] = "counting"
    PASS: ClassVar[type[StepPass]] = CountingPass

    every: int = 2
    """Steps between records."""


def test_a_new_pass_needs_only_a_class_and_an_entry(manifest, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.PASSES, "counting", f"{__name__}:CountingConfig")
    registry.section_classes.cache_clear()
    try:
        cfg = _cfg(manifest, tmp_path, passes=["counting"], counting={"every": 3})
        registry.check_passes(cfg, manifest)
        (built,) = registry.build_passes(cfg)
        assert isinstance(built, CountingPass) and built.cfg.every == 3
        assert cfg.to_dict()["counting"] == {"every": 3}
    finally:
        monkeypatch.undo()
        registry.section_classes.cache_clear()
    with pytest.raises(ConfigError, match="not a step pass"):
        _cfg(manifest, tmp_path, passes=["counting"])
