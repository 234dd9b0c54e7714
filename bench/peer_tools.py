"""The two tools of ``bench/peer.py`` (rss2email 3.14 in a venv of its own, feedsvc from
the project's venv), and how one command of either is measured: wall time, CPU of its
whole process tree, and peak RSS summed over that tree."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

RSS2EMAIL = "rss2email==3.14"
TO = "reader@example.com"
#: Subscriptions whose terms cover most entries of the corpus, and two subscribers.
SUBSCRIPTIONS = [
    {"name": "markets", "title": "市场", "query": "公司 OR 市场 OR 股 OR 指数 OR 板块"},
    {"name": "economy", "title": "经济", "query": "经济 OR 增长 OR 亿元 OR 银行 OR 美元 OR 中国"},
    {"name": "industry", "title": "产业", "query": "新能源 OR 光伏 OR 汽车 OR 投资"},
]
SUBSCRIBERS = [
    {"email": TO, "subscriptions": ["markets", "economy"], "digest": "immediate"},
    {
        "email": "analyst@example.com",
        "subscriptions": ["economy", "industry"],
        "digest": "immediate",
        "locale": "en",
    },
]
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sample:
    """One command: wall and CPU seconds, peak summed RSS (MB), stdout."""

    wall: float
    cpu: float
    rss_mb: float
    started: float
    out: str


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_rss_mb(root: int) -> float:
    """RSS of ``root`` and all its descendants, summed (shared pages count per process)."""
    children, todo, total = _children_by_parent(), [root], 0
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total / 2**20


def _sample_rss(root: int, peak: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.05):
        peak[0] = max(peak[0], tree_rss_mb(root))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, cmd: Sequence[str], cwd: Path, timeout: float) -> Sample:
    """Run ``cmd`` to its end (killing its process group after ``timeout`` s); fails on a
    non-zero exit. CPU is user + system of the tree (children are reaped by it)."""
    log = cwd / "last.log"
    peak, stop = [0.0], threading.Event()
    cpu, started = _children_cpu(), time.time()
    with open(log, "wb") as err:
        process = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
        sampler = threading.Thread(target=_sample_rss, args=(process.pid, peak, stop))
        sampler.start()
        try:
            out, _ = process.communicate(timeout=timeout)
        except BaseException as e:  # the timeout, Ctrl-C, SIGTERM: end the whole tree
            kill_group(process.pid)
            process.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise SystemExit(f"bench failed: {label} took over {timeout:.0f} s") from None
            raise
        finally:
            wall = time.time() - started
            stop.set()
            sampler.join()
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"bench failed: {label} exited {process.returncode}\n{tail}")
    return Sample(wall, _children_cpu() - cpu, peak[0], started, out.decode(errors="replace"))


def kill_group(pid: int) -> None:
    """End a command started by ``measure`` (its own session) with all it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def rss2email_venv(cache: Path) -> Path:
    """``r2e`` of a throw-away venv under ``cache`` (created once, then reused)."""
    venv = cache / "venv"
    r2e = venv / "bin" / "r2e"
    if not r2e.exists():
        print(f"installing {RSS2EMAIL} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", RSS2EMAIL]
        subprocess.run(pip, check=True)
    return r2e


class Rss2email:
    """rss2email with one feed section per source, mailing each entry over SMTP."""

    name = "rss2email"

    def __init__(self, r2e: Path, work: Path, urls: Sequence[str], smtp_port: int) -> None:
        self.work = work
        self.base = [str(r2e), "-c", str(work / "r2e.cfg"), "-d", str(work / "r2e.json")]
        self.urls = urls
        self.smtp_port = smtp_port

    def setup(self) -> None:
        """``r2e new`` and ``r2e add`` for the first feed; the other feed sections are
        written as ``r2e add`` writes them (one process per feed would take minutes)."""
        subprocess.run([*self.base, "new", TO], check=True, cwd=self.work, capture_output=True)
        add = [*self.base, "add", "f0", self.urls[0]]
        subprocess.run(add, check=True, cwd=self.work, capture_output=True)
        config = configparser.RawConfigParser()
        config.read(self.work / "r2e.cfg", encoding="utf-8")
        config["DEFAULT"].update(
            {
                "from": "bench@example.com",
                "email-protocol": "smtp",
                "smtp-server": f"127.0.0.1:{self.smtp_port}",
                "smtp-ssl": "False",
                "smtp-auth": "False",
                "verbose": "warning",
            }
        )
        for n, url in enumerate(self.urls[1:], start=1):
            config[f"feed.f{n}"] = {"url": url}
        with open(self.work / "r2e.cfg", "w", encoding="utf-8") as out:
            config.write(out)

    def steps(self) -> Iterator[tuple[str, list[str]]]:
        yield "run", [*self.base, "run"]


class Feedsvc:
    """feedsvc: ``poll`` then ``digest --send-due`` (immediate digests) over SMTP."""

    name = "feedsvc"

    def __init__(self, work: Path, urls: Sequence[str], server_port: int, smtp_port: int) -> None:
        self.work = work
        self.urls = urls
        self.ports = server_port, smtp_port
        self.exe = str(Path(sys.executable).parent / "feedsvc")

    def setup(self) -> None:
        """The config (JSON is YAML): all feeds are on one host, standing in for many
        hosts, so ``per_host`` is the fetch concurrency."""
        server_port, smtp_port = self.ports
        config = {
            "database": f"sqlite:///{self.work / 'feedsvc.db'}",
            "secret": "bench",
            "mail": {
                "from": "feedsvc <bench@example.com>",
                "delivery": "smtp",
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "starttls": False},
            },
            "fetch": {"allow_private": [f"127.0.0.1:{server_port}"], "per_host": 20},
            "sources": [{"name": f"f{n}", "url": url} for n, url in enumerate(self.urls)],
            "subscriptions": SUBSCRIPTIONS,
            "subscribers": SUBSCRIBERS,
        }
        (self.work / "feedsvc.yaml").write_text(json.dumps(config, ensure_ascii=False), "utf-8")

    def steps(self) -> Iterator[tuple[str, list[str]]]:
        """A digest covers matches up to the schedule's last time at or before ``--now``:
        5 minutes on, the window closes after the poll (built once the poll is over)."""
        config = ["-c", str(self.work / "feedsvc.yaml")]
        yield "poll", [self.exe, "poll", *config]
        now = (datetime.now(UTC) + timedelta(minutes=5)).isoformat(timespec="seconds")
        yield "digest", [self.exe, "digest", "--send-due", "--now", now, *config]
