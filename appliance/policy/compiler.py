"""Compiles a policy into fast-path files in a directory: the domain table, the page table and links
to the list entry files it was built from.

The table is rebuilt only when what goes into it changes (lists, locked domains, name rules, bit
assignment); otherwise the previous generation's files are linked, so a change to schedules,
category rules or exam schedules applies in a moment whatever the size of the lists."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from appliance.lists.entries import EntrySet
from appliance.lists.progress import Progress
from appliance.policy import pages
from appliance.policy.compiled import CompiledPolicy, name_rule_scopes
from appliance.policy.model import ALL_GROUPS, GROUPS
from appliance.store import fsync_dir
from fastpath.table import TableBuilder

TABLE = "table.bin"
PAGES = "pages.bin"
LISTS = "lists"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class BuildInfo:
    fingerprint: str
    reused: bool


def fingerprint(compiled: CompiledPolicy) -> str:
    """Identifies everything that goes into the tables, and nothing else."""
    inputs = compiled.inputs
    scopes = name_rule_scopes(inputs.rules)
    content = {
        "lists": sorted((ref.name, ref.category, ref.path.name) for ref in inputs.lists),
        "locked": [inputs.trust.locked_domains] + [inputs.trust.groups[g].locked_domains for g in GROUPS],
        "bits": [asdict(b) for b in compiled.bits],
        "names": sorted((a, g, s or "", sorted({r.target for r in rs})) for (a, g, s), rs in scopes.items()),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def build(
    compiled: CompiledPolicy,
    directory: Path,
    key: bytes,
    reuse: Path | None = None,
    progress: Progress | None = None,
) -> BuildInfo:
    """Writes TABLE, PAGES and LISTS/ into directory (which must exist), each fsynced. reuse is a
    previous build's directory whose tables are linked if its fingerprint (in fingerprint.txt) matches."""
    progress = progress or Progress()
    lists_dir = directory / LISTS
    lists_dir.mkdir()
    for ref in compiled.inputs.lists:
        os.link(ref.path, lists_dir / ref.path.name)
    fsync_dir(lists_dir)
    fp = fingerprint(compiled)
    reused = reuse is not None and _fingerprint_of(reuse) == fp
    if reused:
        assert reuse is not None
        for name in (TABLE, PAGES):
            os.link(reuse / name, directory / name)
    else:
        _build_tables(compiled, directory, key, progress, fp)
    (directory / "fingerprint.txt").write_text(fp)
    fsync_dir(directory)
    progress.done()
    return BuildInfo(fp, reused)


def _fingerprint_of(directory: Path) -> str | None:
    try:
        return (directory / "fingerprint.txt").read_text()
    except FileNotFoundError:
        return None


def _build_tables(compiled: CompiledPolicy, directory: Path, key: bytes, progress: Progress, fp: str) -> None:
    builder = TableBuilder(key)
    page_hashes, page_masks = [], []
    for ref in compiled.inputs.lists:
        bit = compiled.category_bit(ref.category)
        entries = EntrySet.read(ref.path, key, mmap=True)
        for kind, mask, exact in (
            ("subtree", bit, False),
            ("exact", bit, True),
            ("page_hosts", compiled.pages_bit, True),
        ):
            array = getattr(entries, kind)
            for start in range(0, len(array), _CHUNK):
                progress.update(f"compiling: {ref.name} ({kind}) {start:,}/{len(array):,}")
                builder.add_hashes(array[start : start + _CHUNK], mask, exact, entries.depths)
        page_hashes.append(np.asarray(entries.pages))
        page_masks.append(np.full(len(entries.pages), bit, np.uint64))
    trust = compiled.inputs.trust
    for group, domains in [(ALL_GROUPS, trust.locked_domains)] + [
        (g, trust.groups[g].locked_domains) for g in GROUPS
    ]:
        for domain in domains:
            builder.add(domain, compiled.trust_bit(group))
    for (action, group, schedule), rules in name_rule_scopes(compiled.inputs.rules).items():
        bit = compiled.school_bit(action, group, schedule)
        for rule in rules:
            builder.add(rule.target, bit)
    progress.update("compiling: writing the table")
    metadata = {"fingerprint": fp, "bits": [asdict(b) for b in compiled.bits]}
    builder.build(directory / TABLE, metadata)
    empty = np.empty(0, np.uint64)
    pages.write(
        directory / PAGES,
        np.concatenate(page_hashes) if page_hashes else empty,
        np.concatenate(page_masks) if page_masks else empty,
    )
