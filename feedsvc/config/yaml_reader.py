"""The position-recording YAML reader: plain data from a config file, with each value's
line and column, ``${ENV}`` substituted and ``*_file`` secrets read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from feedsvc.errors import ConfigError

#: Where a value stands in the document: the keys and list indexes that lead to it.
ValuePath = tuple[str | int, ...]
#: A line and a column, both counted from 1.
Position = tuple[int, int]
#: Problems with single values, each at the value it concerns.
Problems = list[tuple[ValuePath, str]]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEYS = frozenset({"secret", "password"})


@dataclass(frozen=True)
class YamlDocument:
    """A config file read into plain data, with what went wrong at which value."""

    data: dict[str, Any]
    locations: dict[ValuePath, Position]
    problems: Problems


def read_yaml(path: Path, env: dict[str, str]) -> YamlDocument:
    """Read ``path``, substituting ``${NAME}`` from ``env`` and reading secret files.

    Raises:
        ConfigError: the file cannot be read, is not YAML or not a mapping, or expands
            to too many values. Problems with single values are returned instead.
    """
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
    return YamlDocument(data, reader.locations, reader.problems)


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
        self.locations: dict[ValuePath, Position] = {}
        self.problems: Problems = []
        self._values_left = MAX_CONFIG_VALUES
        self._reading: set[int] = set()

    def read(self, node: yaml.Node, loc: ValuePath) -> Any:
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

    def _mapping(self, node: yaml.MappingNode, loc: ValuePath) -> dict[str, Any]:
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

    def _merge_sources(self, node: yaml.Node, loc: ValuePath) -> list[dict[str, Any]]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        values = [self.read(source, loc) for source in sources]
        if not all(isinstance(v, dict) for v in values):
            self.problems.append((loc, "a << merge key needs a mapping or a list of mappings"))
            return []
        return values

    def _scalar(self, node: yaml.Node, loc: ValuePath) -> Any:
        value = _construct_scalar(node)
        if isinstance(value, str):
            return _substitute_env(value, loc, self.env, self.problems)
        return value


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct_scalar(node: yaml.Node) -> Any:
    """A scalar node's value with YAML's safe types (int, bool, null, float, str)."""
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _substitute_env(value: str, loc: ValuePath, env: dict[str, str], problems: Problems) -> str:
    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            problems.append((loc, f"environment variable {name} is not set"))
            return ""
        return env[name]

    return _ENV_REF.sub(replace, value)


def _resolve_secret_file(
    key: str, value: Any, loc: ValuePath, base: Path, problems: Problems
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
