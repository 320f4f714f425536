"""The wiring's functions (filter_plugins/platform.py), tested as plain Python: what each derives
from the inventory, the errors bad input gets, and that the platform's two naming rules (a valid
username, the name of a user's password secret) are defined there once and used everywhere."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jinja2
import pytest
import yaml
from conftest import ROOT

# Loaded by path: the plugin's module name (platform) is the standard library's too.
_spec = importlib.util.spec_from_file_location("platform_filters", ROOT / "filter_plugins/platform.py")
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

LOOPBACK = ["127.0.0.1/32", "::1/128"]
ADDR = {"db1": "10.0.0.1", "app1": "10.0.0.2", "app2": "10.0.0.3", "web1": "10.0.0.4", "bi1": "10.0.0.5"}
HOSTVARS = {h: {"platform_address": a} for h, a in ADDR.items()}
INPUTS = {  # inputs.yml's defaults
    "platform_domain": "platform.test",
    "identity_provider": "keycloak",
    "platform_keycloak_realm": "platform",
    "platform_oidc_issuer": "",
    "platform_oidc_endpoints": {},
    "platform_oidc_client_ids": {},
    "platform_oidc_audience": "exec-api",
    "platform_oidc_scopes": ["openid", "profile", "email", "groups"],
    "platform_oidc_username_claim": "preferred_username",
    "platform_oidc_groups_claim": "groups",
    "platform_oidc_admin_group": "platform-admins",
    "platform_oidc_users_group": "platform-users",
    "platform_oidc_groups_custom": [],
}
CLIENT_SPECS = yaml.safe_load((ROOT / "group_vars/all/identity.yml").read_text())["platform_oidc_client_specs"]
for _s in CLIENT_SPECS:  # the spec's template, as Ansible would render it
    _s.update({k: "exec-api" for k, v in _s.items() if isinstance(v, str) and "{{" in v})


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(P.WiringError) as e:
        fn(*args, **kwargs)
    return str(e.value)


# ------------------------------------------------------------------------------ the two rules
VALID = ["a", "alice", "bob-b", "carol_2", "x" * 32, "a-b_c9"]
INVALID = ["", "Alice", "Dave.Jones", "1abc", "-a", "_a", "a" * 33, "bob@example.org", "a b", "ä", "root\n"]


@pytest.mark.parametrize("name", VALID)
def test_valid_usernames(name):
    assert P.valid_username(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_usernames(name):
    assert not P.valid_username(name)


@pytest.mark.parametrize(
    ("username", "secret"),
    [
        ("alice", "idp_user_alice_password"),
        ("bob-b", "idp_user_bob_b_password"),
        ("Dave.Jones", "idp_user_dave_jones_password"),
        ("eve@example.org", "idp_user_eve_example_org_password"),
    ],
)
def test_user_password_secret(username, secret):
    assert P.user_password_secret(username) == secret


def test_the_secret_name_is_one_the_lookup_accepts_and_unchanged_for_valid_usernames():
    """Every valid username gets a secret name the platform_secret lookup accepts, and the same one
    as the wiring gave before the rule was unified (`-` as `_`), so no install loses a password."""
    lookup = (ROOT / "lookup_plugins/platform_secret.py").read_text()
    assert f'NAME_RE = re.compile(r"{P.SECRET_NAME_PATTERN}")' in lookup
    for name in [*VALID, "z" * 32, "a-" * 16]:
        secret = P.user_password_secret(name)
        assert re.match(P.SECRET_NAME_PATTERN, secret), secret
        assert secret == f"idp_user_{name.replace('-', '_')}_password"


@pytest.mark.parametrize("bad", ["", None, 5, "x" * 100])
def test_user_password_secret_refuses_what_cannot_name_a_secret(bad):
    assert "username" in error(P.user_password_secret, bad)


def test_rules_by_name():
    assert P.rule("username") == {"pattern": P.USERNAME_PATTERN, "description": P.USERNAME_RULE}
    assert "known: analytics_group, database, username" in error(P.rule, "usernames")


def render_accounts_tool() -> dict:
    """roles/platform_accounts' tool as the role templates it, loaded as a module."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(P.FilterModule().filters(), to_json=json.dumps, comment=lambda text: f"# {text}")
    src = (ROOT / "roles/platform_accounts/templates/platform-account.j2").read_text()
    role_vars = yaml.safe_load((ROOT / "roles/platform_accounts/vars/main.yml").read_text())
    assert role_vars["__platform_accounts_username"] == "{{ 'username' | platform_rule }}"
    namespace: dict = {"__name__": "platform_account"}
    text = env.from_string(src).render(__platform_accounts_username=P.rule("username"), ansible_managed="managed")
    exec(compile(text, "platform-account", "exec"), namespace)
    return namespace


