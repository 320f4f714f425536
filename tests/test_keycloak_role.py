"""The keycloak role, checked on the controller (no test host, no Keycloak archive needed).

- every key of the rendered keycloak.conf is an option Keycloak knows (tests/data/keycloak_options.txt,
  taken from Keycloak's own option classes);
- the rendered unit passes `systemd-analyze verify` and scores at most 4.0 in
  `systemd-analyze security --offline`;
- the realm, clients, groups and users the role hands to the keycloak_* modules are built from the
  wiring as promised (exact redirect URIs, PKCE S256, secrets, audience mapper, groups scope);
- without a verifiable release the role stops with a message naming the variable;
- what the role sends is what Keycloak keeps (Keycloak 26's own rules, restated below): clients
  name every scope they need, mappers carry every key Keycloak would add, so a second run is a no-op.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, WIRING, run

PLAYBOOK = str(BIN / "ansible-playbook")
ROLE = ROOT / "roles/keycloak"
OPTIONS = {
    line.strip()
    for line in (ROOT / "tests/data/keycloak_options.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}
# Keycloak 26's default client scopes of a realm (RealmManager / OIDCLoginProtocolFactory). A client
# representation that names defaultClientScopes or optionalClientScopes gets exactly those
# (RepresentationToModel removes the realm defaults first); TokenManager.isValidScope then refuses
# any requested scope the client lacks (invalid_scope). The hub and Superset ask for
# `openid profile email groups`.
KEYCLOAK_DEFAULT_SCOPES = {"basic", "acr", "web-origins", "profile", "email", "roles"}
REQUESTED_SCOPES = {"profile", "email", "groups"}
# The units tasks/configure.yml renders from keycloak.service.j2: unit -> kind.
UNITS = {"keycloak.service": "server", "keycloak-bootstrap-admin.service": "bootstrap-admin"}
USERS = [
    {"username": "ada", "email": "ada@example.org", "first_name": "Ada", "last_name": "L",
     "groups": ["platform-admins", "platform-users"]},
    {"username": "bob-b", "email": "bob@example.org", "first_name": "Bob", "last_name": "B",
     "groups": ["platform-users"]},
]  # fmt: skip


def render_role(inventory: Path, out: Path, *extra: str):
    """Render the role's templates and data for the inventory's host as the platform would."""
    out.mkdir(parents=True, exist_ok=True)
    play = inventory.parent / "render_keycloak.yml"
    # Precedence as in a run: role defaults < wiring (playbook group_vars) < role vars.
    data = ("{{ {'clients': __keycloak_client_data, 'scope': __keycloak_groups_scope, 'groups': keycloak_groups,"
            " 'users': __keycloak_user_data, 'build': __keycloak_build_options, 'oidc': platform_oidc_client,"
            " 'realm': keycloak_realm, 'home': __keycloak_home, 'java': keycloak_java_package,"
            " 'heap': keycloak_heap_max_mb | int} | to_json }}")  # fmt: skip
    tasks = [
        {"ansible.builtin.template": {"src": f"{ROLE}/templates/{name}.j2", "dest": f"{out}/{name}", "mode": "0600"}}
        for name in [
            "keycloak.conf",
            "keycloak.env",
            "bootstrap.env",
            "keycloak-firewall.nft",
            "keycloak-firewall.service",
        ]
    ]
    # The unit template makes both units, as tasks/configure.yml does.
    tasks += [
        {"ansible.builtin.template": {"src": f"{ROLE}/templates/keycloak.service.j2", "dest": f"{out}/{unit}",
                                      "mode": "0600"}, "vars": {"__keycloak_unit_kind": kind}}
        for unit, kind in UNITS.items()
    ]  # fmt: skip
    tasks.append({"ansible.builtin.copy": {"dest": f"{out}/data.json", "mode": "0600", "content": data}})
    vars_files = [f"{ROLE}/defaults/main.yml", *WIRING, f"{ROLE}/vars/main.yml"]
    play.write_text(yaml.safe_dump([{"hosts": "local1", "gather_facts": False, "vars_files": vars_files,
                                     "tasks": tasks}]))  # fmt: skip
    result = run([PLAYBOOK, "-i", str(inventory), str(play), *extra])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    return json.loads((out / "data.json").read_text())


def facts(release: str, memtotal_mb: int) -> str:
    """Extra vars standing for the host's facts (the render play gathers none)."""
    return json.dumps({"ansible_facts": {"distribution": "Debian", "distribution_major_version": release,
                                         "memtotal_mb": memtotal_mb}})  # fmt: skip


@pytest.fixture
def rendered(local_inventory, tmp_path):
    users = json.dumps({"platform_users": USERS})
    base = tmp_path / "opt"
    data = render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org", "-e", users,
                       "-e", f"keycloak_base_dir={base}", "-e", facts("12", 4096))  # fmt: skip
    return tmp_path / "out", data


def conf_items(text: str) -> dict[str, str]:
    items = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not key=value: {line!r}"
            items[key.strip()] = value.strip()
    return items


def test_every_conf_key_is_a_known_option(rendered):
    out, _ = rendered
    conf = conf_items((out / "keycloak.conf").read_text())
    unknown = set(conf) - OPTIONS
    assert not unknown, f"keycloak.conf keys Keycloak does not know: {unknown}"
    assert conf["db"] == "postgres"
    assert jdbc_url(conf) == "jdbc:postgresql://127.0.0.1:5432/keycloak"  # loopback: no TLS option
    assert conf["hostname"] == "https://auth.example.org"
    assert conf["proxy-headers"] == "xforwarded"
    assert conf["http-enabled"] == "true"
    assert conf["http-host"] == "127.0.0.1"  # nginx on the same host
    assert conf["proxy-trusted-addresses"] == "127.0.0.1"
    assert conf["health-enabled"] == conf["metrics-enabled"] == "true"
    assert conf["http-management-port"] == "9000"
    assert "db-password" not in conf  # the password lives in keycloak.env (0640 root:keycloak)
    assert not any("password" in v.lower() for v in conf.values())


