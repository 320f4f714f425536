"""The FastAPI application.  Start with: ``uvicorn exec_api.main:app``."""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exec_api import __version__
from exec_api.api.routes import (
    executions,
    legacy,
    meta,
    notebooks,
    notifications,
    parameters,
    schedules,
)
from exec_api.core.config import Settings, get_settings
from exec_api.core.db import get_sessionmaker
from exec_api.core.security import Authenticator
from exec_api.services.metrics import register_queue_collector

log = logging.getLogger("exec_api")


DOCS_ASSETS = "/docs/assets"


def docs_page(app: FastAPI) -> None:
    """Swagger UI at /docs with its scripts and styles from this host (fastapi-swagger's vendored
    swagger-ui-dist 5, which reads OpenAPI 3.1): no CDN to trust, and a page that works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = importlib.resources.files("fastapi_swagger") / "resources"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )


def create_app(settings: Settings | None = None, *, start_worker: bool | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        app.state.authenticator = Authenticator(settings)
        register_queue_collector()
        run_worker = settings.worker_embedded if start_worker is None else start_worker
        worker = None
        if run_worker:
            from exec_api.worker import Worker

            worker = Worker(settings, get_sessionmaker())
            await run_in_threadpool(worker.start)  # blocking: off the event loop
        app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                await run_in_threadpool(worker.stop)

    app = FastAPI(
        title="exec API",
        version=__version__,
        description="Notebook registry, typed parameters, safe and fast notebook execution, "
        "execution history.  Every endpoint but /health needs a bearer token.",
        lifespan=lifespan,
        docs_url=None,  # served below, from the host
        redoc_url=None,
    )
    docs_page(app)
    # Added first, so CORS (added after it) wraps it and its 422 answers carry CORS headers.
    app.add_middleware(CheckedJsonMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    routers = (meta, legacy, notebooks, parameters, executions, schedules, notifications)
    for r in (m.router for m in routers):
        app.include_router(r)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app


# ---------------------------------------------------------- JSON bodies: finite, valid text
# Python's json module reads NaN, Infinity, -Infinity and numbers that overflow (1e999) as
# floats, and "\\ud800" as a lone surrogate: values that neither PostgreSQL nor a JSON answer
# can hold (HTTP 500/502 before).  Such a body is refused with 422 naming where the value is,
# before any route sees it.

# A JSON text can hold such a value only if it has one of these: the constants, an exponent
# of 3+ digits or 200+ digits in a row (overflow needs >= 309 integer digits, or a 2-digit
# exponent at most after 210+ digits), a surrogate escape, or a UTF-8-encoded surrogate.
# Any other body skips the second, checking parse.
_SUSPECT = re.compile(
    rb"NaN|Infinity|[0-9][eE]\+?0*[1-9][0-9]{2}|[0-9]{200}|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]"
)
Loc = tuple[str | int, ...]


class _NonFinite:
    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> float | _NonFinite:
    f = float(text)
    return f if math.isfinite(f) else _NonFinite(text)


def _bad_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_bad(doc: Any) -> tuple[Loc, str, str] | None:
    """Where the first unacceptable value is: (location, kind, input shown)."""
    stack: list[tuple[Any, Loc]] = [(doc, ("body",))]
    while stack:
        cur, where = stack.pop()
        if isinstance(cur, _NonFinite):
            return where, "non-finite number", cur.text
        if isinstance(cur, str) and _bad_text(cur):
            return where, "invalid text (lone surrogate)", ascii(cur)
        if isinstance(cur, dict):
            for k in cur:
                if _bad_text(k):
                    return where, "invalid text (lone surrogate) in a key", ascii(k)
            stack.extend((x, (*where, k)) for k, x in reversed(cur.items()))
        elif isinstance(cur, list):
            stack.extend((x, (*where, i)) for i, x in reversed(list(enumerate(cur))))
    return None


def json_body_error(body: bytes) -> dict[str, Any] | None:
    """The 422 error for the first non-finite number or lone surrogate of a JSON body, or None
    (also for a body that is not JSON at all: the route's own parsing reports that)."""
    # json.loads also reads UTF-16 and UTF-32 (told apart by NULs or a BOM at the start),
    # where the byte patterns above do not apply: those are always parsed to be checked.
    utf8 = b"\x00" not in body[:4] and not body.startswith((b"\xff\xfe", b"\xfe\xff"))
    if utf8 and not _SUSPECT.search(body):
        return None
    try:
        doc = json.loads(body, parse_constant=_NonFinite, parse_float=_parse_float)
    except (ValueError, RecursionError):
        return None
    found = _first_bad(doc)
    if found is None:
        return None
    loc, kind, shown = found
    where = ".".join(str(p) for p in loc)
    return {
        "type": "finite_number" if kind == "non-finite number" else "string_unicode",
        "loc": list(loc),
        "msg": f"{kind} at {where}",
        "input": shown,
    }


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            ctype = value.split(b";", 1)[0].strip().lower()
            return ctype == b"application/json" or ctype.endswith(b"+json")
    return True  # FastAPI reads a body without a content type as JSON


class CheckedJsonMiddleware:
    """Refuses (422) a JSON request body that holds a non-finite number or a lone surrogate
    (pure ASGI: the body is read once and handed on unchanged)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        error = json_body_error(body) if body else None
        if error is not None:
            await JSONResponse(status_code=422, content={"detail": [error]})(scope, receive, send)
            return
        replay: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replay], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def again() -> Message:
        return messages.pop(0) if messages else await receive()

    return again


def _finite(v: Any) -> Any:
    """A validation error echoes the input: a non-finite float or a lone surrogate there would
    make the error answer itself fail (JSON has no NaN, UTF-8 no surrogates): shown as text."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, str) and _bad_text(v):
        return ascii(v)
    if isinstance(v, dict):
        return {(ascii(k) if _bad_text(k) else k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))}
    )


def _lazy_app() -> FastAPI:
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return create_app()


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn exec_api.main:app`` builds the app on first access, so importing this module
    # (tests, tools) does not need settings.
    global _app
    if name == "app":
        if _app is None:
            _app = _lazy_app()
        return _app
    raise AttributeError(name)
