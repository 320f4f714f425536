"""What routes declare: the request's database session, the caller, the settings, and the id
path parameter they share.

A route that uses the database is ``async def`` and hands its work, session and all, to the
thread pool (``await run_in_threadpool(service, db, ...)``): blocking work never runs on the
event loop, and the answer is then checked against the response model on the loop at once.
A sync ``def`` route would have that check wait for a pool thread while its session still
holds a pooled connection, and a busy process would deadlock: every thread waiting for a
connection that only a queued check could give back.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from sqlalchemy.orm import Session

from exec_api.core.config import Settings, get_settings
from exec_api.core.db import get_db, get_read_db
from exec_api.core.security import Principal, current_user
from exec_api.schemas import MAX_ID

# scope="function": the session is closed once the route has its answer, before the answer
# is sent, so a slow client (a large output notebook) never holds a pooled connection.
DbSession = Annotated[Session, Depends(get_db, scope="function")]
ReadDbSession = Annotated[Session, Depends(get_read_db, scope="function")]
CurrentUser = Annotated[Principal, Depends(current_user)]


async def get_settings_dep() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
