"""The side-by-side table, the targets (issue 3) and the JSON file."""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

Results = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal on one measured value, e.g. ``archive.ratio_to_raw_sql >= 0.5``."""

    name: str
    key: str
    compare: str  # ">=", "<=" or "=="
    limit: Callable[[Results], float]
    limit_text: str

    def check(self, results: Results) -> dict[str, Any] | None:
        if self.key not in results:
            return None
        value, limit = results[self.key], self.limit(results)
        ops = {">=": operator.ge, "<=": operator.le, "==": operator.eq}
        return {"key": self.key, "value": value, "limit": limit, "compare": self.compare,
                "met": bool(ops[self.compare](value, limit))}


TARGETS = (
    Target("archive vs plain SQL", "archive.ratio_to_raw_sql", ">=", lambda r: 0.5, ">= 0.5"),
    Target("archive vs naive ORM", "archive.ratio_to_naive_orm", ">=", lambda r: 20, ">= 20x"),
    Target("archive peak RSS", "archive.peak_rss_mb", "<=", lambda r: round(1.25 * r["archive.peak_rss_mb_small"], 1),
           "<= 1.25x small"),
    # Issue 10: statements per email constant (the total grows with the batches, on purpose: one record per batch).
    Target("summaries queries per email at 10x", "summaries.queries_per_email_at_10x", "<=",
           lambda r: r["summaries.queries_per_email"], "<= per email at 1x"),
    Target("summaries 2 vs 1 worker process", "summaries.smtp_speedup_2_workers", ">=", lambda r: 1.6, ">= 1.6x"),
    Target("summaries cost vs Django's loop", "summaries.smtp_cost_ratio_to_baseline", "<=", lambda r: 1.5,
           "<= 1.5x"),
    Target("statuses queries at 10x", "statuses.queries_at_10x", "==", lambda r: r["statuses.queries"], "== queries"),
    Target("statuses vs plain SQL", "statuses.seconds", "<=", lambda r: round(3 * r["statuses.raw_sql_seconds"], 4),
           "<= 3x plain SQL"),
    Target("lock vs plain Redis", "lock.ratio", ">=", lambda r: 0.8, ">= 0.8"),
)


def check_targets(results: Results) -> dict[str, dict[str, Any]]:
    checked = {}
    for target in TARGETS:
        outcome = target.check(results)
        if outcome is not None:
            checked[target.name] = outcome
    return checked


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _rows(r: Results) -> list[tuple[str, str, str, str, str]]:
    """(what, this code, baseline, ratio, target key) per line, for the sections that ran."""
    rows = []
    if "archive.rows" in r:
        rows += [
            (f"archive, {_n(r['archive.rows'])} old rows", f"{_n(r['archive.rows_per_s'])} rows/s",
             f"plain SQL {_n(r['archive.raw_sql_rows_per_s'])} rows/s", f"{r['archive.ratio_to_raw_sql']:.2f}",
             "archive vs plain SQL"),
            ("archive vs row-by-row ORM", f"{_n(r['archive.rows_per_s'])} rows/s",
             f"ORM loop {_n(r['archive.naive_orm_rows_per_s'])} rows/s ({_n(r['archive.naive_orm_rows'])} rows)",
             f"{r['archive.ratio_to_naive_orm']:.0f}x", "archive vs naive ORM"),
            ("archive peak RSS (child process)", f"{r['archive.peak_rss_mb']:.1f} MB at {_n(r['archive.rows'])}",
             f"{r['archive.peak_rss_mb_small']:.1f} MB at {_n(r['archive.rows_small'])}",
             f"{r['archive.peak_rss_ratio']:.2f}", "archive peak RSS"),
        ]
    if "summaries.groups" in r:
        rows += [
            (f"summaries, {_n(r['summaries.groups'])} groups, {_n(r['summaries.emails'])} emails",
             f"{r['summaries.seconds']:.2f} s, {r['summaries.queries']} queries",
             f"{_n(r['summaries.groups_at_10x'])} groups: {r['summaries.seconds_at_10x']:.1f} s, "
             f"{r['summaries.queries_at_10x']} queries",
             f"{r['summaries.queries_at_10x'] / r['summaries.queries']:.1f}x q", ""),
            ("  statements per email", f"{r['summaries.queries_per_email']:.3f}",
             f"at 10x: {r['summaries.queries_per_email_at_10x']:.3f}",
             f"{r['summaries.queries_per_email_at_10x'] / r['summaries.queries_per_email']:.2f}x",
             "summaries queries per email at 10x"),
            ("  of which generating", f"{r['summaries.generate_queries']} queries",
             f"at 10x: {r['summaries.generate_queries_at_10x']} queries",
             f"{r['summaries.generate_queries_at_10x'] / r['summaries.generate_queries']:.1f}x q", ""),
        ]
    if "summaries.smtp_emails" in r:
        rows += [
            (f"summaries via SMTP, {_n(r['summaries.smtp_emails'])} emails, 1 worker process",
             f"{_n(r['summaries.smtp_emails_per_s_1_worker'])} emails/s",
             f"Django's loop, 1 connection {_n(r['summaries.smtp_baseline_emails_per_s'])} emails/s",
             f"{r['summaries.smtp_cost_ratio_to_baseline']:.2f}x cost", "summaries cost vs Django's loop"),
            ("summaries via SMTP, 2 worker processes", f"{_n(r['summaries.smtp_emails_per_s_2_workers'])} emails/s",
             f"1 process {_n(r['summaries.smtp_emails_per_s_1_worker'])} emails/s",
             f"{r['summaries.smtp_speedup_2_workers']:.2f}x", "summaries 2 vs 1 worker process"),
            ("  CPU per email, 2 processes (all parts)", f"{r['summaries.smtp_cpu_ms_per_email_2_workers']:.2f} ms",
             f"other work used {r['summaries.smtp_other_work_cores_2_workers']:.2f} of {r['meta.cpus']} cores"
             if "meta.cpus" in r else f"other work used {r['summaries.smtp_other_work_cores_2_workers']:.2f} cores",
             f"ceiling {r['summaries.smtp_cpu_ceiling_speedup_2_workers_left_by_others']:.2f}x", ""),
        ]
    if "statuses.groups" in r:
        rows += [
            (f"statuses, {_n(r['statuses.groups'])} groups ({_n(r['statuses.transitions'])} change)",
             f"{r['statuses.seconds']:.3f} s", f"plain SQL UPDATEs {r['statuses.raw_sql_seconds']:.3f} s",
             f"{r['statuses.ratio_to_raw_sql']:.1f}x time", "statuses vs plain SQL"),
            ("  same work in plain SQL (UPDATEs + audit rows)", "", f"{r['statuses.raw_same_work_seconds']:.3f} s",
             f"{r['statuses.seconds'] / r['statuses.raw_same_work_seconds']:.1f}x time", ""),
            ("statuses queries", f"{r['statuses.queries']} queries",
             f"{_n(r['statuses.groups_at_10x'])} groups: {r['statuses.queries_at_10x']} queries",
             f"{r['statuses.queries_at_10x'] / r['statuses.queries']:.1f}x q", "statuses queries at 10x"),
        ]
    if "lock.ops_per_s" in r:
        rows.append(("lock acquire+release", f"{_n(r['lock.ops_per_s'])} ops/s",
                     f"SET NX PX + DEL {_n(r['lock.raw_redis_ops_per_s'])} ops/s", f"{r['lock.ratio']:.2f}",
                     "lock vs plain Redis"))
    if "dispatch.p50_ms" in r:
        rows += [
            ("dispatch, trigger -> job start", f"p50 {r['dispatch.p50_ms']:.1f} ms, p95 {r['dispatch.p95_ms']:.1f} ms",
             f"({r['dispatch.samples']} runs, real worker)", "", ""),
            ("dispatch, no-op throughput", f"{r['dispatch.jobs_per_s']:.0f} jobs/s",
             f"plain Celery task {r['dispatch.plain_celery_tasks_per_s']:.0f} tasks/s", f"{r['dispatch.ratio']:.2f}",
             ""),
            ("dispatch, `manage.py run_job` wall time", f"{r['dispatch.run_job_wall_ms']:.0f} ms (median)",
             f"`manage.py check` {r['dispatch.manage_py_start_ms']:.0f} ms",
             f"+{r['dispatch.run_job_wall_ms'] - r['dispatch.manage_py_start_ms']:.0f} ms", ""),
        ]
    if "admin.auditlog_rows" in r:
        rows.append((f"audit log admin list, {_n(r['admin.auditlog_rows'])} rows",
                     f"{r['admin.auditlog_changelist_ms']:.1f} ms",
                     f"counting paginator {r['admin.auditlog_changelist_ms_counting']:.1f} ms",
                     f"{r['admin.auditlog_changelist_ms_counting'] / r['admin.auditlog_changelist_ms']:.1f}x", ""))
    return rows


def table(results: Results, targets: dict[str, dict[str, Any]]) -> str:
    head = ("benchmark", "this code", "baseline / limit", "ratio", "target")
    lines = []
    for what, ours, baseline, ratio, target_name in _rows(results):
        target = ""
        if target_name in targets:
            spec = next(t for t in TARGETS if t.name == target_name)
            target = f"{spec.limit_text}: {'ok' if targets[target_name]['met'] else 'MISSED'}"
        lines.append((what, ours, baseline, ratio, target))
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    out = []
    for n, row in enumerate([head, *lines]):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def write_json(path: Path, results: Results, targets: dict[str, dict[str, Any]]) -> None:
    """Flat dotted keys as SPEC §8 names them, the same values grouped by section, and the targets."""
    document: dict[str, Any] = dict(results)
    for key, value in results.items():
        section, _, name = key.partition(".")
        document.setdefault(section, {})[name] = value
    document["targets"] = targets
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
