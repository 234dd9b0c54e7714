"""Reading the config's YAML: environment, secret files, aliases and merge keys, hostile YAML."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feedsvc.config import load_config
from tests.config.config_files import problems_of, write


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
