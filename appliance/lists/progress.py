"""Progress of a long job, shown on a terminal (and nowhere else, so logs and pipes stay clean)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Overwrites one status line at most a few times a second; silent unless out is a terminal."""

    INTERVAL = 0.25

    def __init__(self, out: TextIO | None = None, force: bool = False) -> None:
        self.out = out or sys.stderr
        self.enabled = force or self.out.isatty()
        self._last = 0.0
        self._shown = False

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.INTERVAL:
            return
        self._last = now
        self.out.write(f"\r\x1b[K{text}")
        self.out.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self._shown = False