def jdbc_url(conf: dict[str, str]) -> str:
    """The JDBC URL Keycloak 26 uses, from keycloak.conf (Database.Vendor.POSTGRES): db-url when set,
    else jdbc:postgresql://<db-url-host>:<db-url-port>/<db-url-database><db-url-properties>, where
    db-url-properties is ignored whenever db-url is set."""
    if "db-url" in conf:
        return conf["db-url"]
    return "jdbc:postgresql://{}:{}/{}{}".format(conf.get("db-url-host", "localhost"), conf.get("db-url-port", "5432"),
                                                conf.get("db-url-database", "keycloak"),
                                                conf.get("db-url-properties", ""))  # fmt: skip


def pgjdbc_properties(url: str) -> dict[str, str]:
    """The URL's properties as pgjdbc's Driver.parseURL reads them (split on &, URL-decoded)."""
    query = url.partition("?")[2]
    return {k: urllib.parse.unquote_plus(v) for k, _, v in (p.partition("=") for p in query.split("&") if p)}


@pytest.mark.parametrize(
    ("extra", "sslmode", "rootcert"),
    [
        ({"keycloak_db_host": "10.0.0.5"}, "require", None),
        ({"keycloak_db_host": "10.0.0.5", "keycloak_db_sslrootcert": "/etc/ssl/pg ca+1.crt"}, "verify-full",
         "/etc/ssl/pg ca+1.crt"),
        ({"keycloak_db_host": "localhost"}, None, None),
    ],
)  # fmt: skip
def test_database_on_another_host_is_reached_over_tls(local_inventory, tmp_path, extra, sslmode, rootcert):
    render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org", "-e", facts("12", 4096),
                "-e", json.dumps(extra))  # fmt: skip
    conf = conf_items((tmp_path / "out/keycloak.conf").read_text())
    assert set(conf) <= OPTIONS
    url = jdbc_url(conf)
    assert url.startswith(f"jdbc:postgresql://{extra['keycloak_db_host']}:5432/keycloak"), url
    props = pgjdbc_properties(url)
    assert props.get("sslmode") == sslmode, url
    assert props.get("sslrootcert") == rootcert, url


def test_database_tls_that_cannot_hold_is_refused(local_inventory):
    play, base = assert_play(local_inventory), ["-e", facts("12", 4096)]
    plain = run([PLAYBOOK, "-i", str(local_inventory), str(play), *base, "-e", "keycloak_db_host=10.0.0.5",
                 "-e", "keycloak_db_sslmode=prefer"], env=ROLES_ENV)  # fmt: skip
    assert plain.returncode != 0
    assert "keycloak_db_sslmode is 'prefer' for the database at 10.0.0.5" in plain.stdout, plain.stdout[-3000:]
    no_ca = run([PLAYBOOK, "-i", str(local_inventory), str(play), *base, "-e", "keycloak_db_host=10.0.0.5",
                 "-e", "keycloak_db_sslmode=verify-full"], env=ROLES_ENV)  # fmt: skip
    assert no_ca.returncode != 0
    assert "need keycloak_db_sslrootcert" in no_ca.stdout


# PostgreSQL's max_connections on Debian (no role of ours changes it), shared by Keycloak, the exec
# API, JupyterHub and Superset.
POSTGRESQL_MAX_CONNECTIONS = 100
KEYCLOAK_DEFAULT_POOL_MAX_SIZE = 100  # DatabaseOptions.DB_POOL_MAX_SIZE, Keycloak 26


def test_connection_pool_leaves_room_for_the_other_services(rendered, local_inventory, tmp_path):
    out, _ = rendered
    conf = conf_items((out / "keycloak.conf").read_text())
    # Unset, Keycloak would take its default: all of PostgreSQL's connections.
    assert KEYCLOAK_DEFAULT_POOL_MAX_SIZE >= POSTGRESQL_MAX_CONNECTIONS
    pool = int(conf["db-pool-max-size"])
    assert pool == 20 and pool <= POSTGRESQL_MAX_CONNECTIONS // 4, conf
    render_role(local_inventory, tmp_path / "other", "-e", "platform_domain=example.org", "-e", facts("12", 4096),
                "-e", "keycloak_db_pool_max_size=12")  # fmt: skip
    assert conf_items((tmp_path / "other/keycloak.conf").read_text())["db-pool-max-size"] == "12"
    play = assert_play(local_inventory)
    big = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e", facts("12", 4096),
               "-e", "keycloak_db_pool_max_size=100"], env=ROLES_ENV)  # fmt: skip
    assert big.returncode != 0
    assert "keycloak_db_pool_max_size is 100: it must be between 1 and 50" in big.stdout, big.stdout[-3000:]


def test_the_option_list_can_fail():
    assert "hostname-url" not in OPTIONS  # hostname v1, gone in 26
    assert "proxy" not in OPTIONS  # replaced by proxy-headers


def systemd_verify(unit: Path) -> str:
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # verify also reports on units unit depends on (network-online.target...), which do not matter here.
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if unit.name in ln or str(unit.parent) in ln]
    return f"rc={out.returncode}\n" + "\n".join(lines)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies_and_is_hardened(rendered, tmp_path, name):
    out, data = rendered
    # ExecStart must exist for verify: a stub kc.sh in the (temporary) release directory.
    kc = Path(data["home"]) / "bin/kc.sh"
    kc.parent.mkdir(parents=True)
    kc.write_text("#!/bin/sh\nexit 0\n")
    kc.chmod(0o755)
    unit = tmp_path / "units" / name
    unit.parent.mkdir()
    shutil.copy(out / name, unit)
    report = systemd_verify(unit)
    assert report.startswith("rc=0") and name not in report.split("\n", 1)[1], report

    # The check can fail: an unknown directive is reported.
    broken = tmp_path / "broken" / name
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("[Service]\n", "[Service]\nNoSuchDirective=yes\n"))
    assert "NoSuchDirective" in systemd_verify(broken)

    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                         text=True)  # fmt: skip
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", sec.stdout + sec.stderr)
    assert match, sec.stdout[-2000:] + sec.stderr[-2000:]
    assert float(match.group(1)) <= 4.0, sec.stdout


