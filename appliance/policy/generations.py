"""Applying a policy atomically, keeping the previous one for rollback.

    <state>/policy/generations/000042/   table.bin, pages.bin, lists/, manifest.json
    <state>/policy/current -> generations/000042

A new generation is built in a temporary directory beside the live ones, every file fsynced, then
renamed into generations/ and the `current` symbolic link replaced by rename(2). Whatever moment an
apply is killed at, `current` names a complete generation: the old one or the new one. The data
plane follows `current` (see appliance.policy.live). Each manifest names the generation it replaced,
which is what `policy rollback` returns to."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.lists.progress import Progress
from appliance.policy import compiler
from appliance.policy.compiled import Bit, CompiledPolicy
from appliance.policy.inputs import PolicyInputs, from_store
from appliance.policy.model import PolicyError
from appliance.store import Store, fsync_dir, write_atomic

GENERATIONS = "generations"
CURRENT = "current"
MANIFEST = "manifest.json"
KEEP = 3  # generations kept besides the current one and the one it replaced


@dataclass(frozen=True)
class Generation:
    """An applied (or built) policy on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def previous(self) -> str | None:
        return self.manifest.get("previous")

    @property
    def table_path(self) -> Path:
        return self.path / compiler.TABLE

    @property
    def pages_path(self) -> Path:
        return self.path / compiler.PAGES

    def compiled(self) -> CompiledPolicy:
        inputs = PolicyInputs.from_dict(self.manifest["inputs"], self.path / compiler.LISTS)
        return CompiledPolicy(inputs, tuple(Bit(**b) for b in self.manifest["bits"]))

    @classmethod
    def load(cls, path: Path) -> Generation:
        return cls(path, json.loads((path / MANIFEST).read_text()))


def _root(store: Store) -> Path:
    return store.policy_dir


def current(store: Store) -> Generation | None:
    """The generation in force, or None before the first apply."""
    link = _root(store) / CURRENT
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    return Generation.load(_root(store) / target)


def get(store: Store, generation_id: str) -> Generation:
    path = _root(store) / GENERATIONS / generation_id
    if not (path / MANIFEST).exists():
        raise PolicyError(f"generation {generation_id} is not kept any more")
    return Generation.load(path)


@contextlib.contextmanager
def _lock(store: Store) -> Iterator[None]:
    """One apply or rollback at a time (a second waits)."""
    root = _root(store)
    (root / GENERATIONS).mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _next_id(root: Path) -> str:
    ids = [int(p.name) for p in (root / GENERATIONS).iterdir() if p.name.isdigit()]
    return f"{max(ids, default=0) + 1:06d}"


def _build(
    store: Store,
    compiled: CompiledPolicy,
    gen_id: str,
    previous: Generation | None,
    now: datetime,
    progress: Progress | None,
) -> Generation:
    """Builds a complete generation in a temporary directory beside the live ones."""
    root = _root(store)
    tmp = root / GENERATIONS / f".building-{gen_id}-{os.getpid()}"
    tmp.mkdir()
    try:
        info = compiler.build(compiled, tmp, store.key(), previous.path if previous else None, progress)
        manifest = {
            "format": 1,
            "generation": gen_id,
            "created": now.isoformat(),
            "previous": previous.id if previous else None,
            "fingerprint": info.fingerprint,
            "table_reused": info.reused,
            "enforcement": enforcement(compiled),
            **compiled.to_dict(),
        }
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Generation(tmp, manifest)


@contextlib.contextmanager
def preview(
    store: Store, compiled: CompiledPolicy, now: datetime | None = None, progress: Progress | None = None
) -> Iterator[Generation]:
    """Builds compiled as a generation that is not put in force (for diff and explain --pending)."""
    with _lock(store):
        gen = _build(store, compiled, "pending", current(store), now or datetime.now(UTC), progress)
        try:
            yield gen
        finally:
            shutil.rmtree(gen.path, ignore_errors=True)


