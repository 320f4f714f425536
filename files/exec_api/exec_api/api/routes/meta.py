"""Service info, liveness, readiness and metrics."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from exec_api import __version__
from exec_api.api.deps import CurrentUser, DbSession
from exec_api.core.config import get_settings
from exec_api.core.security import Authenticator, AuthError, get_authenticator

router = APIRouter(tags=["service"])
_bearer = HTTPBearer(auto_error=False)


@router.get("/")
async def root(user: CurrentUser) -> dict[str, Any]:
    """API info."""
    return {
        "service": "exec-api",
        "version": __version__,
        "user": user.username,
        "admin": user.is_admin,
        "docs": "/docs",
        "endpoints": [
            "/execute",
            "/run-notebook",
            "/execute-notebook",
            "/list-notebooks/{username}",
            "/db/notebooks",
            "/db/parameters",
            "/db/executions",
            "/health",
            "/ready",
            "/metrics",
        ],
    }


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers (no token, no database)."""
    return {"status": "ok"}


def probe_access(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    auth: Annotated[Authenticator, Depends(get_authenticator)],
) -> None:
    """A user token, or the static EXEC_API_PROBE_TOKEN (for Prometheus / load balancers)."""
    if creds is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "bearer token required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    probe = get_settings().probe_token
    if probe and hmac.compare_digest(creds.credentials.encode(), probe.encode()):
        return
    try:
        auth.authenticate(creds.credentials)
    except AuthError as e:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(e), headers={"WWW-Authenticate": "Bearer"}
        ) from e


@router.get("/ready", dependencies=[Depends(probe_access)])
async def ready(request: Request, db: DbSession) -> Response:
    """Readiness: the database answers (and the worker runs, if embedded)."""
    try:
        await run_in_threadpool(db.execute, text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any DB failure means not ready
        return Response(
            f'{{"status":"not ready","database":"{type(e).__name__}"}}',
            status_code=503,
            media_type="application/json",
        )
    worker = getattr(request.app.state, "worker", None)
    return Response(
        '{"status":"ready","database":"ok","embedded_worker":%s}'
        % ("true" if worker is not None else "false"),
        media_type="application/json",
    )


@router.get("/metrics", dependencies=[Depends(probe_access)])
def metrics() -> Response:
    """Prometheus metrics: queue depth, running, outcomes, durations."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
