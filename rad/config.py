"""Typed configuration: dataclasses loaded from YAML with dotted command-line overrides.

Every command has one config dataclass (TRL style). A config is built from a YAML
mapping plus ``key.sub=value`` overrides and validated *before* any work starts:
unknown keys, wrong types and impossible values raise :class:`ConfigError` naming
the dotted key and what is allowed. The resolved config is saved with every run
(:func:`save_config`) so a run directory says exactly what produced it.

Field metadata understood by the loader:
  ``choices``  allowed values (for ``str`` fields)
  ``min`` / ``max``  inclusive numeric bounds; ``gt`` exclusive lower bound
  ``help``  one line shown by ``rad <cmd> --help-config``
  ``whole``  for a section that is part of a command's config (a pipeline stage): that
             command's config class (see ``base`` below)

Inheritance: a mapping (the whole file or any section) may carry ``base: FILE`` (or a
list of files): it starts from FILE's mapping, deep-merged under its own keys (mappings
merge, lists and values replace). A relative FILE is resolved against the directory of
the file that names it (against the working directory in an override). A section's
FILE holds that section's keys, or, for a section with ``whole``, may be a whole config
of that command: its keys outside the section (the run wiring the pipeline sets, e.g.
``output_dir``, ``policy``) are then dropped. So ``tiny_compare.yaml`` is
``base: tiny.yaml`` plus a few keys, and its ``ppo_lag: {base: ppo_lag_tiny.yaml}``
takes the tuned baseline settings from the one file that holds them.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from rad.errors import ConfigError

T = TypeVar("T")

#: The inheritance key of config mappings (see the module docstring).
BASE_KEY = "base"


def field(default: Any = dataclasses.MISSING, *, help: str = "", choices: typing.Sequence | None = None,
          min: float | None = None, max: float | None = None, gt: float | None = None,
          whole: type | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying validation metadata (see module docstring)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max, "gt": gt,
            "whole": whole}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------------
# Coercion and validation


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{type_name(inner)}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
                # A mapping given for a union with a config section: that section's own error says what is wrong.
                if isinstance(value, typing.Mapping) and dataclasses.is_dataclass(arg):
                    raise
        raise ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected one of {list(get_args(tp))}, got {value!r}")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        options = get_args(inner) if get_origin(inner) in (typing.Union, types.UnionType) else (inner,)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str in options:
            value = [value]  # a single spec where a list is expected: `data.train=embedded/sft-train`
        if isinstance(value, typing.Mapping) and any(dataclasses.is_dataclass(o) for o in options):
            value = [value]  # a single data source mapping: `data.train={path: x.jsonl}`
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # `bf16: false` / `learner.bf16=true` for a string key with true/false choices
            return "true" if value else "false"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def _check_meta(value: Any, meta: typing.Mapping, key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {list(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
        if lo is not None and value < lo:
            raise ConfigError(f"{key}: must be >= {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}: must be <= {hi}, got {value!r}")
        if gt is not None and value <= gt:
            raise ConfigError(f"{key}: must be > {gt}, got {value!r}")


def _merge_section_defaults(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """A partial mapping for a nested section starts from *this field's* default, not the class's.

    ``rad.learner`` defaults to ``LearnerConfig(lr=1e-4, scheduler="constant")``; a YAML
    that sets only ``rad.learner.zero_stage`` must keep that lr and scheduler.
    """
    if not (dataclasses.is_dataclass(tp) and isinstance(value, typing.Mapping)):
        return value
    if f.default_factory is not dataclasses.MISSING:
        base = dataclasses.asdict(f.default_factory())
    elif f.default is not dataclasses.MISSING and dataclasses.is_dataclass(f.default):
        base = dataclasses.asdict(f.default)
    else:
        return value
    return _deep_merge(base, value)


def _deep_merge(base: dict, update: typing.Mapping) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, typing.Mapping) else v
    return out


def _expand_base(cls: type, data: typing.Mapping, prefix: str, whole: type | None = None) -> typing.Mapping:
    """``data`` merged over the file(s) its ``base`` key names (see the module docstring)."""
    if BASE_KEY not in data:
        return data
    rest = dict(data)
    base = _load_base(rest.pop(BASE_KEY), f"{prefix}.{BASE_KEY}" if prefix else BASE_KEY, ())
    if whole is not None:
        wiring = {f.name for f in dataclasses.fields(whole)} - {f.name for f in dataclasses.fields(cls)}
        base = {k: v for k, v in base.items() if k not in wiring}
    return _deep_merge(base, rest)


def from_dict(cls: type[T], data: typing.Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating every key recursively."""
    if not isinstance(data, typing.Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    data = _expand_base(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        moved = getattr(cls, "MOVED", {})  # keys renamed or nested since an earlier release: say where they went
        if unknown[0] in moved:
            raise ConfigError(f"config key {where}{unknown[0]} has moved: use {where}{moved[unknown[0]]}")
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; allowed keys{' under ' + prefix if prefix else ''}: "
            f"{sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, typing.Mapping):
            # Before the field's defaults are merged in: the base sits between them and the given keys.
            value = _expand_base(hints[name], value, key, fields[name].metadata.get("whole"))
        value = _merge_section_defaults(fields[name], hints[name], value)
        coerced = _coerce(value, hints[name], key)
        _check_meta(coerced, fields[name].metadata, key)
        kwargs[name] = coerced
    obj = cls(**kwargs)
    # Defaults are checked too: a subclass may tighten a parent's default.
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{prefix + ': ' if prefix else ''}{exc}") from None
    return obj


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (YAML-serialisable) of a config dataclass."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a','b','c'], parsed value). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. learner.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    # YAML reads `1e-4` as a string (YAML 1.1 needs a dot); people mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    """Apply dotted overrides to a nested dict (copy-on-write of the touched path)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _fix_yaml_floats(obj: Any) -> Any:
    """YAML 1.1 reads `1e-5` as a string; convert such strings back to floats."""
    if isinstance(obj, dict):
        return {k: _fix_yaml_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_yaml_floats(v) for v in obj]
    if isinstance(obj, str):
        try:
            if any(c in obj.lower() for c in "e.") and obj.strip().lstrip("+-")[:1].isdigit():
                return float(obj)
        except ValueError:
            return obj
    return obj


def _absolute_bases(obj: Any, root: Path) -> Any:
    """Every ``base`` path in ``obj`` made absolute against ``root`` (the directory of the file naming it)."""
    if not isinstance(obj, dict):
        return obj
    out = {k: _absolute_bases(v, root) for k, v in obj.items()}
    spec = out.get(BASE_KEY)
    if isinstance(spec, (str, list)):
        out[BASE_KEY] = ([str(root / Path(f).expanduser()) if isinstance(f, str) else f for f in spec]
                         if isinstance(spec, list) else str(root / Path(spec).expanduser()))
    return out


def _load_base(spec: Any, key: str, chain: tuple[Path, ...]) -> dict:
    """The merged mapping of the file(s) ``spec`` names, each expanded through its own ``base`` first."""
    files = spec if isinstance(spec, list) else [spec]
    if not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{key}: expected a config file path or a list of them, got {spec!r}")
    merged: dict = {}
    for f in files:
        path = Path(f).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{key}: config file {f} does not exist")
        if path in chain:
            raise ConfigError(f"{key}: {' -> '.join(str(p) for p in (*chain, path))} includes itself")
        merged = _deep_merge(merged, _read_yaml(path, (*chain, path)))
    return merged


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    if key in lines:
                        raise _DuplicateKey(key, lines[key], key_node.start_mark.line + 1)
                    lines[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except _DuplicateKey as dup:
        raise ConfigError(f"{path}: line {dup.again}: key {dup.key!r} is given twice in one section (first at line "
                          f"{dup.first}); keep one (YAML would silently use the last)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    data = _absolute_bases(_fix_yaml_floats(data), path.parent)
    if BASE_KEY in data:
        spec = data.pop(BASE_KEY)
        data = _deep_merge(_load_base(spec, f"{path}: {BASE_KEY}", chain), data)
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping of a config file, its top-level ``base`` expanded (section bases are left to from_dict)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return _read_yaml(path, (path.resolve(),))


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: typing.Iterable[str] = (),
                section: str | None = None) -> T:
    """Load ``cls`` from an optional YAML file plus dotted overrides.

    ``section`` picks a sub-mapping of the file (e.g. ``sft`` of a pipeline config)
    so stage commands can reuse the pipeline YAML.
    """
    data: dict = {}
    if path is not None:
        data = read_yaml(path)
        if section is not None:
            data = data.get(section, {}) or {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
    return path


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """Lines ``key (type, default): help`` for every field, recursively (for --help-config).

    Defaults are read from an instance, so a section shows the default its parent
    gives it (e.g. ``rad.learner.lr``), not its class's.
    """
    defaults = defaults if defaults is not None else cls()
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, key + ".", value))
            continue
        extra = f" choices={list(f.metadata['choices'])}" if f.metadata.get("choices") else ""
        lines.append(f"{key} ({type_name(tp)}, default {value!r}){extra}: {f.metadata.get('help', '')}")
    return lines
