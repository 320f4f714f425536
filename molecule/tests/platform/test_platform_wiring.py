"""The wiring between roles (group_vars/ beside site.yml) reaches every host of the inventory."""

from __future__ import annotations


def test_the_wiring_reached_every_host(hostvars):
    hosts = hostvars.keys()
    missing = sorted(h for h in hosts if hostvars[h].get("platform_wiring_loaded") is not True)
    assert hosts and not missing, f"group_vars/ did not reach {missing}"
