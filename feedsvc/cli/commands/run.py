"""``feedsvc run``: the service, scheduler and HTTP server together."""

from __future__ import annotations

import argparse
import asyncio

from feedsvc import scheduler
from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import load_checked_config, open_services, templates_dir
from feedsvc.config import LoadedConfig
from feedsvc.match import MatchIndex
from feedsvc.web import WebContext, create_app, invalidate_feeds


def run(args: argparse.Namespace) -> int:
    asyncio.run(_serve(*load_checked_config(args.config)))
    return EXIT_OK


async def _serve(loaded: LoadedConfig, index: MatchIndex) -> None:
    async with open_services(loaded, parse_in_processes=True, index=index) as svc:
        app = create_app(
            WebContext(
                config=svc.config,
                storage=svc.storage,
                secret=svc.secret,
                templates_dir=templates_dir(),
                websub_hub=svc.config.http.websub_hub,
            )
        )
        svc.on_feeds_changed = lambda names: invalidate_feeds(app, names)
        host, port = svc.config.http.host_port
        await scheduler.serve(svc, app, host, port)


COMMAND = Command("run", "run the service: scheduler and HTTP server", run)
