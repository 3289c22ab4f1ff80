"""sd_notify: tells systemd the service is ready and alive (Type=notify, WatchdogSec=).

The protocol is one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET (a leading @
means the abstract namespace), so no library is needed. Outside systemd every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        for_us = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # systemd's advice: keep alive at half the watchdog interval.
        self.watchdog_interval = int(usec) / 2_000_000 if usec.isdigit() and for_us else None

    def notify(self, message: str) -> None:
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # A datagram send blocks while the receiver's queue is full; the data plane must not.
            sock.settimeout(1.0)
            try:
                sock.sendto(message.encode(), self._address)
            except OSError as e:
                log.warning("sd_notify %s: %s", message, e)

    def ready(self) -> None:
        self.notify("READY=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        if self.watchdog_interval is not None:
            self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