def test_the_accounts_tool_is_templated_with_the_rule():
    tool = render_accounts_tool()
    assert tool["NAME_RE"].pattern == P.USERNAME_PATTERN
    for name in VALID:
        tool["valid_name"](name)
    for name in INVALID:
        with pytest.raises(tool["Refused"]) as e:
            tool["valid_name"](name)
        assert P.USERNAME_RULE in str(e.value)


# Where the rules are used: each place names the function, none spells it out.
RULE_USERS = {
    "roles/platform_accounts/vars/main.yml": "'username' | platform_rule",
    "roles/platform_accounts/tasks/assert.yml": "__platform_accounts_username.pattern",
    "roles/platform_accounts/templates/platform-account.j2": "__platform_accounts_username.pattern",
    "roles/jupyterhub/vars/main.yml": "'username' | platform_rule",
    "roles/jupyterhub/templates/jupyterhub_config.py.j2": 'S["username_pattern"]',
    "roles/keycloak/tasks/assert.yml": "'username' | platform_rule",
    "group_vars/all/keycloak.yml": "platform_user_password_secrets",
    "molecule/shared/oidc_test_provider/config.json.j2": "platform_user_password_secrets",
    "molecule/tests/hostlib.py": 'filter_plugins/platform.py")',
    "molecule/tests/conftest.py": 'RULES["user_password_secret"]',
    "molecule/tests/jupyterhub/conftest.py": 'RULES["valid_username"]',
}
# Places searched for a rule written out again.
SEARCHED = ["roles", "group_vars", "playbooks", "tools", "molecule/shared", "molecule/tests", "site.yml"]
USERNAME_REGEX = re.compile(r"\[a-z\]\[a-z0-9[._]")  # how username patterns start (not host names')
SECRET_DERIVED = re.compile(r"idp_user_['\"]? *(~|\+|\{)")  # 'idp_user_' ~ ..., f"idp_user_{...}"


def searched_files():
    for entry in SEARCHED:
        path = ROOT / entry
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file() and f.suffix not in (".md", ".json", ".lock") and "node_modules" not in f.parts:
                yield f


@pytest.mark.parametrize(("path", "use"), RULE_USERS.items())
def test_every_place_uses_the_rules(path, use):
    assert use in (ROOT / path).read_text(), f"{path} does not use the platform's rule ({use})"


def test_no_place_writes_a_rule_out_again():
    found = []
    for f in searched_files():
        text = f.read_text(errors="replace")
        if USERNAME_REGEX.search(text) or SECRET_DERIVED.search(text):
            found.append(str(f.relative_to(ROOT)))
    assert not found, f"a username pattern or a user's secret name written out (use filter_plugins/): {found}"


# ------------------------------------------------------------------------------ hosts
def test_address_from():
    assert P.address_from("db1", "db1", HOSTVARS) == "127.0.0.1"
    assert P.address_from("db1", "app1", HOSTVARS) == "10.0.0.1"
    msg = error(P.address_from, "db1", "app1", {"db1": {}})
    assert "platform address of db1 is not known" in msg and "set platform_address for db1" in msg
    assert "group, e.g. postgresql, is empty" in error(P.address_from, "", "app1", HOSTVARS)


def test_an_undefined_address_is_named():
    """A host without facts: Ansible hands the filter an undefined value, not an error."""
    hostvars = {"app1": {"platform_address": jinja2.Undefined()}}
    assert "platform address of app1" in error(P.address_from, "app1", "db1", hostvars)


@pytest.mark.parametrize(
    ("host", "nginx", "listen", "nginx_from"),
    [
        ("app1", "app1", "127.0.0.1", "127.0.0.1"),  # nginx here
        ("app1", "", "127.0.0.1", "127.0.0.1"),  # no nginx: loopback only
        ("app1", "web1", "10.0.0.2", "10.0.0.4"),  # nginx elsewhere
    ],
)
def test_nginx_here_or_elsewhere(host, nginx, listen, nginx_from):
    assert P.listen_address(host, nginx, HOSTVARS) == listen
    assert P.nginx_address(host, nginx, HOSTVARS) == nginx_from