@contextlib.contextmanager
def preview_working(store: Store, now: datetime, progress: Progress | None = None) -> Iterator[Generation]:
    """The working policy (what `policy apply` would put in force at now), built but not put in
    force: what `policy diff` and `explain --pending` judge."""
    with preview(store, CompiledPolicy.compile(from_store(store, now)), now, progress) as gen:
        yield gen


def enforcement(compiled: CompiledPolicy) -> dict[str, dict[str, int]]:
    """Per list: entries enforced on every path (DNS, TLS, QUIC, HTTP), and on plain HTTP only."""
    return {
        ref.name: {"every_path": ref.domains + ref.exact, "http_only": ref.pages}
        for ref in compiled.inputs.lists
    }


def _swap(store: Store, gen: Generation) -> None:
    """Points `current` at gen in one rename(2), durably."""
    root = _root(store)
    tmp = root / f".{CURRENT}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(f"{GENERATIONS}/{gen.id}", tmp)
    os.replace(tmp, root / CURRENT)
    fsync_dir(root)


def apply(
    store: Store,
    inputs: PolicyInputs,
    actor: str,
    reason: str,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> Generation:
    """Compiles inputs, builds the generation and puts it in force; logs it."""
    now = now or datetime.now(UTC)
    compiled = CompiledPolicy.compile(inputs)
    with _lock(store):
        previous = current(store)
        _reconcile(store, previous)
        built = _build(store, compiled, _next_id(_root(store)), previous, now, progress)
        gen = Generation(_root(store) / GENERATIONS / built.manifest["generation"], built.manifest)
        os.rename(built.path, gen.path)
        fsync_dir(gen.path.parent)
        _swap(store, gen)
        with audit.change(store, actor, reason, now) as ch:
            ch.log(
                "policy.apply",
                f"policy generation {gen.id} applied (replacing {previous.id if previous else 'none'})",
                {"generation": previous.id if previous else None},
                {"generation": gen.id, "fingerprint": gen.manifest["fingerprint"]},
            )
        _collect(store, gen)
    return gen


def rollback(store: Store, actor: str, reason: str, now: datetime | None = None) -> Generation:
    """Puts the generation that the current one replaced back in force."""
    with _lock(store):
        live = current(store)
        _reconcile(store, live)
        if live is None or live.previous is None:
            raise PolicyError("there is no earlier policy to roll back to")
        gen = get(store, live.previous)
        _swap(store, gen)
        with audit.change(store, actor, reason, now) as ch:
            ch.log(
                "policy.rollback",
                f"policy rolled back from generation {live.id} to {gen.id}",
                {"generation": live.id},
                {"generation": gen.id},
            )
    return gen


def _reconcile(store: Store, live: Generation | None) -> None:
    """Logs a generation that went live without its audit entry (the apply was killed between the
    swap and the log), so the trail never misses what was in force."""
    if live is None:
        return
    row = store.db.execute(
        "SELECT after FROM audit WHERE action IN ('policy.apply', 'policy.rollback')"
        " ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    if row is None or json.loads(row["after"])["generation"] != live.id:
        with audit.change(store, "system", "an apply was interrupted after the new policy went live") as ch:
            ch.log(
                "policy.apply",
                f"policy generation {live.id} found in force without an audit entry",
                None,
                {"generation": live.id, "fingerprint": live.manifest["fingerprint"]},
            )


def _collect(store: Store, live: Generation) -> None:
    """Removes old generations and abandoned builds, keeping the live one, the one it replaced and
    the KEEP newest."""
    root = _root(store) / GENERATIONS
    ids = sorted((p.name for p in root.iterdir() if p.name.isdigit()), reverse=True)
    keep = {live.id, live.previous, *ids[:KEEP]}
    for p in root.iterdir():
        if p.name not in keep and (p.name.isdigit() or p.name.startswith(".building-")):
            shutil.rmtree(p, ignore_errors=True)
