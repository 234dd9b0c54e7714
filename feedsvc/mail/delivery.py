"""What delivers a message, and which deliverer the config asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from feedsvc.config import MailConfig
from feedsvc.mail.files import FileMailer, MaildirMailer
from feedsvc.mail.smtp import SmtpMailer


class Mailer(Protocol):
    """Delivers finished messages; ``send`` is safe to call concurrently."""

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        """Deliver ``raw`` to ``recipient`` with envelope sender ``sender``.

        Raises:
            NotifyError: ``permanent=True`` when retrying cannot help (the server refused
                this recipient or this message with a 5xx), ``permanent=False`` otherwise.
        """
        ...

    async def close(self) -> None:
        """Release connections; the mailer is not used afterwards."""
        ...


def open_mailer(config: MailConfig, *, base_dir: Path) -> Mailer:
    """The mailer for ``config.delivery``: ``smtp``, ``maildir:PATH`` or ``file:PATH``.

    A relative PATH is taken relative to ``base_dir`` (the config file's directory).
    """
    kind, _, path = config.delivery.partition(":")
    if kind == "smtp":
        if config.smtp is None:
            raise ValueError("delivery: smtp needs an smtp: section")
        return SmtpMailer(config.smtp)
    if kind == "maildir":
        return MaildirMailer(base_dir / path)
    if kind == "file":
        return FileMailer(base_dir / path)
    raise ValueError(f"unknown delivery {config.delivery!r}")
