"""The flows, one module each, in the order of a news item's life: ``poll`` sources,
``send`` digests, ``publish`` feeds; ``services`` holds what every flow is given.

This is the only package that knows the order of the stages. Every flow takes the
current time as ``now`` (UTC) so tests and ``--now`` catch-up runs control the clock.
"""

from feedsvc.pipeline.poll import update_due_sources
from feedsvc.pipeline.publish import publish_feeds
from feedsvc.pipeline.send import deliver_outbox, preview_digest, send_due_digests
from feedsvc.pipeline.services import (
    LEASE,
    DigestReport,
    Progress,
    Services,
    SourceReport,
    sync_config,
)

__all__ = [
    "LEASE",
    "DigestReport",
    "Progress",
    "Services",
    "SourceReport",
    "deliver_outbox",
    "preview_digest",
    "publish_feeds",
    "send_due_digests",
    "sync_config",
    "update_due_sources",
]
