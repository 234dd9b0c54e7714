"""YAML → validated pydantic models; ``${ENV}`` and ``*_file`` secrets; errors as FILE:LINE:COL."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from feedsvc.errors import ConfigError
from feedsvc.schedule import schedule_trigger

Path_ = tuple[str | int, ...]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$")
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SECRET_KEYS = frozenset({"secret", "password"})


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


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with the file it came from and where each value stands."""

    config: Config
    path: Path
    locations: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Path_) -> str:
        """``FILE:LINE:COL`` of the value at ``loc`` (or of its nearest parent)."""
        line, col = _nearest_location(self.locations, loc)
        return f"{self.path}:{line}:{col}"


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read, substitute and validate a config file.

    Raises:
        ConfigError: with one ``FILE:LINE:COL: message`` line per problem.
    """
    path = Path(path)
    env = dict(os.environ) if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}:1:1: cannot read config: {e}"]) from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([f"{path}:{line}:{col}: invalid YAML: {e.problem}"]) from e
    reader = _YamlReader(path, env)
    data = reader.read(node, ()) if node else {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1:1: the config must be a mapping"])
    loaded = LoadedConfig(Config(), path, reader.locations)
    problems = [f"{loaded.where(loc)}: {msg}" for loc, msg in reader.problems]
    if problems:
        raise ConfigError(problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(list(_validation_problems(loaded, e))) from e
    loaded = LoadedConfig(config, path, reader.locations)
    problems = [f"{loaded.where(loc)}: {msg}" for loc, msg in _reference_problems(config)]
    if problems:
        raise ConfigError(problems)
    return loaded


#: Values a config may expand to: YAML aliases can multiply a small file (a "YAML bomb").
MAX_CONFIG_VALUES = 100_000


class _YamlReader:
    """Plain Python data from a YAML node graph, recording each value's position.

    Aliases and ``<<`` merge keys work as in YAML; a recursive alias or an expansion
    beyond ``MAX_CONFIG_VALUES`` values is a problem, never a hang.
    """

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        self.locations: dict[Path_, tuple[int, int]] = {}
        self.problems: list[tuple[Path_, str]] = []
        self._values_left = MAX_CONFIG_VALUES
        self._reading: set[int] = set()

    def read(self, node: yaml.Node, loc: Path_) -> Any:
        self.locations.setdefault(loc, _position(node))
        self._values_left -= 1
        if self._values_left < 0:
            raise ConfigError(
                [f"{self.path}:1:1: the config expands to more than {MAX_CONFIG_VALUES} values"]
            )
        if id(node) in self._reading:
            self.problems.append((loc, "recursive YAML alias"))
            return None
        self._reading.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return [self.read(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, loc)
        finally:
            self._reading.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged.extend(self._merge_sources(value_node, loc))
                continue
            key = str(_construct_scalar(key_node))
            if key in result:
                self.problems.append(((*loc, key), f"duplicate key {key!r}"))
            child = (*loc, key)
            value = self.read(value_node, child)
            self.locations[(*child, "<key>")] = _position(key_node)
            key, value = _resolve_secret_file(key, value, child, self.path.parent, self.problems)
            result[key] = value
        for source in merged:  # explicit keys win over merged ones, earlier merges over later
            for key, value in source.items():
                result.setdefault(key, value)
        return result

    def _merge_sources(self, node: yaml.Node, loc: Path_) -> list[dict[str, Any]]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        values = [self.read(source, loc) for source in sources]
        if not all(isinstance(v, dict) for v in values):
            self.problems.append((loc, "a << merge key needs a mapping or a list of mappings"))
            return []
        return values

    def _scalar(self, node: yaml.Node, loc: Path_) -> Any:
        value = _construct_scalar(node)
        if isinstance(value, str):
            return _substitute_env(value, loc, self.env, self.problems)
        return value


def _position(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct_scalar(node: yaml.Node) -> Any:
    """A scalar node's value with YAML's safe types (int, bool, null, float, str)."""
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _substitute_env(value: str, loc: Path_, env: dict[str, str], problems: list[Any]) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            problems.append((loc, f"environment variable {name} is not set"))
            return ""
        return env[name]

    return _ENV_REF.sub(replace, value)


def _resolve_secret_file(
    key: str, value: Any, loc: Path_, base: Path, problems: list[Any]
) -> tuple[str, Any]:
    """``password_file: /run/secrets/x`` becomes ``password: <file contents>``."""
    if not key.endswith("_file") or key[: -len("_file")] not in _SECRET_KEYS:
        return key, value
    secret_path = base / str(value)
    try:
        return key[: -len("_file")], secret_path.read_text(encoding="utf-8").strip()
    except OSError as e:
        problems.append((loc, f"cannot read secret file {secret_path}: {e.strerror}"))
        return key[: -len("_file")], ""


def _validation_problems(loaded: LoadedConfig, error: ValidationError) -> Iterator[str]:
    for problem in error.errors():
        loc = tuple(p for p in problem["loc"] if not _is_union_tag(p))
        msg = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            yield f"{loaded.where((*loc, '<key>'))}: unknown key {loc[-1]!r}"
        elif problem["type"] == "missing":
            yield f"{loaded.where(loc[:-1])}: missing required field {loc[-1]!r}"
        else:
            yield f"{loaded.where(loc)}: {'.'.join(map(str, loc))}: {msg}"


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _nearest_location(locations: dict[Path_, tuple[int, int]], loc: Path_) -> tuple[int, int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in locations:
            return locations[loc[:end]]
    return (1, 1)


def _reference_problems(config: Config) -> Iterator[tuple[Path_, str]]:
    """Unique names, and references to sources and subscriptions that exist."""
    yield from _duplicates("sources", [s.name for s in config.sources])
    yield from _duplicates("subscriptions", [s.name for s in config.subscriptions])
    yield from _duplicates("subscribers", [s.email.lower() for s in config.subscribers], "email")
    source_names = {s.name for s in config.sources}
    for i, sub in enumerate(config.subscriptions):
        for j, name in enumerate(sub.sources or []):
            if name not in source_names:
                yield ("subscriptions", i, "sources", j), f"unknown source {name!r}"
    subscription_names = {s.name for s in config.subscriptions}
    for i, subscriber in enumerate(config.subscribers):
        for j, name in enumerate(subscriber.subscriptions):
            if name not in subscription_names:
                yield ("subscribers", i, "subscriptions", j), f"unknown subscription {name!r}"


def _duplicates(section: str, names: list[str], key: str = "name") -> Iterator[tuple[Path_, str]]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            yield (section, i, key), f"duplicate {key} {name!r} in {section}"
        seen.add(name)
