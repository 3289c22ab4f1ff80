"""`appliance webui serve`: the web UI under gunicorn (one worker process with threads, so the
background sender runs once), over HTTPS only."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


def _ssl_context(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._factory()


def options(binds: list[str], cert: str, key: str, threads: int) -> dict[str, Any]:
    return {
        "bind": binds,
        "certfile": cert,
        "keyfile": key,
        "ssl_context": _ssl_context,
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "accesslog": "-",
        "errorlog": "-",
        "preload_app": False,
        "proc_name": "appliance-webui",
    }
