"""The config's pydantic models: every section, its defaults and its checks."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
    model_validator,
)

from feedsvc.schedule import schedule_trigger

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_duration(value: object) -> timedelta:
    """``"10m"``, ``"1h"``, ``"30s"``, ``"1d"`` or a number of seconds → timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 1h, 1d)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e
    return name


TimeZoneName = Annotated[str, BeforeValidator(_check_timezone)]


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '.', '-')")
    return value


Name = Annotated[str, BeforeValidator(_check_name)]


class HttpConfig(_Model):
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"
    #: A WebSub hub: feeds advertise it (rel="hub") and ping it when they change.
    websub_hub: str | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    @field_validator("listen")
    @classmethod
    def _listen_has_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @field_validator("base_url", "websub_hub")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return None if value is None else value.rstrip("/")


class SmtpConfig(_Model):
    host: str
    port: int = 587
    starttls: StrictBool = True
    #: Implicit TLS (port 465); excludes ``starttls``.
    tls: StrictBool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout: Duration = timedelta(seconds=30)
    #: Messages sent in parallel sessions, and at most this many messages per second.
    concurrency: int = Field(default=2, ge=1, le=64)
    rate_per_second: float = Field(default=20.0, gt=0)


class MailConfig(_Model):
    sender: str = Field(default="feedsvc <feedsvc@localhost>", alias="from")
    #: ``smtp``, ``maildir:PATH`` or ``file:PATH``.
    delivery: str = "maildir:var/mail"
    smtp: SmtpConfig | None = None
    #: Entries shown per digest; the rest are summarised as "and N more".
    max_entries: int = Field(default=50, ge=1)

    @field_validator("delivery")
    @classmethod
    def _known_delivery(cls, value: str) -> str:
        kind, _, path = value.partition(":")
        if kind == "smtp" and not path:
            return value
        if kind in ("maildir", "file") and path:
            return value
        raise ValueError("delivery must be smtp, maildir:PATH or file:PATH")

    @model_validator(mode="after")
    def _smtp_needs_settings(self) -> MailConfig:
        if self.delivery == "smtp" and self.smtp is None:
            raise ValueError("delivery: smtp needs an smtp: section")
        return self


class FetchConfig(_Model):
    #: A URL where the operator can be reached, sent in the User-Agent.
    user_agent_contact: str | None = None
    #: Private addresses the fetcher may reach: "127.0.0.1:8765", "10.0.0.0/8", "[::1]:80".
    allow_private: list[str] = Field(default_factory=list)
    #: The directory ``file:`` URLs must be inside; without it, ``file:`` is refused.
    file_root: str | None = None
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=30)
    total_timeout: Duration = timedelta(seconds=60)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_redirects: int = Field(default=5, ge=0, le=20)
    concurrency: int = Field(default=20, ge=1)
    per_host: int = Field(default=4, ge=1)
    #: Upper bound of the error back-off.
    max_backoff: Duration = timedelta(hours=24)
    #: Entries kept per poll of one source.
    max_entries_per_poll: int = Field(default=500, ge=1)
    #: Bounds of the adaptive polling interval (a source's ``every`` outside them widens
    #: them for that source): frequent publishers are polled down to ``min_every``,
    #: quiet ones up to ``max_every``.
    min_every: Duration = timedelta(minutes=5)
    max_every: Duration = timedelta(hours=12)
    #: Sources of one cycle in progress at once (fetching, waiting for the parse pool,
    #: storing): bounds a cycle's memory to this many bodies of at most the body cap.
    max_pending: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _interval_bounds_ordered(self) -> FetchConfig:
        if self.min_every > self.max_every:
            raise ValueError("min_every must not be longer than max_every")
        return self


class SourceConfig(_Model):
    name: Name
    url: str
    every: Duration = timedelta(minutes=10)
    #: Force a character encoding, overriding HTTP and XML declarations.
    encoding: str | None = None
    max_body_bytes: int | None = Field(default=None, ge=1024)
    enabled: StrictBool = True
    title: str | None = None

    @field_validator("url")
    @classmethod
    def _supported_scheme(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://", "file:")):
            raise ValueError("url must be http://, https:// or file:")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            import codecs

            try:
                codecs.lookup(value)
            except LookupError as e:
                raise ValueError(f"unknown encoding {value!r}") from e
        return value


class SubscriptionConfig(_Model):
    name: Name
    query: str | None = None
    keywords: list[str] | None = None
    #: Only entries from these sources (default: all).
    sources: list[str] | None = None
    title: str | None = None
    atom: StrictBool = True
    max_entries: int = Field(default=50, ge=1, le=1000)
    #: Makes the feed private: served only with ?token=…
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _query_or_keywords(self) -> SubscriptionConfig:
        if (self.query is None) == (self.keywords is None):
            raise ValueError("give exactly one of query or keywords")
        if self.keywords is not None and not [k for k in self.keywords if k.strip()]:
            raise ValueError("keywords must not be empty")
        if self.query is not None and not self.query.strip():
            raise ValueError("query must not be empty")
        return self

    @property
    def query_text(self) -> str:
        """The query string; a keyword list is shorthand for ``k1 OR k2 …`` (each quoted)."""
        if self.query is not None:
            return self.query
        assert self.keywords is not None
        return " OR ".join(_quote_keyword(k) for k in self.keywords if k.strip())

    @property
    def display_title(self) -> str:
        return self.title or self.name


def _quote_keyword(keyword: str) -> str:
    return '"' + keyword.strip().replace('"', " ") + '"'


def _check_schedule(value: str) -> str:
    schedule_trigger(value, "UTC")
    return value


class SubscriberConfig(_Model):
    email: str
    subscriptions: list[str] = Field(min_length=1)
    digest: Annotated[str, BeforeValidator(_check_schedule)] = "daily 08:00"
    locale: Literal["zh-CN", "en"] = "zh-CN"
    timezone: TimeZoneName | None = None
    name: str | None = None

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError(f"malformed email address {value!r}")
        return value.strip()


class Config(_Model):
    database: str = "sqlite:///var/feedsvc.db"
    timezone: TimeZoneName = "Asia/Shanghai"
    secret: SecretStr | None = None
    http: HttpConfig = HttpConfig()
    mail: MailConfig = MailConfig()
    fetch: FetchConfig = FetchConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    subscribers: list[SubscriberConfig] = Field(default_factory=list)

    def subscriber_timezone(self, subscriber: SubscriberConfig) -> str:
        return subscriber.timezone or self.timezone

    def subscription(self, name: str) -> SubscriptionConfig | None:
        return next((s for s in self.subscriptions if s.name == name), None)
