"""The nginx role on the controller: bad input fails early naming the variable; the templates render
the promised TLS, headers, proxying and default servers (molecule/nginx checks them on a booted host)."""

from __future__ import annotations

import pytest
import yaml
from conftest import BIN, ROOT, run

ROLE = ROOT / "roles/nginx"
API = {"name": "api", "server_name": "api.platform.test", "upstreams": ["127.0.0.1:8000"]}
HUB = {"name": "hub", "server_name": "hub.platform.test", "upstreams": ["127.0.0.1:8001"], "websocket": True}
AUTH = {"name": "auth", "server_name": "auth.platform.test", "upstreams": ["127.0.0.1:8080"],
        "published_paths": ["/realms/", "/resources/", "/.well-known/", "/robots.txt"],
        "admin_paths": ["/admin/", "/realms/master/"], "admin_allow": ["10.9.0.0/16"],
        "proxy_buffer_size": "128k"}  # fmt: skip
CA = {"nginx_tls_ca_dir": "/tmp/ca", "nginx_tls_ca_export": "/tmp/ca.crt"}


def playbook(tmp_path, plays) -> object:
    pb = tmp_path / "pb.yml"
    pb.write_text(yaml.safe_dump(plays))
    return pb


def apply_asserts(tmp_path, **role_vars):
    pb = playbook(tmp_path, [{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": str(ROLE), "vars": role_vars}],
    }])  # fmt: skip
    # Only input checks run: argument validation is tagged always, the asserts nginx_assert.
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb), "--tags", "nginx_assert"])


# The shape the provided-mode check looks for (never a real key).
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def test_valid_input_passes(tmp_path):
    out = apply_asserts(tmp_path, nginx_sites=[API, HUB, AUTH], **CA)
    assert out.returncode == 0, out.stdout[-2000:]


@pytest.mark.parametrize(
    ("role_vars", "expect"),
    [
        ({"nginx_sites": [], **CA}, "nginx_sites is empty"),
        ({"nginx_sites": [{**API, "name": "API Site"}], **CA}, "nginx_sites[0] (name=API Site) is invalid"),
        ({"nginx_sites": [{**API, "server_name": "api"}], **CA}, "server_name=api"),
        ({"nginx_sites": [{**API, "upstreams": []}], **CA}, "is invalid"),
        ({"nginx_sites": [{**API, "upstreams": ["127.0.0.1"]}], **CA}, "is invalid"),
        ({"nginx_sites": [{**API, "client_max_body_size": "lots"}], **CA}, "is invalid"),
        ({"nginx_sites": [API, {**HUB, "server_name": API["server_name"]}], **CA}, "its own `server_name`"),
        ({"nginx_sites": [{**AUTH, "published_paths": ["realms/"]}], **CA}, "published_paths=['realms/']"),
        ({"nginx_sites": [{**AUTH, "admin_allow": ["all; allow 0.0.0.0/0"]}], **CA}, "admin_allow"),
        ({"nginx_sites": [{**API, "admin_paths": ["/admin/"]}], **CA}, "admin_paths only with published_paths"),
        ({"nginx_sites": [API]}, "nginx_tls_ca_dir"),
        ({"nginx_sites": [API], "nginx_tls_ca_dir": "relative/ca", "nginx_tls_ca_export": "/tmp/x"}, "absolute"),
        ({"nginx_sites": [API], "nginx_tls_mode": "provided"}, "nginx_tls_certificate_key"),
        ({"nginx_sites": [API], "nginx_tls_mode": "letsencrypt", **CA}, "nginx_tls_mode"),
        ({"nginx_sites": [{**API, "upstream_tls_name": "Not A Name"}], **CA}, "upstream_tls_name"),
        (
            {
                "nginx_sites": [{**API, "upstream_tls_name": "auth.example.org"}],
                "nginx_tls_mode": "provided",
                "nginx_tls_certificate": PEM_CERT,
                "nginx_tls_certificate_key": PEM_KEY,
            },
            "reach their upstreams over TLS",
        ),
    ],
)
def test_bad_input_is_refused_with_the_variable_named(tmp_path, role_vars, expect):
    out = apply_asserts(tmp_path, **role_vars)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-2000:]
    assert expect in text, text[-2000:]


def test_provided_key_is_not_shown(tmp_path):
    secret = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n"
    out = apply_asserts(tmp_path, nginx_sites=[API], nginx_tls_mode="provided", nginx_tls_certificate="x",
                        nginx_tls_certificate_key=secret)  # fmt: skip
    assert out.returncode != 0
    assert "SECRETSECRET" not in out.stdout + out.stderr


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    """The role's templates rendered on the controller with two sites, as the role would."""
    out_dir = tmp_path_factory.mktemp("rendered")
    sites = [API, {**HUB, "client_max_body_size": "1g", "frame_options": ""}, AUTH]
    tasks = [
        {"ansible.builtin.include_vars": {"file": str(ROLE / "defaults/main.yml")}},
        {"ansible.builtin.include_vars": {"file": str(ROLE / "vars/main.yml")}},
        {"ansible.builtin.set_fact": {"nginx_sites": sites}},
        {"ansible.builtin.template": {"src": str(ROLE / "templates/nginx.conf.j2"), "dest": f"{out_dir}/nginx.conf",
                                      "mode": "0644"}},
        {"ansible.builtin.template": {"src": str(ROLE / "templates/default.conf.j2"),
                                      "dest": f"{out_dir}/default.conf", "mode": "0644"}},
        {"ansible.builtin.template": {"src": str(ROLE / "templates/hardening.conf.j2"),
                                      "dest": f"{out_dir}/hardening.conf", "mode": "0644"}},
        {"ansible.builtin.template": {"src": str(ROLE / "templates/site.conf.j2"),
                                      "dest": f"{out_dir}/{{{{ item.name }}}}.conf", "mode": "0644"},
         "loop": "{{ nginx_sites }}"},
    ]  # fmt: skip
    pb = out_dir / "pb.yml"
    pb.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    out = run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb)])
    assert out.returncode == 0, out.stdout[-3000:]
    return {p.stem: p.read_text() for p in out_dir.glob("*.conf")}


