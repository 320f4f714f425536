"""JupyterLab's scheduling UI (jupyter-scheduler) on the exec API: what alice creates and lists in
her lab are her exec API runs and schedules (exec_api.lab_scheduler).

Behind the page: the lab's `/scheduler/*` API in alice's server with her hub token (what
JupyterLab's scheduling UI calls), checked against the exec API with her own token. In the
browser: alice opens a notebook in JupyterLab, presses "Create a job", fills the form with a
parameter and a schedule every minute, and the exec API runs it as her.
"""

from __future__ import annotations

import json

import pytest
from exec_api.client import ExecApiClient
from hostlib import Hub, api_client, until
from hublib import hub_login

USER = "alice"
NOTEBOOK = "notebooks/lab-jobs/report.ipynb"
# Writes who ran it with which values beside itself: the run is alice's with the lab's parameters.
REPORT = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
         "outputs": [], "source": "month = 1\nregion = 'north'"},
        {"cell_type": "code", "execution_count": None, "id": "w", "metadata": {"tags": []}, "outputs": [],
         "source": "import getpass, pathlib\n"
                   "pathlib.Path('ran-' + str(month) + '.txt').write_text(f'{getpass.getuser()} {month} {region}')"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}  # fmt: skip


@pytest.fixture(scope="module")
def hub(hubs) -> Hub:
    hubs[USER].start()
    r = hubs[USER].http.put(f"{hubs[USER].url}/user/{USER}/api/contents/notebooks/lab-jobs", timeout=60,
                            json={"type": "directory"})  # fmt: skip
    assert r.status_code in (200, 201), f"making ~/notebooks/lab-jobs: HTTP {r.status_code} {r.text[:300]}"
    r = hubs[USER].http.put(f"{hubs[USER].url}/user/{USER}/api/contents/{NOTEBOOK}", timeout=60,
                            json={"type": "notebook", "format": "json", "content": REPORT})  # fmt: skip
    assert r.status_code in (200, 201), f"saving {NOTEBOOK}: HTTP {r.status_code} {r.text[:300]}"
    return hubs[USER]


def lab(hub: Hub, method: str, path: str, body: dict | None = None) -> tuple[int, dict | list | None]:
    """The lab's scheduling API in alice's server, as JupyterLab's UI calls it."""
    r = hub.http.request(method, f"{hub.url}/user/{USER}/scheduler/{path}", json=body, timeout=120)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


@pytest.fixture(scope="module")
def api(api_url, ca, hubs) -> ExecApiClient:
    """The exec API with alice's own token: what the lab shows is checked against it."""
    with api_client(api_url, ca, hubs[USER].new_token(["custom:exec-api:run"], "scheduler checks")) as client:
        yield client


def job_of(hub: Hub, job_id: str, timeout: float = 180) -> dict:
    """The lab's job once it has ended."""

    def ended():
        status, job = lab(hub, "GET", f"jobs/{job_id}")
        assert status == 200, f"GET jobs/{job_id}: HTTP {status} {job}"
        return job if job["status"] in ("COMPLETED", "FAILED", "STOPPED") else None

    return until(ended, timeout, f"the lab's job {job_id} to end")


@pytest.fixture(scope="module")
def job(hub) -> dict:
    """A job created through the lab's API ("Run now"), with parameters as the form sends them."""
    body = {"input_uri": NOTEBOOK, "runtime_environment_name": "exec-api", "name": "report",
            "output_formats": ["ipynb"], "parameters": {"month": "3", "region": "south"}}  # fmt: skip
    status, made = lab(hub, "POST", "jobs", body)
    assert status == 200, f"POST scheduler/jobs: HTTP {status} {made}"
    return job_of(hub, made["job_id"])


def test_the_lab_offers_the_exec_api_as_its_environment(hub):
    status, envs = lab(hub, "GET", "runtime_environments")
    assert status == 200, envs
    assert [(e["name"], [f["name"] for f in e["output_formats"]]) for e in envs] == [("exec-api", ["ipynb"])]


