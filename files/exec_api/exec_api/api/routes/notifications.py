"""/db/notifications: your webhooks and e-mail addresses for your runs' failures, successes
and recoveries (exec_api.services.notify: fan-out, delivery, signatures)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool

from exec_api.api.deps import CurrentUser, DbSession, IdPath, ReadDbSession, SettingsDep
from exec_api.models import NotificationDelivery, NotificationSubscription
from exec_api.schemas import (
    DeliveryResponse,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionResponse,
)
from exec_api.services import subscriptions

router = APIRouter(prefix="/db/notifications", tags=["notifications"])


@router.get("", response_model=list[SubscriptionResponse])
async def list_subscriptions(
    db: ReadDbSession, user: CurrentUser
) -> list[NotificationSubscription]:
    """Your subscriptions (everyone's own only, admins' too)."""
    return await run_in_threadpool(subscriptions.listing, db, user)


@router.post("", response_model=SubscriptionCreated, status_code=status.HTTP_201_CREATED)
async def create_subscription(
    body: SubscriptionCreate, db: DbSession, cfg: SettingsDep, user: CurrentUser
) -> SubscriptionCreated:
    """A webhook or e-mail address for your runs; a webhook's signing secret is in this answer
    only."""
    return await run_in_threadpool(subscriptions.create, db, cfg, user, body)


@router.get("/{subscription_id}", response_model=SubscriptionResponse)
async def read_subscription(
    subscription_id: IdPath, db: ReadDbSession, user: CurrentUser
) -> NotificationSubscription:
    return await run_in_threadpool(subscriptions.get, db, user, subscription_id)


@router.delete("/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_subscription(
    subscription_id: IdPath, db: DbSession, user: CurrentUser
) -> Response:
    await run_in_threadpool(subscriptions.delete, db, user, subscription_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{subscription_id}/deliveries", response_model=list[DeliveryResponse])
async def subscription_deliveries(
    subscription_id: IdPath, db: ReadDbSession, user: CurrentUser
) -> list[NotificationDelivery]:
    """The latest 100 deliveries, newest first: sent, pending (with its next attempt), failed."""
    return await run_in_threadpool(subscriptions.deliveries, db, user, subscription_id)
