"""Routes are thin: they take their session from the dependencies and call services; they
never import other routes nor open sessions of their own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROUTES = sorted((Path(__file__).parents[2] / "exec_api" / "api" / "routes").glob("[!_]*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.stem)
def test_a_route_module_imports_no_other_route_module(path):
    routes = {n for n in imported(path) if n.startswith("exec_api.api.routes")}
    assert not routes, f"{path.name} imports {sorted(routes)}: shared code belongs in services"


@pytest.mark.parametrize("path", ROUTES, ids=lambda p: p.stem)
def test_a_route_module_opens_no_session_of_its_own(path):
    db = {n for n in imported(path) if n.startswith("exec_api.core.db") or "sessionmaker" in n}
    assert not db, f"{path.name} imports {sorted(db)}: routes take DbSession or ReadDbSession"