def unit_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_the_recovery_unit_is_keycloaks_command_on_a_stopped_server(rendered):
    """Keycloak's guide: bootstrap-admin runs with every node stopped, non-interactively here,
    with the credentials from the environment (never the command line), in the server's sandbox."""
    out, data = rendered
    server, recovery = (unit_lines((out / name).read_text()) for name in UNITS)
    assert "Conflicts=keycloak.service" in recovery and "Type=oneshot" in recovery
    assert any(ln.startswith("After=keycloak.service") for ln in recovery), "not ordered after the server's stop"
    exec_start = next(ln for ln in recovery if ln.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split() == [
        f"{data['home']}/bin/kc.sh", "bootstrap-admin", "user", "--optimized", "--no-prompt",
        "--username:env", "KC_BOOTSTRAP_ADMIN_USERNAME", "--password:env", "KC_BOOTSTRAP_ADMIN_PASSWORD"]  # fmt: skip
    assert "EnvironmentFile=/etc/keycloak/bootstrap.env" in recovery
    # The server never reads the temporary credentials; both share the sandbox, line for line.
    assert not any("bootstrap.env" in ln for ln in server), "the server reads bootstrap.env"
    sandbox = [ln for ln in server if ln.split("=")[0] in SANDBOX_KEYS]
    assert len(sandbox) >= 20 and sandbox == [ln for ln in recovery if ln.split("=")[0] in SANDBOX_KEYS]
    assert "[Install]" not in recovery, "the recovery unit would start at boot"


SANDBOX_KEYS = {"User", "Group", "UMask", "NoNewPrivileges", "ProtectSystem", "ReadWritePaths", "ProtectHome",
                "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "ProtectProc", "RestrictAddressFamilies",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
                "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "CapabilityBoundingSet",
                "AmbientCapabilities", "RemoveIPC", "DevicePolicy", "KeyringMode"}  # fmt: skip


def test_realm_data_from_the_wiring(rendered):
    _, data = rendered
    oidc = data["oidc"]
    clients = {c["client_id"]: c for c in data["clients"]}
    assert set(clients) == {"jupyterhub", "superset", "exec-api"}
    for spec in oidc.values():
        c = clients[spec["client_id"]]
        assert c["secret"] == spec["client_secret"] and len(c["secret"]) >= 16
        assert c["redirect_uris"] == spec["redirect_uris"]  # exact, copied, no wildcard
        assert all("*" not in u for u in c["redirect_uris"])
        assert c["attributes"]["post.logout.redirect.uris"] == "##".join(spec["post_logout_redirect_uris"])
        assert c["attributes"]["pkce.code.challenge.method"] == "S256"
        assert c["public_client"] is False and c["client_authenticator_type"] == "client-secret"
        assert c["standard_flow_enabled"] is True
        assert c["implicit_flow_enabled"] is False and c["direct_access_grants_enabled"] is False
        assert "groups" in c["optional_client_scopes"]
    assert clients["jupyterhub"]["redirect_uris"] == ["https://hub.example.org/hub/oauth_callback"]
    # Only the exec API is a resource server: its access tokens carry aud=exec-api.
    aud = clients["exec-api"]["protocol_mappers"]
    assert [m["protocolMapper"] for m in aud] == ["oidc-audience-mapper"]
    assert aud[0]["config"]["included.custom.audience"] == "exec-api"
    assert aud[0]["config"]["access.token.claim"] == "true"
    assert clients["jupyterhub"]["protocol_mappers"] == clients["superset"]["protocol_mappers"] == []

    scope = data["scope"]
    assert scope["name"] == "groups"
    (mapper,) = scope["protocol_mappers"]
    assert mapper["protocolMapper"] == "oidc-group-membership-mapper"
    assert mapper["config"]["claim.name"] == "groups" and mapper["config"]["full.path"] == "false"

    assert data["groups"] == ["platform-admins", "platform-users"]
    assert data["realm"] == "platform"
    assert set(data["build"]) == {"db", "health-enabled", "metrics-enabled", "features"}


def realm_task(name: str) -> dict:
    """The task of tasks/realm.yml (inside its block) whose name starts with `name`."""
    (block,) = yaml.safe_load((ROLE / "tasks/realm.yml").read_text())
    (task,) = [t for t in block["block"] if t["name"].startswith(name)]
    return task


def test_every_client_names_all_its_scopes(rendered):
    _, data = rendered
    args = realm_task("OIDC clients")["community.general.keycloak_client"]
    # Both lists reach the module: naming only one of them would drop the realm defaults.
    assert args["default_client_scopes"] == "{{ item.default_client_scopes }}"
    assert args["optional_client_scopes"] == "{{ item.optional_client_scopes }}"
    # patch adds what an existing client lacks (clients created before this fix get their scopes).
    assert args["client_scopes_behavior"] == "patch"
    for c in data["clients"]:
        default, optional = set(c["default_client_scopes"]), set(c["optional_client_scopes"])
        assert default == KEYCLOAK_DEFAULT_SCOPES, f"{c['client_id']}: default scopes {default}"
        assert optional == {"groups", "offline_access"}, f"{c['client_id']}: optional scopes {optional}"
        # The module refuses a scope that is both (check_optional_scopes_not_default).
        assert not default & optional
        assert default | optional >= REQUESTED_SCOPES, c["client_id"]
    assert data["scope"]["name"] in data["clients"][0]["optional_client_scopes"]


def keycloak_stores(mapper: dict) -> dict:
    """The mapper as Keycloak 26 keeps it after a client (or scope) is created or updated with it.

    RepresentationToModel.toModel(ProtocolMapperRepresentation) drops empty config values
    (removeEmptyString); MigrationUtils.updateProtocolMappers, run on the mappers of a client
    representation, gives a mapper with id.token.claim and no userinfo.token.claim the latter, with
    the same value. Nothing else is added: the audience and group-membership mappers have no
    validateConfig nor getEffectiveModel of their own.
    """
    config = {k: v for k, v in mapper["config"].items() if v != ""}
    if "id.token.claim" in config and "userinfo.token.claim" not in config:
        config["userinfo.token.claim"] = config["id.token.claim"]
    return {**mapper, "config": config}


def test_every_mapper_is_kept_as_sent(rendered):
    """keycloak_client and keycloak_clientscope compare mapper configs exactly: what Keycloak keeps
    must be what the role sends, or every run reports a change."""
    _, data = rendered
    mappers = [m for c in data["clients"] for m in c["protocol_mappers"]] + data["scope"]["protocol_mappers"]
    assert {m["protocolMapper"] for m in mappers} == {"oidc-audience-mapper", "oidc-group-membership-mapper"}
    for m in mappers:
        assert keycloak_stores(m) == m, f"Keycloak would store {keycloak_stores(m)['config']}, not {m['config']}"
        # Strings, as Keycloak returns them (a boolean would compare unequal without the module's help).
        assert all(isinstance(v, str) and v for v in m["config"].values()), m
    # The rule can fail: the audience mapper as it was before (no userinfo.token.claim).
    old = {"name": "a", "config": {"included.custom.audience": "x", "access.token.claim": "true",
                                   "id.token.claim": "false"}}  # fmt: skip
    assert keycloak_stores(old) != old


def test_users_from_the_wiring(rendered, local_inventory):
    _, data = rendered
    users = {u["username"]: u for u in data["users"]}
    assert set(users) == {"ada", "bob-b"}
    assert users["ada"]["groups"] == [{"name": "platform-admins"}, {"name": "platform-users"}]
    (cred,) = users["bob-b"]["credentials"]
    assert cred["type"] == "password" and cred["temporary"] is False
    # Keycloak's user profile requires these three: sent as given, never left out.
    profile = ("email", "first_name", "last_name")
    for given in USERS:
        assert [users[given["username"]][k] for k in profile] == [given[k] for k in profile]
    args = realm_task("Initial users")["community.general.keycloak_user"]
    assert [args[k] for k in profile] == ["{{ item." + k + " }}" for k in profile]
    # Generated by the secrets mechanism under the promised name, and reused.
    secret = local_inventory.parent / ".secrets/idp_user_bob_b_password"
    assert secret.read_text().strip() == cred["value"]
    assert users["ada"]["credentials"][0]["value"] != cred["value"]


def assert_play(local_inventory: Path) -> Path:
    """A play running the role's tasks/assert.yml with the wiring, on the one local host (facts gathered)."""
    play = local_inventory.parent / "assert_keycloak.yml"
    play.write_text(
        "- hosts: local1\n  gather_facts: true\n"
        f"  vars_files: {json.dumps(WIRING)}\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role: {name: keycloak, tasks_from: assert}\n"
    )
    return play


ROLES_ENV = {"ANSIBLE_ROLES_PATH": str(ROOT / "roles")}


def test_role_stops_without_a_verifiable_release(local_inventory):
    play, env = assert_play(local_inventory), ROLES_ENV
    ok = run([PLAYBOOK, "-i", str(local_inventory), str(play)], env=env)
    assert ok.returncode == 0, ok.stdout[-3000:]
    bad = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e", "keycloak_archive_checksum=''"], env=env)
    assert bad.returncode != 0
    assert "keycloak_archive_checksum is ''" in bad.stdout
    missing = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e", "keycloak_archive_local=/nonexistent.tgz"],
                  env=env)  # fmt: skip
    assert missing.returncode != 0
    assert "keycloak_archive_local is '/nonexistent.tgz', which is not a file" in missing.stdout


