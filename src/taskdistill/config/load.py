"""Fill a config dataclass from YAML files and `--set a.b=v` overrides, with errors that suggest a fix."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from taskdistill.config.ranges import problems
from taskdistill.errors import ConfigError

T = TypeVar("T")


def _suggest(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _field_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert `value` (from YAML or a `--set` string) to type `tp`, or raise ConfigError naming `where`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}.{_suggest(str(value), map(str, allowed))}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            names = [f.name for f in dataclasses.fields(tp)]
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields ({', '.join(names)}), e.g. "
                              f"{{{names[0]}: ...}}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a nested dict and check every numeric range (`config/ranges.py`).

    Sections given partially keep their other defaults. Every problem found (unknown keys with the closest
    valid key, values of the wrong type, values out of range) is reported at once, one line each, in one
    ConfigError.
    """
    errors: list[str] = []
    if not prefix and "baselines" in data:
        data = _upgrade_baselines(data)
    obj = _fill(cls(), data, prefix, errors)
    errors += problems(obj, f"{prefix}." if prefix else "")
    if errors:
        head = f"{len(errors)} problems in the config:\n  " if len(errors) > 1 else ""
        raise ConfigError(head + "\n  ".join(errors))
    return obj


# Keys whose default changed after configs were stored with them missing: (section path, key, the value a
# stored config without the key meant). A stored config (sweep.yaml, a checkpoint's) is a full dump, so a key
# missing there did not exist yet when it was written.
CHANGED_DEFAULTS: tuple[tuple[tuple[str, ...], str, Any], ...] = (
    (("distill",), "finetune_anchor", 0.0),  # stage 3 was a plain finetune before issue 20
    (("distill",), "pseudo_label_anchor_lr", None),  # pseudo-label's stage 3 took finetune_anchor_lr
)


def from_stored(cls: type[T], data: dict[str, Any]) -> T:
    """A config that taskdistill wrote earlier (a full dump: sweep.yaml, a checkpoint's `config`), read with the
    meaning it had then: keys added since with a changed default get the value they stood for (`CHANGED_DEFAULTS`)."""
    import copy

    data = copy.deepcopy(data)
    for path, key, old in CHANGED_DEFAULTS:
        section: Any = data
        for name in path:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict) and key not in section:
            section[key] = old
    return from_dict(cls, data)


def _upgrade_baselines(data: dict[str, Any]) -> dict[str, Any]:
    """A config written before `run.methods` (stored in older checkpoints and sweeps): `baselines: [scratch]`
    meant task-oriented transfer plus those baselines."""
    data = dict(data)
    baselines = data.pop("baselines") or []
    run = dict(data.get("run") or {})
    run.setdefault("methods", ["task-oriented", *baselines])
    data["run"] = run
    return data


def _fill(base: T, data: dict[str, Any], prefix: str, errors: list[str]) -> T:
    """A copy of `base` with the values in `data` typed and set; each bad key appends a line to `errors`
    (and keeps its default)."""
    cls = type(base)
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = dataclasses.replace(base)
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            errors.append(f"unknown config key '{where}'.{_suggest(str(key), names)} Valid keys here: {', '.join(names)}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            setattr(out, key, _fill(getattr(out, key), value, where, errors))
            continue
        try:
            setattr(out, key, _coerce(value, tp, where))
        except ConfigError as e:
            errors.append(str(e))
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf where two config dicts (`to_dict`) differ, in key order."""
    out: list[tuple[str, Any, Any]] = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b, where = old.get(key), new.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{where}.")
        elif a != b:
            out.append((where, a, b))
    return out


def override_text(key: str, value: Any) -> str:
    """The `--set` text that gives dotted `key` this value: the inverse of `parse_override`."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], parsed YAML scalar or list)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value, e.g. --set distill.temperature=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Write `--set` overrides into a nested dict (before it is typed)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist. List the shipped ones with `taskdistill config list`.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping at the top level, not {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- YAML file <- `--set` overrides, typed and range-checked (all problems in one ConfigError)."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
