from __future__ import annotations

import pytest

from exec_api.core.config import Settings
from exec_api.services.paths import PathRefused, normalize_relative, resolve_notebook


@pytest.fixture
def cfg(tmp_path):
    return Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer="http://i",
        oidc_audience="a",
        notebook_root_template=str(tmp_path / "{username}" / "nb"),
    )


@pytest.mark.parametrize(
    "p",
    [
        "",
        "/a.ipynb",
        "../a.ipynb",
        "x/../../a.ipynb",
        "~a/x.ipynb",
        "http://h/a.ipynb",
        "S3://b/a.ipynb",
        "c:/x.ipynb",
        "a.py",
        "a\x00.ipynb",
        "a\nb.ipynb",
        ".",
        "a\\b.ipynb",
        "x" * 500,
    ],
)
def test_form_refused(p):
    with pytest.raises(PathRefused):
        normalize_relative(p)


def test_normalised():
    assert normalize_relative("./a//b/./c.ipynb") == "a/b/c.ipynb"


def test_symlinks(cfg, tmp_path):
    root = tmp_path / "bob" / "nb"
    (root / "in").mkdir(parents=True)
    (root / "in" / "x.ipynb").write_text("{}")
    (tmp_path / "alice" / "nb").mkdir(parents=True)
    (tmp_path / "alice" / "nb" / "s.ipynb").write_text("{}")
    (root / "inside.ipynb").symlink_to(root / "in" / "x.ipynb")
    (root / "out.ipynb").symlink_to(tmp_path / "alice" / "nb" / "s.ipynb")
    (root / "dirlink").symlink_to(tmp_path / "alice" / "nb")
    assert resolve_notebook(cfg, "bob", "in/x.ipynb")[0] == "in/x.ipynb"
    with pytest.raises(PathRefused, match="symlinks are not followed"):
        resolve_notebook(cfg, "bob", "inside.ipynb")  # even one that stays inside
    with pytest.raises(PathRefused):
        resolve_notebook(cfg, "bob", "out.ipynb")
    with pytest.raises(PathRefused):
        resolve_notebook(cfg, "bob", "dirlink/s.ipynb")
    with pytest.raises(FileNotFoundError):
        resolve_notebook(cfg, "bob", "nope.ipynb")
    with pytest.raises(PathRefused):
        resolve_notebook(cfg, "../alice", "s.ipynb")
