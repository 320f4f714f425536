"""What the test OpenID provider's administrator does between two logins: give a user other groups,
as a directory's administrator would, and put the configuration back afterwards.

The provider reads its configuration (molecule/shared/oidc_test_provider.yml) when it starts, so
each change restarts it; its sessions and the tokens it issued end with the restart. The file holds
passwords and client secrets: it is edited in place on the provider's host, never carried to the
controller or onto a command line.
"""

from __future__ import annotations

import json
import shlex
from contextlib import contextmanager

import requests
from hostlib import until

CONFIG = "/etc/test-oidc-provider/config.json"

_SET_GROUPS = """
import json, sys
path, user, groups = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = json.load(open(path))
found = [u for u in config["users"] if u["username"] == user]
assert found, f"{user} is not a user of the provider"
for u in found:
    u["groups"] = groups
json.dump(config, open(path, "w"), indent=2)
"""


def restart_provider(host, issuer: str, ca: str) -> None:
    """Restart the provider and wait until its discovery document answers through nginx."""
    host.check_output("systemctl restart test-oidc-provider")

    def answers() -> bool:
        try:
            return requests.get(f"{issuer}/.well-known/openid-configuration", verify=ca, timeout=5).ok
        except requests.RequestException:
            return False

    until(answers, 60, "the test provider's discovery document after its restart")


@contextmanager
def groups_at_provider(host, issuer: str, ca: str, user: str, groups: list[str]):
    """Within the block the provider gives `user` exactly `groups`; afterwards, whatever happened
    in the block, the provider runs with its configuration as it was."""
    saved = CONFIG + ".before-test"
    host.check_output(f"cp -a {CONFIG} {saved}")
    try:
        host.check_output(shlex.join(["python3", "-c", _SET_GROUPS, CONFIG, user, json.dumps(groups)]))
        restart_provider(host, issuer, ca)
        yield
    finally:
        host.check_output(f"mv {saved} {CONFIG}")
        restart_provider(host, issuer, ca)
