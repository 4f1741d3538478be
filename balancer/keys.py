"""The typed keys of the balancer's application state."""
from __future__ import annotations

import aiohttp
from aiohttp import web

from voicestream.stamps import FrameClock

from .closing import Closer
from .config import BalancerConfig
from .http_streams import HttpStreams
from .links import WorkerLink
from .traffic import Traffic
from .workers import WorkerPool

CONFIG = web.AppKey("config", BalancerConfig)
POOL = web.AppKey("pool", WorkerPool)
CLOCK = web.AppKey("clock", FrameClock)
TRAFFIC = web.AppKey("traffic", Traffic)
HTTP_STREAMS = web.AppKey("http_streams", HttpStreams)  # HTTP ingest's stream of each account
# Set by the worker_connections cleanup context (background.py) for the app's lifetime.
SESSION = web.AppKey("session", aiohttp.ClientSession)
LINKS = web.AppKey[dict[str, WorkerLink]]("links")  # worker URL -> its frame batches
CLOSER = web.AppKey("closer", Closer)  # the closes nobody waits for (closing.py)
