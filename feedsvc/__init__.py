"""feedsvc: poll news feeds, match keyword subscriptions, send digests, republish Atom."""

__version__ = "0.1.0"
