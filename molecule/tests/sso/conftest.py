"""Fixtures of the single sign-on tests: the provider, the exec API's registration at it, its
users and their logins (oidc.py; the exec_api area imports the same ones)."""

from oidc import *  # noqa: F403 - the provider's fixtures (oidc.__all__)
