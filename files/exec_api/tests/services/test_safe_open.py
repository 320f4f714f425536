"""The API never follows a user-controlled name with its own privilege: notebooks are read
through a directory handle, without following symlinks, and only when the user owns them."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from conftest import TEST_UIDS

from exec_api.core.config import Settings
from exec_api.services import paths
from exec_api.services.paths import NotebookTooLarge, PathRefused, open_notebook, read_notebook

# Imported at collection, before the session fixture puts the tests' stand-in in its place.
from exec_api.services.paths import unix_uid as real_unix_uid

OTHER_UID = 4242  # "bob": any uid but the test process's


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files to another uid needs root")


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer="http://i",
        oidc_audience="a",
        notebook_root_template=str(tmp_path / "{username}" / "nb"),
        notebook_max_bytes=100_000,
    )


def _nb(path: Path, params: str = "mine = 1") -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def areas(tmp_path: Path) -> tuple[Path, Path]:
    alice = tmp_path / "alice" / "nb"
    bob = tmp_path / "bob" / "nb"
    _nb(alice / "mine.ipynb")
    _nb(bob / "secret.ipynb", "secret = 'bob'")
    return alice, bob


def test_reads_the_users_own_notebook(cfg, areas):
    alice, _ = areas
    f = open_notebook(cfg, "alice", "./mine.ipynb")
    assert f.rel == "mine.ipynb"
    assert f.data == (alice / "mine.ipynb").read_bytes()
    rel, nb = read_notebook(cfg, "alice", "mine.ipynb")
    assert rel == "mine.ipynb" and nb.cells[0].source == "mine = 1"


def test_symlink_as_the_notebook_refused(cfg, areas):
    alice, bob = areas
    (alice / "link.ipynb").symlink_to(bob / "secret.ipynb")
    (alice / "inner.ipynb").symlink_to(alice / "mine.ipynb")  # even one that stays inside
    for name in ("link.ipynb", "inner.ipynb"):
        with pytest.raises(PathRefused, match="symlinks are not followed in notebook paths"):
            open_notebook(cfg, "alice", name)


def test_symlink_as_a_directory_refused(cfg, areas):
    alice, bob = areas
    (alice / "d").symlink_to(bob)
    (alice / "real").mkdir()
    (alice / "real" / "deeper").symlink_to(bob)
    for rel in ("d/secret.ipynb", "real/deeper/secret.ipynb"):
        with pytest.raises(PathRefused, match="symlinks are not followed in notebook paths"):
            open_notebook(cfg, "alice", rel)


def test_symlink_as_the_notebook_area_refused(cfg, areas, tmp_path):
    _, bob = areas
    (tmp_path / "eve").mkdir()
    (tmp_path / "eve" / "nb").symlink_to(bob)
    with pytest.raises(PathRefused, match="symlinks are not followed"):
        open_notebook(cfg, "eve", "secret.ipynb")


def test_file_of_another_uid_refused(cfg, areas):
    _need_root()
    alice, _ = areas
    theirs = _nb(alice / "given.ipynb")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(PathRefused, match="not owned by you"):
        open_notebook(cfg, "alice", "given.ipynb")


def test_hard_link_to_another_uids_file_refused(cfg, areas):
    _need_root()
    alice, bob = areas
    os.chown(bob / "secret.ipynb", OTHER_UID, OTHER_UID)
    os.link(bob / "secret.ipynb", alice / "hard.ipynb")
    with pytest.raises(PathRefused, match="not owned by you"):
        open_notebook(cfg, "alice", "hard.ipynb")


def test_area_of_another_uid_refused(cfg, areas):
    _need_root()
    alice, _ = areas
    os.chown(alice, OTHER_UID, OTHER_UID)
    with pytest.raises(PathRefused, match="your notebook area is not owned by you"):
        open_notebook(cfg, "alice", "mine.ipynb")


def test_fifo_refused_without_blocking(cfg, areas):
    alice, _ = areas
    os.mkfifo(alice / "pipe.ipynb")
    out: list[BaseException | None] = []

    def call() -> None:
        try:
            open_notebook(cfg, "alice", "pipe.ipynb")
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(5)
    assert out, "open_notebook blocked on a FIFO"
    assert isinstance(out[0], PathRefused) and "not a regular file" in str(out[0]), out


def test_directory_named_like_a_notebook_refused(cfg, areas):
    alice, _ = areas
    (alice / "dir.ipynb").mkdir()
    with pytest.raises(PathRefused, match="not a regular file"):
        open_notebook(cfg, "alice", "dir.ipynb")


def test_missing_notebook_is_not_found(cfg, areas):
    with pytest.raises(FileNotFoundError, match="notebook not found: nope.ipynb"):
        open_notebook(cfg, "alice", "nope.ipynb")
    with pytest.raises(FileNotFoundError):
        open_notebook(cfg, "nobody-here", "x.ipynb")


def test_size_capped(cfg, areas):
    alice, _ = areas
    (alice / "big.ipynb").write_bytes(b" " * 100_001)
    with pytest.raises(NotebookTooLarge, match="notebook too large"):
        open_notebook(cfg, "alice", "big.ipynb")


def test_owner_is_the_unix_account():
    assert real_unix_uid("root") == 0
    with pytest.raises(PathRefused, match="no Unix account"):
        real_unix_uid(f"no-such-user-{uuid.uuid4().hex[:8]}")
    assert paths.unix_uid is not real_unix_uid  # the tests' stand-in is in place


# --------------------------------------------------------------------------- over HTTP
def test_refusals_are_clear_4xx(app_client, make_user):
    _need_root()
    alice, bob = make_user(), make_user()
    TEST_UIDS[bob.name] = OTHER_UID
    secret = bob.notebook("s.ipynb", "1", params="secret = 1")
    os.chown(secret, OTHER_UID, OTHER_UID)
    alice.notebook("mine.ipynb", "1")
    (alice.root / "link.ipynb").symlink_to(secret)
    os.link(secret, alice.root / "hard.ipynb")
    os.mkfifo(alice.root / "pipe.ipynb")
    (alice.root / "big.ipynb").write_bytes(b" " * (16 * 1024 * 1024 + 1))
    (alice.root / "junk.ipynb").write_text("not json")
    cases = {
        "link.ipynb": (400, "symlinks are not followed in notebook paths"),
        "hard.ipynb": (400, "not owned by you"),
        "pipe.ipynb": (400, "not a regular file"),
        "big.ipynb": (413, "notebook too large"),
        "junk.ipynb": (422, "not a readable notebook"),
    }
    for rel, (code, text) in cases.items():
        r = app_client.post(
            "/db/notebooks", headers=alice.headers, json={"name": rel, "file_path": rel}
        )
        assert r.status_code == code and text in r.json()["detail"], (rel, r.status_code, r.text)
    ok = app_client.post(
        "/db/notebooks", headers=alice.headers, json={"name": "m", "file_path": "mine.ipynb"}
    )
    assert ok.status_code == 201, ok.text
    r = app_client.put(
        f"/db/notebooks/{ok.json()['id']}", headers=alice.headers, json={"file_path": "hard.ipynb"}
    )
    assert r.status_code == 400 and "not owned by you" in r.json()["detail"], r.text


def test_swapping_a_file_and_a_symlink_never_registers_anothers_notebook(app_client, make_user):
    """alice swaps her notebook (and a directory) with symlinks to bob's while she registers
    it: the API must never read bob's notebook for her, nor answer 500."""
    _need_root()
    alice, bob = make_user(), make_user()
    TEST_UIDS[bob.name] = OTHER_UID
    marker = f"bob_secret_{uuid.uuid4().hex[:8]}"
    theirs = bob.notebook("d/x.ipynb", "1", params=f"{marker} = 1")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    src = alice.notebook("src/x.ipynb", "1", params="mine = 1")
    root = alice.root
    os.link(src, root / "x.ipynb")
    (root / "d").mkdir()
    os.link(src, root / "d" / "x.ipynb")
    stop = threading.Event()

    def swapper() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # the file: a symlink to bob's, then alice's own again
            os.symlink(theirs, root / f"l{n}")
            os.replace(root / f"l{n}", root / "x.ipynb")
            os.link(src, root / f"f{n}")
            os.replace(root / f"f{n}", root / "x.ipynb")
            # the directory: a symlink to bob's, then alice's own again
            os.rename(root / "d", root / "d.real")
            os.symlink(theirs.parent, root / "d")
            os.unlink(root / "d")
            os.rename(root / "d.real", root / "d")

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    codes: dict[int, int] = {}
    deadline = time.monotonic() + 10
    try:
        for i in range(300):
            if time.monotonic() > deadline:
                break
            rel = ("x.ipynb", "d/x.ipynb")[i % 2]
            r = app_client.post(
                "/db/notebooks",
                headers=alice.headers,
                json={"name": f"n{i}", "file_path": rel},
            )
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            assert r.status_code < 500, (i, rel, r.status_code, r.text)
            assert marker not in r.text, ("bob's notebook read for alice", i, rel, r.text)
            if r.status_code == 201:
                names = {p["param_name"] for p in r.json()["parameters"]}
                assert names == {"mine"}, (i, rel, names)
                d = app_client.delete(f"/db/notebooks/{r.json()['id']}", headers=alice.headers)
                assert d.status_code == 204, d.text
    finally:
        stop.set()
        t.join(5)
    print("race outcomes:", codes)
    assert codes.get(201), f"never registered (the test proves nothing): {codes}"
