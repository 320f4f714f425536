"""Superset follows the provider's groups at every login: the provider's administrator takes the
admin group away from the admin, who logs in again and is Admin no more. The provider's
configuration is put back afterwards whatever happens (provider_admin.groups_at_provider).
"""

from __future__ import annotations

import pytest
from provider_admin import groups_at_provider


@pytest.fixture(scope="module")
def demoted_session(provider_host, provider, ca, admin, admin_group, superset_login):
    """The admin's new Superset session, logged in while the provider leaves them only their other
    groups."""
    others = [g for g in admin["groups"] if g != admin_group]
    with groups_at_provider(provider_host, provider.issuer, ca, admin["username"], others):
        yield superset_login(admin)


def test_admin_out_of_the_admin_group_is_admin_no_more(demoted_session):
    roles = demoted_session.roles()
    assert roles and "Admin" not in roles and "Gamma" in roles, (
        f"{demoted_session.who}, out of the admin group at the provider, logs in again with roles {roles}"
    )


def test_admin_out_of_the_admin_group_loses_the_admin_only_log_api(demoted_session):
    status = demoted_session.get("/api/v1/log/").status_code
    assert status in (401, 403), f"{demoted_session.who}: GET /api/v1/log/ is HTTP {status}"
