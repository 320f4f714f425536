"""The FastAPI application.  Start with: ``uvicorn app.main:app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api.routes import executions, legacy, meta, notebooks, parameters
from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.security import Authenticator
from app.services.metrics import register_queue_collector

log = logging.getLogger("app")


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
            from app.worker import Worker

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
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    for r in (meta.router, legacy.router, notebooks.router, parameters.router, executions.router):
        app.include_router(r)
    return app


def _lazy_app() -> FastAPI:
    logging.basicConfig(
        level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return create_app()


_app: FastAPI | None = None


def __getattr__(name: str) -> FastAPI:
    # ``uvicorn app.main:app`` builds the app on first access, so importing this module
    # (tests, tools) does not need settings.
    global _app
    if name == "app":
        if _app is None:
            _app = _lazy_app()
        return _app
    raise AttributeError(name)
