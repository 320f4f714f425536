#!/usr/bin/python3
"""Writes the JWKS of the test signing key (stand-in for the identity provider's)."""

import base64
import json

from cryptography.hazmat.primitives.serialization import load_pem_private_key


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


with open("/srv/test-idp/key.pem", "rb") as f:
    pub = load_pem_private_key(f.read(), None).public_key().public_numbers()
with open("/srv/test-idp/www/jwks.json", "w") as f:
    json.dump(
        {"keys": [{"kty": "RSA", "kid": "test", "use": "sig", "alg": "RS256", "n": b64(pub.n), "e": b64(pub.e)}]}, f
    )
