"""Side by side with the peer: feedsvc against rss2email 3.14 on the same local feeds.

Run from the repository root: ``.venv/bin/python bench/peer.py [--feeds 100,1000]
[--rounds 3]``, or ``--quick`` (10 feeds, 1 round: a smoke run of under a minute). The
first run installs rss2email into a throw-away venv under ``var/bench-peer`` (``--cache``);
the project's environment is not touched. Each command is killed after 60 s + 1 s per
feed; rss2email's 1,000-feed first run alone may take 10 minutes on a busy 2-core machine.

A server process on 127.0.0.1 serves N generated feeds (36 real Chinese finance entries
of ~2 KB each, see ``peer_serve.py``), with validators (ETag, Last-Modified, 304 to a
conditional request) or without; an aiosmtpd process counts the mail. Each tool starts
from empty state in a temp dir and is run as an operator runs it from cron:
rss2email as ``r2e run`` (one feed section per source, one message per new entry over
SMTP); feedsvc as ``feedsvc poll`` then ``feedsvc digest --send-due`` (two subscribers
with immediate digests: one digest per subscriber; fetch ``per_host`` = concurrency, 20,
since the one local host stands in for many). Workloads, in one temp dir per tool
and round: first run (all new, delivered), nothing new (every feed answers 304), and at
<= 100 feeds no validators (every body served and parsed again, nothing new). Rounds are
interleaved (rss2email, feedsvc, rss2email, ...); figures are medians over rounds.

Per command: wall seconds; CPU seconds (user + system of the whole process tree, from
RUSAGE_CHILDREN deltas); peak RSS summed over the tree (sampled from /proc every 50 ms:
feedsvc's parse workers included, shared pages counted in each process). Each run is
checked (feeds answered 200/304 as expected, mail at the sink) before it counts.
Targets are those of issue 14 and print MET or MISSED; sizes not run print "not run".
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_serve import (
    ENTRIES_PER_FEED,
    FIRST,
    NOT_MODIFIED,
    OK,
    FeedServer,
    SmtpSink,
    start_feed_server,
    start_smtp_sink,
)
from peer_tools import SUBSCRIBERS, Feedsvc, Rss2email, Sample, measure, rss2email_venv

ROOT = Path(__file__).resolve().parents[1]
FIRST_RUN, STEADY, NO_ETAG = "first run, all new", "nothing new (304)", "no validators"
Tool = Rss2email | Feedsvc


@dataclass
class Run:
    """One tool's run of one workload: its commands' samples and what was observed."""

    steps: dict[str, Sample]
    mail: int
    first_request: float

    @property
    def wall(self) -> float:
        return sum(s.wall for s in self.steps.values())

    @property
    def cpu(self) -> float:
        return sum(s.cpu for s in self.steps.values())

    @property
    def rss(self) -> float:
        return max(s.rss_mb for s in self.steps.values())


Results = dict[tuple[str, int], dict[str, list[Run]]]


def run_tool(tool: Tool, server: FeedServer, sink: SmtpSink, *, validators: bool) -> Run:
    """The tool's commands in order, each measured, against a freshly reset server."""
    server.reset(validators=validators)
    before, timeout = sink.count.value, 60 + 1.0 * len(tool.urls)
    steps: dict[str, Sample] = {}
    for label, cmd in tool.steps():
        steps[label] = measure(f"{tool.name} {label}", cmd, tool.work, timeout)
    first = next(iter(steps.values())).started
    return Run(steps, sink.count.value - before, server.counters[FIRST] - first)


