"""Importing a list: fetch its source, parse it, hash every entry, store the result, log the change.

An import is all or nothing. Bad lines are reported (file and line) and skipped; anything that stops
the import (an unreadable source, a padlocked list that would become empty) leaves the previous
version in force and records the error for `appliance lists stats`. The new entry file is written
beside the old one and the database switched to it in the same transaction as the audit entry.

Confidential lists (IWF, CTIRU) are hashed as each line is read: problems name the file and line,
never the text."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import ipaddress
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from appliance import audit
from appliance.lists import catalogue
from appliance.lists.entries import Collector, EntryError, EntrySet, changes
from appliance.lists.formats import FORMATS, Parser
from appliance.lists.progress import Progress
from appliance.lists.sources import FOLDER_FILES, FetchError, fetch
from appliance.store import Store
from fastpath.names import normalise
from fastpath.siphash import keyed_hash_depth

PROBLEM_SAMPLE = 100
ENTRY_SEPARATOR = "@"  # entry files are NAME@DIGEST.bin; list names cannot contain it
_TICK = 1 << 16  # entries between progress updates


class ImportFailed(Exception):
    """The import could not complete; the previous version of the list stays in force."""


@dataclass
class ImportResult:
    name: str
    unchanged: bool = False
    error: str | None = None
    domains: int = 0
    exact: int = 0
    pages: int = 0
    added: int = 0
    removed: int = 0
    problems: int = 0
    sample: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


class ImportSink:
    """Receives what the parsers find: hashes names into the collector, keeps the problems."""

    def __init__(self, collector: Collector, confidential: bool, progress: Progress) -> None:
        self.collector = collector
        self.confidential = confidential
        self.progress = progress
        self.file = ""
        self.stream: IO[bytes] | None = None
        self.size = 0
        self.problems = 0
        self.sample: list[str] = []
        self.skips: Counter[str] = Counter()
        self.entries = 0
        self._countdown = _TICK
        self._key = collector.key
        self._subtree = collector.subtree.append
        self._exact = collector.exact.append

    def domain(self, lineno: int, name: bytes, exact: bool) -> None:
        try:
            h, depth = keyed_hash_depth(self._key, name)
        except ValueError:
            hashed = self._unusual(lineno, name)
            if hashed is None:
                return
            h, depth = hashed
        # An address literal (UT1 lists have many) is an entry for that address alone.
        if exact or (48 <= name[-1] <= 57 and _is_address(name)):
            self._exact(h)
        else:
            self._subtree(h)
        self.collector.depths |= depth
        self._count()

    def _unusual(self, lineno: int, name: bytes) -> tuple[int, int] | None:
        """The hash and depth bit of a name that is not plain ASCII (UTF-8 Unicode, converted to
        IDNA), or None after reporting the line."""
        if any(b > 127 for b in name):
            try:
                return keyed_hash_depth(self._key, name.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                pass
        self.problem(lineno, "not a valid domain name", name)
        return None

    def page(self, lineno: int, url: bytes) -> None:
        slash = url.index(b"/")
        host = normalise(url[:slash]) or _unicode_host(url[:slash])
        if host is None:
            self.problem(lineno, "not a valid host name", url[:slash])
            return
        self.collector.page(host, url[slash:])
        self._count()

    def problem(self, lineno: int, message: str, text: bytes | None = None) -> None:
        self.problems += 1
        if len(self.sample) < PROBLEM_SAMPLE:
            shown = "" if self.confidential or text is None else f": {text[:80].decode(errors='replace')!r}"
            self.sample.append(f"{self.file}:{lineno}: {message}{shown}")

    def skipped(self, reason: str) -> None:
        self.skips[reason] += 1

    def _count(self) -> None:
        self._countdown -= 1
        if self._countdown:
            return
        self._countdown = _TICK
        self.entries += _TICK
        done = f" ({100 * self.stream.tell() // self.size}%)" if self.stream and self.size else ""
        self.progress.update(f"{self.file}: {self.entries:,} entries read{done}")


def _is_address(name: bytes) -> bool:
    try:
        ipaddress.IPv4Address(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _unicode_host(host: bytes) -> str | None:
    try:
        return normalise(host.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _sources(path: Path, fmt: str, label: str) -> Iterator[tuple[str, IO[bytes], int, Parser]]:
    """(name for messages, stream, size, parser) for each file the list's source holds."""
    if fmt != "ut1":
        parser = FORMATS["urls"] if fmt in catalogue.PADLOCKED_FORMATS else FORMATS[fmt]
        with _open(path) as stream:
            yield label, stream, path.stat().st_size, parser
        return
    parsers = {"domains": FORMATS["plain"], "urls": FORMATS["urls"]}
    if path.is_dir():
        for n in FOLDER_FILES:
            if (path / n).is_file():
                with open(path / n, "rb") as stream:
                    yield str(path / n), stream, (path / n).stat().st_size, parsers[n]
        return
    with tarfile.open(path, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in FOLDER_FILES]
        folders = {str(Path(m.name).parent) for m in members}
        if not members:
            raise ImportFailed(f"{label}: the archive has no 'domains' or 'urls' file")
        if len(folders) > 1:
            raise ImportFailed(
                f"{label}: the archive holds several categories ({', '.join(sorted(folders))}); "
                "import each category folder as its own list"
            )
        for m in members:
            member = tar.extractfile(m)
            assert member is not None
            with member:
                yield f"{label}:{m.name}", member, m.size, parsers[Path(m.name).name]


