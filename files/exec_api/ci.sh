#!/usr/bin/env bash
# The exec API's CI entry point: venv from the lock, lint, types, tests.
# Needs: uv on PATH, Debian's postgresql-15 (server binaries in /usr/lib/postgresql/15/bin).
set -euo pipefail
cd "$(dirname "$0")"

export UV_PROJECT_ENVIRONMENT="$PWD/.venv"
uv sync --frozen --python ">=3.11"

echo "== ruff check"; .venv/bin/ruff check exec_api tests alembic bench
echo "== ruff format --check"; .venv/bin/ruff format --check exec_api tests alembic bench
echo "== mypy"; .venv/bin/mypy exec_api
echo "== pytest"
# The test suite starts its own PostgreSQL server (tests/pg.py) and real Jupyter kernels.
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
