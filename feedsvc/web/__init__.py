"""The HTTP surface: cached feeds (conditional GET), discovery, unsubscribe, health, metrics.

``app`` builds the routes; ``feed_cache`` keeps rendered feeds and ``conditional`` answers
from them; ``pages`` are the HTML pages, ``operations`` health and metrics, ``websub`` the
hub ping.
"""

from feedsvc.web.app import create_app, invalidate_feeds
from feedsvc.web.context import WebContext
from feedsvc.web.feed_cache import FeedCache, RenderedFeed

__all__ = ["FeedCache", "RenderedFeed", "WebContext", "create_app", "invalidate_feeds"]
