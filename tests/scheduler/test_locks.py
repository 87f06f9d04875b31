"""Owned locks: only the holder releases; the ad-hoc lock API of SPEC §6."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from scheduler_app import lock_api, locks
from scheduler_app.locks import LockHeld, OwnedRedisBackend


@pytest.fixture
def backend(job_redis):
    return OwnedRedisBackend(settings.CELERY_ONCE["settings"])


def test_only_the_holder_releases_a_lock(backend, job_redis):
    backend.raise_or_lock("qo_t", timeout=5, token="holder-1")
    # a release with another token leaves it alone
    assert backend.clear_lock("qo_t", token="someone-else") is False
    assert job_redis.get("qo_t") == "holder-1"
    # the holder's release removes it
    assert backend.clear_lock("qo_t", token="holder-1") is True
    assert job_redis.get("qo_t") is None


def test_a_held_lock_raises_with_holder_and_seconds_left(backend):
    backend.raise_or_lock("qo_t", timeout=5, token="holder-1")
    with pytest.raises(LockHeld) as err:
        backend.raise_or_lock("qo_t", timeout=5, token="holder-2", wait=0)
    assert err.value.holder is not None and err.value.holder.token == "holder-1"
    assert 4.0 < err.value.countdown <= 5.0


def test_waiting_takes_the_lock_once_the_holder_releases(backend, job_redis):
    backend.raise_or_lock("qo_t", timeout=0.3, token="short")
    started = time.monotonic()
    backend.raise_or_lock("qo_t", timeout=5, token="waiter", wait=2.0)
    assert 0.2 < time.monotonic() - started < 1.0
    assert job_redis.get("qo_t") == "waiter"


def test_renew_only_for_the_holder(backend, job_redis):
    backend.raise_or_lock("qo_t", timeout=1, token="holder-1")
    assert backend.renew("qo_t", "holder-2", 10) is False
    assert job_redis.pttl("qo_t") <= 1000
    assert backend.renew("qo_t", "holder-1", 10) is True
    assert 9000 < job_redis.pttl("qo_t") <= 10000


def test_acquire_release_and_ttl_expiry(job_redis):
    assert lock_api.acquire_lock("report", 0.5) is True
    assert lock_api.acquire_lock("report", 0.5) is False
    assert 0 < job_redis.pttl("qo_adhoc_report") <= 500
    time.sleep(0.6)  # the TTL runs out: the lock is free again
    assert lock_api.acquire_lock("report", 5) is True
    assert lock_api.release_lock("report") is True
    assert lock_api.release_lock("report") is False  # nothing held any more
    assert job_redis.get("qo_adhoc_report") is None


def test_release_does_not_remove_another_holders_lock(job_redis):
    assert lock_api.acquire_lock("report", 5) is True
    job_redis.set("qo_adhoc_report", "another-process-token")  # ours expired and someone else took it
    assert lock_api.release_lock("report") is False
    assert job_redis.get("qo_adhoc_report") == "another-process-token"


def test_with_lock_returns_the_result_or_none_when_held(job_redis):
    assert lock_api.with_lock("report", lambda: 42, 5) == 42
    assert job_redis.get("qo_adhoc_report") is None
    assert lock_api.acquire_lock("report", 5)
    assert lock_api.with_lock("report", lambda: 42, 5) is None
    lock_api.release_lock("report")


def test_context_manager_form(job_redis):
    with lock_api.lock("report", 5) as acquired:
        assert acquired is True
        with lock_api.lock("report", 5) as second:
            assert second is False
        assert job_redis.get("qo_adhoc_report") is not None
    assert job_redis.get("qo_adhoc_report") is None


def test_an_expired_block_does_not_release_the_next_holders_lock(job_redis):
    # given block A whose lock expires while it still works, and B who takes the lock then
    with lock_api.lock("report", 0.2) as a:
        assert a
        time.sleep(0.3)
        with lock_api.lock("report", 30) as b:
            assert b
            b_token = job_redis.get("qo_adhoc_report")
        # (B released its own lock on leaving)
        assert job_redis.get("qo_adhoc_report") is None
        assert lock_api.acquire_lock("report", 30)  # C, in this thread
        c_token = job_redis.get("qo_adhoc_report")
        assert c_token != b_token
    # when A leaves, C's lock is untouched
    assert job_redis.get("qo_adhoc_report") == c_token
    assert lock_api.release_lock("report") is True


def test_another_thread_cannot_release_this_threads_lock(job_redis):
    import threading

    assert lock_api.acquire_lock("report", 30)
    released = []
    worker = threading.Thread(target=lambda: released.append(lock_api.release_lock("report")))
    worker.start()
    worker.join()
    assert released == [False]
    assert job_redis.get("qo_adhoc_report") is not None
    assert lock_api.release_lock("report") is True


@pytest.mark.parametrize(("name", "ttl", "message"), [
    ("", 5, "must not be empty"), ("x", 0, "ttl_seconds=0 is invalid"),
    ("x", 0.0004, "ttl_seconds=0.0004 is invalid"), ("x", float("nan"), "ttl_seconds=nan is invalid"),
])
def test_bad_arguments_are_named(name, ttl, message):
    with pytest.raises(ValueError, match=message):
        lock_api.acquire_lock(name, ttl)


# --- Ownership per acquisition, not per thread (issue 7) ---------------------


def test_two_asyncio_tasks_in_one_thread_do_not_release_each_others_lock(job_redis):
    import asyncio

    results: dict[str, object] = {}

    async def task_a():
        results["a_acquired"] = lock_api.acquire_lock("x", 0.5)
        await asyncio.sleep(1.0)  # A's lock expires at 0.5 s; B takes it at 0.7 s
        results["a_released"] = lock_api.release_lock("x")
        results["after_a"] = job_redis.get("qo_adhoc_x")

    async def task_b():
        await asyncio.sleep(0.7)
        results["b_acquired"] = lock_api.acquire_lock("x", 10)
        results["b_token"] = job_redis.get("qo_adhoc_x")
        await asyncio.sleep(0.6)  # until after A's release
        results["b_released"] = lock_api.release_lock("x")

    async def main():
        await asyncio.gather(task_a(), task_b())

    # given A and B in one thread, A's lock expired and B holding it now
    asyncio.run(main())
    # then A's release is refused and leaves B's lock; B's own release works
    assert results["a_acquired"] is True and results["b_acquired"] is True
    assert results["a_released"] is False
    assert results["after_a"] == results["b_token"] is not None
    assert results["b_released"] is True
    assert job_redis.get("qo_adhoc_x") is None


def test_a_sibling_task_cannot_release_a_lock_it_did_not_acquire(job_redis):
    import asyncio

    async def main():
        acquired = asyncio.Event()
        holder_may_leave = asyncio.Event()

        async def holder():
            assert lock_api.acquire_lock("x", 30)
            acquired.set()
            await holder_may_leave.wait()
            return lock_api.release_lock("x")

        async def sibling():
            await acquired.wait()
            released = lock_api.release_lock("x")
            still_there = job_redis.get("qo_adhoc_x") is not None
            holder_may_leave.set()
            return released, still_there

        return await asyncio.gather(holder(), sibling())

    holder_released, (sibling_released, still_there) = asyncio.run(main())
    assert sibling_released is False and still_there is True
    assert holder_released is True
    assert job_redis.get("qo_adhoc_x") is None


def test_work_started_from_the_acquirer_after_acquiring_carries_the_acquisition(job_redis):
    import asyncio

    async def main():
        assert lock_api.acquire_lock("x", 30)
        # asyncio.to_thread runs in a copy of this task's context: it holds the same acquisition
        released_by_helper = await asyncio.to_thread(lock_api.release_lock, "x")
        return released_by_helper, lock_api.release_lock("x")

    released_by_helper, released_by_acquirer = asyncio.run(main())
    assert released_by_helper is True
    assert released_by_acquirer is False  # already released by the work it handed the lock to
    assert job_redis.get("qo_adhoc_x") is None


def test_a_release_from_another_thread_with_the_token_is_owner_only(backend, job_redis):
    # the job lock's holder is its token, whatever thread acts for it (the renewer is another thread)
    import threading

    backend.raise_or_lock("qo_t", timeout=30, token="task-1", wait=0)
    results = []
    worker = threading.Thread(target=lambda: results.extend(
        [backend.clear_lock("qo_t", token="task-2"), backend.renew("qo_t", "task-1", 60),
         backend.clear_lock("qo_t", token="task-1")]))
    worker.start()
    worker.join()
    assert results == [False, True, True]
    assert job_redis.get("qo_t") is None


# --- claim and renew ----------------------------------------------------------


def test_claim_takes_a_free_lock_confirms_its_own_and_refuses_anothers(backend, job_redis):
    assert backend.claim("qo_t", "task-1", 1) == locks.CLAIM_TAKEN
    assert job_redis.get("qo_t") == "task-1"
    assert backend.claim("qo_t", "task-1", 10) == locks.CLAIM_HELD_ALREADY
    assert 9000 < job_redis.pttl("qo_t") <= 10000  # TTL reset to the claim's
    assert backend.claim("qo_t", "task-2", 10) == locks.CLAIM_REFUSED
    assert job_redis.get("qo_t") == "task-1"


def test_renew_of_an_expired_lock_is_false_and_does_not_recreate_it(backend, job_redis):
    backend.raise_or_lock("qo_t", timeout=0.1, token="task-1", wait=0)
    time.sleep(0.2)
    assert backend.renew("qo_t", "task-1", 10) is False
    assert job_redis.get("qo_t") is None


@pytest.mark.parametrize("timeout", [0, 0.0004, float("inf"), None])
def test_a_bad_lock_timeout_is_named(backend, timeout):
    with pytest.raises(ValueError, match=f"timeout={timeout!r} is invalid"):
        backend.raise_or_lock("qo_t", timeout=timeout, token="task-1")


@pytest.mark.parametrize("wait", [-1, float("nan")])
def test_a_bad_wait_is_named(backend, job_redis, wait):
    job_redis.set("qo_t", "holder", px=30_000)
    with pytest.raises(ValueError, match=f"wait={wait!r} is invalid"):
        backend.raise_or_lock("qo_t", timeout=5, token="task-1", wait=wait)


# --- REDIS_URL options (issue 7) ----------------------------------------------


def test_options_in_the_url_win_over_the_client_defaults(job_redis):
    url = f"{settings.REDIS_URL}?socket_timeout=5&health_check_interval=7"
    backend = OwnedRedisBackend({"url": url})
    options = backend.redis.connection_pool.connection_kwargs
    assert options["socket_timeout"] == 5.0
    assert options["health_check_interval"] == 7
    assert options["socket_connect_timeout"] == 5.0  # a default the URL does not set
    # and the backend works on it
    assert backend.raise_or_lock("qo_t", timeout=5, token="task-1", wait=0) == "task-1"
    assert backend.clear_lock("qo_t", token="task-1") is True


def test_a_url_without_options_gets_the_client_defaults():
    options = locks.get_client(settings.REDIS_URL).connection_pool.connection_kwargs
    assert (
        options["socket_timeout"], options["socket_connect_timeout"], options["health_check_interval"]
    ) == (10.0, 5.0, 30)


def test_a_rediss_url_makes_a_tls_client_with_its_options():
    import redis

    client = locks.get_client("rediss://:secret@127.0.0.1:6390/2?ssl_cert_reqs=none&socket_timeout=3")
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    assert pool.connection_kwargs["socket_timeout"] == 3.0
    assert pool.connection_kwargs["db"] == 2


def test_celery_onces_unix_socket_url_is_understood():
    import redis

    pool = locks.get_client("redis+socket:///tmp/redis.sock?db=3").connection_pool
    assert pool.connection_class is redis.UnixDomainSocketConnection
    assert (pool.connection_kwargs["path"], pool.connection_kwargs["db"]) == ("/tmp/redis.sock", 3)


def test_an_unknown_url_option_is_named_and_the_password_is_not():
    with pytest.raises(ValueError, match="does not know.*'sockettimeout'") as err:
        locks.get_client("redis://:secret@127.0.0.1:6390/0?sockettimeout=5")
    assert "secret" not in str(err.value)


def test_a_sentinel_url_makes_a_client_of_the_master_it_names():
    from redis.sentinel import SentinelConnectionPool

    client = locks.get_client("sentinel://:secret@127.0.0.1:26390/2;sentinel://127.0.0.1:26391/2"
                              "?master_name=mymaster&socket_timeout=3")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
    # the master's connections: the first part's database and password, the URL's options over the defaults
    options = pool.connection_kwargs
    assert (options["db"], options["password"]) == (2, "secret")
    assert (options["socket_timeout"], options["socket_connect_timeout"], options["health_check_interval"]) == (
        3.0, 5.0, 30)
    # every sentinel is asked, without the master's password
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sentinels] == [("127.0.0.1", 26390), ("127.0.0.1", 26391)]
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)


def test_a_sentinel_url_without_a_master_name_is_refused():
    with pytest.raises(ValueError, match=r"needs the master's name as \?master_name=NAME"):
        locks.get_client("sentinel://127.0.0.1:26390;sentinel://127.0.0.1:26391/0")


def test_an_unknown_option_of_a_sentinel_url_is_named_and_the_password_is_not():
    with pytest.raises(ValueError, match="does not know.*'sockettimeout'") as err:
        locks.get_client("sentinel://:secret@127.0.0.1:26390;sentinel://:secret@127.0.0.1:26391/0"
                         "?master_name=m&sockettimeout=5")
    assert "secret" not in str(err.value)
    assert "sentinel://***@127.0.0.1:26390;sentinel://***@127.0.0.1:26391/0" in str(err.value)


# --- celery-once's blocking / blocking_timeout (issue 7) ----------------------


def _backend_with(**once_settings) -> OwnedRedisBackend:
    return OwnedRedisBackend({"url": settings.REDIS_URL, "default_timeout": 600, **once_settings})


def _seconds_to_refuse(backend: OwnedRedisBackend, **kwargs) -> float:
    started = time.monotonic()
    with pytest.raises(LockHeld):
        backend.raise_or_lock("qo_t", timeout=5, token="waiter", **kwargs)
    return time.monotonic() - started


def test_without_blocking_a_held_lock_is_refused_at_once(job_redis):
    # given celery-once's default (blocking off), even with a blocking_timeout set
    backend = _backend_with(blocking_timeout=5)
    backend.raise_or_lock("qo_t", timeout=30, token="holder", wait=0)
    # then raise_or_lock as celery-once calls it makes one try
    assert _seconds_to_refuse(backend) < 0.2


def test_with_blocking_it_waits_blocking_timeout_then_refuses(job_redis):
    backend = _backend_with(blocking=True, blocking_timeout=0.5)
    backend.raise_or_lock("qo_t", timeout=30, token="holder", wait=0)
    assert 0.45 < _seconds_to_refuse(backend) < 1.0


def test_with_blocking_it_takes_the_lock_once_released(job_redis):
    backend = _backend_with(blocking=True, blocking_timeout=None)  # None: no limit (celery-once's meaning)
    assert backend.default_wait == float("inf")
    backend.raise_or_lock("qo_t", timeout=0.3, token="short", wait=0)
    started = time.monotonic()
    assert backend.raise_or_lock("qo_t", timeout=5, token="waiter") == "waiter"
    assert 0.2 < time.monotonic() - started < 1.0


def test_the_callers_wait_overrides_the_settings(job_redis):
    job_redis.set("qo_t", "holder", px=30_000)
    assert _seconds_to_refuse(_backend_with(blocking=True, blocking_timeout=5), wait=0) < 0.2
    assert 0.25 < _seconds_to_refuse(_backend_with(blocking=False), wait=0.3) < 0.8


def test_the_projects_settings_wait_one_second():
    backend = OwnedRedisBackend(settings.CELERY_ONCE["settings"])
    assert (backend.blocking, backend.default_wait) == (True, 1.0)


@pytest.mark.parametrize(("once_settings", "message"), [
    ({"blocking": "yes"}, "blocking='yes' is invalid"),
    ({"blocking": True, "blocking_timeout": -1}, "blocking_timeout=-1 is invalid"),
    ({"blocking": True, "blocking_timeout": "1"}, "blocking_timeout='1' is invalid"),
])
def test_bad_blocking_settings_are_named(once_settings, message):
    with pytest.raises(ValueError, match=message):
        _backend_with(**once_settings)


@pytest.mark.django_db
def test_a_beat_trigger_waits_as_the_settings_say_and_a_manual_one_never(job_redis, monkeypatch):
    import datetime as dt

    from celery import current_app

    from scheduler_app.jobs import get_spec, iso, make_task_id

    spec = get_spec("test-noop")
    task = current_app.tasks[spec.task_name]
    slot = dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC)
    # given the lock held by a run of an earlier scheduled time
    job_redis.set(spec.lock_key, make_task_id("test-noop", slot - dt.timedelta(hours=1)), px=30_000)

    def seconds_to_refuse(kwargs) -> float:
        started = time.monotonic()
        _, _, rejected = task.reserve(kwargs)
        assert rejected is not None and rejected.state == "REJECTED"
        return time.monotonic() - started

    # the project's settings (blocking, 1 s): a beat trigger waits 1 s, a manual one does not
    monkeypatch.setattr(type(task), "_backend_instance", OwnedRedisBackend(settings.CELERY_ONCE["settings"]),
                        raising=False)
    assert 0.95 < seconds_to_refuse({"trigger": "beat", "scheduled_for": iso(slot)}) < 1.8
    assert seconds_to_refuse({"trigger": "manual"}) < 0.3
    # blocking off: a beat trigger does not wait either
    monkeypatch.setattr(type(task), "_backend_instance", _backend_with(blocking=False, blocking_timeout=1.0))
    assert seconds_to_refuse({"trigger": "beat", "scheduled_for": iso(slot + dt.timedelta(hours=1))}) < 0.3