# ------------------------------------------------------------------------------ database
class Passwords(dict):
    """Service passwords that record which were read (the wiring generates only those)."""

    def __init__(self):
        super().__init__({s: f"pw-{s}" for s in ["keycloak", "exec_api", "jupyterhub", "superset"]})
        self.read: list[str] = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def test_databases_one_per_present_service_reachable_from_its_hosts():
    groups = {"postgresql": ["db1"], "exec_api": ["app1", "app2"], "jupyterhub": ["app1"], "superset": ["db1"]}
    pw = Passwords()
    dbs = P.databases(["keycloak", "exec_api", "jupyterhub", "superset"], pw, groups, HOSTVARS, "db1")
    assert dbs == [
        {"name": "exec_api", "owner": "exec_api", "password": "pw-exec_api", "clients": ["10.0.0.2/32", "10.0.0.3/32"]},
        {"name": "jupyterhub", "owner": "jupyterhub", "password": "pw-jupyterhub", "clients": ["10.0.0.2/32"]},
        {"name": "superset", "owner": "superset", "password": "pw-superset", "clients": LOOPBACK},
    ]
    assert pw.read == ["exec_api", "jupyterhub", "superset"]  # keycloak's is never generated


def test_a_database_client_without_an_address_is_marked_for_the_role_to_refuse():
    dbs = P.databases(["exec_api"], Passwords(), {"exec_api": ["app1", "db1"]}, {"app1": {}}, "db1")
    assert dbs[0]["clients"] == ["UNKNOWN-ADDRESS-OF-app1/32", *LOOPBACK]


def test_hba_entries_for_supersets_reader():
    reader = "superset_reader"
    assert P.hba_entries({"superset": ["bi1"]}, HOSTVARS, "db1", reader) == []  # no exec API, nothing to read
    rules = P.hba_entries({"exec_api": ["app1"], "superset": ["db1", "bi1"]}, HOSTVARS, "db1", reader)
    rule = {"database": "exec_api", "user": reader, "method": "scram-sha-256"}
    assert rules == [
        {"type": "host", "address": "127.0.0.1/32", **rule},
        {"type": "hostssl", "address": "10.0.0.5/32", **rule},
    ]
    groups = {"exec_api": ["app1"], "superset": ["bi1"]}
    assert "platform address of bi1" in error(P.hba_entries, groups, {}, "db1", reader)