def test_users_without_the_required_profile_are_refused(local_inventory):
    play = assert_play(local_inventory)
    complete = json.dumps({"platform_users": USERS})
    ok = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e", complete], env=ROLES_ENV)
    assert ok.returncode == 0, ok.stdout[-3000:]
    lacking = [{"username": "ada", "email": "ada@example.org", "first_name": "Ada", "groups": ["platform-users"]},
               {"username": "bob-b", "email": "not-an-address", "first_name": " ", "last_name": "B"}]  # fmt: skip
    bad = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e", json.dumps({"platform_users": lacking})],
              env=ROLES_ENV)  # fmt: skip
    assert bad.returncode != 0
    # Each user with what it lacks, the variable and the fix; never a password.
    assert "keycloak_users ada (last_name); bob-b (email, first_name)." in bad.stdout, bad.stdout[-3000:]
    assert "set them for each user in platform_users" in bad.stdout
    secrets = local_inventory.parent / ".secrets"
    for name in ("idp_user_ada_password", "idp_user_bob_b_password"):
        assert (secrets / name).read_text().strip() not in bad.stdout


def api_tasks(tasks: list, inherited: bool = False):
    """(task, run_once) for every task that calls Keycloak's API, with its blocks' run_once inherited."""
    for task in tasks:
        once = bool(task.get("run_once", inherited))
        if "block" in task:
            yield from api_tasks(task["block"], once)
        elif any(k.startswith("community.general.keycloak") for k in task) or "ansible.builtin.uri" in task:
            yield task, once


def test_admin_and_realm_calls_run_once():
    """Two hosts calling the Admin REST API at once race (HTTP 409 for the loser)."""
    found = [(t["name"], once) for f in ("admin.yml", "realm.yml")
             for t, once in api_tasks(yaml.safe_load((ROLE / "tasks" / f).read_text()))]  # fmt: skip
    # login probes (3), 2 admin, temporary admin's removal, 2 realms, scope, groups, clients, users
    assert len(found) >= 12, found
    assert [name for name, once in found if not once] == []
    # wait.yml probes each host's own health endpoint: not an admin call, it runs everywhere.
    assert all(t.get("run_once") is None for t in yaml.safe_load((ROLE / "tasks/wait.yml").read_text()))


