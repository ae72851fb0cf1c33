"""The generic config machinery: typed building, unknown keys, YAML, overrides, saving."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from draw_megatron.config.base import (
    Config,
    ConfigError,
    apply_overrides,
    dump_yaml,
    load_yaml,
    parse_override,
    parse_yaml,
    save_config,
)


@dataclass(kw_only=True)
class Inner(Config):
    SECTION: ClassVar[str] = "inner"

    width: int = 4
    """A positive int."""

    scale: float = 1.0
    """A float."""

    def validate(self, prefix: str | None = None) -> None:
        if self.width <= 0:
            raise ConfigError(f"{prefix}.width={self.width} must be > 0")


@dataclass(kw_only=True)
class Outer(Config):
    name: str
    """Required."""

    inner: Inner = field(default_factory=Inner)
    """Nested."""

    kind: Literal["a", "bee"] = "a"
    """An enum."""

    flag: bool = False
    """A bool."""

    maybe: float | None = None
    """Optional."""

    sizes: list[int] = field(default_factory=lambda: [1, 2])
    """A list."""

    extra: dict[str, float] = field(default_factory=dict)
    """A free-form mapping."""


def build(**data):
    return Outer.from_dict({"name": "x", **data}, prefix="")


def test_builds_nested_and_converts_int_to_float():
    cfg = build(inner={"width": 8, "scale": 2}, maybe=3, sizes=[5], extra={"k": 1})
    assert cfg.inner == Inner(width=8, scale=2.0)
    assert isinstance(cfg.inner.scale, float) and isinstance(cfg.maybe, float)
    assert cfg.sizes == [5] and cfg.extra == {"k": 1.0}


def test_empty_section_takes_defaults():
    assert build(inner=None).inner == Inner()


@pytest.mark.parametrize("data, message", [
    ({"inner": {"width": "8"}}, "inner.width: expected int, got str '8'"),
    ({"inner": {"width": True}}, "inner.width: expected int, got bool"),
    ({"flag": 1}, "flag: expected bool, got int 1"),
    ({"sizes": [1, "two"]}, "sizes[1]: expected int"),
    ({"sizes": 3}, "sizes: expected a list"),
    ({"inner": 5}, "inner: expected a mapping"),
    ({"maybe": "x"}, "maybe: expected float"),
    ({"extra": {"k": "v"}}, "extra.k: expected float"),
    ({"name": 3}, "name: expected str, got int 3"),
])
def test_wrong_type_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(**data)


def test_literal_with_suggestion():
    message = r"kind='be' is not one of 'a', 'bee' \(did you mean 'bee'\?\)"
    with pytest.raises(ConfigError, match=message):
        build(kind="be")


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'inner.widht' \(did you mean 'width'\?\)"):
        build(inner={"widht": 3})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key.*: name"):
        Outer.from_dict({}, prefix="")


def test_validate_runs_on_nested_sections():
    with pytest.raises(ConfigError, match=r"inner.width=0 must be > 0"):
        build(inner={"width": 0})


def test_yaml_floats_dates_and_duplicates():
    assert parse_yaml("a: 1e-3\nb: 3E5\nc: 2024-01-02\nd: 1.0e-4") == {
        "a": 0.001, "b": 300000.0, "c": "2024-01-02", "d": 1e-4}
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n")


def test_yaml_is_safe():
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("a: !!python/object/apply:os.system ['true']")


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(str(tmp_path / "nope.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(str(tmp_path / "list.yaml"))
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(str(tmp_path / "empty.yaml")) == {}


def test_parse_override():
    parts, value = parse_override("inner.scale=1e-3")
    assert parts == ["inner", "scale"] and value.value == 0.001
    assert parse_override("sizes=[3, 4]")[1].value == [3, 4]
    assert parse_override("maybe=null")[1].value is None
    for bad in ("inner.scale", "=3", "inner..scale=1"):
        with pytest.raises(ConfigError, match="not of the form"):
            parse_override(bad)


def test_overrides_apply_in_order_and_keep_text_for_strings():
    raw = apply_overrides(Outer, {"name": "x", "inner": {"width": 2}},
                          ["inner.width=3", "inner.width=5", "name=007", "extra.lr=2"])
    cfg = Outer.from_dict(raw, prefix="")
    assert cfg.inner.width == 5 and cfg.name == "007" and cfg.extra == {"lr": 2.0}


@dataclass(kw_only=True)
class Switch(Config):
    mode: Literal["on", "off"] = "on"
    """YAML 1.1 reads a bare off as false."""


def test_override_of_string_literal_keeps_text():
    assert Switch.from_dict(apply_overrides(Switch, {}, ["mode=off"])).mode == "off"


def test_override_does_not_mutate_input():
    data = {"name": "x", "inner": {"width": 2}}
    apply_overrides(Outer, data, ["inner.width=3"])
    assert data == {"name": "x", "inner": {"width": 2}}


@pytest.mark.parametrize("override, message", [
    ("inner.widht=3", r"unknown key 'inner.widht' \(did you mean 'width'\?\)"),
    ("innr.width=3", r"unknown key 'innr' \(did you mean 'inner'\?\)"),
    ("flag.x=3", r"'flag' is a value, not a section"),
])
def test_unknown_override_key_names_it(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer, {"name": "x"}, [override])


def test_override_type_error_names_key():
    raw = apply_overrides(Outer, {"name": "x"}, ["inner.width=abc"])
    with pytest.raises(ConfigError, match="inner.width: expected int, got str 'abc'"):
        Outer.from_dict(raw, prefix="")


def test_dump_and_save_round_trip(tmp_path):
    cfg = build(inner={"width": 8, "scale": 1e-8}, maybe=0.5, sizes=[], extra={"a": 1.5})
    path = str(tmp_path / "sub" / "config.yaml")
    save_config(cfg, path)
    assert Outer.from_dict(load_yaml(path), prefix="") == cfg
    assert load_yaml(path) == parse_yaml(dump_yaml(cfg)) == cfg.to_dict()
    assert [n for n in os.listdir(tmp_path / "sub")] == ["config.yaml"]  # no temp files left