class _NameSink:
    """Collects a list's names in clear (and the hosts of its pages); problems are skipped silently,
    the import reports them."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}

    def domain(self, lineno: int, name: bytes, exact: bool) -> None:
        norm = normalise(name) or _unicode_host(name)
        if norm is not None:
            self.names[norm] = None

    def page(self, lineno: int, url: bytes) -> None:
        self.domain(lineno, url[: url.index(b"/")], True)

    def problem(self, lineno: int, message: str, text: bytes | None = None) -> None:
        pass

    def skipped(self, reason: str) -> None:
        pass


def read_names(info: catalogue.ListInfo, workdir: Path) -> list[str]:
    """The names a list's source holds now, in clear, in their order: for the data plane's uses of a
    list that is not confidential (the DNS filter resolves the DoH endpoint list's names). Raises
    ValueError for a confidential list, and FetchError, ImportFailed or OSError if the source cannot
    be read."""
    if info.confidential:
        raise ValueError(f"the {info.name} list is confidential: its names are never read in clear")
    sink = _NameSink()
    with fetch(info.source, workdir) as fetched:
        for _, stream, _, parser in _sources(fetched.path, info.format, info.source):
            parser(stream, sink)
    return list(sink.names)


def update(
    store: Store,
    name: str,
    actor: str,
    reason: str,
    force: bool = False,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ImportResult:
    """Fetches and imports the list from its source. Never raises for a bad source: the result (and
    the list's last_error) says what went wrong, and the previous version stays in force."""
    now = now or datetime.now(UTC)
    result = ImportResult(name)
    progress = progress or Progress()
    with _locked(store, name):
        info = catalogue.get(store, name)
        _tidy(store, info)
        try:
            with fetch(info.source, store.lists_dir) as fetched:
                current = store.lists_dir / info.entries_file if info.entries_file else None
                if not force and fetched.sha256 == info.source_sha256 and current and current.exists():
                    result.unchanged = True
                else:
                    _import(store, info, fetched.path, fetched.sha256, actor, reason, progress, now, result)
        except (FetchError, ImportFailed, EntryError, OSError, EOFError, tarfile.TarError) as e:
            result.error = str(e) if not isinstance(e, OSError) or e.filename else f"{info.source}: {e}"
        finally:
            progress.done()
        store.db.execute(
            "UPDATE lists SET last_attempt = ?, last_error = ? WHERE name = ?",
            (now.isoformat(), result.error, name),
        )
    return result


@contextlib.contextmanager
def _locked(store: Store, name: str) -> Iterator[None]:
    """One import of a list at a time (a second waits)."""
    store.lists_dir.mkdir(parents=True, exist_ok=True)
    with open(store.lists_dir / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _tidy(store: Store, info: catalogue.ListInfo) -> None:
    """Removes what an interrupted import of this list left behind (a temporary file, or an entry
    file the database never switched to) and the entry files of removed lists. The database names
    the one entry file in force; applied generations hold their own links to theirs."""
    known = {i.name for i in catalogue.all_lists(store)}
    for path in store.lists_dir.iterdir():
        list_name = path.name.lstrip(".").split(ENTRY_SEPARATOR)[0]
        if ENTRY_SEPARATOR not in path.name or path.name == info.entries_file:
            continue
        if list_name == info.name or (list_name not in known and path.suffix == ".bin"):
            path.unlink(missing_ok=True)


def _import(
    store: Store,
    info: catalogue.ListInfo,
    path: Path,
    sha256: str,
    actor: str,
    reason: str,
    progress: Progress,
    now: datetime,
    result: ImportResult,
) -> None:
    key = store.key()
    sink = ImportSink(Collector(key), info.confidential, progress)
    for display, stream, size, parser in _sources(path, info.format, info.source):
        sink.file, sink.stream, sink.size = display, stream, size
        parser(stream, sink)
    entries = sink.collector.finish()
    if info.padlocked and not (entries.domains or len(entries.pages)):
        raise ImportFailed(
            f"{info.name}: the new version has no entries, so it was not loaded ({sink.problems} bad lines)"
        )
    filename = f"{info.name}{ENTRY_SEPARATOR}{sha256[:16]}.bin"
    entries.write(store.lists_dir / filename, key)
    current = store.lists_dir / info.entries_file if info.entries_file else None
    old = EntrySet.read(current, key) if current and current.exists() else EntrySet.empty()
    result.added, result.removed = changes(old, entries)
    result.domains, result.exact, result.pages = len(entries.subtree), len(entries.exact), len(entries.pages)
    result.problems, result.sample, result.skipped = sink.problems, sink.sample, sink.skips
    before = {
        "domains": info.domains,
        "exact": info.exact,
        "pages": info.pages,
        "source_sha256": info.source_sha256,
    }
    after = {"domains": result.domains, "exact": result.exact, "pages": result.pages, "source_sha256": sha256}
    with audit.change(store, actor, reason, now) as ch:
        ch.db.execute(
            "UPDATE lists SET entries_file = ?, domains = ?, exact = ?, pages = ?, source_sha256 = ?,"
            " updated = ?, problems = ?, problem_sample = ? WHERE name = ?",
            (
                filename,
                result.domains,
                result.exact,
                result.pages,
                sha256,
                now.isoformat(),
                result.problems,
                json.dumps(result.sample),
                info.name,
            ),
        )
        total = result.domains + result.exact + result.pages
        ch.log(
            "list.update",
            f"list {info.name}: {total:,} entries (+{result.added:,} -{result.removed:,})",
            before,
            after,
        )
    if current and current.name != filename:
        current.unlink(missing_ok=True)