def directives(text: str, name: str) -> list[str]:
    return [line.strip()[len(name) + 1 : -1] for line in text.splitlines() if line.strip().startswith(name + " ")]


def test_tls_is_mozilla_intermediate_without_cbc(rendered):
    conf = rendered["nginx"]
    assert directives(conf, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    ciphers = directives(conf, "ssl_ciphers")[0].split(":")
    assert ciphers and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers), ciphers
    assert directives(conf, "ssl_prefer_server_ciphers") == ["off"]
    assert directives(conf, "ssl_session_tickets") == ["off"]
    assert directives(conf, "server_tokens") == ["off"]
    assert directives(conf, "client_max_body_size") == ["100m"]
    assert "ssl_dhparam" not in conf


def test_every_template_starts_with_the_managed_comment(rendered):
    for name, text in rendered.items():
        assert text.startswith("#"), name


def test_sites_proxy_with_forwarded_headers_and_websocket_only_where_asked(rendered):
    api, hub = rendered["api"], rendered["hub"]
    for site, name in [(api, "api.platform.test"), (hub, "hub.platform.test")]:
        assert directives(site, "server_name") == [name]
        headers = directives(site, "proxy_set_header")
        for h in ["Host $host", "X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme",
                  "X-Forwarded-Host $host", "X-Forwarded-Port $server_port"]:  # fmt: skip
            assert h in headers, (name, headers)
        assert 'Strict-Transport-Security "max-age=63072000" always' in directives(site, "add_header")
        assert "X-Content-Type-Options nosniff always" in directives(site, "add_header")
    assert "Upgrade $http_upgrade" in directives(hub, "proxy_set_header")
    assert "Connection $connection_upgrade" in directives(hub, "proxy_set_header")
    assert "Upgrade $http_upgrade" not in directives(api, "proxy_set_header")
    assert 'Connection ""' in directives(api, "proxy_set_header")
    assert directives(hub, "client_max_body_size") == ["1g"]
    assert "X-Frame-Options SAMEORIGIN always" in directives(api, "add_header")
    assert not [h for h in directives(hub, "add_header") if h.startswith("X-Frame-Options")]


def locations(text: str) -> dict[str, str]:
    """Each `location PREFIX { ... }` block of a rendered site, by prefix."""
    out, current, depth = {}, None, 0
    for line in text.splitlines():
        stripped = line.strip()
        if current is None and stripped.startswith("location ") and stripped.endswith("{"):
            current, depth, out[stripped[len("location ") : -1].strip()] = (
                stripped[len("location ") : -1].strip(),
                1,
                "",
            )
            continue
        if current is not None:
            depth += stripped.count("{") - stripped.count("}")
            if depth == 0:
                current = None
            else:
                out[current] += stripped + "\n"
    return out


def test_an_allow_listed_site_publishes_only_its_paths_and_admin_paths_to_admins(rendered):
    auth = locations(rendered["auth"])
    assert set(auth) == {"/realms/", "/resources/", "/.well-known/", "/robots.txt", "/admin/", "/realms/master/", "/"}
    assert auth["/"].strip() == "return 404;", "what is not published must not reach the upstream"
    for path in ["/realms/", "/resources/", "/.well-known/", "/robots.txt"]:
        assert "proxy_pass http://platform_auth;" in auth[path] and "deny all;" not in auth[path], path
    for path in ["/admin/", "/realms/master/"]:
        body = auth[path]
        assert "allow 10.9.0.0/16;" in body and "deny all;" in body, body
        assert body.index("deny all;") < body.index("proxy_pass"), body
    # nginx picks the longest prefix: /realms/master/ is its own location, not /realms/'s.
    assert "proxy_buffer_size 128k;" in auth["/realms/"]
    api = locations(rendered["api"])
    assert set(api) == {"/"} and "proxy_pass http://platform_api;" in api["/"]
    assert "proxy_buffer_size" not in rendered["api"]


def test_default_servers_redirect_http_and_refuse_unknown_names(rendered):
    default = rendered["default"]
    assert "return 301 https://$host$request_uri;" in default
    assert "ssl_reject_handshake on;" in default
    assert "return 421;" in default


def test_argument_specs_document_the_site_keys_the_template_reads():
    spec = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    keys = set(spec["nginx_sites"]["options"])
    template = (ROLE / "templates/site.conf.j2").read_text()
    used = {k for k in keys if f"site.{k}" in template}
    assert used == keys, keys - used
