"""A TCP listener on loopback that records what real clients send, for parser tests."""

import contextlib
import socket
import threading
import time
from collections.abc import Callable


class Recorder:
    """A TCP listener on 127.0.0.1 that keeps what each client sends until the client goes quiet
    (it is then waiting for an answer that never comes), and then closes the connection."""

    def __init__(self, reply: bytes = b"", idle: float = 0.5) -> None:
        self.reply = reply
        self.idle = idle
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.streams: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._record, args=(conn,), daemon=True).start()

    def _record(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(self.idle)
        try:
            while len(data) < 1 << 16:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            with contextlib.suppress(OSError):
                conn.sendall(self.reply)
        except OSError:
            pass
        conn.close()
        if data:
            with self.lock:
                self.streams.append(data)

    def wait_for(self, wanted: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for data in self.streams:
                    if wanted(data):
                        return data
            time.sleep(0.05)
        raise AssertionError(f"no matching connection within {timeout}s (got {len(self.streams)})")

    def close(self) -> None:
        self.sock.close()


LOOPBACK = "127.0.0.1"
# What the recorder says once a client has gone quiet: a fatal handshake_failure alert, or a 404.
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"
HTTP_404 = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def record(client: Callable[[Recorder], object], reply: bytes, wanted: Callable[[bytes], bool]) -> bytes:
    """Runs client against a fresh recorder and returns the first connection it made that is wanted."""
    rec = Recorder(reply)
    try:
        client(rec)
        return rec.wait_for(wanted)
    finally:
        rec.close()
