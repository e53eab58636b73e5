"""One checker for every file causalloc validates: experiment specs (:mod:`causalloc.runs.spec`),
analysis specs (:mod:`causalloc.stats.spec`) and claims files (:mod:`causalloc.audit.claims`).

:class:`Checker` reads typed values out of parsed TOML / YAML mappings; every problem is a
:class:`~causalloc.errors.SpecError` that starts with the dotted key path and ends with where
the value came from: ``conditions[1].strategy: unknown strategy 'oracel' ... (in spec.toml)``,
``published.a.n: must be an integer >= 2, got 1 (in lee2025.yaml, claim 'x')``.

Hand-written rather than a pydantic model per file: the specs fill defaults from registries
known only at parse time (objectives, attribution methods, the trainer's settings), resolve
paths against the spec's folder, check values against the types of those defaults, and read
keys in file order so that the first problem reported is the first one in the file; a
pydantic model would need validators for all of that, and its messages ("Input should be a
valid number") name neither the file nor the rule.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from causalloc.errors import SpecError
from causalloc.vocab import suggest

#: ``$NAME`` or ``${NAME}`` in a path
_ENV_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")

#: "no default": the key is required
MISSING = object()


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Checker:
    """Typed reads that fail with ``<key path>: <problem> (in <source>)``.

    ``source`` names the file (and, for a file of records, the record); relative paths are
    resolved against ``base_dir`` (default: the current directory).
    """

    def __init__(self, source: str, base_dir: Path | None = None):
        self.source = source
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def fail(self, path: str, problem: str) -> NoReturn:
        raise SpecError(f"{path or '<top level>'}: {problem} (in {self.source})")

    # structure ----------------------------------------------------------------------------
    def table(self, value: Any, path: str) -> dict:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a table, got {type(value).__name__}")
        return dict(value)

    def keys(self, table: Mapping, path: str, allowed) -> None:
        """Every key of ``table`` must be one of ``allowed`` (the first that is not fails)."""
        for key in table:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.fail(where, f"unknown key (known: {', '.join(sorted(allowed))})"
                          f"{suggest(key, allowed)}")

    def required(self, table: Mapping, key: str, path: str) -> Any:
        if key not in table:
            self.fail(path, "missing required key")
        return table[key]

    def get(self, data: Mapping, path: str, required: bool = True) -> Any:
        """The value at dotted ``path`` inside nested mappings; a missing or null value is
        None, or fails as ``missing`` when ``required``."""
        value: Any = data
        for part in path.split("."):
            if not isinstance(value, Mapping) or value.get(part) is None:
                if required:
                    self.fail(path, "missing")
                return None
            value = value[part]
        return value

    def _get(self, table: Mapping, key: str, path: str, default: Any) -> Any:
        if key in table:
            return table[key]
        if default is MISSING:
            self.fail(path, "missing required key")
        return default

    # values -------------------------------------------------------------------------------
    def of_type(self, value: Any, path: str, expected: type) -> Any:
        """``value`` if it is an ``expected`` (ints pass for floats, as floats; bools never
        pass for numbers)."""
        if expected is float and is_number(value):
            return float(value)
        if (expected in (int, float) and isinstance(value, bool)) or not isinstance(value, expected):
            self.fail(path, f"expected {expected.__name__}, got {type(value).__name__}")
        return value

    def string(self, table, key, path, default=MISSING) -> str:
        value = self._get(table, key, path, default)
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {type(value).__name__} {value!r}")
        return value

    def text(self, value: Any, path: str) -> str:
        """A non-empty string."""
        if not (isinstance(value, str) and value.strip()):
            self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def choice(self, table, key, path, options, default=MISSING) -> str:
        value = self.string(table, key, path, default)
        return self.one_of(value, path, options)

    def one_of(self, value: Any, path: str, options) -> Any:
        if value not in options:
            self.fail(path, f"unknown value {value!r} (known: {', '.join(options)})"
                      f"{suggest(value, options)}")
        return value

    def integer(self, table, key, path, default=MISSING, low=None) -> int:
        value = self._get(table, key, path, default)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, f"must be an integer, got {type(value).__name__} {value!r}")
        if low is not None and value < low:
            self.fail(path, f"must be >= {low}, got {value}")
        return value

    def number(self, table, key, path, default=MISSING, low=None, high=None,
               low_open=False, high_open=False) -> float:
        value = self._get(table, key, path, default)
        return self.finite(value, path, low, high, low_open, high_open)

    def finite(self, value, path, low=None, high=None, low_open=False, high_open=False) -> float:
        """A finite number inside the interval given by ``low`` / ``high``, as a float."""
        if not is_number(value) or not math.isfinite(value):
            self.fail(path, f"must be a finite number, got {type(value).__name__} {value!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            interval = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
                        f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}")
            self.fail(path, f"must be in {interval}, got {value}")
        return float(value)

    def number_list(self, table, key, low, high, low_open=False) -> list[float]:
        values = self._list(table, key)
        out = [self.finite(v, f"{key}[{i}]", low, high, low_open) for i, v in enumerate(values)]
        self._no_duplicates(out, key)
        return out

    def int_list(self, table, key, low) -> list[int]:
        values = self._list(table, key)
        for i, value in enumerate(values):
            self.integer({key: value}, key, f"{key}[{i}]", low=low)
        self._no_duplicates(values, key)
        return values

    def string_list(self, value: list, path: str) -> list[str]:
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{path}[{i}]", f"expected str, got {type(item).__name__}")
        return list(value)

    def _list(self, table, key) -> list:
        values = self.required(table, key, key)
        if not isinstance(values, list) or not values:
            self.fail(key, f"must be a non-empty list, got {values!r}")
        return values

    def _no_duplicates(self, values, key) -> None:
        for i, value in enumerate(values):
            if value in values[:i]:
                self.fail(f"{key}[{i}]", f"duplicate value {value!r}")

    def like(self, value: Any, default: Any, path: str) -> Any:
        """Check a hyperparameter against the type of its default (ints pass for floats)."""
        if default is None:
            ok = True
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = is_number(value)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            self.fail(path, f"must be of type {type(default).__name__} like its default "
                      f"{default!r}, got {type(value).__name__} {value!r}")
        return value

    def free_table(self, table, key, path) -> dict:
        value = self.table(table.get(key, {}), path)
        return self.json_value(value, path)

    def json_value(self, value: Any, path: str) -> Any:
        """Free values travel in the run's JSON: reject TOML dates and non-finite floats."""
        if isinstance(value, Mapping):
            return {k: self.json_value(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (datetime.date, datetime.time)):
            self.fail(path, "dates and times are not supported here")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, f"must be finite, got {value}")
        return value

    # paths --------------------------------------------------------------------------------
    def path(self, table, key, path, must_exist) -> str | None:
        if key not in table:
            return None
        return self.resolve_path(self.string(table, key, path), path, must_exist)

    def resolve_path(self, value: str, path: str, must_exist: bool) -> str:
        """Absolute path; relative ones are taken from ``base_dir`` (the spec file's folder).
        ``$NAME`` and ``${NAME}`` take environment variables (e.g. ``"$CAUSALLOC_TOFU_DIR"``),
        so a shipped spec names data by a documented setting, not by a place on one machine."""
        unset = [name for name in _ENV_VARIABLE.findall(value) if name not in os.environ]
        if unset:
            self.fail(path, f"{value!r} names the environment variable {unset[0]}, which is not set "
                            f"(set it to the directory, e.g. export {unset[0]}=/data/tofu)")
        resolved = (self.base_dir / Path(os.path.expandvars(value)).expanduser()).resolve()
        if must_exist and not resolved.exists():
            self.fail(path, f"{value!r} does not exist (looked at {resolved})")
        return str(resolved)
