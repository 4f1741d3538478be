"""python -m balancer --port 6001 --workers http://127.0.0.1:7001,..."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .app import create_app
from .config import parse_args


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The event loop --event-loop names."""
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # run_app handles SIGTERM/SIGINT: stop listening, let handlers finish
    # (up to shutdown_timeout), then on_shutdown/on_cleanup.
    web.run_app(create_app(config), host=config.host, port=config.port,
                shutdown_timeout=config.shutdown_timeout, access_log=None,
                print=lambda msg: logging.getLogger("balancer").info(msg), loop=new_loop(config.event_loop))


if __name__ == "__main__":
    main()
