"""Plant known bugs in a copy of the project and check that the suite catches each one (issue 12).

Usage (from the project root, with the project's virtualenv)::

    .venv/bin/python -m tests.mutations.run_plants            # every plant, 3 runs each
    .venv/bin/python -m tests.mutations.run_plants --runs 1 owner-only-release
    .venv/bin/python -m tests.mutations.run_plants --list
    .venv/bin/python -m tests.mutations.run_plants --baseline  # the same tests without plants must pass

For each plant the tracked files of this working tree are copied to a
temporary folder, the plant's text replacements are applied there (each
``old`` text must occur exactly once, so a plant that no longer matches the
code fails loudly instead of testing nothing), and the plant's tests run
``--runs`` times with pytest. A plant is **caught** when every run fails.
Exit status 0 when every plant was caught (or, with ``--baseline``, when
every run passed), 1 otherwise. The plants themselves are in
:mod:`tests.mutations.plants`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.mutations.plants import PLANTS, Plant

ROOT = Path(__file__).resolve().parents[2]


def copy_tree(dest: Path) -> None:
    """Copy the files git tracks (as they are in the working tree, uncommitted changes included) to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout  # noqa: S607
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def apply(plant: Plant, tree: Path) -> None:
    """Apply ``plant``'s replacements in ``tree``; raise RuntimeError when an ``old`` text is not there exactly once."""
    for edit in plant.edits:
        path = tree / edit.path
        text = path.read_text()
        count = text.count(edit.old)
        if count != 1:
            raise RuntimeError(f"plant {plant.name}: {edit.path} has {count} copies of the text to replace, not 1:\n"
                               f"{edit.old}")
        path.write_text(text.replace(edit.old, edit.new))


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    """Run ``tests`` with pytest in ``tree``; return (passed, seconds, the last lines of output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_TEST_SQLITE_NAME")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
    return done.returncode == 0, time.monotonic() - started, tail


def check(plant: Plant, runs: int, *, baseline: bool) -> bool:
    """Run ``plant``'s tests ``runs`` times on a planted copy (or an unplanted one for ``baseline``).

    True when as expected.
    """
    with tempfile.TemporaryDirectory(prefix=f"plant-{plant.name}-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        if not baseline:
            apply(plant, tree)
        outcomes = []
        for attempt in range(1, runs + 1):
            passed, seconds, tail = run_tests(tree, plant.tests)
            outcomes.append(passed)
            verdict = "passed" if passed else "failed"
            print(f"  run {attempt}/{runs}: tests {verdict} in {seconds:.0f}s", flush=True)
            if passed != baseline:
                print("    " + tail.replace("\n", "\n    "), flush=True)
    return all(outcomes) if baseline else not any(outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="plants to run (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per plant (default 3)")
    parser.add_argument("--list", action="store_true", help="list the plants and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="run each plant's tests without the plant: they must pass")
    args = parser.parse_args(argv)
    known = {p.name: p for p in PLANTS}
    if args.list:
        for plant in PLANTS:
            print(f"{plant.name}: {plant.description}\n    tests: {' '.join(plant.tests)}")
        return 0
    unknown = [n for n in args.names if n not in known]
    if unknown or args.runs < 1:
        print(f"unknown plant(s) {', '.join(unknown)}; known: {', '.join(known)}" if unknown
              else f"--runs={args.runs} is invalid: 1 or more", file=sys.stderr)
        return 2
    selected = [known[n] for n in args.names] or PLANTS
    results = {}
    for plant in selected:
        print(f"{plant.name}: {plant.description}", flush=True)
        results[plant.name] = check(plant, args.runs, baseline=args.baseline)
    print()
    for name, ok in results.items():
        expected = "passed every run" if args.baseline else "caught in every run"
        print(f"{'OK  ' if ok else 'FAIL'} {name}: {expected if ok else 'NOT ' + expected}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
