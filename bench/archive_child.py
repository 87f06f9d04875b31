"""Child process of the archive benchmark: ``python -m bench.archive_child``.

Started by :func:`bench.archive.run_job_in_child` with the bench's
environment (its database and Redis). Sets up Django, runs
``archive_old_logs(days=90, now=bench.archive.NOW)`` once and prints one JSON
line: rows moved, seconds, the batch size, the peak RSS after Django's setup
and the process's peak RSS over the whole run.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this
    process's own memory. ``ru_maxrss`` is not used there because exec keeps
    the larger of it and the parent's RSS at fork time, so a big parent
    would show through.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # macOS: bytes, else KiB


def main() -> None:
    import django

    django.setup()
    from django.conf import settings

    from audit.services import archive_old_logs
    from bench.archive import DAYS, NOW

    after_setup = _peak_rss_mb()
    started = time.perf_counter()
    moved = archive_old_logs(days=DAYS, now=NOW)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "moved": moved,
        "seconds": seconds,
        "batch_size": settings.ARCHIVE_BATCH_SIZE,
        "rss_after_setup_mb": after_setup,
        "peak_rss_mb": _peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
