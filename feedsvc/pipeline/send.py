"""The digest flow: render and store every due digest in the outbox, and deliver the
outbox while later digests render. What a digest shows is decided in ``feedsvc.digest``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from email.utils import parseaddr

from apscheduler.triggers.base import BaseTrigger

from feedsvc.config import Config, SubscriberConfig
from feedsvc.digest import STORY_MEMORY, compose, digest_message_id, drop_sent_stories
from feedsvc.errors import NotifyError
from feedsvc.feeds import feed_meta, feed_url
from feedsvc.mail import build_message
from feedsvc.model import DigestJob, MatchedEntry, OutboxMessage, SubscriptionInfo
from feedsvc.pipeline.services import LEASE, DigestReport, Services, subscription_config
from feedsvc.render import RenderedDigest
from feedsvc.schedule import latest_fire_time, outbox_retry_delay, schedule_trigger
from feedsvc.tokens import sign_unsubscribe

log = logging.getLogger("feedsvc.pipeline")

#: Outbox messages claimed per delivery round, and the wait for more while digests render.
DELIVERY_BATCH = 100
DELIVERY_IDLE_SECONDS = 0.05


async def send_due_digests(svc: Services, now: datetime) -> DigestReport:
    """Enqueue every digest that is due at ``now`` and deliver the outbox as it fills.

    Delivery overlaps rendering: the first digests are on the wire while later ones
    render. Every message is still stored before it is sent and marked after.
    """
    enqueuing = asyncio.create_task(enqueue_due_digests(svc, now))
    sent = failed = 0
    try:
        while True:
            last_round = enqueuing.done()
            batch_sent, batch_failed = await deliver_outbox(svc, now, DELIVERY_BATCH)
            sent, failed = sent + batch_sent, failed + batch_failed
            if batch_sent or batch_failed:
                continue
            if last_round:
                return DigestReport(enqueuing.result(), sent, failed)
            await asyncio.wait({enqueuing}, timeout=DELIVERY_IDLE_SECONDS)
    finally:
        enqueuing.cancel()


# -- enqueuing --------------------------------------------------------------------------


async def enqueue_due_digests(svc: Services, now: datetime) -> int:
    """Render and store every digest due at ``now``; returns how many were enqueued.

    A digest covers the subscriber's pending matches up to the latest scheduled time at
    or before ``now``; its Message-ID derives from (subscriber, that time), so a second
    run for the same window finds it already enqueued and adds nothing.
    """
    enqueued = 0
    for subscriber in svc.config.subscribers:
        window_end = latest_fire_time(subscriber_trigger(svc.config, subscriber), now)
        if window_end is not None and await enqueue_digest(svc, subscriber, window_end, now):
            enqueued += 1
    return enqueued


def subscriber_trigger(config: Config, subscriber: SubscriberConfig) -> BaseTrigger:
    return schedule_trigger(subscriber.digest, config.subscriber_timezone(subscriber))


async def enqueue_digest(
    svc: Services, subscriber: SubscriberConfig, window_end: datetime, now: datetime
) -> bool:
    """Render the subscriber's digest for the window and store it in the outbox.

    Every pending match is recorded as delivered by it, including stories left out
    because the subscriber already got them. An empty digest is never stored (its
    matches stay pending for the next one). Returns whether a message was enqueued.
    """
    pending, fresh = await digest_matches(svc, subscriber.email, window_end, now)
    if not fresh:
        return False
    last = await svc.storage.last_digest_at(subscriber.email)
    job = build_digest_job(svc, subscriber, fresh, last or fresh[0].matched_at, window_end)
    rendered = svc.renderer.render(job)
    raw = _digest_message(svc, job, rendered, now)
    outbox_id = await svc.storage.enqueue_digest(
        subscriber.email, job.message_id, raw, pending, now
    )
    log.info(
        "digest subscriber=%s window_end=%s stories=%d matches=%d outbox=%s",
        subscriber.email,
        window_end.isoformat(),
        len(job.items),
        len(pending),
        outbox_id,
    )
    return outbox_id is not None


async def preview_digest(svc: Services, email: str, now: datetime) -> RenderedDigest | None:
    """The digest this subscriber would get for everything pending now, not stored or sent."""
    subscriber = next((s for s in svc.config.subscribers if s.email == email), None)
    if subscriber is None:
        raise KeyError(f"no subscriber {email!r} in the config")
    _, fresh = await digest_matches(svc, email, now, now)
    if not fresh:
        return None
    last = await svc.storage.last_digest_at(email)
    return svc.renderer.render(
        build_digest_job(svc, subscriber, fresh, last or fresh[0].matched_at, now)
    )


async def digest_matches(
    svc: Services, email: str, until: datetime, now: datetime
) -> tuple[list[MatchedEntry], list[MatchedEntry]]:
    """The subscriber's pending matches, and those of them that are news to the
    subscriber (see ``digest.drop_sent_stories``)."""
    pending = await svc.storage.pending_matches(email, until)
    if not pending:
        return pending, pending
    sent = await svc.storage.delivered_entries(email, now - STORY_MEMORY)
    return pending, drop_sent_stories(pending, sent)


def build_digest_job(
    svc: Services,
    subscriber: SubscriberConfig,
    pending: Sequence[MatchedEntry],
    window_start: datetime,
    window_end: datetime,
) -> DigestJob:
    """Group, de-duplicate, cap and highlight a subscriber's pending matches."""
    config = svc.config
    labels = {s.name: s.title for s in config.sources if s.title}
    items, omitted = compose(pending, subscriber.subscriptions, config.mail.max_entries, labels)
    subscriptions = tuple(
        _subscription_info(svc, subscriber.email, name)
        for name in subscriber.subscriptions
        if any(item.match.subscription == name for item in items) or name in omitted
    )
    return DigestJob(
        subscriber=subscriber.email,
        locale=subscriber.locale,
        timezone=config.subscriber_timezone(subscriber),
        window_start=window_start,
        window_end=window_end,
        items=items,
        subscriptions=subscriptions,
        message_id=digest_message_id(subscriber.email, window_end, config.mail.sender),
        unsubscribe_url=unsubscribe_url(
            svc, subscriber.email, tuple(s.name for s in subscriptions)
        ),
        omitted=omitted,
    )