def check(tool: Tool, workload: str, run: Run, server: FeedServer) -> None:
    """Fails the bench when a run did not do the work it stands for."""
    n = len(tool.urls)
    ok, not_modified = int(server.counters[OK]), int(server.counters[NOT_MODIFIED])
    per_entry = tool.name == "rss2email"
    mail = (n * ENTRIES_PER_FEED if per_entry else len(SUBSCRIBERS)) if workload == FIRST_RUN else 0
    served = (0, n) if workload == STEADY else (n, 0)
    problems = []
    if (ok, not_modified) != served:
        problems.append(f"server answered {ok} 200 and {not_modified} 304, expected {served}")
    if run.mail != mail:
        problems.append(f"{run.mail} messages at the sink, expected {mail}")
    if "poll" in run.steps and workload == FIRST_RUN:
        expected = f"{n} sources polled, {n * ENTRIES_PER_FEED} new entries"
        if expected not in run.steps["poll"].out:
            problems.append(f"poll printed {run.steps['poll'].out.splitlines()[-1:]}")
    if problems:
        raise SystemExit(f"bench failed: {tool.name}, {workload}, {n} feeds: {problems}")


def one_round(tool: Tool, server: FeedServer, sink: SmtpSink) -> dict[str, Run]:
    """All workloads of one tool in order, from empty state."""
    tool.setup()
    plan = [(FIRST_RUN, True), (STEADY, True)]
    if len(tool.urls) <= 100:
        plan.append((NO_ETAG, False))
    runs = {}
    for workload, validators in plan:
        runs[workload] = run_tool(tool, server, sink, validators=validators)
        check(tool, workload, runs[workload], server)
    return runs


def bench(
    sizes: Sequence[int], rounds: int, r2e: Path, servers: tuple[FeedServer, SmtpSink]
) -> Iterator[tuple[tuple[str, int], str, Run]]:
    """Every size, ``rounds`` times, the tools interleaved: (workload, size), tool, run."""
    server, sink = servers
    makers: list[Callable[[Path, list[str]], Tool]] = [
        lambda work, urls: Rss2email(r2e, work, urls, sink.port),
        lambda work, urls: Feedsvc(work, urls, server.port, sink.port),
    ]
    for n in sizes:
        urls = [server.url(i) for i in range(n)]
        for r in range(rounds):
            for make in makers:
                with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
                    tool = make(Path(tmp), urls)
                    print(f"  {n} feeds, round {r + 1}/{rounds}: {tool.name}", file=sys.stderr)
                    for workload, run in one_round(tool, server, sink).items():
                        yield (workload, n), tool.name, run


def median(runs: list[Run], figure: Callable[[Run], float]) -> float:
    return statistics.median(figure(run) for run in runs)


def step_median(runs: list[Run], step: str, figure: str) -> float:
    return float(statistics.median(getattr(run.steps[step], figure) for run in runs))


def report_workload(workload: str, n: int, by_tool: dict[str, list[Run]]) -> float:
    """Prints one workload's block; returns its ratio (rss2email / feedsvc, end to end)."""
    r2e, fs = by_tool["rss2email"], by_tool["feedsvc"]
    print(f"\n{workload}, {n} feeds ({len(fs)} round(s), medians; peak RSS: the largest)")
    for name, runs, mail in [
        ("rss2email", r2e, "one per entry"),
        ("feedsvc", fs, "one per reader"),
    ]:
        print(
            f"  {name:<10} {median(runs, lambda r: r.wall):7.2f} s wall"
            f" {median(runs, lambda r: r.cpu):7.2f} s CPU {max(r.rss for r in runs):6.0f} MB"
            f"  mail {runs[0].mail} ({mail})"
            f"  first request {median(runs, lambda r: r.first_request):.2f} s after start"
        )
    for step in ("poll", "digest"):
        print(
            f"    {step:<8} {step_median(fs, step, 'wall'):7.2f} s wall"
            f" {step_median(fs, step, 'cpu'):7.2f} s CPU"
            f" {max(r.steps[step].rss_mb for r in fs):6.0f} MB"
        )
    if workload == FIRST_RUN:
        cpu_ms = 1000 * step_median(fs, "poll", "cpu") / (n * ENTRIES_PER_FEED)
        print(f"    poll CPU per new entry {cpu_ms:.3f} ms")
    ratio = median(r2e, lambda r: r.wall) / median(fs, lambda r: r.wall)
    poll_ratio = median(r2e, lambda r: r.wall) / step_median(fs, "poll", "wall")
    print(
        f"  ratio      {ratio:7.2f}x end to end (rss2email / feedsvc), {poll_ratio:.2f}x poll alone"
    )
    return ratio


