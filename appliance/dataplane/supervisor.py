"""Child services of `appliance run`: started in order, each waited for until ready, restarted with
back-off when they die (the nftables table stays in place meanwhile, so fail-closed groups stay
closed), and stopped with SIGTERM, then SIGKILL.

A service is a command line plus a readiness probe; the resolver, the DNS filter and the NFQUEUE
consumer each describe theirs next to their own code (e.g. appliance.resolver.service).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
MAX_BACKOFF = 30.0


@dataclass
class Service:
    name: str
    argv: list[str]
    # Called before each start (e.g. to write the service's configuration file).
    prepare: Callable[[], object] = lambda: None
    ready: Callable[[], bool] = lambda: True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None


class ServiceError(RuntimeError):
    pass


class Supervisor:
    def __init__(self, services: list[Service]) -> None:
        self.services = services

    def start(self) -> None:
        """Starts every service and waits until each is ready; raises ServiceError if one is not."""
        for service in self.services:
            self._spawn(service)
            deadline = time.monotonic() + READY_TIMEOUT
            while not service.ready():
                assert service.process is not None
                if service.process.poll() is not None:
                    raise ServiceError(f"{service.name} exited with status {service.process.returncode}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"{service.name} was not ready after {READY_TIMEOUT:.0f}s")
                time.sleep(0.05)
            log.info("%s ready (pid %d)", service.name, service.process.pid)

    def poll(self) -> None:
        """Restarts services that died, each after a back-off that doubles while it keeps dying soon
        after starting, and starts again from one second once it has run for a while."""
        now = time.monotonic()
        for service in self.services:
            assert service.process is not None
            if service.restart_at is None and service.process.poll() is not None:
                if now - service.started_at > MAX_BACKOFF:
                    service.backoff = 1.0
                service.restart_at = now + service.backoff
                log.warning(
                    "%s exited with status %d; restarting in %.0fs",
                    service.name,
                    service.process.returncode,
                    service.backoff,
                )
                service.backoff = min(service.backoff * 2, MAX_BACKOFF)
            elif service.restart_at is not None and now >= service.restart_at:
                service.restart_at = None
                self._spawn(service)

    def stop(self) -> None:
        running = [s.process for s in reversed(self.services) if s.process and s.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @staticmethod
    def _spawn(service: Service) -> None:
        service.prepare()
        # sd_notify is ours to speak: a child that has systemd support (unbound) must not say READY=1.
        env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        service.process = subprocess.Popen(service.argv, env=env)
        service.started_at = time.monotonic()
        log.info("started %s: %s", service.name, " ".join(service.argv))