def test_a_job_created_in_the_lab_is_alices_exec_api_run_with_typed_parameters(job, api, site):
    assert job["status"] == "COMPLETED", f"the lab's job: {job}"
    ex = api.execution(int(job["job_id"].removeprefix("exec-")))
    assert (ex.username, ex.status, ex.parameters_used) == (USER, "succeeded", {"month": 3, "region": "south"})
    ran = site.file(f"/home/{USER}/notebooks/lab-jobs/ran-3.txt")
    assert (ran.user, ran.content_string) == (USER, f"{USER} 3 south")


def test_the_labs_jobs_are_alices_exec_api_history(job, hub, api):
    """Read between two reads of alice's history (a schedule of hers may add runs meanwhile)."""
    before = {f"exec-{ex.id}" for ex in api.history(limit=1000)}
    status, listed = lab(hub, "GET", "jobs?max_items=1000")
    after = {f"exec-{ex.id}" for ex in api.history(limit=1000)}
    assert status == 200, listed
    shown = {j["job_id"] for j in listed["jobs"]}
    assert before <= shown <= after, f"not alice's history: {sorted(shown ^ before)[:10]}"
    assert listed["total_count"] == len(shown)


def test_downloading_a_jobs_files_writes_the_output_into_alices_jobs_folder(job, hub, site):
    status, _ = lab(hub, "GET", f"jobs/{job['job_id']}/download_files?redownload=false")
    assert status == 204, f"download_files: HTTP {status}"
    _, after = lab(hub, "GET", f"jobs/{job['job_id']}")
    assert after["downloaded"], f"the lab's job after the download: {after['job_files']}"
    paths = {f["display_name"]: f["file_path"] for f in after["job_files"]}
    output = site.file(f"/home/{USER}/{paths['Notebook']}")
    assert (output.user, output.mode) == (USER, 0o600), f"{output.path}: {output.user} {oct(output.mode)}"
    cells = json.loads(output.content_string)["cells"]
    assert any("injected-parameters" in c["metadata"].get("tags", []) and "month = 3" in "".join(c["source"])
               for c in cells), "the downloaded output has no injected parameters month = 3"  # fmt: skip


def test_a_job_definition_is_alices_exec_api_schedule_and_pause_edit_delete_reach_it(hub, api):
    body = {"input_uri": NOTEBOOK, "runtime_environment_name": "exec-api", "name": "weekday report",
            "output_formats": ["ipynb"], "parameters": {"month": "4"},
            "schedule": "0 3 * * MON-FRI", "timezone": "Europe/Berlin"}  # fmt: skip
    status, made = lab(hub, "POST", "job_definitions", body)
    assert status == 200, f"POST scheduler/job_definitions: HTTP {status} {made}"
    sid = int(made["job_definition_id"].removeprefix("sched-"))
    s = api.schedule(sid)
    # Stored as given; each run converts them to the declared types (as for any schedule).
    assert (s.username, s.name, s.cron, s.timezone, s.parameters, s.paused) == (
        USER, "weekday report", "0 3 * * MON-FRI", "Europe/Berlin", {"month": "4"}, False)  # fmt: skip
    assert lab(hub, "PATCH", f"job_definitions/sched-{sid}", {"active": False})[0] == 204
    assert api.schedule(sid).paused
    assert lab(hub, "PATCH", f"job_definitions/sched-{sid}", {"active": True, "schedule": "30 4 * * *"})[0] == 204
    assert (api.schedule(sid).paused, api.schedule(sid).cron) == (False, "30 4 * * *")
    status, shown = lab(hub, "GET", f"job_definitions/sched-{sid}")
    assert (shown["active"], shown["schedule"], shown["timezone"]) == (True, "30 4 * * *", "Europe/Berlin")
    assert lab(hub, "DELETE", f"job_definitions/sched-{sid}")[0] == 204
    assert sid not in {x.id for x in api.schedules()}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schedule": "* * * * * *"}, "cron"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"parameters": {"month": "march"}}, "month"),
        ({"input_uri": "elsewhere.ipynb"}, "notebook area"),
    ],
    ids=["six-field-cron", "unknown-time-zone", "parameter-of-the-wrong-type", "outside-the-notebook-area"],
)
def test_bad_input_from_the_lab_is_named_and_nothing_is_stored(hub, api, change, named):
    before = [s.id for s in api.schedules()]
    body = {"input_uri": NOTEBOOK, "runtime_environment_name": "exec-api", "name": "bad",
            "schedule": "0 3 * * *", "timezone": "UTC", **change}  # fmt: skip
    status, answer = lab(hub, "POST", "job_definitions", body)
    assert status >= 400 and named in (answer or {}).get("message", ""), f"HTTP {status} {answer}"
    assert [s.id for s in api.schedules()] == before


