"""A person's browser, for the tests where one matters (the provider's form, redirects, cookies,
a page loading): Debian's Chromium driven by Playwright, trusting only the install's CA, with the
platform's names mapped to the test hosts, and a login held back at the client's callback (for
the forged-state tests). The `browser` fixture in conftest.py launches one per test session.
"""

from __future__ import annotations

import atexit
import functools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError


def nss_home(ca: str) -> str:
    """A HOME whose NSS database trusts the install's CA (Chromium reads it), and nothing else
    added; removed when the process ends."""
    home = tempfile.mkdtemp(prefix="browser-check-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    db = Path(home, ".pki/nssdb")
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", f"sql:{db}", "-A", "-n", "platform-ca", "-t", "C,,", "-i", ca], check=True)
    return home


@functools.cache
def in_browser_namespace(executable: str) -> str:
    """A launcher of the executable in the test harness's network namespace for the browser
    (tools/testhost.py browser): there Chromium sees no other scenario's bridges and veths come and
    go, each of which would abort a page load that is connecting (net::ERR_NETWORK_CHANGED)."""
    testhost = Path(__file__).resolve().parents[2] / "tools/testhost.py"
    out = subprocess.run([sys.executable, str(testhost), "browser"], capture_output=True, text=True)
    assert out.returncode == 0, f"testhost.py browser failed: {out.stdout}{out.stderr}"
    launcher = Path(tempfile.mkdtemp(prefix="browser-launcher-")) / Path(executable).name
    atexit.register(shutil.rmtree, launcher.parent, ignore_errors=True)
    namespace = out.stdout.strip().splitlines()[-1]
    launcher.write_text(f'#!/bin/sh\nexec ip netns exec {shlex.quote(namespace)} {shlex.quote(executable)} "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


# How each browser chromium() started was launched, so a second one can be started like it.
_LAUNCHED: dict[int, tuple[str, dict[str, str], str]] = {}


def chromium(pw, ca: str, resolve: dict[str, str], executable: str = "/usr/bin/chromium"):
    """Debian's Chromium, in the browser's network namespace: the platform's names resolve to the
    given addresses, only the CA is added."""
    rules = ",".join(f"MAP {host} {ip}" for host, ip in resolve.items())
    browser = pw.chromium.launch(
        executable_path=in_browser_namespace(executable),
        args=[f"--host-resolver-rules={rules}", "--no-sandbox"],
        env={**os.environ, "HOME": nss_home(ca)},
    )
    _LAUNCHED[id(browser)] = (ca, resolve, executable)
    return browser


# The login form's submit button: the test provider's (molecule/shared/oidc_test_provider) or
# Keycloak's (its login theme's `kc-login`). Both name their fields `username` and `password`.
SUBMIT = "#sign-in, #kc-login"


def _submit_form(page, user: dict) -> None:
    page.fill("#username", user["username"])
    page.fill("#password", user["password"])


# What Chromium's failed navigations say when the network under them changed: the error itself,
# or, when it struck a redirect's target (the hub's redirect to the provider), the jump to
# Chromium's error page that interrupts the navigation Playwright waits for.
CHROME_ERROR_PAGE = "chrome-error://chromewebdata/"
ABORTED_BY_NETWORK = ("ERR_NETWORK_CHANGED", CHROME_ERROR_PAGE)


def aborted_by_network(e: Exception) -> bool:
    return isinstance(e, PlaywrightError) and any(s in str(e) for s in ABORTED_BY_NETWORK)


# What a client's start URL may land on instead of the provider's form, and be worth one more
# try: nginx's answer while a service behind it is (re)starting.
UNAVAILABLE = (502, 503, 504)


class LoginFormMissing(AssertionError):
    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def open_login_form(page, start_url: str) -> None:
    """From a client's start URL to the provider's login form. Where the browser lands anywhere
    else, the error names the page, its status and the start of its text, so a failed run says
    what the browser saw."""
    response = page.goto(start_url)
    status = response.status if response else None
    if status not in UNAVAILABLE:  # nginx's error page never turns into the form
        try:
            page.wait_for_selector("#username", timeout=30000)
            return
        except PlaywrightTimeoutError:
            pass
    try:
        text = " ".join(page.inner_text("body", timeout=5000).split())[:400]
    except PlaywrightError as e:
        text = f"(no text: {str(e).splitlines()[0]})"
    landed = page.url
    raise LoginFormMissing(
        f"{start_url} did not lead to the provider's login form: the browser is at {landed}"
        f" (HTTP {status}), which shows: {text!r}",
        retry=status in UNAVAILABLE or landed.startswith(CHROME_ERROR_PAGE),
    )


# A login is tried this many times when the network under the browser changes or a service is
# restarting, waiting longer each time (seconds before the 2nd, the 3rd): another scenario's hosts
# come up in bursts of link and address changes of half a minute, and two quick attempts both
# fell into one (CI on 41bd868: alice's Superset login, aborted twice within a second).
PAUSES = (10, 30)


def sign_in(page, start_url: str, user: dict) -> None:
    """From the client's start_url through the provider's login form and back to the client.

    Chromium aborts navigations in flight when the machine's network changes, which another
    scenario's test hosts coming and going do on this machine, and nginx answers 502 for a
    moment while a service restarts: the login starts again from the beginning then, after a
    pause, with a note in the output (at most len(PAUSES) more times). From the beginning means
    with the cookies the browser had before: an attempt aborted after the form was sent leaves a
    session at the provider and a login half done at the client, and the provider then sends the
    next attempt straight back to the client, which refuses it (CI, stop 32: bob landed on
    Superset's login page)."""
    before = page.context.cookies()
    for attempt in range(len(PAUSES) + 1):
        last = attempt == len(PAUSES)
        try:
            open_login_form(page, start_url)
            _submit_form(page, user)
            with page.expect_navigation():
                page.click(SUBMIT)
            page.wait_for_load_state()
            return
        except LoginFormMissing as e:
            if last or not e.retry:
                raise
            why = str(e)
        except PlaywrightError as e:
            if last or not aborted_by_network(e):
                raise
            why = f"aborted by the network: {str(e).splitlines()[0]}"
        print(f"note: {user['username']}'s login, attempt {attempt + 1}: {why}; again in {PAUSES[attempt]} s")
        time.sleep(PAUSES[attempt])
        page.context.clear_cookies()
        if before:
            page.context.add_cookies(before)


def held_callback(pw, page, start_url: str, user: dict, callback: str) -> str:
    """Starts a login at start_url in page, signs in at the provider's form, and keeps the browser
    from reaching the client's callback (a URL prefix). Returns the callback URL the provider
    issued: a real, unused code with the state the client really sent; page's context still holds
    the client's side of the login (its session or state cookie).

    Playwright does not route the target of a redirect, so the form is submitted from a second
    browser, launched like page's with page's cookies, in which the client's host name does not
    resolve."""
    open_login_form(page, start_url)
    ca, resolve, executable = _LAUNCHED[id(page.context.browser)]
    host = urllib.parse.urlsplit(callback).hostname
    blind = chromium(pw, ca, {**{h: a for h, a in resolve.items() if h != host}, host: "~NOTFOUND"}, executable)
    try:
        form = blind.new_context(storage_state=page.context.storage_state()).new_page()
        form.goto(page.url)
        _submit_form(form, user)
        with form.expect_request(lambda r: r.url.startswith(callback), timeout=30000) as request:
            form.click(SUBMIT, no_wait_after=True)
        return request.value.url
    except PlaywrightTimeoutError as e:
        raise AssertionError(f"the provider never redirected {user['username']} to {callback}") from e
    finally:
        blind.close()


def with_state(url: str, state: str) -> str:
    """The same callback URL with another state."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert "code" in query and "state" in query, f"the provider's callback carries no code and state: {url}"
    query["state"] = state
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