def _subscription_info(svc: Services, email: str, name: str) -> SubscriptionInfo:
    sub = subscription_config(svc.config, name)
    published = sub.atom and sub.token is None
    feed = feed_url(feed_meta(svc.config, name)) if published else None
    return SubscriptionInfo(
        name=name,
        title=sub.display_title,
        feed_url=feed,
        unsubscribe_url=unsubscribe_url(svc, email, (name,)),
    )


def unsubscribe_url(svc: Services, email: str, subscriptions: Sequence[str]) -> str:
    token = sign_unsubscribe(svc.secret, email, subscriptions)
    return f"{svc.config.http.base_url}/unsubscribe?token={token}"


def _digest_message(
    svc: Services, job: DigestJob, rendered: RenderedDigest, now: datetime
) -> bytes:
    domain = job.message_id.rpartition("@")[2].rstrip(">")
    return build_message(
        rendered,
        sender=svc.config.mail.sender,
        to=job.subscriber,
        message_id=job.message_id,
        list_id=f"feedsvc digests <digests.{domain}>",
        unsubscribe_url=job.unsubscribe_url,
        date=now,
    )


# -- delivery ---------------------------------------------------------------------------


async def deliver_outbox(svc: Services, now: datetime, limit: int = 500) -> tuple[int, int]:
    """Send claimed outbox messages; mark each sent, or failed with a retry time.

    Marking happens only after the mail server accepted the message, so a crash in
    between resends that message (same Message-ID) instead of losing it.
    """
    messages = await svc.storage.claim_outbox(now, svc.owner, now + LEASE, limit)
    results = await asyncio.gather(*(_deliver_one(svc, message, now) for message in messages))
    return sum(results), len(results) - sum(results)


async def _deliver_one(svc: Services, message: OutboxMessage, now: datetime) -> bool:
    sender = parseaddr(svc.config.mail.sender)[1]
    try:
        await svc.mailer.send(message.raw, sender=sender, recipient=message.subscriber)
    except NotifyError as e:
        retry_at = now + outbox_retry_delay(message.attempts + 1)
        await svc.storage.mark_failed(
            message.id, now, str(e), permanent=e.permanent, retry_at=retry_at
        )
        log.warning(
            "delivery outbox=%d to=%s status=%s error=%r",
            message.id,
            message.subscriber,
            "failed" if e.permanent else "retry",
            str(e),
        )
        return False
    await svc.storage.mark_sent(message.id, now)
    log.info("delivery outbox=%d to=%s status=sent", message.id, message.subscriber)
    return True
