"""Every molecule scenario, on booted systemd-nspawn test hosts, one step at a time: destroy,
syntax, create, converge, idempotence, verify (the host tests of molecule/tests/), destroy.

A failure names its step. A failed verify lists the host tests that failed, from the JUnit file
pytest writes (.molecule-logs/<scenario>.xml); a failed converge shows the end of that step's
output. Each scenario's full output is kept in .molecule-logs/<scenario>.log, and the summary at
the end of the run lists every host test of every scenario by outcome.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import BIN, HOST_TESTS, ROOT, SCENARIO_SECONDS, run

LOGS = ROOT / ".molecule-logs"
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
STEPS = ("destroy", "syntax", "create", "converge", "idempotence", "verify")
# Scenarios run MOLECULE_PARALLEL at a time, the longest first so that the short ones fill the
# gaps (seconds of each in the last full run, README, Tests).
PARALLEL = int(os.environ.get("MOLECULE_PARALLEL", "2"))
LONGEST_FIRST = ("upgrade", "default", "trixie", "apps", "multihost", "nginx", "acme")


@dataclass
class HostTests:
    """What a scenario's verify ran, read from pytest's JUnit XML."""

    outcomes: dict[str, list[str]] = field(default_factory=lambda: {"passed": [], "failed": [], "skipped": []})
    details: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> HostTests:
        result = cls()
        for case in ET.parse(path).iter("testcase"):
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            skip = case.find("skipped")
            if bad is not None:
                result.outcomes["failed"].append(name)
                result.details[name] = (bad.get("message") or "") + "\n" + (bad.text or "")[-3000:]
            elif skip is not None:
                result.outcomes["skipped"].append(name)
                result.details[name] = skip.get("message") or ""
            else:
                result.outcomes["passed"].append(name)
        return result

    def counts(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in self.outcomes.items())


def molecule(step: str, scenario: str, log: Path) -> tuple[int, str]:
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
    start = time.monotonic()
    out = run([str(BIN / "molecule"), step, "-s", scenario], env=env, timeout=2400)
    text = out.stdout + out.stderr
    with log.open("a") as f:
        f.write(f"\n===== molecule {step} -s {scenario}: rc {out.returncode}, {time.monotonic() - start:.0f} s\n{text}")
    return out.returncode, text


def steps(scenario: str) -> tuple[str, ...]:
    """STEPS, or the scenario's own scenario.test_sequence (its last destroy is the `finally`)."""
    conf = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text()) or {}
    sequence = conf.get("scenario", {}).get("test_sequence")
    if not sequence:
        return STEPS
    return tuple(sequence[:-1] if sequence[-1] == "destroy" else sequence)


@dataclass
class Outcome:
    """How one scenario ended: `failure` names the step and the evidence; None when it passed."""

    seconds: float = 0.0
    skipped: str | None = None
    failure: str | None = None
    host_tests: HostTests | None = None


def run_scenario(scenario: str) -> Outcome:
    """One scenario's steps, then its destroy whatever happened. Runs in a worker thread."""
    start = time.monotonic()
    outcome = Outcome()
    skip_reason = ROOT / "molecule" / scenario / "skip_unless.sh"
    if skip_reason.exists():
        check = run(["bash", str(skip_reason)])
        if check.returncode != 0:
            outcome.skipped = check.stdout.strip() or f"{scenario}: prerequisites missing"
            return outcome
    log, junit = LOGS / f"{scenario}.log", LOGS / f"{scenario}.xml"
    log.write_text("")
    junit.unlink(missing_ok=True)
    try:
        for step in steps(scenario):
            rc, text = molecule(step, scenario, log)
            if step == "verify" and junit.exists():
                tests = outcome.host_tests = HostTests.read(junit)
                failed = "\n\n".join(f"FAILED {n}: {tests.details[n]}" for n in tests.outcomes["failed"])
                if rc != 0 or failed:
                    outcome.failure = f"host tests of {scenario}: {tests.counts()}\n{failed}"
                elif not tests.outcomes["passed"]:
                    outcome.failure = f"verify of {scenario} passed no host test: {tests.counts()}"
            elif rc != 0:
                tail = "\n".join(text.splitlines()[-150:])
                outcome.failure = f"molecule {step} -s {scenario} failed (full log: {log}); its last lines:\n{tail}"
            if outcome.failure:
                break
    except Exception as e:  # reported as the scenario's failure, after its destroy
        outcome.failure = f"{scenario}: {type(e).__name__}: {e}"
    finally:
        molecule("destroy", scenario, log)
    outcome.seconds = time.monotonic() - start
    return outcome


# The selected scenarios' runs, started by start_scenarios() when collection ends.
RUNS: dict[str, Future[Outcome]] = {}


def start_scenarios(session: pytest.Session) -> None:
    """Every selected scenario, started at once on PARALLEL workers, longest first, while the
    other tests of the run (tests/conftest.py puts the scenarios last) go on in the main thread.

    Scenarios share nothing (each has its own hosts, subnet, secrets and logs), and much of a
    scenario is waiting (boots, downloads, browsers, a schedule's minute marks): two workers and
    the repository's own tests keep the machine's two cores busy.
    """
    selected = [item.callspec.params["scenario"] for item in session.items
                if item.originalname == "test_scenario" and hasattr(item, "callspec")]  # fmt: skip
    if not selected or session.config.option.collectonly:
        return
    rank = {s: i for i, s in enumerate(LONGEST_FIRST)}
    order = sorted(selected, key=lambda s: (rank.get(s, len(rank)), s))
    LOGS.mkdir(exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="scenario")
    session.config.add_cleanup(lambda: pool.shutdown(wait=True, cancel_futures=False))
    RUNS.update({scenario: pool.submit(run_scenario, scenario) for scenario in order})


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario, request):
    outcome = RUNS[scenario].result()
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    times = request.config.stash.setdefault(SCENARIO_SECONDS, {})
    times[scenario] = outcome.seconds
    if outcome.host_tests is not None:
        request.config.stash.setdefault(HOST_TESTS, {})[scenario] = outcome.host_tests
    assert outcome.failure is None, outcome.failure


def test_host_tests_are_read_from_junit(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="molecule.tests.sso.test_sso" name="test_alice_logs_in"/>'
        '<testcase classname="molecule.tests.sso.test_sso" name="test_forged_state_refused">'
        '<failure message="AssertionError: got 200">evidence</failure></testcase>'
        '<testcase classname="molecule.tests.keycloak.test_kc" name="test_realm">'
        '<skipped message="no Keycloak archive"/></testcase>'
        "</testsuite></testsuites>"
    )
    tests = HostTests.read(xml)
    assert tests.counts() == "1 passed, 1 failed, 1 skipped"
    assert tests.outcomes["failed"] == ["test_sso::test_forged_state_refused"]
    assert "got 200" in tests.details["test_sso::test_forged_state_refused"]
    assert tests.details["test_kc::test_realm"] == "no Keycloak archive"


def test_a_scenario_may_name_its_own_steps():
    assert steps("default") == STEPS
    assert steps("upgrade") == ("destroy", "syntax", "create", "converge", "verify")
