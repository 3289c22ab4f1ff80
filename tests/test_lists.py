"""List formats and imports: every format, broken files, all-or-nothing updates, confidentiality."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from appliance import audit
from appliance.cli import main
from appliance.lists import catalogue, importer
from appliance.lists.entries import MAGIC_V1, EntrySet, key_fingerprint, page_hash
from appliance.lists.formats import FORMATS
from appliance.lists.lookup import ListLookup
from appliance.lists.progress import Progress
from appliance.policy.model import PolicyError
from appliance.store import Store
from fastpath.siphash import keyed_hash

DATA = Path(__file__).parent / "data" / "lists"


class RecordingSink:
    def __init__(self) -> None:
        self.domains: list[tuple[int, bytes, bool]] = []
        self.pages: list[tuple[int, bytes]] = []
        self.problems: list[int] = []
        self.skips: Counter[str] = Counter()

    def domain(self, lineno: int, name: bytes, exact: bool) -> None:
        self.domains.append((lineno, name, exact))

    def page(self, lineno: int, url: bytes) -> None:
        self.pages.append((lineno, url))

    def problem(self, lineno: int, message: str) -> None:
        self.problems.append(lineno)

    def skipped(self, reason: str) -> None:
        self.skips[reason] += 1


def parse(fmt: str, text: bytes | str) -> RecordingSink:
    sink = RecordingSink()
    data = text.encode() if isinstance(text, str) else text
    FORMATS[fmt](io.BytesIO(data).readlines(), sink)
    return sink


def parse_file(fmt: str, name: str) -> RecordingSink:
    return parse(fmt, (DATA / name).read_bytes())


# --- formats ---------------------------------------------------------------------------------------


def test_plain_list() -> None:
    s = parse_file("plain", "plain.txt")
    assert [(n, e) for _, n, e in s.domains] == [
        (b"casino.example", False),
        (b"poker.example", False),
        (b"dice.example", False),
        (b"www.Bets.Example.", False),
        (b"bad..name", False),
        (b"xn--bcher-kva.example", False),
        ("bücher.example".encode(), False),
        (b"1.2.3.4", False),
    ]
    assert [line for line, _, _ in s.domains] == [2, 3, 4, 6, 7, 8, 9, 10]


def test_hosts_file() -> None:
    s = parse_file("hosts", "hosts.txt")
    assert [(line, n, e) for line, n, e in s.domains] == [
        (8, b"ads.example", True),
        (9, b"tracker.example", True),
        (9, b"metrics.example", True),
        (10, b"ipv6only.example", True),
        (14, b"bad_label..example", True),
    ]
    assert s.problems == [11, 12, 13]  # no address, no names, bad address
    assert sum(s.skips.values()) == 7  # localhost boilerplate is not an entry, nor an error


def test_adblock_list() -> None:
    s = parse_file("adblock", "adblock.txt")
    assert [(line, n) for line, n, _ in s.domains] == [
        (3, b"ads.example"),
        (4, b"tracker.example"),
        (5, b"cdn.example"),
        (12, b"bad..example"),
    ]
    assert all(not exact for _, _, exact in s.domains)  # ||domain^ covers subdomains
    assert s.problems == [6, 8, 10, 11]  # @@ exception, $dnsrewrite, regex, wildcard pattern
    assert sum(s.skips.values()) == 2  # a $third-party rule and a cosmetic rule


def test_rpz_zone() -> None:
    s = parse_file("rpz", "rpz.zone")
    assert [(line, n, e) for line, n, e in s.domains] == [
        (8, b"blocked.example", True),
        (9, b"blocked.example", False),
        (10, b"nodata.example", True),
        (11, b"dropped.example", True),
        (12, b"local.example", True),
        (13, b"wild.example", True),
        (14, b"onlysubs.example", False),
    ]
    # passthru, tcp-only, rpz-ip, rpz-nsdname, outside the zone, $INCLUDE, no type
    assert s.problems == [15, 16, 17, 18, 19, 20, 21]


def test_rpz_without_origin_and_with_relative_names() -> None:
    s = parse("rpz", "bad.example. CNAME .\nsub IN CNAME .\n  A 10.1.1.1\n")
    assert [n for _, n, _ in s.domains] == [b"bad.example", b"sub", b"sub"]


def test_rpz_unclosed_parenthesis_is_reported() -> None:
    s = parse("rpz", "$ORIGIN rpz.\n@ SOA a. b. ( 1 2 3\n")
    assert s.problems == [2]


def test_url_lists() -> None:
    s = parse_file("urls", "iwf.txt")
    assert s.pages == [
        (2, b"iwf-fixture-one.example/abc/def.jpg"),
        (3, b"iwf-fixture-two.example/gallery/index.php?id=12"),  # fragment removed
        (4, b"iwf-fixture-three.example/x"),  # scheme and port removed
        (8, b"bad..host.example/path"),
    ]
    assert [(line, n) for line, n, _ in s.domains] == [
        (5, b"whole-domain.iwf-fixture.example"),
        (6, b"iwf.testfiltering.com"),
        (7, b"not a url at all"),
    ]


# --- imports ---------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "state") as s:
        yield s


def add_list(store: Store, name: str, fmt: str, source: Path | str, category: str | None = None) -> None:
    with audit.change(store, "tester", "test") as ch:
        catalogue.add(ch, name, fmt, category, str(source), None)


def entries(store: Store, name: str) -> EntrySet:
    return EntrySet.read(store.lists_dir / catalogue.get(store, name).entries_file, store.key())


def has(store: Store, name: str, kind: str, entry: str) -> bool:
    return entries(store, name).has(kind, keyed_hash(store.key(), entry))


def test_import_plain_reports_bad_lines_with_file_and_line(store: Store) -> None:
    add_list(store, "plain", "plain", DATA / "plain.txt", "gambling")
    result = importer.update(store, "plain", "tester", "test")
    assert result.error is None
    assert result.problems == 1
    assert result.sample == [f"{DATA / 'plain.txt'}:7: not a valid domain name: 'bad..name'"]
    for name in ("casino.example", "poker.example", "dice.example", "www.bets.example"):
        assert has(store, "plain", "subtree", name)
    # the Unicode form is stored as IDNA, and equals the punycode entry
    assert has(store, "plain", "subtree", "xn--bcher-kva.example")
    assert result.domains == 5  # bücher.example and its punycode spelling are one entry
    assert has(store, "plain", "exact", "1.2.3.4")  # an address literal matches only itself
    info = catalogue.get(store, "plain")
    assert (info.domains, info.exact, info.problems, info.last_error) == (5, 1, 1, None)


def test_entry_file_keeps_the_lists_depth_mask(store: Store) -> None:
    """One mask of the label counts a list's names have, so the compiled table probes only those."""
    add_list(store, "plain", "plain", DATA / "plain.txt", "gambling")
    importer.update(store, "plain", "tester", "test")
    assert entries(store, "plain").depths == 0b1110  # casino.example, www.bets.example, 1.2.3.4
    add_list(store, "ut1", "ut1", DATA / "ut1" / "gambling", "gambling")
    importer.update(store, "ut1", "tester", "test")
    assert entries(store, "ut1").depths == 0b10  # the page host casino-c.example too


