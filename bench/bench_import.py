"""Importing a generated 5M-domain UT1-style category set: time and peak memory, beside a baseline.

Target (issue 4): the import takes 30 s or less and 200 MB or less on the project's 2-core machines.

The baseline is the naive importer: read every `domains` file's lines into one Python set (no
validation, no hashing, nothing stored). Also measured: an incremental update (1% of the largest
category changed) and compiling everything into the fast-path table (`policy apply`). Each step runs
in its own process so that its peak RSS (ru_maxrss) is its own.

    .venv/bin/python bench/bench_import.py [--domains 5000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import synthetic_domains

# UT1-like category sizes, as shares of the whole set (adult dominates, as in UT1 itself).
SHARES = {"adult": 0.70, "publicite": 0.12, "malware": 0.07, "gambling": 0.04, "phishing": 0.03,
          "social_networks": 0.02, "games": 0.012, "vpn": 0.008}  # fmt: skip
URLS_PER_CATEGORY = 0.01  # UT1 categories also carry a `urls` file, much smaller
TARGET_SECONDS = 30
TARGET_BYTES = 200 * 1024 * 1024
MiB = 1024 * 1024


def generate(root: Path, n: int) -> None:
    names = synthetic_domains(n, seed=1)
    rng = random.Random(3)
    start = 0
    for i, (category, share) in enumerate(SHARES.items()):
        end = n if i == len(SHARES) - 1 else start + int(n * share)
        folder = root / category
        folder.mkdir(parents=True)
        (folder / "domains").write_text("\n".join(names[start:end]) + "\n")
        picks = rng.sample(names[start:end], int((end - start) * URLS_PER_CATEGORY))
        (folder / "urls").write_text("".join(f"{p}/page/{rng.randrange(10**6)}.html\n" for p in picks))
        start = end


def change_one_percent(folder: Path) -> bytes:
    """Drops 1% of the category's domains and adds as many new ones, as a nightly update would;
    returns the original file for restoring."""
    original = (folder / "domains").read_bytes()
    lines = original.decode().splitlines()
    keep = lines[len(lines) // 100 :]
    fresh = [f"new{i}-{name}" for i, name in enumerate(lines[: len(lines) // 100])]
    (folder / "domains").write_text("\n".join(keep + fresh) + "\n")
    return original


# --- the measured steps, each run in a child process ----------------------------------------------


def child_baseline(root: Path, state: Path) -> None:
    entries: set[str] = set()
    for domains in sorted(root.glob("*/domains")):
        with open(domains) as f:
            entries.update(line.strip() for line in f.readlines())
    print(f"{len(entries):,} entries", file=sys.stderr)


def child_import(root: Path, state: Path) -> None:
    from appliance import audit
    from appliance.lists import catalogue, importer, ut1
    from appliance.store import Store

    with Store(state) as store:
        with audit.change(store, "bench", "benchmark") as ch:
            for folder in ut1.category_folders(root):
                catalogue.add(
                    ch, f"ut1-{folder.name}", "ut1", ut1.UT1_CATEGORIES[folder.name], str(folder), None
                )
        total = 0
        for info in catalogue.all_lists(store):
            result = importer.update(store, info.name, "bench", "benchmark")
            assert result.error is None, result.error
            total += result.domains + result.exact + result.pages
    print(f"{total:,} entries", file=sys.stderr)


def child_update(root: Path, state: Path) -> None:
    from appliance.lists import importer
    from appliance.store import Store

    with Store(state) as store:
        result = importer.update(store, "ut1-adult", "bench", "benchmark")
    assert result.error is None, result.error
    print(f"+{result.added:,} -{result.removed:,}", file=sys.stderr)


def child_apply(root: Path, state: Path) -> None:
    from datetime import UTC, datetime

    from appliance.policy import generations, inputs
    from appliance.store import Store

    with Store(state) as store:
        gen = generations.apply(store, inputs.from_store(store, datetime.now(UTC)), "bench", "benchmark")
    print(f"generation {gen.id}", file=sys.stderr)


CHILDREN = {"baseline": child_baseline, "import": child_import, "update": child_update, "apply": child_apply}


def peak_rss() -> int:
    """This process's peak resident set size since it started (VmHWM; exec resets it, unlike the
    ru_maxrss of a child forked from a large parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(step: str, root: Path, state: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, what the step reported) for one step in a fresh process."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", step, str(root), str(state)],
                          capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{step} failed: {proc.stderr}")
    peak = proc.stdout.split()[-1]
    return elapsed, int(peak), proc.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=5_000_000)
    parser.add_argument("--keep", type=Path, help="generate the set here (or reuse it) instead of a temp dir")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "ROOT", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, root, state = args.child
        CHILDREN[step](Path(root), Path(state))
        print(peak_rss())
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-import-"))
    root, state = work / "ut1", work / "state"
    if not (root / "adult" / "domains").exists():
        t = time.perf_counter()
        generate(root, args.domains)
        took = time.perf_counter() - t
        print(f"generated {args.domains:,} domains in {len(SHARES)} categories ({took:.0f} s)")
    shutil.rmtree(state, ignore_errors=True)
    try:
        rows = [("baseline: readlines into a set", *measure("baseline", root, state))]
        rows.append(("appliance: import (parse, hash, store)", *measure("import", root, state)))
        original = change_one_percent(root / "adult")
        try:
            rows.append(("appliance: update 1% of adult", *measure("update", root, state)))
        finally:
            (root / "adult" / "domains").write_bytes(original)  # a kept set stays as generated
        rows.append(("appliance: apply (compile the table)", *measure("apply", root, state)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    base_time, base_rss = rows[0][1], rows[0][2]
    print(f"\nbench_import: {args.domains:,} domains, UT1-style set of {len(SHARES)} categories")
    print(f"{'step':42} {'time':>8} {'peak RSS':>10}   vs baseline   result")
    for name, seconds, rss, note in rows:
        ratio = f"{seconds / base_time:4.1f}x, {rss / base_rss:4.2f}x"
        print(f"{name:42} {seconds:7.1f}s {rss / MiB:7.0f} MiB   {ratio:12}  {note}")
    import_time, import_rss = rows[1][1], rows[1][2]
    ok = import_time <= TARGET_SECONDS and import_rss <= TARGET_BYTES
    print(f"\ntarget: import <= {TARGET_SECONDS} s and <= {TARGET_BYTES // MiB} MiB: "
          f"{import_time:.1f} s, {import_rss / MiB:.0f} MiB -> {'MET' if ok else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
