"""``feedsvc run``: the service, scheduler and HTTP server together."""

from __future__ import annotations

import argparse
import asyncio

from feedsvc import scheduler
from feedsvc.cli.commands import EXIT_OK, Command
from feedsvc.cli.compose import (
    load_checked_config,
    open_services_on,
    opened_storage,
    service_secret,
    templates_dir,
)
from feedsvc.config import LoadedConfig
from feedsvc.match import MatchIndex
from feedsvc.web import WebContext, create_app, invalidate_feeds


def run(args: argparse.Namespace) -> int:
    asyncio.run(_serve(*load_checked_config(args.config)))
    return EXIT_OK


async def _serve(loaded: LoadedConfig, index: MatchIndex) -> None:
    """The web app first, so that the services can tell it which feeds a poll changed."""
    config = loaded.config
    async with opened_storage(config) as storage:
        app = create_app(
            WebContext(
                config=config,
                storage=storage,
                secret=service_secret(config),
                templates_dir=templates_dir(),
                websub_hub=config.http.websub_hub,
            )
        )
        async with open_services_on(
            storage,
            loaded,
            parse_in_processes=True,
            index=index,
            on_feeds_changed=lambda names: invalidate_feeds(app, names),
        ) as svc:
            host, port = config.http.host_port
            await scheduler.serve(svc, app, host, port)


COMMAND = Command("run", "run the service: scheduler and HTTP server", run)