def test_clustering_is_refused_until_verified(local_inventory):
    play = assert_play(local_inventory)
    ok = run([PLAYBOOK, "-i", str(local_inventory), str(play)], env=ROLES_ENV)
    assert ok.returncode == 0, ok.stdout[-3000:]
    inv = yaml.safe_load(local_inventory.read_text())
    inv["all"]["hosts"]["local2"] = dict(inv["all"]["hosts"]["local1"])
    inv["all"]["children"]["keycloak"]["hosts"]["local2"] = None
    two = local_inventory.parent / "two_keycloak.yml"
    two.write_text(yaml.safe_dump(inv))
    bad = run([PLAYBOOK, "-i", str(two), str(play)], env=ROLES_ENV)
    assert bad.returncode != 0
    assert "The keycloak group has 2 hosts (local1, local2)" in bad.stdout, bad.stdout[-3000:]
    assert "clustered Keycloak is not supported until it can be verified" in bad.stdout
    # No half-built cluster is left to switch on: caches are local, and no input says otherwise.
    assert "keycloak_cache" not in (ROLE / "defaults/main.yml").read_text()
    assert "cache: local" in (ROLE / "vars/main.yml").read_text()


def systemd_env_file(text: str) -> dict[str, str]:
    """Assignments of an EnvironmentFile= as systemd 252 (Debian 12) to 257 (Debian 13) reads them,
    for the forms the role writes: comments, and KEY="..." where a backslash escapes one of
    " \\ ` $ and is kept before any other character (src/basic/env-file.c, DOUBLE_QUOTE_VALUE)."""
    env, i = {}, 0
    while i < len(text):
        if text[i] in "#;":
            i = text.index("\n", i) + 1
            continue
        key, i = text[i : text.index("=", i)], text.index("=", i) + 1
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) and text[i] == '"', f"unquoted or odd line at {key!r}"
        value, i = [], i + 1
        while text[i] != '"':
            if text[i] == "\\":
                i += 1
                value.append(text[i] if text[i] in '"\\`$' else "\\" + text[i])
            else:
                value.append(text[i])
            i += 1
        env[key], i = "".join(value), i + 2  # the closing quote and the newline
    return env


def test_secrets_read_back_unchanged_from_the_environment_files(local_inventory, tmp_path):
    nasty = {"keycloak_db_password": 'a b"c\\d$HOME`id`#e \\$x\\n\\\\',
             "keycloak_bootstrap_admin_password": "  lead and trail  'single' ; # not a comment\nline two",
             "keycloak_bootstrap_admin_username": "boot$strap"}  # fmt: skip
    render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org", "-e", json.dumps(nasty),
                "-e", facts("12", 4096))  # fmt: skip
    env = systemd_env_file((tmp_path / "out/keycloak.env").read_text())
    assert env == {"KC_DB_PASSWORD": nasty["keycloak_db_password"]}
    boot = systemd_env_file((tmp_path / "out/bootstrap.env").read_text())
    assert boot == {"KC_BOOTSTRAP_ADMIN_USERNAME": "boot$strap",
                    "KC_BOOTSTRAP_ADMIN_PASSWORD": nasty["keycloak_bootstrap_admin_password"]}  # fmt: skip
    # The reader can fail: the unquoted form the role wrote before is refused.
    with pytest.raises(AssertionError):
        systemd_env_file("KC_DB_PASSWORD=a b\n")


def module_options(module: str) -> set[str]:
    """Option names (and aliases) of a community.general module as installed (the pinned version)."""
    spec = importlib.util.find_spec(f"ansible_collections.community.general.plugins.modules.{module}")
    assert spec and spec.origin, module
    src = Path(spec.origin).read_text()
    names = set(re.findall(r"^\s+(\w+)=dict\(", src, re.M))
    names |= {a for group in re.findall(r"aliases=\[([^\]]*)\]", src) for a in re.findall(r"'(\w+)'", group)}
    names |= set(re.findall(r"^\s+(\w+)=dict\(", Path(spec.origin).parents[1].joinpath(
        "module_utils/identity/keycloak/keycloak.py").read_text(), re.M))  # fmt: skip
    return names


def realm_tasks() -> list[dict]:
    (block,) = role_tasks("realm.yml")
    return [t["community.general.keycloak_realm"] for t in block["block"] if "community.general.keycloak_realm" in t]


# Keycloak 26's password policy providers (PasswordPolicyProviderFactory ids) the default may use.
PASSWORD_POLICY_IDS = {"length", "notUsername", "notEmail", "digits", "lowerCase", "upperCase", "specialChars",
                       "passwordHistory", "maxLength", "regexPattern", "forceExpiredPasswordChange"}  # fmt: skip


def keycloak_credential_policy(policy: str) -> dict[str, str | None]:
    """PasswordPolicy.parse: policies split on " and ", each id or id(config); an unknown id is refused."""
    out: dict[str, str | None] = {}
    for part in policy.split(" and "):
        key, _, config = part.strip().partition("(")
        assert key in PASSWORD_POLICY_IDS, f"Unsupported policy {key!r}"
        out[key] = config[:-1] if config else None
    return out


