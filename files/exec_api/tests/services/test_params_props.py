"""Property tests of parameter validation and injection (hypothesis)."""

from __future__ import annotations

import ast
import datetime as dt
import json
import keyword

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exec_api.services import params as P
from exec_api.services.engine import TypedPythonTranslator, typed_values

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s)
)


@given(st.text(min_size=1))
def test_non_identifier_names_are_refused_by_name(name):
    spec = [P.ParamSpec(name="x", type="int")]
    if P.is_valid_name(name) and name == "x":
        return
    with pytest.raises(P.ParameterError) as ei:
        P.resolve(spec, {name: 1})
    assert ei.value.param == name


@given(identifiers, json_values)
def test_undeclared_names_are_refused(name, value):
    with pytest.raises(P.ParameterError) as ei:
        P.resolve([P.ParamSpec(name="declared_one", type="str")], {name: value})
    assert ei.value.param == name


def _injected(values, types=None):
    """The injected cell's source, as papermill writes it with the run's translator."""
    return TypedPythonTranslator.codify(typed_values(values, types or {}))


@given(st.dictionaries(identifiers, json_values, max_size=6))
@settings(max_examples=200)
def test_injection_round_trips_values_as_data(values):
    src = _injected(values)
    tree = ast.parse(src)
    assert len(tree.body) == len(values)
    for node in tree.body:
        # each line: one name = one literal (ast.literal_eval accepts nothing that runs code)
        assert isinstance(node, ast.Assign) and len(node.targets) == 1
        name = node.targets[0].id
        assert json.dumps(ast.literal_eval(node.value)) == json.dumps(values[name])
    ns: dict = {}
    exec(compile(tree, "<injected>", "exec"), ns)  # noqa: S102 - that is the point
    got = {k: v for k, v in ns.items() if k in values}
    assert json.dumps(got, sort_keys=True) == json.dumps(values, sort_keys=True)


@given(st.text())
def test_strings_never_become_code(s):
    src = _injected({"s": s})
    (node,) = ast.parse(src).body  # one assignment of one string constant
    assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    assert node.value.value == s


@given(st.dates(), st.datetimes())
def test_dates_injected_as_date_objects(d, t):
    values = {
        "d": P.coerce("d", "date", d.isoformat()),
        "t": P.coerce("t", "datetime", t.isoformat()),
    }
    src = _injected(values, {"d": "date", "t": "datetime"})
    ns: dict = {}
    exec(src, ns)  # noqa: S102
    assert ns["d"] == d and isinstance(ns["d"], dt.date)
    assert ns["t"] == t and isinstance(ns["t"], dt.datetime)
    assert set(ns) == {"__builtins__", "d", "t"}  # nothing else lands in the namespace


def test_null_is_a_value_unless_required():
    specs = [P.ParamSpec(name="s", type="str"), P.ParamSpec(name="i", type="int", required=True)]
    assert P.resolve(specs, {"s": None, "i": 1}) == {"s": None, "i": 1}
    with pytest.raises(P.ParameterError) as ei:
        P.resolve(specs, {"i": None})
    assert ei.value.param == "i" and "null" in ei.value.message


def test_only_given_values_and_user_defaults_are_injected():
    specs = [
        P.ParamSpec(name="a", type="int", default=1, has_default=False),  # the notebook's own
        P.ParamSpec(name="b", type="int", default=7, has_default=True),  # set through the API
        P.ParamSpec(name="c", type="int"),
    ]
    assert P.resolve(specs, {"c": 3}) == {"b": 7, "c": 3}


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(-2000, 2000))
def test_int_min_max(lo, hi, v):
    spec = [P.ParamSpec(name="v", type="int", rules={"min": lo, "max": hi})]
    if lo <= v <= hi:
        assert P.resolve(spec, {"v": v}) == {"v": v}
    else:
        with pytest.raises(P.ParameterError) as ei:
            P.resolve(spec, {"v": v})
        assert ei.value.param == "v"


@given(st.text(max_size=30), st.integers(0, 10), st.integers(0, 10))
def test_string_length_rules(s, a, b):
    spec = [P.ParamSpec(name="s", type="str", rules={"min_length": a, "max_length": b})]
    if a <= len(s) <= b and "\x00" not in s:
        assert P.resolve(spec, {"s": s}) == {"s": s}
    else:
        with pytest.raises(P.ParameterError):
            P.resolve(spec, {"s": s})


@given(json_values, st.sampled_from(P.PARAM_TYPES))
def test_coerce_is_total_and_returns_json(value, ptype):
    try:
        out = P.coerce("p", ptype, value)
    except P.ParameterError as e:
        assert e.param == "p"
        return
    json.dumps(out, allow_nan=False)


@given(st.sampled_from([True, False, 0, 1, 1.5, "1", "true", None, [1], {"a": 1}]))
def test_bool_is_not_int(v):
    if isinstance(v, bool):
        with pytest.raises(P.ParameterError):
            P.coerce("i", "int", v)


def test_defaults_merged_and_required():
    specs = [
        P.ParamSpec(name="a", type="int", default=3, has_default=True),
        P.ParamSpec(name="b", type="str", required=True),
        P.ParamSpec(name="c", type="float"),
    ]
    assert P.resolve(specs, {"b": "x"}) == {"a": 3, "b": "x"}
    assert P.resolve(specs, {"b": "x", "a": "4", "c": 2}) == {"a": 4, "b": "x", "c": 2.0}
    with pytest.raises(P.ParameterError, match="required"):
        P.resolve(specs, {})


def test_rules_checked_at_declaration():
    with pytest.raises(P.ParameterError):
        P.check_rules("x", "str", {"regex": "("})
    with pytest.raises(P.ParameterError):
        P.check_rules("x", "int", {"bogus": 1})
    with pytest.raises(P.ParameterError):
        P.check_rules("x", "int", {"min": "a"})
    P.check_rules("x", "date", {"min": "2020-01-01", "max": "2030-01-01"})


def test_discover_reads_without_running():
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell(
        "a = 1\nb: float = 2\nc = 'x'  # the c\nd = open('/etc/passwd').read()\n"
        "e, f = 1, 2\ng: list = (1, 2)\nimport os\nh: date = '2024-01-01'"
    )
    c.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("z = 0"), c]
    got = {d.name: (d.type, d.default, d.has_default, d.description) for d in P.discover(nb)}
    assert got == {
        "a": ("int", 1, True, None),
        "b": ("float", 2, True, None),
        "c": ("str", "x", True, "the c"),
        "d": ("str", None, False, None),
        "g": ("list", [1, 2], True, None),
        "h": ("date", "2024-01-01", True, None),
    }
    nb.cells[1].source = "this is not python ("
    assert P.discover(nb) == []


def test_discover_degrades_like_papermill_inspect():
    """A typo on one line of the cell: papermill's inspect_notebook still finds the others,
    and so does discovery."""
    from papermill.translators import PythonTranslator

    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell(
        "a = 1\nb: float = 2.5  # the b\nc = 'x'\nd = [1,\n  2]\ne = (  # a typo: never closed\n"
    )
    c.metadata["tags"] = ["parameters"]
    nb.cells = [c]
    names = [p.name for p in PythonTranslator.inspect(c)]
    got = {d.name: (d.type, d.default, d.has_default, d.description) for d in P.discover(nb)}
    assert list(got) == names[: len(got)] and {"a", "b", "c", "d"} <= set(got)
    assert got["a"] == ("int", 1, True, None)
    assert got["b"] == ("float", 2.5, True, "the b")
    assert got["d"] == ("list", [1, 2], True, None)
