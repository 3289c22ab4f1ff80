"""Fetching a list's source: a local file or folder, or an HTTP(S) URL, with a digest of its content
so that an unchanged source is recognised without parsing it again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance import __version__

TIMEOUT = 60
CHUNK = 1 << 20
# UT1 and squidGuard category folders: these files hold entries, the rest (expressions, usage) not.
FOLDER_FILES = ("domains", "urls")


class FetchError(Exception):
    """The source could not be read; the previous version of the list stays in force."""


@dataclass(frozen=True)
class Fetched:
    path: Path  # a local file or folder
    sha256: str


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


@contextlib.contextmanager
def fetch(source: str, workdir: Path) -> Iterator[Fetched]:
    """The source as a local path, downloaded into workdir if it is a URL (and removed afterwards)."""
    if not is_url(source):
        yield Fetched(Path(source), _digest(Path(source)))
        return
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / f".download-{os.getpid()}"
    try:
        yield Fetched(tmp, _download(source, tmp))
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _download(url: str, to: Path) -> str:
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": f"school-gateway/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(to, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(f"{url}: {getattr(e, 'reason', None) or e}") from None
    return digest.hexdigest()


def _digest(path: Path) -> str:
    try:
        files = [path / n for n in FOLDER_FILES if (path / n).is_file()] if path.is_dir() else [path]
        if not files:
            raise FetchError(f"{path}: a category folder needs a 'domains' or 'urls' file")
        digest = hashlib.sha256()
        for f in files:
            if path.is_dir():  # which file each part came from matters too
                digest.update(f.name.encode() + b"\0")
            with open(f, "rb") as src:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
    except OSError as e:
        raise FetchError(f"{path}: {e.strerror or e}") from None
    return digest.hexdigest()
