"""The typed keys of the balancer's application state."""
from __future__ import annotations

import aiohttp
from aiohttp import web

from voicestream.stamps import FrameClock

from .config import BalancerConfig
from .links import WorkerLink
from .traffic import Traffic
from .workers import WorkerPool

CONFIG = web.AppKey("config", BalancerConfig)
POOL = web.AppKey("pool", WorkerPool)
CLOCK = web.AppKey("clock", FrameClock)
TRAFFIC = web.AppKey("traffic", Traffic)
# Set by the worker_connections cleanup context (background.py) for the app's lifetime.
SESSION = web.AppKey("session", aiohttp.ClientSession)
LINKS = web.AppKey[dict[str, WorkerLink]]("links")  # worker URL -> its frame batches
