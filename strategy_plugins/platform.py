"""The platform's strategy (ansible.cfg): Ansible's linear strategy, over Mitogen when installed.

Tasks run in order on every host, as with ansible.builtin.linear. With Mitogen (pinned in
tools/requirements.txt) module calls reuse one Python interpreter per host instead of starting
one each: the whole site's no-op re-run takes under half the time. Without it, this is
ansible.builtin.linear, with a warning. ANSIBLE_STRATEGY=linear runs any playbook without Mitogen.

Why a plugin of our own: Mitogen's strategies are found by a path into its installed package,
which differs per Python version and installation; this module imports it by name instead.
"""

from __future__ import annotations

import getpass

from ansible.utils.display import Display

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as _Strategy
    from ansible_mitogen.transport_config import PlayContextSpec
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule as _Strategy

    Display().warning(
        "Mitogen is not installed beside Ansible, so this run uses Ansible's plain linear strategy and"
        " takes 2-3 times longer. Install the pinned controller tools with `make tools`"
        " (tools/requirements.txt), or set ANSIBLE_STRATEGY=linear to silence this."
    )


else:
    # Ansible skips `become` when the login user already is the become user; Mitogen compares
    # with the connection's remote_user, which a local connection leaves unset, so a run on the
    # host itself as root (`-c local`) would call sudo, which a minimal Debian does not have.
    _remote_user = PlayContextSpec.remote_user

    def _local_remote_user(self):
        user = _remote_user(self)
        return getpass.getuser() if user is None and self.transport() == "local" else user

    PlayContextSpec.remote_user = _local_remote_user


class StrategyModule(_Strategy):
    pass
