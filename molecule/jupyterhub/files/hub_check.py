#!/usr/bin/env python3
"""JupyterHub, checked from the outside as its users see it: over HTTPS through nginx, trusting
only the install's CA, with a real browser (Playwright driving Debian's Chromium) on the
provider's login form. Modelled on ../shared/sso_check.py (same browser set-up).

Two phases, so the verify play can act on the host in between (restart the hub, read the
server's unit):
  hub_check.py before-restart   logins and refusals, spawn timings, JupyterLab runs cells, a
                                notebook is registered and run through the exec API from the lab
  hub_check.py after-restart    the same browser session's lab still answers and runs a cell;
                                logging out of the hub ends the provider's session too
  hub_check.py admin-removed    the admin user, whom the verify play took out of the admin group
                                at the provider, logs in again and is no longer a hub admin

Each check prints ``ok: ...`` or stops the script with ``FAILED: ...``; timings are printed as
``figure: ...``; the last line is ``all checks passed``.

Input (a JSON file named by $HUB_CHECK_FILE, so no secret is on a command line):
  hub, ca, resolve {host: ip}, chromium, state_dir (0700, for the browser session between phases),
  user, admin, outsider, not_unix: {username, password},
  admin_group, users_group, profiles [{name, groups}], spawn_rounds
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from checklib import check, chromium, fail, figure, held_callback, ok, sign_in, with_state

CFG = json.loads(Path(os.environ["HUB_CHECK_FILE"]).read_text())
HUB = CFG["hub"]
STATE = Path(CFG["state_dir"])
PHASE = sys.argv[1] if len(sys.argv) > 1 else "before-restart"


def launch(pw):
    return chromium(pw, CFG["ca"], CFG["resolve"], CFG.get("chromium", "/usr/bin/chromium"))


def login(browser, user: dict):
    """Through the hub's login, the provider's form and back; returns (context, page, seconds, statuses)."""
    ctx = browser.new_context(ignore_https_errors=False)
    page = ctx.new_page()
    statuses: dict[str, int] = {}
    ctx.on("response", lambda r: statuses.__setitem__(urllib.parse.urlsplit(r.url).path, r.status))
    t0 = time.monotonic()
    sign_in(page, HUB + "/hub/oauth_login", user)
    return ctx, page, time.monotonic() - t0, statuses


class Api:
    """The hub's REST API in the browser's session (cookie plus the page's XSRF token)."""

    def __init__(self, page):
        self.page = page
        page.goto(HUB + "/hub/home")
        self.xsrf = page.evaluate("window.jhdata && window.jhdata.xsrf_token")
        if not self.xsrf:
            fail("no XSRF token on /hub/home")

    def call(self, method: str, path: str, body: dict | None = None):
        status, text = fetch(self.page, method, HUB + "/hub/api" + path, self.xsrf, body)
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return status, data


def fetch(page, method: str, url: str, xsrf: str, body: dict | None = None) -> tuple[int, str]:
    """A request from the page itself (Chromium's network, names and trust; the page's cookies).
    A request the browser gave up on (a long spawn request) comes back as status 0."""
    try:
        return _fetch(page, method, url, xsrf, body)
    except Exception as e:
        if "Failed to fetch" not in str(e):
            raise
        return 0, ""


def _fetch(page, method: str, url: str, xsrf: str, body: dict | None) -> tuple[int, str]:
    return page.evaluate(
        """async ([url, method, xsrf, body]) => {
             const r = await fetch(url, {method, body, credentials: 'same-origin',
                                         headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}});
             return [r.status, await r.text()];
           }""",
        [url, method, xsrf, json.dumps(body) if body is not None else None],
    )


def server_state(api: Api, name: str) -> dict | None:
    status, model = api.call("GET", f"/users/{name}")
    if status != 200:
        fail(f"GET /users/{name}: HTTP {status}")
    return (model.get("servers") or {}).get("")


def wait_for(cond, timeout: float, what: str, step: float = 0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    fail(f"timed out after {timeout} s waiting for {what}")


def stop_server(api: Api, name: str) -> None:
    status, _ = api.call("DELETE", f"/users/{name}/server")
    if status not in (202, 204, 400):
        fail(f"stopping {name}'s server: HTTP {status}")
    wait_for(lambda: server_state(api, name) is None, 120, f"{name}'s server to stop")


def start_server(api: Api, name: str, profile: str) -> float:
    t0 = time.monotonic()
    status, data = api.call("POST", f"/users/{name}/server", {"profile": profile})
    if status == 0 and server_state(api, name) is None:  # the request did not arrive: once more
        status, data = api.call("POST", f"/users/{name}/server", {"profile": profile})
    if status not in (0, 201, 202):
        fail(f"starting {name}'s server: HTTP {status} {data}")
    wait_for(lambda: (server_state(api, name) or {}).get("ready"), 180, f"{name}'s server to be ready")
    return time.monotonic() - t0


def lab_runs(page, user: str, notebook: str, expect: list[tuple[str, float]]) -> None:
    """Opens a notebook in JupyterLab, runs all its cells, waits for each expected output text."""
    # ?reset: a fresh workspace, so only this notebook is open (the lab restores earlier tabs).
    page.goto(f"{HUB}/user/{user}/lab/tree/notebooks/{notebook}?reset")
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120000)
    current = page.locator(".lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel", has_text=notebook)
    current.first.wait_for(timeout=30000)
    # The kernel must be up before "Run All". The execution indicator alone says "idle" before the
    # notebook has a kernel at all; the toolbar names the kernel once the notebook has one.
    indicator = panel.locator(".jp-Notebook-ExecutionIndicator").first
    kernel_name = panel.locator(".jp-Toolbar-kernelName").first
    prompts = panel.locator(".jp-InputArea-prompt")
    # A run that finds no kernel makes the lab ask which kernel to start; a person takes the
    # preferred one it offers ("Select"), and the run that waited for it then starts.
    question = page.locator(".jp-Dialog", has_text="Select Kernel")

    def answer_kernel_question() -> bool:
        if not question.count():
            return False
        print(f"note: the lab asked which kernel to start for {notebook}; took the preferred one", flush=True)
        question.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        return True

    def kernel_up() -> bool:  # answers the kernel question on the way
        answer_kernel_question()
        name = kernel_name.inner_text() if kernel_name.count() else ""
        return name.strip() not in ("", "No Kernel") and indicator.get_attribute("data-status") == "idle"

    def started() -> bool:
        return not all(t.strip() in ("[ ]:", "") for t in prompts.all_inner_texts())

    def lab_state(shot: str) -> str:
        """What the lab shows, for a note or a failure; a screenshot beside the session state."""
        page.screenshot(path=str(STATE / f"{shot}.png"))
        active = page.evaluate("document.activeElement && document.activeElement.className")
        return (f"outputs: {panel.locator('.jp-OutputArea-output').all_inner_texts()}; prompts: "
                f"{prompts.all_inner_texts()}; kernel: {kernel_name.inner_text()!r} "
                f"{indicator.get_attribute('data-status')}; focus: {active!r}; dialogs: "
                f"{page.locator('.jp-Dialog').all_inner_texts()}")  # fmt: skip

    # As a person does: a click into the notebook, then the Run menu, "Run All Cells". While the lab
    # is still settling the click may land before the notebook is the current widget: the item is
    # then disabled, or enabled but does nothing. As a person would, close the menu and try again
    # when the item cannot be clicked or no cell started within a few seconds.
    for attempt in range(1, 6):
        wait_for(kernel_up, 120, f"the kernel of {notebook} (named in the toolbar, idle)")
        if started():  # the last attempt's run waited for the kernel question and has started
            break
        try:
            panel.locator(".jp-InputPrompt").first.click(timeout=10000)
            page.locator(".lm-MenuBar-item", has_text="Run").first.click(timeout=10000)
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)").click(timeout=5000)
        except PlaywrightTimeoutError as e:
            if not answer_kernel_question():
                page.keyboard.press("Escape")
            print(f"note: Run All Cells could not be clicked in {notebook} (attempt {attempt}): "
                  f"{str(e).splitlines()[0]}", flush=True)  # fmt: skip
            continue
        end = time.monotonic() + 10
        while time.monotonic() < end and not started():
            answer_kernel_question()
            time.sleep(0.25)
        if started():
            break
        state = lab_state(f"{notebook}-attempt{attempt}")
        print(f"note: Run All Cells did not start {notebook} (attempt {attempt}; {state})", flush=True)
    for text, timeout in expect:
        try:
            panel.locator(".jp-OutputArea-output", has_text=text).first.wait_for(timeout=timeout * 1000)
        except PlaywrightTimeoutError as e:
            fail(f"{notebook}: no output {text!r} within {timeout} s; {lab_state(notebook)}; {str(e)[:300]}")


