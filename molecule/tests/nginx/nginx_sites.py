"""The nginx scenario's sites as molecule/nginx/converge.yml states them, and how the tests read
the certificate and ask the sites from the controller."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

DOMAIN = "platform.test"
CA_ON_HOST = "/root/platform-ca.crt"
CERT = "/etc/nginx/tls/platform.crt"


@dataclass(frozen=True)
class Site:
    name: str
    port: int  # the echo upstream's port behind it
    websocket: bool


# The sites of converge.yml with their upstreams (molecule/nginx/files/echo_upstream.py answers
# with the port it listens on); the auth site is tested by its paths.
SITES = [Site(f"api.{DOMAIN}", 8000, False), Site(f"hub.{DOMAIN}", 8001, True)]
CERT_NAMES = sorted(f"{label}.{DOMAIN}" for label in ("api", "auth", "hub", "internal", "rogue", "misnamed"))


def certificate(web) -> x509.Certificate:
    """The certificate nginx has on disk."""
    return x509.load_pem_x509_certificate(web.file(CERT).content)


def dns_names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))
