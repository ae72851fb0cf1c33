"""Typed configs: dataclasses built from YAML and dotted ``key=value`` overrides.

Each component owns a small ``@dataclass(kw_only=True)`` subclass of :class:`Config` with a
docstring under every field and a ``validate()`` that raises :class:`ConfigError` naming
the dotted key. This module holds only the generic machinery:

- :meth:`Config.from_dict` builds a (nested) config from plain data, checking every value
  against the field's annotation (int, float, bool, str, Optional / ``X | None``,
  ``list[X]``, ``dict[str, X]``, ``Literal[...]``, nested configs). Unknown keys are errors
  with a "did you mean" suggestion; an int is accepted where a float is expected.
- :func:`load_yaml` reads YAML safely (a ``yaml.SafeLoader`` subclass: no object
  construction, no exec) with two fixes to YAML 1.1 defaults: ``1e-3`` is a float (not the
  string "1e-3") and dates stay strings; a duplicated key is an error.
- :func:`apply_overrides` merges ``a.b.c=value`` strings into the raw tree before
  building, the value parsed as a YAML scalar or list; an unknown key is an error.
- :func:`dump_yaml` / :func:`save_config` write the resolved tree (atomically).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

from draw_megatron.utils.fs import atomic_write_text

C = TypeVar("C", bound="Config")

_NONE_TYPE = type(None)


class ConfigError(ValueError):
    """A config value, key or combination that is not allowed; the message names the key."""


def join_key(prefix: str, name: str | int) -> str:
    """``join_key("model", "n_heads") == "model.n_heads"``; list items read ``betas[1]``."""
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else name


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    choices = list(choices)
    # A truncated key ("ema" for "ema_weight") first, then the closest spelling.
    close = [c for c in choices if name and c.startswith(name)][:1]
    close = close or difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: the validators' one-line checks."""
    if not ok:
        raise ConfigError(message)


def check_positive(cfg: Config, prefix: str | None, *names: str) -> None:
    """Each named field of ``cfg`` must be > 0 (the error names the dotted key)."""
    for name in names:
        value = getattr(cfg, name)
        require(value > 0, f"{join_key(cfg.SECTION if prefix is None else prefix, name)}="
                           f"{value} must be > 0")


def check_non_negative(cfg: Config, prefix: str | None, *names: str) -> None:
    """Each named field of ``cfg`` must be >= 0 (the error names the dotted key)."""
    for name in names:
        value = getattr(cfg, name)
        require(value >= 0, f"{join_key(cfg.SECTION if prefix is None else prefix, name)}="
                            f"{value} must be >= 0")


# --------------------------------------------------------------------------- base class


@dataclasses.dataclass(kw_only=True)
class Config:
    """Base of every config dataclass: building from plain data, dumping, validation."""

    SECTION: ClassVar[str] = ""
    """The dotted prefix this config lives under in the run's tree (used in messages)."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, prefix: str | None = None,
                  *, validate: bool = True) -> C:
        """Build from plain data (a YAML mapping), checking keys and types; then validate."""
        prefix = cls.SECTION if prefix is None else prefix
        obj = _build(cls, data, prefix)
        if validate:
            obj.validate(prefix)
        return obj

    @classmethod
    def prepare(cls, data: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Hook run on the raw mapping before type checking (e.g. expanding a preset)."""
        return data

    @classmethod
    def extra_sections(cls) -> Mapping[str, type[Config]]:
        """Sections that are not dataclass fields: name → config class (e.g. the step passes'
        sections, contributed by a registry, so a new pass needs no field here). They are
        built like nested fields (always, with their defaults when absent), dumped after
        the fields, validated, reachable by overrides, and read with :meth:`section`."""
        return {}

    def section(self, name: str) -> Config:
        """The extra section ``name`` (see :meth:`extra_sections`)."""
        sections = self.__dict__.get("_sections", {})
        if name not in sections:
            raise KeyError(f"no section {name!r}; known: {', '.join(sections) or 'none'}")
        return sections[name]

    def to_dict(self) -> dict[str, Any]:
        """The plain tree (dicts, lists, scalars), in field order; ``from_dict`` inverts it."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out.update({name: _plain(cfg) for name, cfg in self.__dict__.get("_sections", {}).items()})
        return out

    def validate(self, prefix: str | None = None) -> None:
        """Check values, raising ConfigError naming the dotted key.

        The base validates nested configs; subclasses add their own checks and call
        ``super().validate(prefix)``.
        """
        prefix = self.SECTION if prefix is None else prefix
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value.validate(join_key(prefix, f.name))
        for name, value in self.__dict__.get("_sections", {}).items():
            value.validate(join_key(prefix, name))


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- building


@dataclasses.dataclass(frozen=True)
class OverrideValue:
    """A command-line value: its YAML parse, and its text for fields typed ``str``.

    ``run.name=007`` parses as the int 7; a str field takes the text "007" instead.
    """

    text: str
    value: Any


def _build(cls: type[C], data: Mapping[str, Any] | None, prefix: str) -> C:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got "
                          f"{type(data).__name__} {data!r}")
    data = cls.prepare(dict(data), prefix)
    hints = typing.get_type_hints(cls)
    init_fields = [f for f in dataclasses.fields(cls) if f.init]
    extra = cls.extra_sections()
    names = [f.name for f in init_fields] + [n for n in extra if n not in hints]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown key {join_key(prefix, str(key))!r}"
                              f"{suggest(str(key), names)}; known keys under "
                              f"{prefix or 'the top level'}: {', '.join(names)}")
    missing = [f.name for f in init_fields if f.name not in data and _is_required(f)]
    if missing:
        keys = ", ".join(join_key(prefix, name) for name in missing)
        raise ConfigError(f"missing required key(s): {keys}")
    kwargs = {f.name: coerce(data[f.name], hints[f.name], join_key(prefix, f.name))
              for f in init_fields if f.name in data}
    obj = cls(**kwargs)
    if extra:
        obj.__dict__["_sections"] = {
            name: sec_cls.from_dict(data.get(name), join_key(prefix, name), validate=False)
            for name, sec_cls in extra.items()}
    return obj


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked (and, for int → float and nested configs, converted) to ``tp``."""
    if isinstance(value, OverrideValue):
        wants_text = _accepts_str(tp) and value.value is not None
        value = value.text if wants_text and not isinstance(value.value, str) else value.value
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), key)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp), key)
    if isinstance(tp, type) and issubclass(tp, Config):
        return _build(tp, value, key)
    if origin in (list, tuple):
        return _coerce_list(value, tp, key)
    if origin is dict or tp is dict:
        return _coerce_dict(value, tp, key)
    return _coerce_scalar(value, tp, key)


