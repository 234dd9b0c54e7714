"""Loading a config file: read the YAML, validate it, and report every problem as
``FILE:LINE:COL: message`` (validation problems and references to unknown names)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from feedsvc.config.schema import Config
from feedsvc.config.yaml_reader import Position, ValuePath, read_yaml
from feedsvc.errors import ConfigError


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config with the file it came from and where each value stands."""

    config: Config
    path: Path
    locations: dict[ValuePath, Position] = field(default_factory=dict)

    def where(self, loc: ValuePath) -> str:
        """``FILE:LINE:COL`` of the value at ``loc`` (or of its nearest parent)."""
        line, col = _nearest_location(self.locations, loc)
        return f"{self.path}:{line}:{col}"


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read, substitute and validate a config file.

    Raises:
        ConfigError: with one ``FILE:LINE:COL: message`` line per problem.
    """
    path = Path(path)
    document = read_yaml(path, dict(os.environ) if environ is None else environ)
    positions = LoadedConfig(Config(), path, document.locations)  # where, before validation
    _raise_problems(positions, document.problems)
    try:
        config = Config.model_validate(document.data)
    except ValidationError as e:
        raise ConfigError(list(_validation_problems(positions, e))) from e
    loaded = LoadedConfig(config, path, document.locations)
    _raise_problems(loaded, _reference_problems(config))
    return loaded


def _raise_problems(loaded: LoadedConfig, problems: Iterable[tuple[ValuePath, str]]) -> None:
    located = [f"{loaded.where(loc)}: {msg}" for loc, msg in problems]
    if located:
        raise ConfigError(located)


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


def _nearest_location(locations: dict[ValuePath, Position], loc: ValuePath) -> Position:
    for end in range(len(loc), -1, -1):
        if loc[:end] in locations:
            return locations[loc[:end]]
    return (1, 1)


def _reference_problems(config: Config) -> Iterator[tuple[ValuePath, str]]:
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


def _duplicates(
    section: str, names: list[str], key: str = "name"
) -> Iterator[tuple[ValuePath, str]]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            yield (section, i, key), f"duplicate {key} {name!r} in {section}"
        seen.add(name)