def test_entry_file_from_before_the_depth_mask_has_every_depth(store: Store, tmp_path: Path) -> None:
    add_list(store, "plain", "plain", DATA / "plain.txt", "gambling")
    importer.update(store, "plain", "tester", "test")
    new = entries(store, "plain")
    old = tmp_path / "v1.bin"
    counts = [len(a) for a in new.arrays()]
    header = np.array([key_fingerprint(store.key()), *counts], "<u8").tobytes()
    old.write_bytes(MAGIC_V1 + header + b"".join(a.astype("<u8").tobytes() for a in new.arrays()))
    read = EntrySet.read(old, store.key())
    assert read.depths == (1 << 64) - 1
    assert all(np.array_equal(a, b) for a, b in zip(read.arrays(), new.arrays(), strict=True))


def test_import_reports_invalid_utf8(store: Store) -> None:
    add_list(store, "bin", "plain", DATA / "plain-binary.txt", "gambling")
    result = importer.update(store, "bin", "tester", "test")
    assert result.domains == 1 and result.problems == 1
    assert result.sample[0].startswith(f"{DATA / 'plain-binary.txt'}:2: not a valid domain name")


def test_hosts_entries_are_exact_and_adblock_are_subtrees(store: Store) -> None:
    add_list(store, "hosts", "hosts", DATA / "hosts.txt", "ads_trackers")
    add_list(store, "adblock", "adblock", DATA / "adblock.txt", "ads_trackers")
    add_list(store, "rpz", "rpz", DATA / "rpz.zone", "malware_hacking")
    for name in ("hosts", "adblock", "rpz"):
        assert importer.update(store, name, "tester", "test").error is None
    assert has(store, "hosts", "exact", "ads.example") and not has(store, "hosts", "subtree", "ads.example")
    assert has(store, "adblock", "subtree", "tracker.example")
    # in the zone, blocked.example is listed exactly and with *.: stored once, as a subtree
    assert has(store, "rpz", "subtree", "blocked.example") and not has(
        store, "rpz", "exact", "blocked.example"
    )
    assert has(store, "rpz", "exact", "local.example")
    assert catalogue.get(store, "rpz").problems == 7


