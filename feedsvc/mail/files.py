"""Local delivery: into a Maildir, or as one ``.eml`` file per message; both atomic."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import socket
import threading
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from feedsvc.errors import NotifyError
from feedsvc.mail.message import header_text


class MaildirMailer:
    """Delivery into a Maildir: written under ``tmp/``, fsynced, then renamed into ``new/``.

    Readers only ever see complete messages (the rename is atomic), and file names follow
    the Maildir convention ``time.MusecPpidQn.host`` so they never collide.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # Maildir escapes "/" and ":" in the host part (":" separates info flags).
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self._counter = itertools.count(1)

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        # What a local delivery agent adds: the envelope, as the receiving side saw it.
        envelope = f"Return-Path: <{header_text(sender)}>\nDelivered-To: {header_text(recipient)}\n"
        # Maildir files use the local line ending, LF.
        data = envelope.encode("utf-8") + raw.replace(b"\r\n", b"\n")
        try:
            await asyncio.to_thread(self._deliver, data)
        except OSError as e:
            raise NotifyError(f"maildir {self.root}: {e}", permanent=False) from e

    async def close(self) -> None:
        return None

    def _deliver(self, data: bytes) -> None:
        name = self._unique_name()
        temporary = self.root / "tmp" / name
        _write_synced(temporary, data)
        os.replace(temporary, self.root / "new" / name)
        _fsync_directory(self.root / "new")

    def _unique_name(self) -> str:
        now = time.time()
        seconds, micros = int(now), int((now % 1) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}.{self._host}"


class FileMailer:
    """Delivery as one ``.eml`` file per message in a directory, written atomically.

    The file name derives from the Message-ID and the recipient, so delivering the same
    message again (a resend after a crash) replaces the file instead of adding a copy.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def send(self, raw: bytes, *, sender: str, recipient: str) -> None:
        path = self.directory / eml_name(raw, recipient)
        try:
            await asyncio.to_thread(_write_atomically, path, raw)
        except OSError as e:
            raise NotifyError(f"file {path}: {e}", permanent=False) from e

    async def close(self) -> None:
        return None


def eml_name(raw: bytes, recipient: str) -> str:
    """``<Message-ID>-<hash of Message-ID and recipient>.eml``; the whole message stands in for
    a missing Message-ID."""
    message_id = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Message-ID")
    key = str(message_id).strip().strip("<>") if message_id else ""
    digest = hashlib.sha256(
        (key.encode("utf-8") if key else raw) + b"\0" + recipient.encode("utf-8")
    ).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._@+=-]", "_", key)[:80]
    return f"{readable}-{digest}.eml" if readable else f"{digest}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _write_synced(temporary, data)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
