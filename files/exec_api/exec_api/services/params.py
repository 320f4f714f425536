"""Typed notebook parameters: declaration checks, run-time validation and coercion,
injection into the notebook as data, and discovery from a notebook's ``parameters`` cell.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import keyword
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode

PARAM_TYPES = ("int", "float", "str", "bool", "list", "dict", "date", "datetime")
RULE_KEYS = {"min", "max", "min_length", "max_length", "regex", "choices"}
MAX_VALUE_BYTES = 1_000_000


class ParameterError(ValueError):
    """A parameter problem; ``param`` names the parameter (or None for the whole set)."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(f"parameter {param!r}: {message}" if param else message)
        self.param = param
        self.message = message


def is_valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name.isidentifier()
        and name.isascii()
        and not keyword.iskeyword(name)
        and not name.startswith("__")
        and len(name) <= 100
    )


def check_name(name: object) -> str:
    if not is_valid_name(name):
        raise ParameterError(str(name), "not a valid Python identifier")
    assert isinstance(name, str)
    return name


@dataclass(frozen=True)
class ParamSpec:
    """A declared parameter.  ``has_default``: a default a user set through the API, which is
    injected when the caller gives no value; the notebook's own defaults are not (papermill
    injects only what it is given, and the notebook keeps its current value)."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    has_default: bool = False
    rules: Mapping[str, Any] | None = None


def check_rules(name: str, ptype: str, rules: Mapping[str, Any] | None) -> None:
    """Validate a declaration's validation_rules (at declaration time)."""
    if not rules:
        return
    if not isinstance(rules, Mapping):
        raise ParameterError(name, "validation_rules must be an object")
    unknown = set(rules) - RULE_KEYS
    if unknown:
        raise ParameterError(name, f"unknown validation rule(s): {sorted(unknown)}")
    for k in ("min", "max"):
        if k in rules and rules[k] is not None:
            v = rules[k]
            if ptype in ("date", "datetime"):
                try:
                    coerce(name, ptype, v)
                except ParameterError as e:
                    raise ParameterError(name, f"rule {k} is not a {ptype}") from e
            elif (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or (isinstance(v, float) and not math.isfinite(v))
            ):
                raise ParameterError(name, f"rule {k} must be a number")
    for k in ("min_length", "max_length"):
        if k in rules and rules[k] is not None:
            v = rules[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ParameterError(name, f"rule {k} must be a non-negative integer")
    if rules.get("regex") is not None:
        if not isinstance(rules["regex"], str):
            raise ParameterError(name, "rule regex must be a string")
        try:
            re.compile(rules["regex"])
        except re.error as e:
            raise ParameterError(name, f"rule regex is invalid: {e}") from e
    if rules.get("choices") is not None and not isinstance(rules["choices"], list):
        raise ParameterError(name, "rule choices must be a list")


def _is_json_data(v: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if v is None or isinstance(v, bool | int | str):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_is_json_data(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_json_data(x, depth + 1) for k, x in v.items())
    return False


def coerce(name: str, ptype: str, value: Any) -> Any:
    """Check ``value`` against ``ptype`` and return the coerced value (JSON-able)."""
    if ptype not in PARAM_TYPES:
        raise ParameterError(name, f"unknown type {ptype!r}")
    if ptype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ParameterError(name, "expected a boolean")
    if ptype == "int":
        if isinstance(value, bool):
            raise ParameterError(name, "expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,30}", value.strip()):
            return int(value.strip())
        raise ParameterError(name, "expected an integer")
    if ptype == "float":
        if isinstance(value, bool):
            raise ParameterError(name, "expected a number")
        if isinstance(value, int | float):
            f = float(value)
        elif isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                raise ParameterError(name, "expected a number") from None
        else:
            raise ParameterError(name, "expected a number")
        if not math.isfinite(f):
            raise ParameterError(name, "expected a finite number")
        return f
    if ptype == "str":
        if not isinstance(value, str):
            raise ParameterError(name, "expected a string")
        if "\x00" in value:
            raise ParameterError(name, "NUL characters are not accepted")
        return value
    if ptype == "list":
        if not isinstance(value, list) or not _is_json_data(value):
            raise ParameterError(name, "expected a list of JSON values")
        return value
    if ptype == "dict":
        if not isinstance(value, dict) or not _is_json_data(value):
            raise ParameterError(name, "expected an object with string keys and JSON values")
        return value
    if ptype == "date":
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                pass
        raise ParameterError(name, "expected a date (YYYY-MM-DD)")
    # datetime
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise ParameterError(name, "expected an ISO 8601 datetime")


def _cmp_value(ptype: str, v: Any) -> Any:
    if ptype == "date":
        return dt.date.fromisoformat(v)
    if ptype == "datetime":
        d = dt.datetime.fromisoformat(v)
        return d if d.tzinfo else d.replace(tzinfo=dt.UTC)
    return v


def apply_rules(name: str, ptype: str, value: Any, rules: Mapping[str, Any] | None) -> None:
    if not rules:
        return
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise ParameterError(name, f"must be one of {choices!r}")
    if ptype in ("int", "float", "date", "datetime"):
        cv = _cmp_value(ptype, value)
        lo, hi = rules.get("min"), rules.get("max")
        if lo is not None and cv < _cmp_value(
            ptype, coerce(name, ptype, lo) if ptype in ("date", "datetime") else lo
        ):
            raise ParameterError(name, f"must be >= {lo}")
        if hi is not None and cv > _cmp_value(
            ptype, coerce(name, ptype, hi) if ptype in ("date", "datetime") else hi
        ):
            raise ParameterError(name, f"must be <= {hi}")
    if ptype in ("str", "list", "dict"):
        n = len(value)
        if rules.get("min_length") is not None and n < rules["min_length"]:
            raise ParameterError(name, f"length must be >= {rules['min_length']}")
        if rules.get("max_length") is not None and n > rules["max_length"]:
            raise ParameterError(name, f"length must be <= {rules['max_length']}")
    if ptype == "str" and rules.get("regex") is not None:
        if not re.fullmatch(rules["regex"], value):
            raise ParameterError(name, f"must match {rules['regex']!r}")


def resolve(specs: Iterable[ParamSpec], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values a run injects, as papermill means them: what the caller passed, plus
    defaults a user set through the API; any other parameter keeps the notebook's own value.

    Names that are not identifiers or not declared are refused by name; each value is checked
    and coerced.  ``null`` is a value (Python ``None``) for a parameter that is not required.
    """
    given = dict(given or {})
    by_name = {s.name: s for s in specs}
    # Names first: every non-identifier or undeclared name is refused by name.
    for name in given:
        if not is_valid_name(name):
            raise ParameterError(str(name), "not a valid Python identifier")
    for name in given:
        if name not in by_name:
            raise ParameterError(name, "not declared for this notebook")
    out: dict[str, Any] = {}
    for name, spec in by_name.items():
        if name in given and given[name] is None:
            if spec.required:
                raise ParameterError(name, "is required: null is not a value for it")
            out[name] = None
            continue
        if name in given:
            value = coerce(name, spec.type, given[name])
        elif spec.has_default and spec.default is not None:
            value = coerce(name, spec.type, spec.default)
        elif spec.required:
            raise ParameterError(name, "is required")
        else:
            continue  # the notebook's own default
        apply_rules(name, spec.type, value, spec.rules)
        out[name] = value
    if len(json.dumps(out)) > MAX_VALUE_BYTES:
        raise ParameterError(None, "parameters too large")
    return out


# --------------------------------------------------------------------------- discovery
@dataclass
class Discovered:
    name: str
    type: str
    default: Any
    has_default: bool
    description: str | None = None


_ANN = {
    "int": "int",
    "float": "float",
    "str": "str",
    "bool": "bool",
    "list": "list",
    "dict": "dict",
    "date": "date",
    "datetime": "datetime",
}


def _type_of(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, list | tuple):
        return "list"
    if isinstance(v, dict):
        return "dict"
    return "str"


def parameters_cell(nb: NotebookNode) -> NotebookNode | None:
    for c in nb.cells:
        if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", []):
            return c
    return None


def discover(nb: NotebookNode) -> list[Discovered]:
    """Read the ``parameters`` cell: top-level ``name = literal`` / ``name: type = literal``.

    The cell is parsed, never run.  Non-literal defaults give the declared type and no default.
    A trailing ``# comment`` on the line becomes the description.
    """
    cell = parameters_cell(nb)
    if cell is None:
        return []
    src = cell.source
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return _discover_lines(cell)
    lines = src.splitlines()
    out: dict[str, Discovered] = {}
    for node in tree.body:
        target: ast.expr | None = None
        ann: str | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
            a = node.annotation
            if isinstance(a, ast.Name):
                ann = a.id
            elif isinstance(a, ast.Attribute):
                ann = a.attr
            elif isinstance(a, ast.Subscript) and isinstance(a.value, ast.Name):
                ann = a.value.id
        if not isinstance(target, ast.Name) or not is_valid_name(target.id):
            continue
        default: Any = None
        has_default = False
        if value is not None:
            try:
                default = ast.literal_eval(value)
                has_default = True
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                default = None
        ptype = _ANN.get((ann or "").lower()) if ann else None
        if ptype is None:
            ptype = _type_of(default) if has_default and default is not None else "str"
        if isinstance(default, tuple):
            default = list(default)
        if has_default and not _is_json_data(default):
            default, has_default = None, False
        desc = None
        line = lines[node.lineno - 1] if node.lineno - 1 < len(lines) else ""
        if "#" in line:
            desc = line.split("#", 1)[1].strip() or None
        out[target.id] = Discovered(target.id, ptype, default, has_default, desc)
    return list(out.values())


def _discover_lines(cell: NotebookNode) -> list[Discovered]:
    """A parameters cell that does not parse as a whole (a typo on one line): papermill's own
    line-based inspection (``papermill --help-notebook``), then each default read as a
    literal where it is one, as above."""
    from papermill.translators import PythonTranslator

    out: dict[str, Discovered] = {}
    for p in PythonTranslator.inspect(cell):
        if not is_valid_name(p.name):
            continue
        try:
            default, has_default = ast.literal_eval(p.default), True
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            default, has_default = None, False
        if isinstance(default, tuple):
            default = list(default)
        if has_default and not _is_json_data(default):
            default, has_default = None, False
        ann = (p.inferred_type_name or "").split("[")[0].strip().lower()
        ptype = _ANN.get(ann) or (
            _type_of(default) if has_default and default is not None else "str"
        )
        out[p.name] = Discovered(p.name, ptype, default, has_default, p.help or None)
    return list(out.values())
