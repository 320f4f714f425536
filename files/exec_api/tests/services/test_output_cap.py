"""The output cap (EXEC_API_MAX_OUTPUT_BYTES): a run whose output notebook is larger fails with
a message naming the sizes and the setting, and no output is kept or served; the runner never
reads more than the cap (plus room for the answer) from a warm runner or a run, nor more than a
tail of a warm runner's stderr."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import wait_status

from exec_api.core.config import Settings
from exec_api.services.engine import OutputTooLarge
from exec_api.services.runners import (
    ANSWER_ROOM,
    Control,
    Job,
    SubprocessRunner,
)

LIMIT = 100_000


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(
        database_url="postgresql+psycopg://x@y/z",
        oidc_issuer="http://i",
        oidc_audience="a",
        notebook_root_template=str(tmp_path / "{username}"),
        output_root=str(tmp_path / "out"),
        ready_per_user=0,
    )


def _job(p: Path, limit: int | None = LIMIT) -> Job:
    return Job(
        execution_id=1,
        username="nobody",
        notebook_path=str(p),
        cwd=str(p.parent),
        parameters={},
        types={},
        timeout_seconds=60,
        max_output_bytes=limit,
    )


def _nb(tmp_path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    p = tmp_path / "n.ipynb"
    nbformat.write(nb, str(p))
    return p


def test_a_child_run_over_the_cap_fails_without_its_notebook(cfg, tmp_path):
    r = SubprocessRunner(cfg)
    p = _nb(tmp_path, "print('x' * 300_000)", "open('after', 'w').write('ran')")
    out = r.run(_job(p), Control())
    assert out.status == "failed" and out.notebook is None, out
    assert out.error_message is not None
    assert out.error_message.startswith("output is more than "), out.error_message
    assert f"over the limit of {LIMIT} (EXEC_API_MAX_OUTPUT_BYTES)" in out.error_message
    assert not (tmp_path / "after").exists(), "the run went on after its output was over the cap"


def test_an_output_just_under_the_cap_is_kept(cfg, tmp_path):
    r = SubprocessRunner(cfg)
    p = _nb(tmp_path, "print('é' * 20_000)")  # 40 kB of UTF-8: kept as such, not \\u escapes
    out = r.run(_job(p), Control())
    assert out.status == "succeeded" and out.notebook is not None, out


def test_the_exact_size_of_the_saved_notebook_is_checked(cfg, tmp_path):
    # Many small outputs: the running estimate stays under, the saved JSON (with its
    # per-output framing) is over; the child's final check catches it, with the exact size.
    r = SubprocessRunner(cfg)
    p = _nb(tmp_path, "from IPython.display import display\nfor i in range(3000): display(i)")
    out = r.run(_job(p, limit=150_000), Control())
    assert out.status == "failed" and out.notebook is None, out
    assert out.error_message is not None
    assert out.error_message.startswith("output is ")
    size = int(out.error_message.split()[2])
    assert size > 150_000, out.error_message


class _Flood(SubprocessRunner):
    """A warm runner that ignores the protocol and writes without end (a user's own process can)."""

    def __init__(self, cfg: Settings, where: str) -> None:
        super().__init__(cfg)
        self.where = where

    def warm_command(self) -> list[str]:
        code = (
            "import sys\n"
            f"f = sys.{self.where}.buffer\n"
            "chunk = b'x' * 1048576\n"
            "for _ in range(64): f.write(chunk)\n"
            "sys.exit(3)\n"
        )
        return [sys.executable, "-c", code]


def test_the_worker_stops_reading_a_warm_runner_at_the_cap(cfg, tmp_path):
    p = _nb(tmp_path, "1")
    out = _Flood(cfg, "stdout").run(_job(p), Control())
    assert out.status == "failed"
    assert out.error_message is not None and "over the output cap" in out.error_message


def test_only_the_tail_of_a_warm_runners_stderr_is_kept(cfg, tmp_path):
    p = _nb(tmp_path, "1")
    out = _Flood(cfg, "stderr").run(_job(p), Control())
    assert out.status == "failed" and out.error_message is not None
    assert "exit 3" in out.error_message
    assert len(out.error_message) < 3000, len(out.error_message)


def test_the_warm_runner_stops_reading_a_run_at_the_cap(cfg, tmp_path):
    """The run's own code writes into its answer pipe past the cap (its run process is the
    user's, so it can): the warm runner stops reading, kills the run and says why."""
    flood = (
        "import os\n"
        "run = os.getppid()\n"
        "for fd in os.listdir(f'/proc/{run}/fd'):\n"
        "    info = open(f'/proc/{run}/fdinfo/{fd}').read()\n"
        "    flags = int(info.split('flags:')[1].split()[0], 8)\n"
        "    pipe = os.readlink(f'/proc/{run}/fd/{fd}').startswith('pipe:')\n"
        "    if fd != '2' and pipe and flags & 3 == 1:\n"
        "        with open(f'/proc/{run}/fd/{fd}', 'wb') as f:\n"
        f"            f.write(b'x' * {LIMIT + ANSWER_ROOM + 4096})\n"
    )
    out = SubprocessRunner(cfg).run(_job(_nb(tmp_path, flood)), Control())
    assert out.status == "failed" and out.notebook is None, out
    assert out.error_message is not None and out.error_message.startswith("output is more than ")
    assert f"over the limit of {LIMIT} (EXEC_API_MAX_OUTPUT_BYTES)" in out.error_message


def test_the_worker_checks_the_written_file_and_keeps_nothing_over(cfg, tmp_path):
    from exec_api.services import queue as q
    from exec_api.worker import Worker

    class _NoRunner:
        name = "none"

    cfg.max_output_bytes = 2000
    w = Worker(cfg, session_factory=None, runner=_NoRunner())  # type: ignore[arg-type]
    job = q.Claimed(7, "alice", "n.ipynb", None, {}, 60, 1)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    assert Path(w._write_output(job, nb)).is_file()
    nb.cells.append(nbformat.v4.new_markdown_cell("y" * 5000))
    with pytest.raises(OutputTooLarge, match=r"output is \d+ bytes, over the limit of 2000"):
        w._write_output(job, nb)
    # The earlier output of the same id stays as it was; no temporary file is left.
    assert sorted(os.listdir(tmp_path / "out" / "alice")) == ["7.ipynb"]


# ------------------------------------------------------------------ through the API
@pytest.fixture(scope="module")
def capped_client(env):
    from fastapi.testclient import TestClient

    from exec_api.core.config import get_settings
    from exec_api.main import create_app

    os.environ["EXEC_API_MAX_OUTPUT_BYTES"] = str(LIMIT)
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as c:
            yield c
    finally:
        del os.environ["EXEC_API_MAX_OUTPUT_BYTES"]
        get_settings.cache_clear()


def test_a_run_over_the_cap_fails_and_serves_no_output(capped_client, user):
    user.notebook("big.ipynb", "print('x' * 500_000)")
    r = capped_client.post(
        "/db/executions", headers=user.headers, json={"notebook_path": "big.ipynb"}
    )
    assert r.status_code == 202, r.text
    ex = wait_status(capped_client, r.json()["execution_id"], user.headers)
    assert ex["status"] == "failed", ex
    assert f"over the limit of {LIMIT} (EXEC_API_MAX_OUTPUT_BYTES)" in ex["error_message"], ex
    assert ex["output_path"] is None
    out = capped_client.get(f"/db/executions/{ex['id']}/output", headers=user.headers)
    assert out.status_code == 404