def test_both_realms_are_hardened():
    realms = realm_tasks()
    assert {r["realm"] for r in realms} == {"master", "{{ keycloak_realm }}"}
    options = module_options("keycloak_realm")
    # The reader can fail, and the pinned module has no admin events expiration (a realm attribute).
    assert {"ssl_required", "password_policy", "events_expiration"} <= options
    assert "admin_events_expiration" not in options and "adminEventsExpiration" not in options
    for r in realms:
        assert set(r) <= options, f"not options of the pinned keycloak_realm: {set(r) - options}"
        assert r["brute_force_protected"] == "{{ keycloak_brute_force_protected }}"
        # external or all; all would refuse the role's own calls on the plain-HTTP listener.
        assert r["ssl_required"] == "external"
        assert r["password_policy"] == "{{ keycloak_credential_policy }}"
        assert r["events_enabled"] is True and r["events_expiration"] == "{{ keycloak_events_expiration }}"
        assert r["admin_events_enabled"] is True
        # Representations of admin events would store the client secrets and passwords the role sends.
        assert r["admin_events_details_enabled"] is False
        # `attributes` would make Keycloak drop every realm attribute not sent (updateRealm).
        assert "attributes" not in r
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert defaults["keycloak_brute_force_protected"] is True
    assert keycloak_credential_policy(defaults["keycloak_credential_policy"]) == {"length": "12", "notUsername": None}
    assert 0 < defaults["keycloak_events_expiration"] <= 90 * 86400
    with pytest.raises(AssertionError):
        keycloak_credential_policy("minLength(12)")


def test_clients_do_not_carry_every_role(rendered):
    """full_scope_allowed false: tokens carry only the roles of the client's scope. Safe because no
    mapper the role sends depends on roles: group names come from the group-membership mapper, and
    aud=exec-api from an audience mapper with a fixed audience (not included.client.audience,
    which adds a client's id only when the token holds one of its roles)."""
    _, data = rendered
    args = realm_task("OIDC clients")["community.general.keycloak_client"]
    assert args["full_scope_allowed"] == "{{ item.full_scope_allowed }}"
    assert set(args) <= module_options("keycloak_client"), set(args) - module_options("keycloak_client")
    for c in data["clients"]:
        assert c["full_scope_allowed"] is False, c["client_id"]
        for m in c["protocol_mappers"]:
            assert m["protocolMapper"] == "oidc-audience-mapper" and "included.client.audience" not in m["config"]
    assert data["scope"]["protocol_mappers"][0]["protocolMapper"] == "oidc-group-membership-mapper"


def unit_heap(out: Path) -> list[str]:
    return [ln for ln in (out / "keycloak.service").read_text().splitlines() if "JAVA_OPTS" in ln]


@pytest.mark.parametrize(("memtotal_mb", "xmx"), [(1024, 512), (4096, 1024), (65536, 2048)])
def test_heap_is_sized_to_the_host(local_inventory, tmp_path, memtotal_mb, xmx):
    data = render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org",
                       "-e", facts("12", memtotal_mb))  # fmt: skip
    assert data["heap"] == xmx
    # JAVA_OPTS_KC_HEAP replaces only kc.sh's heap options (-Xms64m -Xmx512m); JAVA_OPTS would drop
    # its other defaults (GC, metaspace, encoding) too.
    assert unit_heap(tmp_path / "out") == [f'Environment="JAVA_OPTS_KC_HEAP=-Xms64m -Xmx{xmx}m"']


def test_heap_from_the_variable(local_inventory, tmp_path):
    render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org", "-e", facts("12", 4096),
                "-e", "keycloak_heap_max_mb=3000")  # fmt: skip
    assert unit_heap(tmp_path / "out") == ['Environment="JAVA_OPTS_KC_HEAP=-Xms64m -Xmx3000m"']


@pytest.mark.parametrize(("release", "package"), [("12", "openjdk-17-jre-headless"), ("13", "openjdk-21-jre-headless")])
def test_java_runtime_of_the_release(local_inventory, tmp_path, release, package):
    """Debian 13 has no openjdk-17; Keycloak 26 runs on 17 and 21."""
    data = render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org",
                       "-e", facts(release, 4096))  # fmt: skip
    assert data["java"] == package


def test_unknown_release_or_small_heap_is_refused(local_inventory):
    play = assert_play(local_inventory)
    base = [PLAYBOOK, "-i", str(local_inventory), str(play)]
    ok = run([*base, "-e", facts("13", 4096)], env=ROLES_ENV)
    assert ok.returncode == 0, ok.stdout[-3000:]
    bad = run([*base, "-e", facts("11", 4096)], env=ROLES_ENV)
    assert bad.returncode != 0
    assert "No Java runtime is known for Debian 11" in bad.stdout and "Set keycloak_java_package" in bad.stdout
    small = run([*base, "-e", facts("12", 4096), "-e", "keycloak_heap_max_mb=256"], env=ROLES_ENV)
    assert small.returncode != 0
    assert "keycloak_heap_max_mb is 256" in small.stdout, small.stdout[-3000:]


def role_tasks(name: str) -> list[dict]:
    return yaml.safe_load((ROLE / "tasks" / name).read_text())


def notifies_restart(task: dict) -> bool:
    notify = task.get("notify", [])
    return "keycloak restart" in ([notify] if isinstance(notify, str) else notify)


def test_service_starts_after_the_handlers_flush():
    """The first boot (schema, master realm) is not restarted seconds after it starts: everything
    that notifies a restart is in place and flushed before the service is started."""
    steps = [t.get("ansible.builtin.import_tasks") or t.get("ansible.builtin.meta") for t in role_tasks("main.yml")]
    lifecycle = ["assert.yml", "install.yml", "configure.yml", "flush_handlers", "service.yml", "wait.yml",
                 "admin.yml", "realm.yml"]  # fmt: skip
    assert steps == lifecycle, steps
    # What the restart handler stands for is all before the first flush; service.yml only starts.
    before_flush = [t for f in ("install.yml", "configure.yml") for t in role_tasks(f)]
    assert any("keycloak.service.j2" in str(t) for t in before_flush), "the unit is not written before the flush"
    start = role_tasks("service.yml")
    assert [t["ansible.builtin.systemd_service"]["state"] for t in start] == ["started", "started"]
    assert not any(notifies_restart(t) or "ansible.builtin.template" in t for t in start)
    # Nothing after the flush asks for a restart (the admin recovery stops and starts Keycloak itself).
    late = [t["name"] for f in ("service.yml", "admin.yml", "realm.yml") for _, t in leaf_tasks(role_tasks(f), f)
            if notifies_restart(t)]  # fmt: skip
    assert late == [], late
    handlers = yaml.safe_load((ROLE / "handlers/main.yml").read_text())
    assert [h["listen"] for h in handlers] == ["keycloak firewall reload", "keycloak restart"]


