"""A stand-in identity provider for tests and benchmarks: an RSA key served as a JWKS with an
OIDC discovery document, and a JupyterHub ``/hub/api/user`` endpoint (the IdP/hub side, not
our service)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

AUDIENCE = "exec-api"


class IdP:
    """The identity provider side: an RSA key, its JWKS and discovery document over HTTP,
    plus a JupyterHub ``/hub/api/user`` endpoint that knows a few API tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.hub_tokens: dict[str, dict[str, Any]] = {}
        self.requests = 0
        idp = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                idp.requests += 1
                if self.path == "/realms/test/.well-known/openid-configuration":
                    self._send(200, {"issuer": idp.issuer, "jwks_uri": idp.base + "/jwks"})
                elif self.path == "/jwks":
                    self._send(200, idp.jwks())
                elif self.path == "/hub/api/user":
                    auth = self.headers.get("Authorization", "")
                    tok = auth[6:] if auth.startswith("token ") else ""
                    if tok in idp.hub_tokens:
                        self._send(200, idp.hub_tokens[tok])
                    else:
                        self._send(403, {"status": 403, "message": "not allowed"})
                else:
                    self._send(404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.base + "/realms/test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def token(
        self,
        username: str,
        groups: list[str] | None = None,
        *,
        exp_in: int = 300,
        aud: str = AUDIENCE,
        iss: str | None = None,
        key: Any = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
        typ: str | None = "Bearer",
        header_typ: str | None = None,
    ) -> str:
        """An access token as Keycloak issues them (claim ``typ`` ``Bearer``; header ``typ``
        ``JWT``) for a member of ``platform-users`` unless told otherwise; ``typ=None,
        header_typ="at+jwt"`` gives an RFC 9068 one, ``typ="ID"`` an ID token."""
        now = int(time.time())
        claims = {
            "sub": str(uuid.uuid4()),
            "preferred_username": username,
            "groups": ["platform-users"] if groups is None else groups,
            "aud": aud,
            "iss": iss or self.issuer,
            "iat": now,
            "exp": now + exp_in,
        }
        if typ is not None:
            claims["typ"] = typ
        claims.update(extra or {})
        headers = {"kid": kid or self.kid}
        if header_typ is not None:
            headers["typ"] = header_typ
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers=headers)