def test_ut1_folder_and_tarball(store: Store, tmp_path: Path) -> None:
    add_list(store, "ut1-gambling", "ut1", DATA / "ut1" / "gambling", "gambling")
    result = importer.update(store, "ut1-gambling", "tester", "test")
    assert (result.domains, result.pages, result.problems) == (2, 1, 1)
    assert (
        result.sample[0]
        == f"{DATA / 'ut1' / 'gambling' / 'domains'}:3: not a valid domain name: 'bad..entry'"
    )
    es = entries(store, "ut1-gambling")
    assert es.has("pages", page_hash(store.key(), "casino-c.example", "/promo/page.html"))
    assert es.has("page_hosts", keyed_hash(store.key(), "casino-c.example"))

    tarball = tmp_path / "adult.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(DATA / "ut1" / "adult", arcname="adult")
    add_list(store, "ut1-adult", "ut1", tarball, "pornography")
    result = importer.update(store, "ut1-adult", "tester", "test")
    assert result.error is None and result.domains == 2

    both = tmp_path / "both.tar.gz"
    with tarfile.open(both, "w:gz") as tar:
        tar.add(DATA / "ut1", arcname="ut1")
    add_list(store, "ut1-both", "ut1", both, "pornography")
    result = importer.update(store, "ut1-both", "tester", "test")
    assert "several categories" in (result.error or "")