# A secret in a task: a password/secret/credentials variable (ours or a loop item's) in a Jinja
# expression of the task, or of the template it renders.
SECRET_REF = re.compile(r"\{\{[^}]*\b(\w*password\w*|\w*secret\w*|item\.credentials)\b[^}]*\}\}")


def leaf_tasks(tasks: list[dict], where: str):
    for task in tasks:
        if "block" in task:
            yield from leaf_tasks(task["block"], where)
        else:
            yield where, task


def task_text(task: dict) -> str:
    """The task's own arguments (not no_log itself), plus the template it renders."""
    text = yaml.safe_dump({k: v for k, v in task.items() if k != "no_log"})
    tpl = task.get("ansible.builtin.template", {}).get("src")
    return text + ((ROLE / "templates" / tpl).read_text() if tpl else "")


def test_no_log_exactly_where_a_secret_is():
    """no_log hides a failing task's error, so it is kept for the tasks whose arguments, results or
    diff (a rendered template) hold a secret, and only for those. Asserts are exempt: they test
    lengths and show names only (their fail_msg says which variable), never a value."""
    tasks = [lt for f in sorted((ROLE / "tasks").glob("*.yml")) for lt in leaf_tasks(role_tasks(f.name), f.name)]
    hiding_nothing = [f"{f}: {t['name']}" for f, t in tasks if t.get("no_log") and not SECRET_REF.search(task_text(t))]
    assert hiding_nothing == [], "no_log without a secret"
    exposing = [
        f"{f}: {t['name']}"
        for f, t in tasks
        if SECRET_REF.search(task_text(t)) and not t.get("no_log") and "ansible.builtin.assert" not in t
    ]
    assert exposing == [], "a secret without no_log"
    # Both kinds exist, so the rule is tested on something.
    assert sum(bool(t.get("no_log")) for _, t in tasks) >= 6
    assert any(not t.get("no_log") and "community.general.keycloak_group" in t for _, t in tasks)
    # auth_password reaches the modules through module_defaults: masked by the modules themselves.
    spec = importlib.util.find_spec(
        "ansible_collections.community.general.plugins.module_utils.identity.keycloak.keycloak"
    )
    assert spec and spec.origin
    assert "auth_password=dict(type='str', aliases=['password'], no_log=True)" in Path(spec.origin).read_text()
    assert SECRET_REF.search('x: "{{ keycloak_admin_password }}"') and not SECRET_REF.search('x: "{{ item }}"')
    assert not SECRET_REF.search('x: "{{ keycloak_credential_policy }}"')


def nft_verdict(rules: str, uid: int, saddr: str, daddr: str, dport: int) -> str:
    """What the rendered table does to a TCP connection opened on the Keycloak host by `uid` (output
    hook) and, for one from another host, as it arrives (input hook): "reset" or "accept". Reads
    only the forms the template writes: defines of one value or a { set }, and rules
    `ip daddr X tcp dport P [meta skuid != S | ip saddr != S] counter reject with tcp reset`."""
    defines = dict(re.findall(r"^define (\w+) = (.+)$", rules, re.M))

    def values(token: str) -> set[str]:
        token = defines.get(token[1:], token) if token.startswith("$") else token
        return {v.strip() for v in token.strip("{} ").split(",")}

    chains = dict(re.findall(r"chain (\w+) \{(.*?)\n  \}", rules, re.S))
    local = saddr == daddr or daddr.startswith("127.")
    chain = chains.get("output" if local else "input", "")
    for rule in re.findall(r"^\s*ip6? daddr .*reject with tcp reset$", chain, re.M):
        m = re.match(
            r"\s*ip6? daddr (\S+) tcp dport (\$\w+|\d+) (meta skuid|ip6? saddr) != (\$\w+|\{[^}]*\}) counter", rule
        )
        assert m, f"a rule the reader does not know: {rule}"
        to, port, key, allowed = m.groups()
        if daddr in values(to) and str(dport) in values(port):
            who = str(uid) if key == "meta skuid" else saddr
            if who not in values(allowed):
                return "reset"
    return "accept"


ALICE, WWW_DATA, KEYCLOAK_UID = 1000, 33, 998


def test_only_nginx_and_root_reach_keycloak_on_its_host(rendered):
    """Keycloak trusts X-Forwarded-* from 127.0.0.1; alice, with a shell on the host, is refused."""
    out, _ = rendered
    rules = (out / "keycloak-firewall.nft").read_text()
    assert "delete table inet keycloak" in rules
    for port in (8080, 9000):
        assert nft_verdict(rules, ALICE, "127.0.0.1", "127.0.0.1", port) == "reset", port
        assert nft_verdict(rules, KEYCLOAK_UID, "127.0.0.1", "127.0.0.1", port) == "reset", port
        assert nft_verdict(rules, 0, "127.0.0.1", "127.0.0.1", port) == "accept", port
        assert nft_verdict(rules, WWW_DATA, "127.0.0.1", "127.0.0.1", port) == "accept", port
    # Other services' ports are none of this table's business.
    assert nft_verdict(rules, ALICE, "127.0.0.1", "127.0.0.1", 8081) == "accept"
    assert "chain input" not in rules
    unit = (out / "keycloak-firewall.service").read_text()
    assert "Before=network-pre.target keycloak.service" in unit and "ExecStart=/usr/sbin/nft -f " in unit


