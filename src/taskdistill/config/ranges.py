"""Allowed ranges of numeric config fields, declared next to the fields, and the check that applies them.

A numeric field in `config/schema.py` carries its range in the dataclass field's metadata:

    temperature: float = field(default=2.0, metadata=gt(0, "the softmax temperature"))

and a section may list `Rule`s that relate several of its fields (`rules: ClassVar[...]`). `problems(cfg)`
walks a whole config and returns one line per violation, each naming the key, the range, the value and a
value to try, e.g. `distill.temperature must be > 0, got 0 (the softmax temperature; try distill.temperature=2)`.
`load_config` / `from_dict` raise them all together in one ConfigError.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RANGE_KEY = "range"


@dataclass(frozen=True)
class Range:
    """The values a numeric field may take: a lower and/or upper bound, each inclusive or not."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: `low` itself is excluded (> low)
    high_open: bool = False  # True: `high` itself is excluded (< high)
    what: str = ""  # what the field is, for the message

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        """`> 0`, `>= 1`, `<= 5` or `in (0, 1]`."""
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{fmt(self.low)}, {fmt(self.high)}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {fmt(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {fmt(self.high)}"
        return "a finite number"

    def suggestion(self, default: Any) -> str:
        """A value to try: the field's default where it is in range, else the nearest simple value."""
        if default is None:
            return "null"
        if self.contains(default):
            return fmt(default)
        if self.low is not None:
            return fmt(self.low + 1 if self.low_open else self.low)
        return fmt(self.high - 1 if self.high_open else self.high)  # type: ignore[operator]

    def problem(self, key: str, value: Any, default: Any, nullable: bool) -> str:
        """One line: `key must be <range> [or null], got <value> (<what>; try <default>)`."""
        allowed = self.describe() + (" or null" if nullable else "")
        finite = "" if not isinstance(value, float) or math.isfinite(value) else "a finite number "
        what = f"{self.what}; " if self.what else ""
        return f"{key} must be {finite}{allowed}, got {fmt(value)} ({what}try {key}={self.suggestion(default)})"


def fmt(value: Any) -> str:
    """A value as it would be typed in `--set`: 2.0 -> 2, None -> null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a section in a list: the fields set
        default = type(value)()
        return "{" + ", ".join(f"{f.name}: {fmt(getattr(value, f.name))}" for f in dataclasses.fields(value)
                               if getattr(value, f.name) != getattr(default, f.name)) + "}"
    return str(value)


def _meta(r: Range) -> dict[str, Range]:
    return {RANGE_KEY: r}


def gt(low: float, what: str) -> dict[str, Range]:
    """Field metadata: the value must be > `low`."""
    return _meta(Range(low=low, low_open=True, what=what))


def ge(low: float, what: str) -> dict[str, Range]:
    """Field metadata: the value must be >= `low`."""
    return _meta(Range(low=low, what=what))


def within(low: float, high: float, what: str, low_open: bool = False, high_open: bool = False) -> dict[str, Range]:
    """Field metadata: the value must be in [low, high] (either end excluded with `*_open`)."""
    return _meta(Range(low=low, high=high, low_open=low_open, high_open=high_open, what=what))


def range_of(f: dataclasses.Field) -> Range | None:
    """The range declared on a dataclass field, if any."""
    return f.metadata.get(RANGE_KEY)


@dataclass(frozen=True)
class Rule:
    """A check across fields of one section. `keys` are dotted paths from the section (shown with their values);
    `holds(section)` is True when the values fit together; `message` says what must hold and the fix."""

    keys: tuple[str, ...]
    holds: Callable[[Any], bool]
    message: str


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _nullable(hint: Any) -> bool:
    return "None" in str(hint)


def problems(cfg: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """Every range or rule the config dataclass `cfg` (and its sections) breaks, one line each.

    `defaults` (the same type as `cfg`; a fresh default instance when None) supplies the value to try.
    """
    defaults = type(cfg)() if defaults is None else defaults
    hints = typing.get_type_hints(type(cfg))
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += problems(value, f"{key}.", getattr(defaults, f.name))
            continue
        r = range_of(f)
        if r is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not r.contains(value):
            out.append(r.problem(key, value, getattr(defaults, f.name), _nullable(hints[f.name])))
    for rule in getattr(type(cfg), "rules", ()):
        if not rule.holds(cfg):
            shown = ", ".join(f"{prefix}{k}={fmt(_get(cfg, k))}" for k in rule.keys)
            out.append(f"{shown}: {rule.message}")
    return out
