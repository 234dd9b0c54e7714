"""Writing a config file and collecting the problems loading it reports."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from feedsvc.config import load_config
from feedsvc.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feedsvc.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=environ or {})
    return error.value.problems
