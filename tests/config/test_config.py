"""Loading the config: environment, secret files, YAML aliases and merge keys, hostile YAML."""

from __future__ import annotations

import textwrap
from datetime import timedelta
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


def test_env_references_and_secret_files_are_resolved(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("秘密-pässword\n", encoding="utf-8")
    path = write(
        tmp_path,
        """\
        secret: ${FEEDSVC_SECRET}
        mail:
          delivery: smtp
          smtp: {host: "${SMTP_HOST}", password_file: smtp-password}
        """,
    )
    config = load_config(path, environ={"FEEDSVC_SECRET": "s3", "SMTP_HOST": "mx.example"}).config
    assert config.secret is not None and config.secret.get_secret_value() == "s3"
    assert config.mail.smtp is not None and config.mail.smtp.host == "mx.example"
    assert config.mail.smtp.password is not None
    assert config.mail.smtp.password.get_secret_value() == "秘密-pässword"
    assert "秘密" not in repr(config), "secrets are masked in the repr"


def test_a_missing_env_variable_or_secret_file_is_reported_where_it_is_used(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
        secret: ${NOT_SET}
        mail: {smtp: {host: x, password_file: nowhere}}
        """,
    )
    problems = problems_of(path)
    assert f"{path}:1:9: environment variable NOT_SET is not set" in problems
    assert any(p.startswith(f"{path}:2:") and "cannot read secret file" in p for p in problems)


def test_aliases_and_merge_keys_share_settings_between_sources(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        x-defaults: &defaults {every: 30m, encoding: gb18030}
        sources:
          - {<<: *defaults, name: sina, url: "https://example.com/a.xml"}
          - {<<: *defaults, name: b, url: "https://example.com/b.xml", every: 5m}
        """,
    )
    problems = problems_of(path)
    assert problems == [f"{path}:1:1: unknown key 'x-defaults'"], "only the anchor's key is foreign"
    path = write(
        tmp_path,
        """\
        sources:
          - &first {name: a, url: "https://example.com/a.xml", every: 30m, encoding: gb18030}
          - {<<: *first, name: b, every: 5m}
        """,
    )
    first, second = load_config(path, environ={}).config.sources
    assert (second.url, second.encoding, second.every) == (
        first.url,
        "gb18030",
        timedelta(minutes=5),
    )


def test_a_yaml_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["炸弹", "炸弹", "炸弹", "炸弹", "炸弹", "炸弹", "炸弹", "炸弹", "炸弹"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    [problem] = problems_of(path)
    assert problem == f"{path}:1:1: the config expands to more than 100000 values"


def test_a_recursive_alias_is_reported_not_followed(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: &loop\n  - *loop\n")
    # PyYAML gives an alias the anchored node itself, so the position is the anchor's.
    assert f"{path}:1:10: recursive YAML alias" in problems_of(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timezone: Mars/Olympus\n", ":1:11: timezone: unknown time zone 'Mars/Olympus'"),
        ("http: {listen: localhost}\n", ":1:16: http.listen: listen must be HOST:PORT"),
        ("fetch: {min_every: 2h, max_every: 1h}\n", ":1:8: fetch: min_every must not be"),
        ("sources: [{name: a, url: 'http://e.com/', every: soon}]\n", "not a duration: 'soon'"),
        ("subscribers: [{email: a@b.cn, subscriptions: [], digest: daily}]\n", "at least 1 item"),
        ("subscriptions: [{name: s, query: x, keywords: [y]}]\n", "exactly one of query or"),
        ("mail: {delivery: pigeon}\n", "delivery must be smtp, maildir:PATH or file:PATH"),
        ("sources: [{name: a, url: 'http://e.com/', enabled: 'yes'}]\n", "valid boolean"),
    ],
)
def test_bad_values_are_reported_with_their_position(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert any(expected in p for p in problems_of(path)), problems_of(path)