# ------------------------------------------------------------------------------ analytics
def test_analytics_groups_name_their_schema_roles_and_secret():
    assert P.analytics_groups(["team-a", "lab_2"]) == [
        {"group": "team-a", "schema": "team_a", "role": "group.team-a", "superset_role": "superset.team-a",
         "secret": "postgresql_analytics_superset_team_a_password"},
        {"group": "lab_2", "schema": "lab_2", "role": "group.lab_2", "superset_role": "superset.lab_2",
         "secret": "postgresql_analytics_superset_lab_2_password"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("groups", "says"),
    [
        (["Team A"], "'Team A' cannot name a schema: it must be 1 to 40 characters"),
        (["team-a", "team_a"], "'team-a' and 'team_a' would share the schema 'team_a'"),
        (["shared"], "reserved schema 'shared'"),
        (["pg_x"], "reserved schema 'pg_x'"),
        ("team-a", "platform_analytics_groups must be a list"),
    ],
)
def test_analytics_groups_refuse_what_cannot_be_a_schema(groups, says):
    assert says in error(P.analytics_groups, groups)


def test_superset_gets_one_connection_and_role_per_group_with_a_password():
    schemas = P.analytics_groups(["team-a", "team-b"])
    assert P.analytics_superset_connections(schemas, {"team-a": "pw"}) == [
        {"group": "team-a", "user": "superset.team-a", "password": "pw"}
    ]
    assert P.analytics_superset_roles(schemas, {"team-a": "x", "team-b": "y"}) == {
        "team-a": ["team-a", "sql_lab"],
        "team-b": ["team-b", "sql_lab"],
    }
    assert P.analytics_superset_connections(schemas, {}) == []


def test_analytics_hba_admits_users_code_hosts_the_sync_and_superset():
    groups = {"jupyterhub": ["app1"], "exec_api": ["app1"], "superset": ["bi1"], "postgresql": ["db1"]}
    rules = P.analytics_hba(groups, HOSTVARS, "db1", "analytics")
    rule = {"database": "analytics", "method": "scram-sha-256", "type": "hostssl"}
    assert rules == [
        {"user": "+analytics.users", "address": "10.0.0.2/32", **rule},
        {"user": "analytics.sync", "address": "10.0.0.2/32", **rule},
        {"user": "+analytics.superset", "address": "10.0.0.5/32", **rule},
    ]
    local = P.analytics_hba({"jupyterhub": ["db1"]}, HOSTVARS, "db1", "analytics")
    assert [(r["user"], r["type"], r["address"]) for r in local] == [
        ("+analytics.users", "host", "127.0.0.1/32"), ("analytics.sync", "local", ""),
        ("+analytics.users", "local", "")]  # fmt: skip
    assert P.analytics_hba(groups, HOSTVARS, "db1", "") == []


# ------------------------------------------------------------------------------ web names
WEB = [
    {"group": "exec_api", "label": "api", "port": 8000, "websocket": False},
    {"group": "keycloak", "label": "auth", "port": 8080, "tls_port": 8443, "websocket": False,
     "site": {"proxy_buffer_size": "128k"}, "provider": "keycloak"},
    {"group": "jupyterhub", "label": "hub", "port": 8010, "websocket": True},
]  # fmt: skip


def test_web_services_follow_the_provider():
    assert [s["label"] for s in P.web_services(WEB, "keycloak")] == ["api", "auth", "hub"]
    assert [s["label"] for s in P.web_services(WEB, "external")] == ["api", "hub"]
    assert all("provider" not in s for s in P.web_services(WEB, "keycloak"))
    assert "provider" in WEB[1]  # the declaration is left alone


def test_nginx_sites_proxy_each_present_service():
    groups = {"exec_api": ["web1", "app2"], "keycloak": ["db1"], "nginx": ["web1"]}
    sites = P.nginx_sites(P.web_services(WEB, "keycloak"), "example.org", groups, "web1", HOSTVARS)
    assert sites == [
        {"name": "api", "server_name": "api.example.org", "upstreams": ["127.0.0.1:8000", "10.0.0.3:8000"],
         "websocket": False},
        {"name": "auth", "server_name": "auth.example.org", "upstreams": ["10.0.0.1:8443"], "websocket": False,
         "upstream_tls_name": "auth.example.org", "proxy_buffer_size": "128k"},
    ]  # fmt: skip


def test_a_service_with_a_tls_port_is_plain_http_on_nginxs_own_host():
    groups = {"keycloak": ["web1"], "nginx": ["web1"]}
    sites = P.nginx_sites(P.web_services(WEB, "keycloak"), "example.org", groups, "web1", HOSTVARS)
    assert sites == [{"name": "auth", "server_name": "auth.example.org", "upstreams": ["127.0.0.1:8080"],
                      "websocket": False, "proxy_buffer_size": "128k"}]  # fmt: skip


def test_web_url():
    assert P.web_url("hub", "example.org") == "https://hub.example.org"


# ------------------------------------------------------------------------------ identity
def test_keycloak_is_described_from_the_domain_and_realm():
    custom = ["ops", "platform-users"]
    oidc = P.oidc({**INPUTS, "platform_domain": "example.org", "platform_oidc_groups_custom": custom})
    assert oidc["issuer"] == "https://auth.example.org/realms/platform"
    assert oidc["discovery_url"] == oidc["issuer"] + "/.well-known/openid-configuration"
    assert oidc["endpoints"]["token"] == oidc["issuer"] + "/protocol/openid-connect/token"
    assert set(oidc["endpoints"]) == {"authorization", "token", "userinfo", "jwks", "end_session"}
    assert oidc["groups"] == ["platform-admins", "platform-users", "ops"]
    assert (oidc["provider"], oidc["username_claim"]) == ("keycloak", "preferred_username")
    assert oidc["groups_claim"] == "groups"


def test_an_external_provider_is_the_operators():
    ext = {**INPUTS, "identity_provider": "external", "platform_oidc_issuer": "https://login.example.org/t//",
           "platform_oidc_endpoints": {"token": "https://login.example.org/tok"}}  # fmt: skip
    oidc = P.oidc(ext)
    assert oidc["issuer"] == "https://login.example.org/t"
    assert oidc["endpoints"] == {"token": "https://login.example.org/tok"}


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"identity_provider": "Keycloak"}, "identity_provider is 'Keycloak': set keycloak"),
        ({"platform_oidc_scopes": "openid profile"}, "platform_oidc_scopes must be a list"),
        ({"platform_oidc_groups_custom": "ops"}, "platform_oidc_groups_custom must be a list"),
    ],
)
def test_bad_identity_input_is_named(inputs, message):
    assert message in error(P.oidc, {**INPUTS, **inputs})