def test_another_users_run_is_not_a_job_of_alices_lab(hub, hubs, api_url, ca, site):
    """bob's run, asked for by its id in alice's lab: the exec API refuses alice's token."""
    write = (
        "import pathlib, sys; p = pathlib.Path('/home/bob/notebooks'); p.mkdir(exist_ok=True); "
        "(p / 'mine.ipynb').write_text(sys.argv[1])"
    )
    made = site.run("runuser -u bob -- /usr/bin/python3 -c %s %s", write, json.dumps(REPORT))
    assert made.rc == 0, f"bob's notebook: {made.stderr}"
    with api_client(api_url, ca, hubs["bob"].new_token(["custom:exec-api:run"], "bob's run")) as bob:
        theirs = bob.run(path="mine.ipynb").id
    status, answer = lab(hub, "GET", f"jobs/exec-{theirs}")
    assert status >= 400 and "404" in (answer or {}).get("message", ""), f"HTTP {status} {answer}"
    status, listed = lab(hub, "GET", "jobs?max_items=1000")
    assert f"exec-{theirs}" not in {j["job_id"] for j in listed["jobs"]}


# ------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def scheduled_in_the_browser(browser, hub_url, users, hub, api):
    """alice, logged in through the provider's form, opens her notebook in JupyterLab, presses
    "Create a job" in its toolbar, gives month = 7, picks "Run on a schedule" with the cron
    expression * * * * *, and presses Create. The schedule the exec API then holds."""
    before = {s.id for s in api.schedules()}
    login = hub_login(browser, hub_url, users[USER])
    page = login.page
    try:
        page.goto(f"{hub_url}/user/{USER}/lab/tree/{NOTEBOOK}")
        button = page.locator('[data-command="scheduling:create-from-notebook"]').first
        button.wait_for(timeout=120000)
        button.click()
        page.locator("input[name=jobName]").wait_for(timeout=60000)
        # The form shows "Loading …" until the environments arrive, and then sets the environment
        # on the model it was opened with (jupyter-scheduler 2.12.1, create-job.tsx), which
        # overwrites a name typed before: a person waits for the form as this does.
        page.get_by_text("Loading …").wait_for(state="detached", timeout=60000)
        page.fill("input[name=jobName]", "every minute from the lab")
        page.get_by_title("Add new parameter").click()
        page.fill("input[name=parameter-0-name]", "month")
        page.fill("input[name=parameter-0-value]", "7")
        page.locator("input[name=createType][value=JobDefinition]").check()
        page.locator("[name=scheduleInterval]").locator("xpath=..").click()
        page.locator("li[data-value=custom]").click()
        page.fill("input[name=schedule]", "* * * * *")
        assert page.input_value("input[name=jobName]") == "every minute from the lab"
        page.locator("button:has-text('Create')").last.click()
        made = until(lambda: {s.id for s in api.schedules()} - before, 60, "the schedule made in the lab")
    finally:
        login.context.close()
    assert len(made) == 1, f"schedules made by one Create: {made}"
    sid = made.pop()
    yield sid
    api.delete_schedule(sid)


def test_a_schedule_made_in_jupyterlabs_ui_runs_as_alice_with_its_parameter(scheduled_in_the_browser, api, site):
    sid = scheduled_in_the_browser
    s = api.schedule(sid)
    expected = (USER, "every minute from the lab", "* * * * *", {"month": "7"})
    assert (s.username, s.name, s.cron, s.parameters) == expected
    runs = until(lambda: [ex for ex in api.history(schedule_id=sid) if ex.status == "succeeded"], 150,
                 "a run of the schedule made in the lab")  # fmt: skip
    late = (runs[-1].started_at - runs[-1].planned_for).total_seconds()
    print(f"figure: the lab's schedule's first run started {late:.2f} s after its planned minute")
    assert (runs[0].username, runs[0].parameters_used) == (USER, {"month": 7})
    ran = site.file(f"/home/{USER}/notebooks/lab-jobs/ran-7.txt")
    assert (ran.user, ran.content_string) == (USER, f"{USER} 7 north")
