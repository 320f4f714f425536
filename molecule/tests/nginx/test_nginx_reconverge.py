"""The nginx role run again with other inputs (molecule/nginx/converge.yml as separate
ansible-playbook runs): a broken configuration fails the run while nginx keeps serving, renewal
and a change of names re-issue the certificate, a normal re-run changes nothing. Each test leaves
the host as the scenario's converge made it (but for a newer certificate)."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509
from hostlib import fetch
from nginx_sites import CERT_NAMES, SITES, certificate, dns_names

THREE_SITES = [
    {"name": "api", "server_name": "api.platform.test", "upstreams": ["127.0.0.1:8000"]},
    {"name": "hub", "server_name": "hub.platform.test", "upstreams": ["127.0.0.1:8001"], "websocket": True,
     "client_max_body_size": "1g"},
    {"name": "extra", "server_name": "extra.platform.test", "upstreams": ["127.0.0.1:8000"]},
]  # fmt: skip


def served_certificate(address: str, name: str, ca: str) -> x509.Certificate:
    """The certificate nginx serves for name (after its reload), verified with the CA."""
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((address, 443), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def main_pid(web) -> tuple[str, str]:
    props = dict(line.split("=", 1) for line in web.check_output("systemctl show nginx -p MainPID,ActiveState").split())
    return props["MainPID"], props["ActiveState"]


def test_a_broken_configuration_fails_the_run_and_nginx_keeps_serving(web, converge, site_names, ca):
    before = main_pid(web)
    run = converge(nginx_extra_http_config="bogus_directive on;")
    assert run.rc != 0, f"the run with a bogus directive succeeded:\n{run.output[-2000:]}"
    assert 'unknown directive "bogus_directive"' in run.output, (
        f"nginx's refusal is not reported:\n{run.output[-2000:]}"
    )
    assert "nginx -t rejected the new /etc/nginx/nginx.conf" in run.output, (
        f"the run does not say the configuration was not installed:\n{run.output[-2000:]}"
    )
    assert "bogus_directive" not in web.file("/etc/nginx/nginx.conf").content_string, (
        "the broken directive reached /etc/nginx/nginx.conf"
    )
    assert main_pid(web) == (before[0], "active"), f"nginx was {before}, is {main_pid(web)} after the failed run"
    r = fetch(f"https://{SITES[0].name}/after-broken", ca)
    assert r.status_code == 200, f"{SITES[0].name} after the failed run: HTTP {r.status_code}"


def test_renewal_reissues_the_certificate_nginx_serves(web, converge, address, ca):
    first = certificate(web)
    run = converge(nginx_tls_renew_days=400)  # above the certificate's validity: renew now
    assert run.rc == 0, f"the renewing run failed:\n{run.output[-2000:]}"
    renewed, served = certificate(web), served_certificate(address, SITES[0].name, ca)
    assert renewed.serial_number != first.serial_number, f"not re-issued: serial {first.serial_number:x} still"
    assert served.serial_number == renewed.serial_number, (
        f"nginx serves {served.serial_number:x}, the renewed certificate is {renewed.serial_number:x}"
    )


def test_a_new_name_reissues_the_certificate_and_so_does_dropping_it(web, converge, address, ca):
    first = certificate(web)
    run = converge(nginx_sites=THREE_SITES)
    assert run.rc == 0, f"the run with a third site failed:\n{run.output[-2000:]}"
    three = certificate(web)
    expected = ["api.platform.test", "extra.platform.test", "hub.platform.test"]
    assert dns_names(three) == expected and three.serial_number != first.serial_number, (
        f"with a third site: serial {first.serial_number:x} -> {three.serial_number:x}, names {dns_names(three)}"
    )
    served = served_certificate(address, "extra.platform.test", ca)
    assert served.serial_number == three.serial_number, f"extra.platform.test is served {served.serial_number:x}"

    run = converge()
    assert run.rc == 0, f"the normal run after it failed:\n{run.output[-2000:]}"
    final = certificate(web)
    assert dns_names(final) == CERT_NAMES and final.serial_number != three.serial_number, (
        f"back to the scenario's sites: serial {three.serial_number:x} -> {final.serial_number:x}, "
        f"names {dns_names(final)}"
    )
    enabled = sorted(web.file("/etc/nginx/sites-enabled").listdir())
    expected = sorted(f"{name.split('.')[0]}.conf" for name in CERT_NAMES)  # one site per name of converge.yml
    assert enabled == expected, f"enabled sites after the third went: {enabled}"


def test_a_normal_rerun_changes_nothing(converge):
    run = converge()
    recap = run.output[run.output.rfind("PLAY RECAP") :]
    assert run.rc == 0 and run.recap("changed") == 0 and run.recap("failed") == 0, f"the re-run: rc {run.rc} {recap}"
