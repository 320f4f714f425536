"""The platform's one secrets mechanism (see README.md, "Secrets")."""

from __future__ import annotations

DOCUMENTATION = r"""
name: platform_secret
short_description: A named secret from the operator's vault, or generated once per inventory
description:
  - Returns C(platform_secrets[NAME]) when the operator set it (normally in an Ansible Vault file).
  - Otherwise reads C(platform_secrets_dir/NAME) on the controller, creating it on first use with a
    random value (directory 0700, file 0600). Re-runs reuse the file, so the value is stable.
  - C(platform_secrets_dir) defaults to C(.secrets/) beside the inventory the host was defined in
    (a dot directory, so Ansible never reads it as inventory).
options:
  _terms:
    description: Secret names (lowercase letters, digits, underscores).
    required: true
  kind:
    description: C(password) (URL-safe characters) or C(hex).
    default: password
  length:
    description: Number of characters of a generated secret.
    default: 40
  generate:
    description:
      - When false, a missing secret is an error instead of being generated (for values another
        system issues, such as an external OpenID provider's client secrets).
    type: bool
    default: true
  hint:
    description: Said in the error when a secret that is not generated is missing.
    default: ""
"""

import os  # noqa: E402 - Ansible plugins keep DOCUMENTATION above the imports
import re  # noqa: E402
import secrets  # noqa: E402
import string  # noqa: E402
import tempfile  # noqa: E402

from ansible.errors import AnsibleError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
ALPHABETS = {
    "password": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        kind = self.get_option("kind")
        length = int(self.get_option("length"))
        generate = self.get_option("generate")
        hint = self.get_option("hint")
        if kind not in ALPHABETS:
            raise AnsibleError(f"platform_secret: kind={kind!r} is unknown; use one of {sorted(ALPHABETS)}")
        if length < 16:
            raise AnsibleError(f"platform_secret: length={length} is too short; use 16 or more")
        variables = variables or {}
        vaulted = self._templar.template(variables.get("platform_secrets", {})) or {}
        if not isinstance(vaulted, dict):
            raise AnsibleError("platform_secrets must be a mapping of secret name to value (see README.md, Secrets)")
        return [self._one(name, vaulted, variables, kind, length, generate, hint) for name in terms]

    def _one(self, name, vaulted, variables, kind, length, generate=True, hint=""):
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise AnsibleError(f"platform_secret: {name!r} is not a valid secret name (lowercase, digits, '_')")
        if name in vaulted:
            value = str(vaulted[name])
            if not value:
                raise AnsibleError(f"platform_secrets.{name} is empty: set a value or remove the key to generate one")
            return value
        directory = self._secrets_dir(variables)
        path = os.path.join(directory, name)
        if not generate and not os.path.exists(path):
            raise AnsibleError(
                f"secret {name!r} is not set and is not generated here{': ' + hint if hint else ''}. "
                f"Set platform_secrets.{name} in the inventory's vault, or write the value to {path} (mode 0600)."
            )
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            # Written whole under another name, then linked into place: hosts looking the same
            # secret up at once (forks) all read the one value, never a half-written file.
            value = "".join(secrets.choice(ALPHABETS[kind]) for _ in range(length))
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")  # 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(value + "\n")
                os.link(tmp, path)
                return value
            except FileExistsError:
                pass  # another process was first: use its value
            finally:
                os.unlink(tmp)
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
        if not value:
            raise AnsibleError(f"secret file {path} is empty: delete it to generate a new value, or fill it")
        return value

    def _secrets_dir(self, variables):
        configured = variables.get("platform_secrets_dir")
        if configured:
            return os.path.expanduser(str(self._templar.template(configured)))
        inventory_dir = variables.get("inventory_dir")
        if not inventory_dir:
            raise AnsibleError(
                "platform_secret: set platform_secrets_dir (no inventory directory to keep secrets beside)"
            )
        return os.path.join(str(inventory_dir), ".secrets")