def test_keycloak_on_its_own_host_serves_https_to_nginx_only(local_inventory, tmp_path):
    """nginx on another host: Keycloak has no plain HTTP listener, serves HTTPS with the install's
    certificate files, and only nginx's host reaches that port."""
    extra = {"keycloak_http_host": "10.0.0.2", "keycloak_proxy_trusted_addresses": ["10.0.0.1"],
             "keycloak_tls_ca_dir": str(tmp_path / "ca")}  # fmt: skip
    render_role(local_inventory, tmp_path / "out", "-e", "platform_domain=example.org", "-e", facts("12", 4096),
                "-e", json.dumps(extra))  # fmt: skip
    conf = conf_items((tmp_path / "out/keycloak.conf").read_text())
    tls = {k: conf.get(k) for k in ("http-enabled", "http-port", "https-port", "https-certificate-file",
                                     "https-certificate-key-file", "http-host")}  # fmt: skip
    assert tls == {
        "http-enabled": "false",
        "http-port": None,
        "https-port": "8443",
        "https-certificate-file": "/etc/keycloak/tls/keycloak.crt",
        "https-certificate-key-file": "/etc/keycloak/tls/keycloak.key",
        "http-host": "10.0.0.2",
    }, tls
    rules = (tmp_path / "out/keycloak-firewall.nft").read_text()
    assert nft_verdict(rules, 0, "10.0.0.1", "10.0.0.2", 8443) == "accept"  # nginx's host
    assert nft_verdict(rules, 0, "10.0.0.9", "10.0.0.2", 8443) == "reset"  # any other host
    assert nft_verdict(rules, 0, "10.0.0.1", "10.0.0.2", 9000) == "reset"  # management: this host only
    assert nft_verdict(rules, ALICE, "10.0.0.2", "10.0.0.2", 8443) == "reset"  # alice on Keycloak's host
    assert nft_verdict(rules, 0, "10.0.0.2", "10.0.0.2", 9000) == "accept"  # the role's health wait


def test_keycloak_beside_nginx_serves_plain_http_on_loopback(rendered):
    out, _ = rendered
    conf = conf_items((out / "keycloak.conf").read_text())
    seen = {k: conf.get(k) for k in ("http-enabled", "http-host", "http-port", "https-port")}
    assert seen == {"http-enabled": "true", "http-host": "127.0.0.1", "http-port": "8080", "https-port": None}, seen
    assert not [k for k in conf if k.startswith("https-certificate")]


def test_keycloak_on_another_host_without_the_ca_is_refused(local_inventory):
    play = assert_play(local_inventory)
    bad = run([PLAYBOOK, "-i", str(local_inventory), str(play), "-e",
               json.dumps({"keycloak_http_host": "10.0.0.2", "keycloak_tls_ca_dir": ""})], env=ROLES_ENV)  # fmt: skip
    assert bad.returncode != 0
    assert "keycloak_tls_ca_dir" in bad.stdout and "not loopback" in bad.stdout, bad.stdout[-3000:]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_firewall_unit_is_hardened(rendered):
    out, _ = rendered
    sec = subprocess.run(["systemd-analyze", "security", "--offline=true", str(out / "keycloak-firewall.service")],
                         capture_output=True, text=True)  # fmt: skip
    match = re.search(r"Overall exposure level for keycloak-firewall\.service: (\d+\.\d+)", sec.stdout + sec.stderr)
    assert match, sec.stdout[-2000:] + sec.stderr[-2000:]
    assert float(match.group(1)) <= 4.0, sec.stdout


def test_admin_access_is_asked_of_keycloak_and_recovered_its_way():
    """No file on the host decides whether the permanent administrator exists: its login is tried,
    and when it fails (first run, rotated password, restored database) Keycloak's bootstrap-admin
    unit adds a temporary administrator, which resets the permanent one and is deleted by it."""
    every = [t for f in sorted((ROLE / "tasks").glob("*.yml")) for _, t in leaf_tasks(role_tasks(f.name), f.name)]
    stats = [t["ansible.builtin.stat"]["path"] for t in every if "ansible.builtin.stat" in t]
    # The only files read: the operator's archive, and the link to the running release (a new
    # release migrates the database on its first start: the backup before it, README Upgrading).
    allowed = ["{{ __keycloak_current }}", "{{ keycloak_archive_local }}"]
    assert sorted(stats) == allowed, f"a file on the host decides something: {stats}"
    admin = role_tasks("admin.yml")
    probe, recovery, cleanup = admin
    assert probe["ansible.builtin.uri"]["body"]["username"] == "{{ keycloak_admin_username }}"
    assert recovery["when"] == "__keycloak_admin_login.status != 200" and recovery["run_once"] is True
    steps = [t["name"] for _, t in leaf_tasks(recovery["block"], "admin.yml")]
    unit = next(t for _, t in leaf_tasks(recovery["block"], "") if "systemd_service" in str(t))
    assert unit["ansible.builtin.systemd_service"]["name"] == "keycloak-bootstrap-admin.service"
    reset = next(t for _, t in leaf_tasks(recovery["block"], "") if t["name"].startswith("Permanent administrator"))
    assert reset["community.general.keycloak_user"]["force"] is True, "an existing user's password is not reset"
    leaves = [t for _, t in leaf_tasks(recovery["block"], "")]
    removal = next(t for t in leaves if t["name"] == "The temporary administrator is gone")
    assert removal["community.general.keycloak_user"]["auth_username"] == "{{ keycloak_admin_username }}"
    assert steps.index(reset["name"]) < steps.index(removal["name"])
    assert cleanup["ansible.builtin.file"] == {"path": "{{ keycloak_conf_dir }}/bootstrap.env", "state": "absent"}
    assert "when" not in cleanup
    # Keycloak's command stops the server: whatever it does, its credentials go and Keycloak runs again.
    command = next(t for t in recovery["block"] if "always" in t)
    kept = [next(iter(t[k] for k in t if k.startswith("ansible.builtin."))) for t in command["always"]]
    assert kept == [{"path": "{{ keycloak_conf_dir }}/bootstrap.env", "state": "absent"},
                    {"name": "keycloak.service", "state": "started"}], kept  # fmt: skip
