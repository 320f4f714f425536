"""Platform accounts on the exec API's host (roles/platform_accounts): the initial users of the
users group have accounts and nobody else does; a first login makes one, once, that the exec API
may enter and read the notebook area of.

`platform-account check` exits 0 for usable platform accounts, 2 for a name that cannot be a
Unix account and 3 for a name that is not a platform account (the tool's documented codes).
"""

from __future__ import annotations

import json

import pytest

TOOL = "/usr/local/sbin/platform-account"


def test_the_users_groups_initial_members_have_accounts(api_host, members):
    names = " ".join(u["username"] for u in members)  # alice bob carol (external_idp.yml)
    out = api_host.run(f"{TOOL} check {names}")
    assert out.rc == 0, f"platform-account check {names}: rc {out.rc} {out.stderr.strip()}"


@pytest.mark.parametrize("name", ["mallory", "root"])
def test_others_are_not_platform_accounts(api_host, name):
    """mallory is known to the provider but outside the users group; root is a system account."""
    out = api_host.run(f"{TOOL} check {name}")
    assert out.rc == 3, f"platform-account check {name}: rc {out.rc} (3 expected) {out.stderr.strip()}"


def test_a_name_that_cannot_be_a_unix_account_is_refused(api_host):
    out = api_host.run(f"{TOOL} check Bad.Name")
    assert out.rc == 2, f"platform-account check Bad.Name: rc {out.rc} (2 expected) {out.stderr.strip()}"


@pytest.fixture(scope="module")
def dave_logs_in_twice(api_host) -> list[dict]:
    """dave's first and second login (`ensure`, as the hub calls it); no dave before, so a second
    verify on the same hosts starts as the first."""
    api_host.run("userdel --remove dave")
    return [json.loads(api_host.check_output(f"{TOOL} ensure dave")) for _ in range(2)]


def test_a_first_login_makes_an_account_and_the_next_finds_it(dave_logs_in_twice):
    created = [answer.get("created") for answer in dave_logs_in_twice]
    assert created == [True, False], f"platform-account ensure dave, twice: {dave_logs_in_twice}"


def test_the_new_account_is_a_platform_account(api_host, dave_logs_in_twice):
    out = api_host.run(f"{TOOL} check dave")
    assert out.rc == 0, f"platform-account check dave after ensure: rc {out.rc} {out.stderr.strip()}"


def test_the_exec_api_may_enter_the_new_home_and_read_its_notebook_area(api_host, dave_logs_in_twice):
    acl = api_host.check_output("getfacl -p /home/dave /home/dave/notebooks")
    missing = [rule for rule in ("user:exec-api:--x", "default:user:exec-api:r-x") if rule not in acl]
    assert not missing, f"the new account's ACLs lack {missing}:\n{acl}"
