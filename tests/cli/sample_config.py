"""A small valid config: one file source, one subscription, one subscriber."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.servers import CORPUS, write_config

GOOD = """\
database: sqlite:///{db}
secret: s3cret
sources:
  - {{name: finews, url: "file:{feed}"}}
subscriptions:
  - {{name: hk, keywords: [港股]}}
subscribers:
  - {{email: reader@example.com, subscriptions: [hk]}}
fetch: {{file_root: "{root}"}}
"""


def good_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "ok.yaml",
        GOOD.format(db=tmp_path / "f.db", feed=CORPUS / "all.xml", root=CORPUS),
    )