def logout(page) -> None:
    """The hub's logout ends the provider's session too: the next login asks for a password."""
    page.goto(HUB + "/hub/logout")
    # The provider asks whether to sign out (RP-initiated logout); a person says yes.
    page.locator("button[autofocus], button[type=submit], input[type=submit]").first.click()
    page.wait_for_load_state()
    r = page.goto(HUB + "/hub/api/user")
    check(r.status in (401, 403), f"after logging out of the hub there is no hub session (HTTP {r.status})")
    page.goto(HUB + "/hub/oauth_login")
    asked = page.locator("#username").count() == 1
    check(asked, f"and the provider's session ended with it: logging in again asks for a password ({page.url})")


def nb(cells: list[str], parameters: bool = False) -> dict:
    """A notebook of code cells; with parameters, the first cell is papermill's parameters cell."""
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "outputs": [], "source": src,
                   "metadata": {"tags": ["parameters"]} if parameters and i == 0 else {}}
                  for i, src in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip


def save_from_lab(page, user: str, path: str, content: dict) -> None:
    """Saves a notebook the way JupyterLab does (the server's contents API, in the lab's session)."""
    cookies = {c["name"]: c["value"] for c in page.context.cookies(f"{HUB}/user/{user}/")}
    status, text = fetch(page, "PUT", f"{HUB}/user/{user}/api/contents/{path}", cookies.get("_xsrf", ""),
                         {"type": "notebook", "format": "json", "content": content})  # fmt: skip
    if status not in (200, 201):
        fail(f"saving {path} from the lab: HTTP {status} {text[:300]}")


