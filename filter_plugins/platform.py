"""The wiring between roles, as functions: what group_vars/all/ derives from the operator's inputs.

Each function takes plain data (the inventory's groups, the hosts' variables, the inputs) and
returns plain data; group_vars/all/ calls each from a one-line expression, and
tests/test_platform_filters.py tests them without Ansible. Bad input raises an error that names
the inventory variable to fix and how.

The platform's two naming rules live here and nowhere else:
- USERNAME_PATTERN: a username that can be a Unix account (what the platform_accounts tool
  accepts). The tool, the hub's configuration and the roles' checks get it through the
  `platform_rule` filter; the test harness imports it.
- user_password_secret(): the name of the secret that holds an identity-provider user's initial
  password. The wiring, the test provider and the test harness use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

try:
    from ansible.errors import AnsibleFilterError as WiringError
except ImportError:  # imported outside Ansible (the host tests' harness)
    WiringError = ValueError  # type: ignore[assignment,misc]

try:
    from jinja2 import Undefined
except ImportError:  # pragma: no cover - jinja2 comes with Ansible
    Undefined = ()  # type: ignore[assignment,misc]

LOOPBACK = "127.0.0.1"

# ------------------------------------------------------------------------------ the rules
# \A and \Z: `$` would also let a trailing newline through (re.match, as Ansible's `match` test).
USERNAME_PATTERN = r"\A[a-z][a-z0-9_-]{0,31}\Z"
USERNAME_RULE = "1 to 32 characters a-z, 0-9, '_' or '-', starting with a letter"
# A group of the identity provider that gets a schema in the analytics database: the schema is the
# name with '-' as '_' (team-a -> team_a), so it is a plain SQL identifier.
ANALYTICS_GROUP_PATTERN = r"\A[a-z][a-z0-9_-]{0,39}\Z"
ANALYTICS_GROUP_RULE = "1 to 40 characters a-z, 0-9, '_' or '-', starting with a letter"
# A database the platform makes (analytics_database): a plain SQL identifier.
DATABASE_PATTERN = r"\A[a-z][a-z0-9_]{0,62}\Z"
DATABASE_RULE = "1 to 63 characters a-z, 0-9 or '_', starting with a letter"
RULES = {
    "username": {"pattern": USERNAME_PATTERN, "description": USERNAME_RULE},
    "analytics_group": {"pattern": ANALYTICS_GROUP_PATTERN, "description": ANALYTICS_GROUP_RULE},
    "database": {"pattern": DATABASE_PATTERN, "description": DATABASE_RULE},
}
# What the platform_secret lookup accepts as a secret's name (lookup_plugins/platform_secret.py).
SECRET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,99}$"


def valid_username(name: object) -> bool:
    """Whether `name` can be a platform user's Unix account (USERNAME_PATTERN)."""
    return isinstance(name, str) and re.match(USERNAME_PATTERN, name) is not None


def rule(name: str) -> dict:
    """A rule by name, for templates: {'pattern': regex, 'description': the same in words}."""
    if name not in RULES:
        raise WiringError(f"platform_rule: no rule named {name!r}; known: {', '.join(sorted(RULES))}")
    return dict(RULES[name])


def user_password_secret(username: str) -> str:
    """The secret holding a user's initial password at the identity provider:
    idp_user_<username>_password, the username lowercased and every character other than a-z, 0-9
    and '_' written as '_' (so `bob-b` -> idp_user_bob_b_password, `Dave.Jones` ->
    idp_user_dave_jones_password). Any name the provider knows gets one, valid Unix name or not."""
    if not isinstance(username, str) or not username:
        raise WiringError(f"a user's username must be a non-empty string, got {username!r}")
    secret = "idp_user_" + re.sub(r"[^a-z0-9_]", "_", username.lower()) + "_password"
    if not re.match(SECRET_NAME_PATTERN, secret):
        raise WiringError(f"username {username!r} is too long for a secret name ({secret}): shorten it")
    return secret


def oidc_client_secret(service: str) -> str:
    """The secret holding an OIDC client's secret: oidc_<service>_client_secret."""
    return f"oidc_{service}_client_secret"