def _accepts_str(tp: Any) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) is Literal:  # `mode=off` means "off", not YAML 1.1's false
        return any(isinstance(arg, str) for arg in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_accepts_str(arg) for arg in typing.get_args(tp))
    return False


def _coerce_union(value: Any, args: tuple, key: str) -> Any:
    if value is None and _NONE_TYPE in args:
        return None
    errors = []
    for arg in (a for a in args if a is not _NONE_TYPE):
        try:
            return coerce(value, arg, key)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(f"{key}: expected {_type_name(typing.Union[args])}, got "
                      f"{type(value).__name__} {value!r}")


def _coerce_literal(value: Any, choices: tuple, key: str) -> Any:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    listed = ", ".join(repr(c) for c in choices)
    hint = suggest(value, [str(c) for c in choices]) if isinstance(value, str) else ""
    raise ConfigError(f"{key}={value!r} is not one of {listed}{hint}")


def _coerce_list(value: Any, tp: Any, key: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any
    return [coerce(item, item_tp, join_key(key, i)) for i, item in enumerate(value)]


def _coerce_dict(value: Any, tp: Any, key: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
    args = typing.get_args(tp)
    value_tp = args[1] if len(args) == 2 else Any
    return {k: coerce(v, value_tp, join_key(key, str(k))) for k, v in value.items()}


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int: `n_layers: true` must not pass as 1.
    ok = isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got "
                          f"{type(value).__name__} {value!r}")
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        return repr(tp).replace("typing.", "")
    return "null" if tp is _NONE_TYPE else getattr(tp, "__name__", repr(tp))


# --------------------------------------------------------------------------- YAML


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-3``), no timestamps and no duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML text with the config loader (safe: plain data only)."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc


def load_yaml(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file gives ``{}``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    data = parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def dump_yaml(cfg: Config) -> str:
    """The resolved tree as YAML text, fields in declaration order."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved tree to ``path`` atomically (a crash never leaves half a file)."""
    atomic_write_text(path, dump_yaml(cfg))


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], OverrideValue]:
    """``"train.steps=100"`` → ``(["train", "steps"], OverrideValue("100", 100))``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not p for p in parts):
        raise ConfigError(f"override {text!r} is not of the form dotted.key=value")
    return parts, OverrideValue(raw, parse_yaml(raw, f"override {text!r}"))


def check_key_path(cls: type[Config], parts: list[str], source: str) -> None:
    """Raise ConfigError if ``parts`` is not a key of ``cls``'s tree."""
    current: Any = cls
    for depth, part in enumerate(parts):
        key = ".".join(parts[: depth + 1])
        if typing.get_origin(current) is dict or current is dict:
            return  # free-form mapping: any sub-key
        config_cls = _config_class(current)
        if config_cls is None:
            raise ConfigError(f"{source}: {'.'.join(parts[:depth])!r} is a value, "
                              f"not a section, so {key!r} does not exist")
        types_by_name = {f.name: typing.get_type_hints(config_cls)[f.name]
                         for f in dataclasses.fields(config_cls) if f.init}
        types_by_name.update({n: c for n, c in config_cls.extra_sections().items()
                              if n not in types_by_name})
        if part not in types_by_name:
            raise ConfigError(f"{source}: unknown key {key!r}{suggest(part, types_by_name)}")
        current = types_by_name[part]


def _config_class(tp: Any) -> type[Config] | None:
    if isinstance(tp, type) and issubclass(tp, Config):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            found = _config_class(arg)
            if found is not None:
                return found
    return None


def apply_overrides(cls: type[Config], data: Mapping[str, Any],
                    overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of the raw tree ``data`` with each ``dotted.key=value`` set; later ones win."""
    tree = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        check_key_path(cls, parts, f"override {text!r}")
        node = tree
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return tree


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