U = CFG["user"]["username"]
STATE.mkdir(mode=0o700, exist_ok=True)

with sync_playwright() as pw:
    browser = launch(pw)

    if PHASE == "after-restart":
        ctx = browser.new_context(storage_state=str(STATE / "session.json"))
        page = ctx.new_page()
        lab_runs(page, U, "hub-check-after.ipynb", [("after restart: " + U, 120)])
        ok(f"{U}'s lab still works after the hub restarted (same session, same server)")
        logout(page)
        browser.close()
        print("all checks passed", flush=True)
        sys.exit(0)

    if PHASE == "admin-removed":
        # The verify play took the admin group away from this user at the provider.
        adm = CFG["admin"]
        ctx, page, _, _ = login(browser, adm)
        status, me = Api(page).call("GET", "/user")
        me = me or {}
        check(status == 200 and not me.get("admin") and CFG["admin_group"] not in me.get("groups", []),
              f"{adm['username']}, out of {CFG['admin_group']} at the provider, is no longer a hub admin "
              f"after logging in again (admin: {me.get('admin')}, groups: {me.get('groups')})")  # fmt: skip
        r = page.goto(HUB + "/hub/admin")
        check(r.status == 403, f"and the admin page refuses {adm['username']} (HTTP {r.status})")
        browser.close()
        print("all checks passed", flush=True)
        sys.exit(0)

    # ------------------------------------------------------------------ refusals
    ctx = browser.new_context()
    page = ctx.new_page()
    # A real login held back at the hub's callback: the provider's real code with a state the
    # hub did not issue is refused by the state check itself (the hub names it).
    issued = held_callback(pw, page, HUB + "/hub/oauth_login", CFG["user"], HUB + "/hub/oauth_callback")
    r = page.goto(with_state(issued, "forged-" + str(int(time.time()))))
    check(r.status == 400 and "state" in page.content().lower() and "/hub/spawn" not in page.url,
          f"the provider's code with a forged OAuth state is refused for its state (HTTP {r.status})")  # fmt: skip
    r = page.goto(HUB + "/hub/api/user")
    check(r.status in (401, 403), f"and no session came of it (/hub/api/user: HTTP {r.status})")
    ctx.close()

    out = CFG["outsider"]
    ctx, page, _, statuses = login(browser, out)
    cb = statuses.get("/hub/oauth_callback")
    check(cb == 403, f"{out['username']} (not in {CFG['users_group']} or {CFG['admin_group']}) gets 403 (HTTP {cb})")
    ctx.close()

    bad = CFG["not_unix"]
    ctx, page, _, statuses = login(browser, bad)
    cb = statuses.get("/hub/oauth_callback")
    said = "cannot be a Unix account name" in page.content()
    check(cb == 403 and said, f"{bad['username']} (in {CFG['users_group']}, but not a possible Unix name) gets 403 "
          f"and is told why (HTTP {cb}, explained: {said})")  # fmt: skip
    ctx.close()

    # ------------------------------------------------------------------ admin
    adm = CFG["admin"]
    ctx, page, _, _ = login(browser, adm)
    api = Api(page)
    status, me = api.call("GET", "/user")
    check(status == 200 and me["admin"] and CFG["admin_group"] in me["groups"],
          f"{adm['username']} is a hub admin, from the {CFG['admin_group']} group")  # fmt: skip
    status, users = api.call("GET", "/users")
    check(status == 200, f"{adm['username']} may list the hub's users (HTTP {status})")
    page.goto(HUB + "/hub/spawn")
    radios = page.locator("input[name=profile]")
    names = sorted(radios.nth(i).get_attribute("value") for i in range(radios.count()))
    expected = sorted(p["name"] for p in CFG["profiles"] if set(p["groups"]) & {CFG["admin_group"], CFG["users_group"]})
    check(names == expected, f"{adm['username']} may choose the profiles {expected}")
    ctx.close()

    # ------------------------------------------------------------------ a user's lab
    t_start = time.monotonic()
    ctx, page, login_s, _ = login(browser, CFG["user"])
    if not page.url.startswith(HUB + "/hub/spawn"):  # a server left from an earlier run: stop it
        print(f"note: {U} already had a server ({page.url}); stopped, so the timing below includes that")
        stop_server(Api(page), U)
        page.goto(HUB + "/hub/spawn")
    check(page.url.startswith(HUB + "/hub/spawn"), f"{U} logs in and lands on the spawn form ({page.url})")
    radios = page.locator("input[name=profile]")
    names = [radios.nth(i).get_attribute("value") for i in range(radios.count())]
    mine = [p["name"] for p in CFG["profiles"] if CFG["users_group"] in p["groups"]]
    check(names == mine, f"{U} is offered only the profiles of {CFG['users_group']}: {mine}")
    page.click("#spawn_form [type=submit]")
    page.wait_for_url(f"{HUB}/user/{U}/lab**", timeout=180000)
    page.wait_for_selector(".jp-LauncherCard, .jp-DirListing", timeout=120000)
    lab_s = time.monotonic() - t_start
    ok(f"{U}'s server spawned and JupyterLab loaded")
    # The hub's session and OAuth cookies, its _xsrf, and the server's login cookie: all Secure (TLS
    # ends at nginx). The server's own _xsrf (path /user/<name>/) follows jupyter_server's settings.
    jar = ctx.cookies([f"{HUB}/hub/", f"{HUB}/hub/api/", f"{HUB}/user/{U}/", f"{HUB}/user/{U}/lab"])
    server_xsrf = [c for c in jar if c["name"] == "_xsrf" and c["path"].startswith("/user/")]
    jar = [c for c in jar if c not in server_xsrf]
    check(len(jar) > 0 and all(c["secure"] for c in jar),
          f"every cookie the hub sets is Secure: {sorted({c['name'] for c in jar})} "
          f"(not Secure: {[c['name'] for c in jar if not c['secure']]})")  # fmt: skip
    print(f"note: the server's own _xsrf cookie Secure: {[c['secure'] for c in server_xsrf]}", flush=True)
    api = Api(page)
    status, me = api.call("GET", "/user")
    check(status == 200 and not me["admin"] and CFG["users_group"] in me["groups"],
          f"{U} is not an admin and is in {CFG['users_group']} (groups managed from the provider)")  # fmt: skip
    stop_server(api, U)
    status, data = api.call("POST", f"/users/{U}/server", {"profile": "large"})
    check(status >= 400, f"a profile outside {U}'s groups is refused on the server side (HTTP {status})")
    wait_for(lambda: server_state(api, U) is None, 60, f"no server of {U} after the refusal")

    # Spawn timings: stop, start (API, as the spawn page does), ready.
    times = []
    for _ in range(int(CFG.get("spawn_rounds", 3))):
        stop_server(api, U)
        times.append(start_server(api, U, mine[0]))
    figure(f"start server -> ready, median of {len(times)}: {statistics.median(times):.2f} s "
           f"(each: {', '.join(f'{t:.2f}' for t in times)})")  # fmt: skip

    # A notebook saved from the lab, registered and run through the exec API from the lab.
    report = nb([
        "# parameters\nx = 20",
        "import getpass, pathlib\nresult = x + 22\n"
        "pathlib.Path.home().joinpath('notebooks', 'hub-check-ran.txt').write_text(f'{getpass.getuser()} {result}')\n"
        "print(result)",
    ], parameters=True)  # fmt: skip
    # The restarted server has its own session: open the lab again (the hub's OAuth, then the lab).
    page.goto(f"{HUB}/user/{U}/lab")
    page.wait_for_selector(".jp-LauncherCard, .jp-DirListing", timeout=120000)
    # A new file each run: the exec API refuses to register a file twice (and a re-run of the check
    # on the same hosts must not trip over the last one).
    stamp = time.strftime("%Y%m%d%H%M%S")
    save_from_lab(page, U, f"notebooks/hub-check-report-{stamp}.ipynb", report)
    # One cell: who runs it, then the exec-api command line.
    driver = nb([
        "import getpass, os\nprint('whoami: ' + getpass.getuser(), os.getcwd(), flush=True)\n"
        "import json, subprocess\n"
        f"reg = subprocess.run(['exec-api', 'register', 'hub-check-report-{stamp}.ipynb', '--name', 'hc-{stamp}'],\n"
        "                     capture_output=True, text=True)\n"
        "print('register rc', reg.returncode, reg.stderr[-500:])\n"
        "nid = json.loads(reg.stdout)['id']\n"
        "run = subprocess.run(['exec-api', 'run', '--id', str(nid), '-p', 'x=100', '--wait',\n"
        "                      '-o', os.path.expanduser('~/notebooks/hub-check-report.out.ipynb')],\n"
        "                     capture_output=True, text=True)\n"
        "print('exec-api run rc', run.returncode, run.stdout[-800:], run.stderr[-800:])\n"
        "print('EXEC-DONE ' + str(run.returncode))",
    ])  # fmt: skip
    save_from_lab(page, U, "notebooks/hub-check.ipynb", driver)
    save_from_lab(page, U, "notebooks/hub-check-after.ipynb",
                  nb(["import getpass\nprint('after restart: ' + getpass.getuser())"]))  # fmt: skip
    t0 = time.monotonic()
    lab_runs(page, U, "hub-check.ipynb", [("whoami: " + U, 120), ("EXEC-DONE 0", 300)])
    ok(f"JupyterLab runs cells as {U}; the exec-api command line registered and ran a notebook from the lab")
    figure(f"lab: open notebook, run it, exec API run included {time.monotonic() - t0:.2f} s")

    STATE.mkdir(mode=0o700, exist_ok=True)
    ctx.storage_state(path=str(STATE / "session.json"))
    os.chmod(STATE / "session.json", 0o600)
    ctx.close()
    browser.close()

print("all checks passed", flush=True)