def web_url(label: str, domain: str) -> str:
    """A web service's public URL: https://<label>.<platform_domain>."""
    return f"https://{label}.{domain}"


# ------------------------------------------------------------------------------ helpers
def _present(groups: Mapping, group: str) -> list[str]:
    """The hosts of an inventory group ([] when the inventory has no such group)."""
    return list(groups.get(group) or [])


def _address(hostvars: Mapping, host: str, needed_for: str) -> str:
    """A host's platform_address, or an error saying how to make it known."""
    try:
        value = hostvars[host]["platform_address"]
    except (KeyError, TypeError):
        value = None
    if value is None or isinstance(value, Undefined) or not str(value):
        raise WiringError(
            f"the platform address of {host} is not known ({needed_for}): gather its facts (run the play "
            f"for every platform host, not --limit) or set platform_address for {host} in the inventory"
        )
    return str(value)


def _mapping_list(value: object, variable: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
        raise WiringError(f"{variable} must be a list, got {value!r}")
    return list(value)


def _unique(items: Iterable) -> list:
    out: list = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# ------------------------------------------------------------------------------ hosts
def address_from(target: str, viewer: str, hostvars: Mapping) -> str:
    """The address `viewer` reaches `target` on: loopback on the same host, else target's
    platform_address."""
    if not target:
        raise WiringError(
            f"{viewer} needs a server that the inventory does not have (its group, e.g. postgresql, is empty)"
        )
    return LOOPBACK if target == viewer else _address(hostvars, target, f"{viewer} reaches it")


def _nginx_here(host: str, nginx: str) -> bool:
    """Whether nginx runs on `host`, or nowhere: then the web services behind it stay on loopback."""
    return nginx in ("", host)


def listen_address(host: str, nginx: str, hostvars: Mapping) -> str:
    """Where `host`'s web services listen: loopback when nginx runs there (or nowhere), else the
    host's platform address, where nginx reaches them."""
    return LOOPBACK if _nginx_here(host, nginx) else _address(hostvars, host, "nginx reaches its services")


def nginx_address(host: str, nginx: str, hostvars: Mapping) -> str:
    """The address nginx's connections to `host`'s web services come from."""
    return LOOPBACK if _nginx_here(host, nginx) else _address(hostvars, nginx, f"{host} trusts nginx's address")


# ------------------------------------------------------------------------------ database
def databases(services: list, passwords: Mapping, groups: Mapping, hostvars: Mapping, server: str) -> list:
    """One database and one login role per service present in the inventory, reachable from that
    service's hosts only (loopback for a service on the database server). `passwords`: service ->
    password (only those of present services are read)."""
    out = []
    for svc in services:
        hosts = _present(groups, svc)
        if not hosts:
            continue
        clients: list[str] = []
        for h in hosts:
            if h == server:
                clients += [f"{LOOPBACK}/32", "::1/128"]
            else:
                # The postgresql role refuses this placeholder with a message saying what to do.
                try:
                    clients.append(_address(hostvars, h, "a database client") + "/32")
                except WiringError:
                    clients.append(f"UNKNOWN-ADDRESS-OF-{h}/32")
        out.append({"name": svc, "owner": svc, "password": passwords[svc], "clients": _unique(clients)})
    return out


def hba_entries(groups: Mapping, hostvars: Mapping, server: str, reader: str) -> list:
    """Superset's read-only role on the exec API's database, from each Superset host (TLS when it
    is not the database server), when the inventory has the exec API."""
    if not _present(groups, "exec_api"):
        return []
    out = []
    for h in _present(groups, "superset"):
        local = h == server
        address = f"{LOOPBACK}/32" if local else _address(hostvars, h, "Superset reads the exec API's database") + "/32"
        out.append({"type": "host" if local else "hostssl", "database": "exec_api", "user": reader,
                    "address": address, "method": "scram-sha-256"})  # fmt: skip
    return out


# ------------------------------------------------------------------------------ analytics
# Schema names the analytics database keeps for itself (roles/analytics/templates/analytics.sql.j2).
ANALYTICS_RESERVED = ("public", "shared", "analytics_platform", "information_schema")


def analytics_groups(groups: object, variable: str = "platform_analytics_groups") -> list:
    """The groups that get a schema, checked: [{group, schema, role, superset_role, secret}].
    `role` is the group's database role, `superset_role` the login role of its Superset connection
    and `secret` the name of that role's password (platform_secret)."""
    out, schemas = [], {}
    for g in _mapping_list(groups, variable):
        if not isinstance(g, str) or not re.match(ANALYTICS_GROUP_PATTERN, g):
            raise WiringError(f"{variable}: the group {g!r} cannot name a schema: it must be {ANALYTICS_GROUP_RULE}")
        schema = g.replace("-", "_")
        if schema in ANALYTICS_RESERVED or schema.startswith("pg_"):
            raise WiringError(f"{variable}: the group {g!r} would take the reserved schema {schema!r}: rename it")
        if schema in schemas:
            raise WiringError(f"{variable}: the groups {schemas[schema]!r} and {g!r} would share the schema "
                              f"{schema!r}: keep one of them")  # fmt: skip
        schemas[schema] = g
        out.append({"group": g, "schema": schema, "role": f"group.{g}", "superset_role": f"superset.{g}",
                    "secret": f"postgresql_analytics_superset_{schema}_password"})  # fmt: skip
    return out


def analytics_superset_connections(schemas: list, passwords: Mapping) -> list:
    """Superset's per-group connections to the analytics database, [{group, user, password}], for
    the groups of `schemas` (analytics_groups' output) with a password (none without Superset)."""
    return [{"group": s["group"], "user": s["superset_role"], "password": passwords[s["group"]]}
            for s in schemas if s["group"] in (passwords or {})]  # fmt: skip


def analytics_superset_roles(schemas: list, passwords: Mapping) -> dict:
    """Superset roles of those groups: {group: [the group's own role, sql_lab]}."""
    return {c["group"]: [c["group"], "sql_lab"] for c in analytics_superset_connections(schemas, passwords)}


def analytics_hba(groups: Mapping, hostvars: Mapping, server: str, database: str) -> list:
    """pg_hba rules of the analytics database: users' own roles from the hosts that run their code
    (JupyterHub, the exec API), the login sync from JupyterHub's hosts, the per-group Superset
    connections from Superset's hosts; TLS from any host but the database server."""
    if not database:
        return []
    out = []

    def rule(host: str, user: str, why: str, socket: bool = False) -> None:
        local = host == server
        address = "" if local and socket else f"{LOOPBACK}/32" if local else _address(hostvars, host, why) + "/32"
        kind = ("local" if socket else "host") if local else "hostssl"
        out.append({"type": kind, "database": database, "user": user, "address": address,
                    "method": "scram-sha-256"})  # fmt: skip

    for h in _unique(_present(groups, "jupyterhub") + _present(groups, "exec_api")):
        rule(h, "+analytics.users", "users' code reaches the analytics database")
    for h in _present(groups, "jupyterhub"):
        # On the database server the sync uses its socket (as itself, and to check a user's
        # password): nobody can stand in for the server there.
        rule(h, "analytics.sync", "the hub keeps users' analytics roles", socket=True)
        if h == server:
            rule(h, "+analytics.users", "", socket=True)
    for h in _present(groups, "superset"):
        rule(h, "+analytics.superset", "Superset reads the analytics database")
    return out


# ------------------------------------------------------------------------------ web names
def web_services(specs: list, provider: str) -> list:
    """The web services of this platform: every entry of `specs`, but one marked `provider` only
    with that identity provider (the marker is dropped)."""
    out = []
    for spec in specs:
        spec = dict(spec)
        wanted = spec.pop("provider", provider)
        if wanted == provider:
            out.append(spec)
    return out


def nginx_sites(services: list, domain: str, groups: Mapping, host: str, hostvars: Mapping) -> list:
    """One nginx site per web service present in the inventory, on <label>.<domain>, proxying to
    each of the service's hosts (loopback for one on nginx's own host). A service with `tls_port`
    serves TLS there when it runs on another host than nginx (a certificate from the install's CA
    for <label>.<domain>): nginx reaches it on that port and verifies the name."""
    out = []
    for svc in services:
        hosts = _present(groups, svc["group"])
        if not hosts:
            continue
        server_name = f"{svc['label']}.{domain}"
        tls = "tls_port" in svc and any(h != host for h in hosts)
        port = svc["tls_port"] if tls else svc["port"]
        needed_for = f"nginx proxies {svc['label']} to it"
        upstreams = [(LOOPBACK if h == host else _address(hostvars, h, needed_for)) + f":{port}" for h in hosts]
        site = {"name": svc["label"], "server_name": server_name, "upstreams": upstreams,
                "websocket": svc["websocket"], **({"upstream_tls_name": server_name} if tls else {})}  # fmt: skip
        out.append({**site, **dict(svc.get("site") or {})})
    return out


# ------------------------------------------------------------------------------ backups
def backup_paths(host: str, groups: Mapping, by_group: Mapping) -> list:
    """What `host` keeps: the paths of every group it is in ({group: [path]}), each once, in order."""
    return _unique(p for group, paths in by_group.items() if host in _present(groups, group) for p in paths)


# ------------------------------------------------------------------------------ identity
PROVIDERS = ("keycloak", "external")
KEYCLOAK_ENDPOINTS = {
    "authorization": "/protocol/openid-connect/auth",
    "token": "/protocol/openid-connect/token",
    "userinfo": "/protocol/openid-connect/userinfo",
    "jwks": "/protocol/openid-connect/certs",
    "end_session": "/protocol/openid-connect/logout",
}


def oidc(inputs: Mapping) -> dict:
    """The one description of the OpenID provider that every consumer reads, from the operator's
    inputs (platform_inputs: identity_provider, platform_domain, platform_keycloak_realm,
    platform_oidc_issuer, platform_oidc_endpoints, platform_oidc_scopes, platform_oidc_*_claim,
    platform_oidc_admin_group, platform_oidc_users_group, platform_oidc_groups_custom)."""
    provider = inputs["identity_provider"]
    if provider not in PROVIDERS:
        raise WiringError(
            f"identity_provider is {provider!r}: set keycloak (the platform runs Keycloak) or external "
            "(an existing OpenID provider, with platform_oidc_issuer)"
        )
    if provider == "keycloak":
        issuer = web_url("auth", inputs["platform_domain"]) + "/realms/" + str(inputs["platform_keycloak_realm"])
        endpoints = {name: issuer + path for name, path in KEYCLOAK_ENDPOINTS.items()}
    else:
        issuer = re.sub("/+$", "", str(inputs["platform_oidc_issuer"] or ""))
        endpoints = dict(inputs["platform_oidc_endpoints"] or {})
    admin, users = inputs["platform_oidc_admin_group"], inputs["platform_oidc_users_group"]
    custom = _mapping_list(inputs["platform_oidc_groups_custom"], "platform_oidc_groups_custom")
    return {
        "provider": provider,
        "issuer": issuer,
        "discovery_url": issuer + "/.well-known/openid-configuration",
        "endpoints": endpoints,
        "scopes": _mapping_list(inputs["platform_oidc_scopes"], "platform_oidc_scopes"),
        "username_claim": inputs["platform_oidc_username_claim"],
        "groups_claim": inputs["platform_oidc_groups_claim"],
        "admin_group": admin,
        "users_group": users,
        "groups": _unique([admin, users, *custom]),
    }


def oidc_registrations(specs: list, groups: Mapping, domain: str, client_ids: Mapping | None) -> list:
    """What to register at the provider, one client per web service present in the inventory:
    [{service, client: {client_id, base_url, redirect_uris, post_logout_redirect_uris, audience}}],
    no secrets. `client_ids` (platform_oidc_client_ids) overrides a spec's client_id."""
    client_ids = client_ids or {}
    if not isinstance(client_ids, Mapping):
        raise WiringError(f"platform_oidc_client_ids must be a mapping of service to client id, got {client_ids!r}")
    out = []
    for spec in specs:
        if not _present(groups, spec["service"]):
            continue
        base = web_url(spec["label"], domain)
        out.append({"service": spec["service"], "client": {
            "client_id": client_ids.get(spec["service"], spec["client_id"]),
            "base_url": base,
            "redirect_uris": [base + p for p in spec["redirect_paths"]],
            "post_logout_redirect_uris": [base + p for p in spec["post_logout_paths"]],
            "audience": spec.get("audience") or "",
        }})  # fmt: skip
    return out


def oidc_client_secrets(registrations: list) -> list[str]:
    """The secret names of the registered clients, in order (oidc_<service>_client_secret)."""
    return [oidc_client_secret(r["service"]) for r in registrations]


def oidc_clients(registrations: list, secrets: list) -> list:
    """The registrations with their client secrets (`secrets` in the order of oidc_client_secrets)."""
    if len(secrets) != len(registrations):
        raise WiringError(f"{len(registrations)} OIDC clients but {len(secrets)} client secrets")
    return [{"service": r["service"], "client": {**r["client"], "client_secret": s}}
            for r, s in zip(registrations, secrets, strict=True)]  # fmt: skip


# ------------------------------------------------------------------------------ users
def _users(users: object, variable: str = "platform_users") -> list:
    users = _mapping_list(users, variable)
    seen: dict[str, str] = {}
    for i, u in enumerate(users):
        if not isinstance(u, Mapping) or not isinstance(u.get("username"), str) or not u.get("username"):
            raise WiringError(f"{variable}[{i}] needs a username: {{username: ..., groups: [...]}}, got {u!r}")
        if "password" in u:
            continue
        secret = user_password_secret(u["username"])
        if secret in seen:
            raise WiringError(
                f"{variable}: users {seen[secret]!r} and {u['username']!r} would share the password secret "
                f"{secret}: rename one, or give each a password"
            )
        seen[secret] = u["username"]
    return users


def user_password_secrets(users: object, variable: str = "platform_users") -> list[str]:
    """The password secrets of the users that have no `password`, in order (user_password_secret)."""
    return [user_password_secret(u["username"]) for u in _users(users, variable) if "password" not in u]


def users_with_passwords(users: object, passwords: list, variable: str = "platform_users") -> list:
    """The users, each with a password: its own, or the next of `passwords` (in the order of
    user_password_secrets)."""
    users = _users(users, variable)
    missing = [u for u in users if "password" not in u]
    if len(passwords) != len(missing):
        raise WiringError(f"{variable}: {len(missing)} users without a password but {len(passwords)} passwords")
    given = iter(passwords)
    return [dict(u) if "password" in u else {**u, "password": next(given)} for u in users]


def group_members(users: object, group: str, variable: str = "platform_users") -> list[str]:
    """The usernames of the users whose groups include `group`."""
    return [u["username"] for u in _users(users, variable) if group in (u.get("groups") or [])]


class FilterModule:
    def filters(self):
        return {
            "platform_rule": rule,
            "platform_user_password_secret": user_password_secret,
            "platform_web_url": web_url,
            "platform_address_from": address_from,
            "platform_listen_address": listen_address,
            "platform_nginx_address": nginx_address,
            "platform_databases": databases,
            "platform_hba_entries": hba_entries,
            "platform_web_services": web_services,
            "platform_nginx_sites": nginx_sites,
            "platform_backup_paths": backup_paths,
            "platform_oidc": oidc,
            "platform_oidc_registrations": oidc_registrations,
            "platform_oidc_client_secrets": oidc_client_secrets,
            "platform_oidc_clients": oidc_clients,
            "platform_user_password_secrets": user_password_secrets,
            "platform_users_with_passwords": users_with_passwords,
            "platform_group_members": group_members,
            "platform_analytics_schemas_of": analytics_groups,
            "platform_analytics_hba": analytics_hba,
            "platform_analytics_superset_connections": analytics_superset_connections,
            "platform_analytics_superset_roles": analytics_superset_roles,
        }