def test_failed_update_keeps_the_previous_list(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "list.txt"
    src.write_text("one.example\ntwo.example\n")
    add_list(store, "l", "plain", src, "games")
    assert importer.update(store, "l", "tester", "test").domains == 2
    before = catalogue.get(store, "l")
    src.unlink()
    result = importer.update(store, "l", "tester", "test")
    assert result.error and str(src) in result.error
    after = catalogue.get(store, "l")
    assert after.entries_file == before.entries_file and after.domains == 2
    assert after.last_error == result.error  # visible in `lists stats`
    assert has(store, "l", "subtree", "two.example")
    src.write_text("one.example\n")
    result = importer.update(store, "l", "tester", "test")
    assert (result.error, result.added, result.removed) == (None, 0, 1)
    assert catalogue.get(store, "l").last_error is None


def test_gzip_source_and_unchanged_source(store: Store, tmp_path: Path) -> None:
    import gzip

    src = tmp_path / "list.txt.gz"
    src.write_bytes(gzip.compress(b"zipped.example\n"))
    add_list(store, "z", "plain", src, "games")
    assert importer.update(store, "z", "tester", "test").domains == 1
    again = importer.update(store, "z", "tester", "test")
    assert again.unchanged
    assert importer.update(store, "z", "tester", "test", force=True).unchanged is False


def test_padlocked_list_never_becomes_empty(store: Store, tmp_path: Path) -> None:
    add_list(store, "iwf", "iwf", DATA / "iwf.txt")
    assert importer.update(store, "iwf", "tester", "test").error is None
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\nnot a url\n")
    store.db.execute("UPDATE lists SET source = ? WHERE name = 'iwf'", (str(empty),))
    result = importer.update(store, "iwf", "tester", "test")
    assert result.error and "no entries" in result.error
    assert catalogue.get(store, "iwf").domains == 2


def test_padlocked_lists_cannot_be_removed_or_repointed(store: Store) -> None:
    add_list(store, "ctiru", "ctiru", DATA / "ctiru.txt")
    for change in (
        lambda ch: catalogue.remove(ch, "ctiru"),
        lambda ch: catalogue.set_source(ch, "ctiru", "/dev/null", None),
    ):
        with pytest.raises(PolicyError, match="padlocked"), audit.change(store, "admin", "try") as ch:
            change(ch)
    assert catalogue.get(store, "ctiru").category == "ctiru"
    with pytest.raises(PolicyError, match="only the iwf list"), audit.change(store, "admin", "try") as ch:
        catalogue.add(ch, "sneaky", "plain", "iwf", "/dev/null", None)


def test_iwf_entries_are_never_stored_logged_or_shown_in_clear(
    store: Store, capsys: pytest.CaptureFixture
) -> None:
    add_list(store, "iwf", "iwf", DATA / "iwf.txt")
    result = importer.update(store, "iwf", "tester", "test")
    # two bad lines, reported by line number only
    assert result.sample == [
        f"{DATA / 'iwf.txt'}:7: not a valid domain name",
        f"{DATA / 'iwf.txt'}:8: not a valid host name",
    ]
    assert (result.domains, result.pages) == (2, 3)
    main(["lists", "stats", "--state-dir", str(store.dir)])
    main(["lists", "problems", "iwf", "--state-dir", str(store.dir)])
    main(["audit", "log", "--state-dir", str(store.dir)])
    shown = capsys.readouterr().out
    secrets = [b"iwf-fixture", b"abc/def.jpg", b"gallery", b"whole-domain", b"testfiltering"]
    for s in secrets:
        assert s.decode() not in shown
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for path in store.dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
    # the list's own test entry is an entry like any other
    lookup = ListLookup(
        store.key(), [("iwf", "iwf", store.lists_dir / catalogue.get(store, "iwf").entries_file)]
    )
    assert [m.list for m in lookup.matches("iwf.testfiltering.com")] == ["iwf"]
    assert [m.kind for m in lookup.matches("iwf-fixture-one.example")] == ["page_hosts"]


class _Handler(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_source_and_failure_keeps_previous(store: Store, http_server: str) -> None:
    _Handler.bodies = {"/list.txt": b"remote.example\n"}
    add_list(store, "remote", "plain", f"{http_server}/list.txt", "games")
    assert importer.update(store, "remote", "tester", "test").domains == 1
    _Handler.bodies = {}
    result = importer.update(store, "remote", "tester", "test")
    assert result.error and "404" in result.error
    assert has(store, "remote", "subtree", "remote.example")
    assert not list(store.lists_dir.glob(".download-*"))


def test_import_is_audited_with_counts(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_text("a.example\nb.example\n")
    add_list(store, "l", "plain", src, "games")
    importer.update(store, "l", "alice", "weekly refresh")
    last = list(audit.entries(store))[-1]
    assert (last.action, last.actor, last.reason) == ("list.update", "alice", "weekly refresh")
    assert last.after["domains"] == 2 and last.before["domains"] == 0
    assert audit.verify(store).ok


def test_progress_is_shown_on_a_terminal(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    src.write_text("".join(f"host{i}.example\n" for i in range(200_000)))
    add_list(store, "big", "plain", src, "games")
    out = io.StringIO()
    progress = Progress(out, force=True)
    progress.INTERVAL = 0
    assert importer.update(store, "big", "tester", "test", progress=progress).domains == 200_000
    shown = out.getvalue()
    assert f"{src}: 65,536 entries read" in shown and "%)" in shown
    assert shown.endswith("\r\x1b[K")  # the status line is cleared at the end
    quiet = io.StringIO()  # not a terminal: nothing written
    importer.update(store, "big", "tester", "test", force=True, progress=Progress(quiet))
    assert quiet.getvalue() == ""


def test_cli_import_set_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = str(tmp_path / "state")
    ut1 = tmp_path / "ut1"
    shutil.copytree(DATA / "ut1", ut1)
    assert (
        main(["lists", "import-set", str(ut1), "--reason", "initial", "--by", "it", "--state-dir", state])
        == 0
    )
    out = capsys.readouterr().out
    assert "sexual_education: not mapped to a category, left out" in out
    assert f"skipped {ut1 / 'gambling' / 'domains'}:3: not a valid domain name" in out
    assert main(["lists", "stats", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert "ut1-adult" in out and "ut1-gambling" in out and "ut1-sexual_education" not in out
    (ut1 / "adult" / "domains").unlink()
    assert main(["lists", "update", "--state-dir", state]) == 1
    out = capsys.readouterr().out
    assert "ut1-adult: FAILED, previous version kept" in out and "ut1-gambling: source unchanged" in out
    assert main(["lists", "remove", "nope", "--reason", "x", "--state-dir", state]) == 2
    assert "no list named 'nope'" in capsys.readouterr().err


IMPORT = """
import sys, time
from appliance.lists import importer
from appliance.store import Store
with Store(sys.argv[1]) as store:
    print("start", flush=True)
    started = time.monotonic()
    assert importer.update(store, "big", "tester", "crash test").error is None
    print(time.monotonic() - started, flush=True)
"""


def start_import(state: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", IMPORT, str(state)], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"start\n"
    return proc


@pytest.mark.slow
def test_kill_9_during_import_leaves_old_or_new_list(tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    versions = {p: "".join(f"{p}{i}.example\n" for i in range(300_000)) for p in ("first", "second")}
    digests = {hashlib.sha256(text.encode()).hexdigest(): p for p, text in versions.items()}
    src.write_text(versions["first"])
    with Store(tmp_path / "state") as store:
        add_list(store, "big", "plain", src, "games")
    durations = []  # how long an uninterrupted import takes here (the first has no old version)
    for version in ("second", "first"):
        src.write_text(versions[version])
        calibration = start_import(store.dir)
        assert calibration.stdout is not None
        durations.append(float(calibration.stdout.readline()))
        assert calibration.wait() == 0
    duration = max(durations)
    rng = random.Random(7)
    outcomes: Counter[str] = Counter()
    for round_ in range(12):
        with Store(store.dir) as s:
            old = catalogue.get(s, "big")
        new = "first" if digests[old.source_sha256 or ""] == "second" else "second"
        src.write_text(versions[new])
        proc = start_import(store.dir)
        time.sleep(rng.uniform(0, duration * 3))  # anywhere in the run, or after it finished
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Store(store.dir) as s:
            info = catalogue.get(s, "big")
            version = digests[info.source_sha256 or ""]
            outcomes["new" if version == new else "old"] += 1
            es = entries(s, "big")  # the file the database names is whole and matches it
            assert len(es.subtree) == info.domains == 300_000
            assert es.has("subtree", keyed_hash(s.key(), f"{version}{round_}.example"))
            assert audit.verify(s).ok
    with Store(store.dir) as s:
        importer.update(s, "big", "tester", "after the crashes", force=True)
        left = sorted(p.name for p in s.lists_dir.iterdir())
        assert left == [".big.lock", catalogue.get(s, "big").entries_file]  # nothing half-written remains
    assert outcomes["old"] and outcomes["new"], outcomes


def test_key_is_private_and_stable(store: Store) -> None:
    key = store.key()
    path = store.dir / "table.key"
    assert len(key) == 16 and path.stat().st_mode & 0o777 == 0o600
    with Store(store.dir) as again:
        assert again.key() == key
    assert [p.name for p in store.dir.iterdir() if p.name.startswith(".table.key")] == []
