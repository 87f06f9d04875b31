"""The dashboard in headless Chromium: log in, open "Scheduled jobs", press Run now, see the run (issue 9).

Needs Debian's ``chromium`` and ``chromium-driver``; skipped cleanly without them.
``DASHBOARD_SCREENSHOT=docs/dashboard.png`` also writes the screenshot there
(how the README's picture is made).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduler_app import schedule_services
from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from scheduler_app.sync import sync_schedules
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        why = "headless Chromium not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI") == "true":  # .ci/run installs it; CI must run this test
            pytest.fail(why)
        pytest.skip(why)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def history() -> None:
    """Some realistic history, so the page shows what an operator would see."""
    rng = random.Random(9)  # noqa: S311 - demo data, not secrets
    now = timezone.now()
    for name, count in (("update-group-statuses", 30), ("archive-audit-logs", 12), ("test-noop", 8)):
        for i in range(count):
            status = "FAILED" if rng.random() < 0.1 else "SUCCEEDED"
            started = now - dt.timedelta(hours=count - i)
            ms = int(rng.uniform(200, 2000))
            JobRun.objects.create(job=name, trigger="beat", status=status, attempts=3 if status == "FAILED" else 1,
                                  started_at=started, finished_at=started + dt.timedelta(milliseconds=ms),
                                  duration_ms=ms, items_processed=rng.randint(0, 500), task_id=uuid.uuid4().hex,
                                  worker="worker1@host:4242")


def test_run_now_in_a_real_browser(browser, live_server, worker, job_redis, tmp_path):
    from selenium.webdriver.common.by import By

    # given an operator, the jobs' schedules and some history
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin")
    sync_schedules(actor="test")
    cron = CrontabSchedule.objects.create(minute="*/10", hour="*", day_of_month="*", month_of_year="*",
                                          day_of_week="*", timezone="UTC")
    PeriodicTask.objects.filter(name="test-noop", task=get_spec("test-noop").task_name).update(crontab=cron)
    schedule_services.pause(PeriodicTask.objects.get(name="send-contribution-summaries"),
                            reason="mail server migration", actor="test")
    history()

    # when they log in and open "Scheduled jobs" from the admin index
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("admin")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.LINK_TEXT, "Scheduled jobs").click()
    assert browser.title.startswith("Scheduled jobs")
    before = JobRun.objects.filter(job="test-noop").count()

    # and press Run now on test-noop
    browser.find_element(By.CSS_SELECTOR, "#job-test-noop input.run-now").click()

    # then the page says it started, with a link to the new run, and the row shows it
    message = browser.find_element(By.CSS_SELECTOR, "ul.messagelist li.success").text
    run = JobRun.objects.filter(job="test-noop", trigger="manual").get()
    assert f"test-noop started: run {run.pk}" in message.lower()  # the admin capitalises messages
    assert JobRun.objects.filter(job="test-noop").count() == before + 1
    wait_for(lambda: JobRun.objects.get(pk=run.pk).status == "SUCCEEDED", 30)
    browser.refresh()
    row = browser.find_element(By.ID, "job-test-noop").text
    assert "SUCCEEDED" in row
    link = browser.find_element(By.CSS_SELECTOR, f"#job-test-noop a[href$='/jobrun/{run.pk}/change/']")
    assert link is not None
    assert "paused by test" in browser.find_element(By.ID, "job-send-contribution-summaries").text
    # and the page fits 1400 px without horizontal scrolling
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1400
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    target = os.environ.get("DASHBOARD_SCREENSHOT")
    if target:
        browser.set_window_size(1400, 1000)
        browser.get(f"{live_server.url}/admin/scheduler/dashboard/")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(height + 120, 2400))
        browser.save_screenshot(target)

    # and the run list shows it with its badge at 1400 px, without horizontal scrolling
    browser.get(f"{live_server.url}/admin/scheduler_app/jobrun/")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1400
    box = browser.execute_script("return document.querySelector('#changelist .results').getBoundingClientRect().right")
    for column in ("job", "status_badge", "started", "duration", "items", "attempts"):
        right = browser.execute_script(
            f"return document.querySelector('th.column-{column}').getBoundingClientRect().right")
        assert right <= min(box, 1400), f"{column} is cut off at 1400 px"
    if target:
        browser.save_screenshot(os.path.join(os.path.dirname(target), "job-runs.png"))