def test_registrations_one_client_per_present_service_with_exact_uris():
    groups = {"jupyterhub": ["app1"], "exec_api": ["app1"]}
    regs = P.oidc_registrations(CLIENT_SPECS, groups, "example.org", {"exec_api": "api-42"})
    assert [r["service"] for r in regs] == ["jupyterhub", "exec_api"]
    hub, api = (r["client"] for r in regs)
    assert hub == {"client_id": "jupyterhub", "base_url": "https://hub.example.org",
                   "redirect_uris": ["https://hub.example.org/hub/oauth_callback"],
                   "post_logout_redirect_uris": ["https://hub.example.org/hub/login"], "audience": ""}  # fmt: skip
    assert (api["client_id"], api["audience"]) == ("api-42", "exec-api")
    assert "platform_oidc_client_ids must be a mapping" in error(P.oidc_registrations, CLIENT_SPECS, groups, "x", ["a"])


def test_clients_get_their_secrets_by_name():
    regs = P.oidc_registrations(CLIENT_SPECS, {"superset": ["a"], "exec_api": ["a"]}, "example.org", {})
    assert P.oidc_client_secrets(regs) == ["oidc_superset_client_secret", "oidc_exec_api_client_secret"]
    clients = P.oidc_clients(regs, ["s1", "s2"])
    assert [c["client"]["client_secret"] for c in clients] == ["s1", "s2"]
    assert "client_secret" not in regs[0]["client"]  # the registrations stay without secrets
    assert "2 OIDC clients but 1 client secrets" in error(P.oidc_clients, regs, ["s1"])


# ------------------------------------------------------------------------------ users
USERS = [
    {"username": "ada", "groups": ["platform-admins", "platform-users"]},
    {"username": "bob-b", "groups": ["platform-users"], "password": "given-password"},
    {"username": "mallory", "groups": ["visitors"]},
    {"username": "dan"},
]


def test_users_get_their_password_secrets_unless_given():
    names = P.user_password_secrets(USERS)
    assert names == ["idp_user_ada_password", "idp_user_mallory_password", "idp_user_dan_password"]
    users = P.users_with_passwords(USERS, ["p-ada", "p-mallory", "p-dan"])
    assert [u["password"] for u in users] == ["p-ada", "given-password", "p-mallory", "p-dan"]
    assert users[0]["groups"] == USERS[0]["groups"] and "password" not in USERS[0]
    assert "3 users without a password but 1 passwords" in error(P.users_with_passwords, USERS, ["x"])


def test_group_members():
    assert P.group_members(USERS, "platform-users") == ["ada", "bob-b"]
    assert P.group_members([], "platform-users") == []


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"username": "ada"}, "platform_users must be a list"),
        ("ada", "platform_users must be a list"),
        ([{"name": "ada"}], "platform_users[0] needs a username"),
        ([{"username": "a-b"}, {"username": "a_b"}], "users 'a-b' and 'a_b' would share the password secret"),
    ],
)
def test_bad_users_are_named(users, message):
    assert message in error(P.user_password_secrets, users)


def test_users_with_their_own_passwords_may_share_a_secret_name():
    assert P.user_password_secrets([{"username": "a-b"}, {"username": "a_b", "password": "x" * 12}]) == [
        "idp_user_a_b_password"
    ]


# ------------------------------------------------------------------------------ the plugin
def test_every_filter_the_wiring_calls_exists():
    filters = P.FilterModule().filters()
    assert all(name.startswith("platform_") for name in filters)
    used = set()
    for f in [*sorted((ROOT / "group_vars/all").glob("*.yml")), *(ROOT / p for p in RULE_USERS)]:
        used |= set(re.findall(r"\|\s*(platform_\w+)", Path(f).read_text()))
    assert used and used <= set(filters), used - set(filters)


def test_backup_paths_follow_the_hosts_groups():
    by_group = {"exec_api": ["/home", "/var/lib/exec-api"], "jupyterhub": ["/home", "/var/lib/jupyterhub"],
                "superset": ["/var/lib/superset"]}  # fmt: skip
    groups = {"exec_api": ["app1"], "jupyterhub": ["app1"], "superset": ["ss1"], "postgresql": ["db1"]}
    assert P.backup_paths("app1", groups, by_group) == ["/home", "/var/lib/exec-api", "/var/lib/jupyterhub"]
    assert P.backup_paths("ss1", groups, by_group) == ["/var/lib/superset"]
    assert P.backup_paths("db1", groups, by_group) == []
