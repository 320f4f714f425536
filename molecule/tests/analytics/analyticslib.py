"""The analytics tests' names (a module of its own: `from conftest import` would find another
area's conftest when the whole molecule/tests tree is collected)."""

GROUP = "team-a"
SCHEMA = "team_a"