def version_seconds(exe: str, times: int = 5) -> float:
    """Median wall seconds of ``exe --version``."""
    walls = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([exe, "--version"], check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


RATIO_TARGETS = [(FIRST_RUN, 1000, 10), (FIRST_RUN, 100, 5), (STEADY, 100, 1)]
RATIO_TARGETS += [(STEADY, 1000, 4), (NO_ETAG, 100, 4)]


def verdict(text: str, met: bool | None, figure: str = "") -> None:
    """One target's line: MET, MISSED, or "not run" when its workload was not run."""
    word = "not run" if met is None else "MET" if met else "MISSED"
    print(f"  {word:<7}  {text}" + (f": {figure}" if met is not None else ""))


def targets(results: Results, ratios: dict[tuple[str, int], float], version: float) -> None:
    """MET or MISSED for each target of issue 14."""
    print("\ntargets (issue 14, end to end, rss2email / feedsvc):")
    for workload, n, goal in RATIO_TARGETS:
        ratio = ratios.get((workload, n))
        met = None if ratio is None else ratio >= goal
        verdict(f"{workload}, {n} feeds >= {goal}x", met, f"{ratio or 0:.2f}x")
    fs = results.get((FIRST_RUN, 1000), {}).get("feedsvc", [])
    texts = [
        "poll CPU per new entry <= 0.2 ms",
        "poll peak RSS <= 250 MB",
        "digest peak RSS <= 150 MB",
    ]
    if not fs:
        for text in texts:
            verdict(f"{text}, 1,000 feeds", None)
    else:
        cpu_ms = 1000 * step_median(fs, "poll", "cpu") / (1000 * ENTRIES_PER_FEED)
        poll, digest = (max(r.steps[step].rss_mb for r in fs) for step in ("poll", "digest"))
        verdict(f"{texts[0]}, 1,000 feeds", cpu_ms <= 0.2, f"{cpu_ms:.3f} ms")
        verdict(f"{texts[1]}, 1,000 feeds", poll <= 250, f"{poll:.0f} MB")
        verdict(f"{texts[2]}, 1,000 feeds", digest <= 150, f"{digest:.0f} MB")
    firsts = [median(by["feedsvc"], lambda r: r.first_request) for by in results.values()]
    first = max(firsts, default=0.0)
    met = first <= 0.5 if firsts else None
    verdict("poll's first request <= 0.5 s after start", met, f"{first:.2f} s (worst workload)")
    verdict("feedsvc --version <= 0.25 s", version <= 0.25, f"{version:.2f} s (median of 5)")


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--feeds", default="100,1000", help="comma-separated sizes (default 100,1000)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 feeds, 1 round: a smoke run")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-peer")
    args = parser.parse_args()
    sizes = [10] if args.quick else [int(n) for n in args.feeds.split(",")]
    rounds = 1 if args.quick else args.rounds
    signal.signal(signal.SIGTERM, _interrupted)
    r2e = rss2email_venv(args.cache)
    server, sink = start_feed_server(), start_smtp_sink()
    results: Results = {}
    failure = ""
    try:
        for key, name, run in bench(sizes, rounds, r2e, (server, sink)):
            results.setdefault(key, {}).setdefault(name, []).append(run)
    except SystemExit as e:  # a failed or timed-out run: report what was measured
        failure = str(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for process in (server.process, sink.process):
            process.terminate()
            process.join(5)
    version = version_seconds(str(Path(sys.executable).parent / "feedsvc"))
    r2e_version = version_seconds(str(r2e))
    results = {key: by_tool for key, by_tool in results.items() if len(by_tool) == 2}
    ratios = {key: report_workload(*key, by_tool) for key, by_tool in results.items()}
    print(f"\nstart-up (medians of 5): feedsvc --version {version:.2f} s, r2e {r2e_version:.2f} s")
    targets(results, ratios, version)
    if failure:
        print(f"\n{failure}\n(the workloads after it were not run)")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
