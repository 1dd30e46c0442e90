"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

A live uvicorn server in this process serves the dashboard app (``tests.dashboardapp``) on
the in-memory task backend; a task worker runs on its own thread and event loop, so the test
can stop it and start a new one. People are separate browser contexts, signed in by their
session cookie. Screenshots land where ``tests/test_demo.py`` puts them
(``HEADRACE_SCREENSHOTS=docs/img`` refreshes ``docs/img/dashboard*.png``).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.tasks import task_backends
from django.test import Client, override_settings
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from headrace.tasks.worker import TaskWorker
from headrace.testing import LiveServer
from tests.dashboardapp import tasks
from tests.test_demo import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, screenshot

pytestmark = pytest.mark.slow

expect.set_options(timeout=WAIT_MS)


@pytest.fixture(autouse=True)
def _sync_database_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop running in this thread (it drives the
    browser from it between calls); Django would then refuse this test's own database calls
    (users, sessions, the test database's flush) as if they came from async code. They do
    not: allow them here, and only here."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


class ThreadWorker:
    """A :class:`TaskWorker` on its own thread and event loop (a worker process, in short)."""

    def __init__(self) -> None:
        self.worker = TaskWorker("default", ["default"])
        self.thread = threading.Thread(target=asyncio.run, args=(self.worker.run(),))

    def start(self) -> ThreadWorker:
        self.thread.start()
        assert self.worker.wait_started(10)
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def site(transactional_db: None) -> Iterator[LiveServer]:
    tasks_config = {
        "default": {
            "BACKEND": "headrace.tasks.backends.memory.MemoryTaskBackend",
            "QUEUES": ["default"],
        }
    }
    with override_settings(
        ROOT_URLCONF="tests.dashboardapp.urls",
        TASKS=tasks_config,
        HEADRACE_DASHBOARD_INTERVAL=0.2,
    ):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from tests.dashboardapp.asgi import application

        with LiveServer(ASGIStaticFilesHandler(application)) as live:  # type: ignore[arg-type]
            yield live


@pytest.fixture
def workers() -> Iterator[Callable[[], ThreadWorker]]:
    made: list[ThreadWorker] = []

    def start() -> ThreadWorker:
        made.append(ThreadWorker().start())
        return made[-1]

    yield start
    for worker in made:
        if worker.thread.is_alive():
            worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


Person = Callable[..., Page]


@pytest.fixture
def person(browser: Browser, site: LiveServer) -> Iterator[Person]:
    """``person(username, staff=...)``: a page in a browser context signed in as them (or
    anonymous with no name)."""
    contexts: list[BrowserContext] = []

    def make(username: str | None = None, *, staff: bool = False) -> Page:
        context = browser.new_context(
            base_url=site.url,
            viewport={"width": 1400, "height": 900},
            locale="en-GB",
            timezone_id="UTC",
        )
        contexts.append(context)
        if username is not None:
            user = User.objects.create_user(username, password="pw", is_staff=staff)
            client = Client()
            client.force_login(user)
            cookie = client.cookies["sessionid"].value
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": site.url}])
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def expect_live(page: Page) -> None:
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def test_the_dashboard_loads_for_staff_and_is_refused_to_others(person: Person) -> None:
    anonymous = person()
    anonymous.goto("/headrace/")
    assert "/accounts/login/?next=/headrace/" in anonymous.url
    member = person("member")
    response = member.goto("/headrace/")
    assert response is not None
    assert response.status == 403
    staff = person("staff", staff=True)
    response = staff.goto("/headrace/")
    assert response is not None
    assert response.status == 200
    expect_live(staff)
    expect(staff.locator("#queues tr[data-queue=default]")).to_have_count(1)


def test_a_task_appears_and_moves_to_succeeded_without_a_reload(
    person: Person, workers: Callable[[], ThreadWorker]
) -> None:
    page = person("staff", staff=True)
    page.goto("/headrace/")
    expect_live(page)
    page.evaluate("window.stillTheSamePage = true")
    result = tasks.add.enqueue(2, 3)  # no worker yet: it waits
    row = page.locator(f"#jobs tr[data-job='{result.id}']")
    expect(row).to_have_attribute("data-state", "READY")
    expect(page.locator("#queues tr[data-queue=default] .ready")).to_have_text("1")
    workers()
    expect(row).to_have_attribute("data-state", "SUCCESSFUL")
    expect(page.locator("#workers tr.up")).to_have_count(1)
    expect(page.locator("#queues tr[data-queue=default] .ready")).to_have_text("0")
    assert page.evaluate("window.stillTheSamePage") is True

    # The filters: by state, then by task name.
    failed = tasks.explode.enqueue("for the list")
    page.select_option("#f-state", "FAILED")
    expect(page.locator(f"#jobs tr[data-job='{failed.id}']")).to_have_attribute(
        "data-state", "FAILED"
    )
    expect(row).to_have_count(0)
    page.select_option("#f-state", "")
    page.fill("#f-task", "tasks.add")
    expect(row).to_have_count(1)
    expect(page.locator(f"#jobs tr[data-job='{failed.id}']")).to_have_count(0)
    page.fill("#f-task", "")

    # Some traffic for the screenshot: batches of successes (a failure now and then), each
    # seen finished on the page (so the chart has a few points), and one job for later.
    tasks.add.using(run_after=_in(3600)).enqueue(0, 0)
    for batch in range(1, 5):
        for i in range(5 * batch):
            tasks.add.enqueue(i, batch)
        tasks.explode.enqueue(f"batch {batch}")
        expect(page.locator("#jobs tr[data-state=FAILED]")).to_have_count(batch + 1)
        expect(page.locator("#jobs tr[data-state=READY]")).to_have_count(1)
        seen = int(page.evaluate("document.body.dataset.updates"))
        page.wait_for_function(f"Number(document.body.dataset.updates) >= {seen + 6}")
    page.wait_for_function("document.querySelectorAll('#chart-ok')[0].points.length >= 4")
    screenshot(page, "dashboard.png")


def _in(seconds: float) -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_failing_task_shows_its_traceback_and_retry_runs_it_again(
    person: Person, workers: Callable[[], ThreadWorker]
) -> None:
    workers()
    page = person("staff", staff=True)
    page.on("dialog", lambda dialog: dialog.accept())
    failing = tasks.flaky.enqueue("browser")
    page.goto("/headrace/")
    expect_live(page)
    page.locator(f"#jobs tr[data-job='{failing.id}'] a").click()
    page.wait_for_url(re.compile(f"/headrace/jobs/{failing.id}/$"))
    expect_live(page)
    expect(page.locator("#job-state")).to_have_attribute("data-state", "FAILED")
    traceback = page.locator("#job-errors .traceback").first
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ValueError: first run of browser fails")
    expect(page.locator("#job-attempts")).to_have_text("1")
    expect(page.locator("#cancel")).to_be_disabled()
    screenshot(page, "dashboard-job.png")

    page.click("#retry")
    page.wait_for_url(re.compile(r"/headrace/jobs/(?!" + failing.id + r")[0-9a-f]+/$"))
    expect_live(page)
    expect(page.locator("#job-state")).to_have_attribute("data-state", "SUCCESSFUL")
    expect(page.locator("#job-result")).to_have_text('"browser ran again"')
    new_id = page.url.rstrip("/").split("/")[-1]
    assert task_backends["default"].get_result(new_id).return_value == "browser ran again"


def test_purge_and_cancel_ask_for_a_confirmation(
    person: Person, workers: Callable[[], ThreadWorker]
) -> None:
    page = person("staff", staff=True)
    waiting = tasks.add.enqueue(1, 1)  # no worker: it stays READY
    page.goto(f"/headrace/jobs/{waiting.id}/")
    expect_live(page)
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_attribute("data-state", "READY")
    assert asked
    assert asked[0].startswith("Cancel this job?")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    expect(page.locator("#job-state")).to_have_attribute("data-state", "CANCELLED")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#purge")
    page.wait_for_url(re.compile(r"/headrace/\?purged="))
    expect(page.locator(".notice")).to_contain_text(waiting.id)
    assert task_backends["default"].get_job(waiting.id) is None
