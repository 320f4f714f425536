"""/db/notifications: a user's own notification subscriptions (exec_api.services.notify sends)."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from exec_api.core.config import Settings
from exec_api.core.security import Principal
from exec_api.models import NotificationDelivery, NotificationSubscription
from exec_api.schemas import SubscriptionCreate, SubscriptionCreated
from exec_api.services import notify
from exec_api.services.access import can_see, get_notebook, not_found
from exec_api.services.schedules import get_schedule


def get(db: Session, principal: Principal, subscription_id: int) -> NotificationSubscription:
    sub = db.get(NotificationSubscription, subscription_id)
    if sub is None or not can_see(principal, sub.username):
        raise not_found("subscription")
    return sub


def create(
    db: Session, settings: Settings, principal: Principal, body: SubscriptionCreate
) -> SubscriptionCreated:
    """Your own subscription: to your own notebook or schedule (404 otherwise), to a target the
    platform will send to (422 naming the field otherwise)."""
    have = (
        db.execute(
            select(func.count()).where(NotificationSubscription.username == principal.username)
        ).scalar()
        or 0
    )
    if have >= settings.max_subscriptions_per_user:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"you have {have} subscriptions, the most one user may have "
            "(EXEC_API_MAX_SUBSCRIPTIONS_PER_USER): delete one first",
        )
    if body.notebook_id is not None:
        get_notebook(db, principal, body.notebook_id)
    if body.schedule_id is not None:
        get_schedule(db, principal, body.schedule_id)
    try:
        notify.check_target(settings, body.kind, body.target)
    except notify.TargetRefused as e:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, {"field": e.field, "message": str(e)}
        ) from e
    sub = NotificationSubscription(
        username=principal.username,
        secret=notify.new_secret() if body.kind == "webhook" else None,
        **body.model_dump(),
    )
    db.add(sub)
    db.commit()
    db.refresh(sub)
    out = SubscriptionCreated.model_validate(sub)
    out.secret = sub.secret
    return out


def listing(db: Session, principal: Principal) -> list[NotificationSubscription]:
    rows = db.execute(
        select(NotificationSubscription)
        .where(NotificationSubscription.username == principal.username)
        .order_by(NotificationSubscription.id)
    )
    return list(rows.scalars())


def delete(db: Session, principal: Principal, subscription_id: int) -> None:
    db.delete(get(db, principal, subscription_id))
    db.commit()


def deliveries(
    db: Session, principal: Principal, subscription_id: int
) -> list[NotificationDelivery]:
    get(db, principal, subscription_id)
    rows = db.execute(
        select(NotificationDelivery)
        .where(NotificationDelivery.subscription_id == subscription_id)
        .order_by(NotificationDelivery.id.desc())
        .limit(100)
    )
    return list(rows.scalars())
