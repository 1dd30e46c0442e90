"""The demo (``make demo``) in a real browser: Debian's Chromium driven by Playwright.

The demo runs exactly as ``make demo`` runs it — ``demo/run.sh`` (migrate, demo user,
``runserver``) — in a subprocess with its own settings module, SQLite file and a free port, and
is stopped the way a person stops it: SIGINT to its process group, like Ctrl-C. Nothing in
this process shares Django settings with it. One Chromium serves every test; each test opens
its own browser contexts (separate cookies and storage: separate people).

The tests also take the screenshots the README shows. They land in a temporary folder, so a
test run leaves the tree clean; ``make screenshots`` (``HEADRACE_SCREENSHOTS=docs/img``)
refreshes ``docs/img/*.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _connect

from tests.redis_servers import servers

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
SCREENSHOTS = Path(
    os.environ.get("HEADRACE_SCREENSHOTS") or Path(tempfile.gettempdir(), "headrace-screenshots")
).resolve()
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds between two progress steps: a job takes 34 steps, so about 1.7 s.
STEP_SECONDS = "0.05"
#: Playwright waits at most this long (ms) for any condition.
WAIT_MS = 15_000

expect.set_options(timeout=WAIT_MS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DemoServer:
    """``demo/run.sh`` in its own process group, on a fixed port, until :meth:`stop`."""

    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log_path = workdir / "demo-server.log"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="demo_site.settings",
            DEMO_DB=str(workdir / "demo.sqlite3"),
            DEMO_PYTHON=sys.executable,
            DEMO_STEP_SECONDS=STEP_SECONDS,
            PYTHONUNBUFFERED="1",
        )
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> DemoServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(DEMO / "run.sh"), "--noreload", f"127.0.0.1:{self.port}"],
                cwd=DEMO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # A person's Ctrl-C must reach it even if this process ignores SIGINT.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the demo did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C: SIGINT to the whole process group; returns the exit status."""
        process = self.process
        if process is None:
            return 0
        self.process = None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise RuntimeError(
                    f"the demo ignored Ctrl-C for {timeout} s:\n{self.log()}"
                ) from None
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def ws_connect(url: str, origin: str) -> ClientConnection:
    return _connect(url, origin=origin, proxy=None, open_timeout=5)  # type: ignore[arg-type]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    server = DemoServer(tmp_path_factory.mktemp("demo")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


NewContext = Callable[..., BrowserContext]


@pytest.fixture
def new_context(browser: Browser, demo: DemoServer) -> Iterator[NewContext]:
    """Make a fresh browser context (a separate person) for the demo server."""
    made: list[BrowserContext] = []

    def make(base_url: str | None = None, **options: Any) -> BrowserContext:
        context = browser.new_context(
            base_url=base_url or demo.url,
            viewport={"width": 1280, "height": 800},
            locale="en-GB",
            timezone_id="UTC",
            **options,
        )
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def sign_in(page: Page, then: str) -> None:
    page.goto(f"/accounts/login/?next={then}")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(re.compile(re.escape(then) + "$"))


def expect_live(page: Page) -> None:
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save ``<SCREENSHOTS>/<name>`` (animations finish first, so nothing is half-drawn)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), animations="disabled", full_page=full_page)


# -- the index page ------------------------------------------------------------------------------


@pytest.mark.slow
def test_index_says_what_each_page_shows_and_links_to_it(new_context: NewContext) -> None:
    page = new_context().new_page()
    page.goto("/")
    expect(page.locator("h1")).to_have_text("Real-time Django in one process.")
    cards = page.locator(".card")
    expect(cards).to_have_count(3)
    expect(page.locator("#card-chat")).to_contain_text("group")
    expect(page.locator("#card-progress")).to_contain_text("delay server")
    expect(page.locator("#card-blog")).to_contain_text("post_save")
    expect(page.locator("footer")).to_contain_text("InMemoryChannelLayer")
    screenshot(page, "index.png", full_page=True)
    for card, url in [("chat", "/chat/"), ("progress", "/progress/"), ("blog", "/blog/")]:
        page.goto("/")
        page.locator(f"#card-{card} .button").click()
        page.wait_for_url(re.compile(re.escape(url) + "$"))
    # The chat lobby turns any name into a room URL.
    page.goto("/chat/")
    page.fill("#room-name", "Team room!")
    page.press("#room-name", "Enter")
    page.wait_for_url(re.compile(r"/chat/Team-room/$"))
    expect(page.locator("h1")).to_have_text("#Team-room")


# -- chat ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_people_chat_with_names_notices_and_history(new_context: NewContext) -> None:
    room = "/chat/headrace/"
    alice = new_context().new_page()
    sign_in(alice, room)
    expect_live(alice)
    expect(alice.locator("#me-name")).to_have_text("demo")
    alice.fill("#message", "Anyone here? The demo is up.")
    alice.press("#message", "Enter")
    expect(alice.locator(".msg.mine .msg-text")).to_have_text(["Anyone here? The demo is up."])

    # A guest arrives later, picks a nickname, and sees what was said before.
    ada = new_context().new_page()
    ada.goto(room)
    expect(ada.locator("#nick-form")).to_be_visible()
    ada.fill("#nick", "Ada")
    ada.click("#nick-form button")
    expect_live(ada)
    expect(ada.locator(".msg .msg-text")).to_have_text(["Anyone here? The demo is up."])
    expect(ada.locator(".msg .msg-author")).to_have_text(["demo"])
    expect(ada.locator(".notice").last).to_have_text("Ada joined")
    expect(alice.locator(".notice").last).to_have_text("Ada joined")

    # Both ways, and user text stays text (no markup is ever interpreted).
    ada.fill("#message", "Hi! <b>bold?</b> <img src=x onerror=alert(1)>")
    ada.press("#message", "Enter")
    said = alice.locator(".msg:not(.mine) .msg-text")
    expect(said).to_have_text(["Hi! <b>bold?</b> <img src=x onerror=alert(1)>"])
    expect(alice.locator("#log img, #log b")).to_have_count(0)
    expect(alice.locator(".msg:not(.mine) .badge")).to_have_text(["guest"])
    alice.fill("#message", "Welcome, Ada. Messages go through one group_send.")
    alice.press("#message", "Enter")
    expect(ada.locator(".msg .msg-text").last).to_have_text(
        "Welcome, Ada. Messages go through one group_send."
    )
    ada.fill("#message", "And every tab in the room gets them at once.")
    ada.press("#message", "Enter")
    expect(alice.locator(".msg .msg-text")).to_have_count(4)

    # A message the server refuses is explained, and the connection stays up.
    ada.evaluate("document.getElementById('message').removeAttribute('maxlength')")
    ada.fill("#message", "x" * 501)
    ada.press("#message", "Enter")
    expect(ada.locator("#hint")).to_contain_text("message too long")
    expect_live(ada)

    ada.close()
    expect(alice.locator(".notice").last).to_have_text("Ada left")
    screenshot(alice, "chat.png")


def test_the_chat_socket_refuses_bad_frames_and_keeps_serving(demo: DemoServer) -> None:
    origin = demo.url
    with ws_connect(demo.ws_url + "/ws/chat/frames/?name=Probe", origin=origin) as ws:
        kinds = [json.loads(ws.recv(timeout=5))["type"] for _ in range(3)]
        assert kinds == ["welcome", "history", "notice"]
        for frame, reason in [
            ("not json", "not JSON"),
            ("[1, 2]", "expected"),
            ('{"message": 42}', "expected"),
            ('{"message": "   "}', "empty"),
            (json.dumps({"message": "y" * 501}), "too long"),
            (b"\x00\xff", "binary"),
        ]:
            ws.send(frame)
            reply = json.loads(ws.recv(timeout=5))
            assert reply["type"] == "error"
            assert reason in reply["error"]
        ws.send(json.dumps({"message": "still here"}))
        assert json.loads(ws.recv(timeout=5))["text"] == "still here"
        # Far over HEADRACE_WEBSOCKET_MAX_MESSAGE_SIZE (64 KiB): the server closes with 1009.
        ws.send(json.dumps({"message": "z" * 100_000}))
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    with ws_connect(demo.ws_url + "/ws/chat/frames/?name=%3Cscript%3E", origin=origin) as ws:
        welcome = json.loads(ws.recv(timeout=5))
        assert welcome["name"] == "<script>"  # stored as text; the page renders it as text
        history = json.loads(ws.recv(timeout=5))
        assert [m["text"] for m in history["messages"]] == ["still here"]
    with ws_connect(demo.ws_url + "/ws/progress/", origin=origin) as ws:
        ws.send('{"action": "explode"}')
        assert json.loads(ws.recv(timeout=5))["type"] == "error"
        ws.send('{"action": "watch", "jobs": "nope"}')
        assert json.loads(ws.recv(timeout=5))["type"] == "error"
        ws.send(json.dumps({"action": "watch", "jobs": ["0" * 32, 7, "../etc"]}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "gone", "job": "0" * 32}


def test_a_page_from_another_site_cannot_open_the_sockets(demo: DemoServer) -> None:
    with pytest.raises(Exception, match="403"):
        ws_connect(demo.ws_url + "/ws/chat/lobby/", origin="http://evil.example")


# -- live progress -------------------------------------------------------------------------------


def bar(page: Page, index: int) -> Any:
    """The ``index``-th job's progress bar, oldest first (new jobs are listed on top)."""
    return page.locator(".job").nth(-1 - index).locator("[role=progressbar]")


@pytest.mark.slow
def test_rock_out_fills_several_bars_and_a_reload_keeps_them(new_context: NewContext) -> None:
    page = new_context().new_page()
    page.goto("/progress/")
    expect_live(page)
    go = page.locator("#go-button")
    expect(go).to_have_text("Rock Out")
    expect(page.locator("#clear-button")).to_be_hidden()

    go.click()
    expect(page.locator(".job")).to_have_count(1)
    page.wait_for_function(
        "Number(document.querySelector('.job [role=progressbar]')"
        ".getAttribute('aria-valuenow')) >= 30"
    )
    go.click()
    go.click()
    expect(page.locator(".job")).to_have_count(3)
    expect(bar(page, 2)).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d?$"))

    # Reload while the later jobs are running: their bars come back and carry on.
    page.reload()
    expect_live(page)
    expect(page.locator(".job")).to_have_count(3)
    for index in range(3):
        expect(bar(page, index)).to_have_attribute("aria-valuenow", "100")
    first_done = page.locator(".job").nth(-1)
    expect(first_done).to_have_class(re.compile(r"\bdone\b"))
    expect(first_done.locator(".job-value")).to_have_text("100%")

    # A screenshot with bars at different heights: start two more and catch them mid-way.
    go.click()
    page.wait_for_function(
        "Number(document.querySelector('.job [role=progressbar]')"
        ".getAttribute('aria-valuenow')) >= 45"
    )
    go.click()
    page.wait_for_function(
        "Number(document.querySelector('.job [role=progressbar]')"
        ".getAttribute('aria-valuenow')) >= 12"
    )
    screenshot(page, "progress.png")
    for index in range(5):
        expect(bar(page, index)).to_have_attribute("aria-valuenow", "100")
    page.click("#clear-button")
    expect(page.locator(".job")).to_have_count(0)
    expect(page.locator("#no-jobs")).to_be_visible()
    expect(page.locator("#clear-button")).to_be_hidden()


@pytest.mark.slow
def test_run_as_a_task_fills_a_bar_through_the_task_consumer(
    new_context: NewContext, demo: DemoServer
) -> None:
    page = new_context().new_page()
    page.goto("/progress/")
    expect(page.locator("#task-sign-in")).to_be_visible()  # guests are asked to sign in
    expect(page.locator("#task-button")).to_have_count(0)
    sign_in(page, "/progress/")
    expect_live(page)
    run = page.locator("#task-button")
    expect(run).to_have_text("Run as a task")
    run.click()
    task = page.locator(".job.task")
    expect(task).to_have_count(1)
    expect(task.locator("[role=progressbar]")).to_have_attribute(
        "aria-valuenow", re.compile(r"^[1-9]\d?$")
    )
    # A reload mid-way: the task's socket sends its state first, and the bar carries on.
    page.reload()
    expect_live(page)
    expect(task.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(task.locator(".job-status")).to_have_text("finished")
    expect(task).to_have_class(re.compile(r"\bdone\b"))
    expect(task.locator(".job-value")).to_have_text("100%")
    task_id = task.get_attribute("data-job")
    assert task_id
    # Beside a ProgRock job, for the screenshot: the two kinds of bar on one page.
    page.click("#go-button")
    page.wait_for_function(
        "Number(document.querySelector('.job:not(.task) [role=progressbar]')"
        ".getAttribute('aria-valuenow')) >= 40"
    )
    screenshot(page, "progress-task.png")

    # The task's socket is only for the user who started it (or staff): a stranger is refused.
    with (
        ws_connect(f"{demo.ws_url}/ws/tasks/{task_id}/", origin=demo.url) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


# -- live blog -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_post_saved_anywhere_appears_on_every_open_page(new_context: NewContext) -> None:
    reader = new_context().new_page()
    reader.goto("/blog/")
    expect_live(reader)
    reader.evaluate("window.stillTheSamePage = true")

    writer = new_context().new_page()
    sign_in(writer, "/blog/")
    expect_live(writer)
    writer.fill("#id_title", "headrace demo is live")
    writer.fill("#id_body", "Posts reach every reader through post_save and one group_send.")
    writer.click("#publish")
    expect(reader.locator(".post .post-title").first).to_have_text("headrace demo is live")
    expect(reader.locator(".post .post-author").first).to_have_text("demo")
    expect(writer.locator(".post .post-title").first).to_have_text("headrace demo is live")
    expect(writer.locator("#hint")).to_contain_text("Published")

    # The Django admin saves through the same model: same signal, same group.
    writer.goto("/admin/blog/post/add/")
    writer.fill("#id_title", "Written in the admin <img src=x onerror=alert(1)>")
    writer.fill("#id_body", "The admin knows nothing about WebSockets; post_save does.")
    writer.click("input[name=_save]")
    expect(reader.locator(".post .post-title").first).to_have_text(
        "Written in the admin <img src=x onerror=alert(1)>"
    )
    expect(reader.locator("#posts img")).to_have_count(0)
    expect(reader.locator(".post .post-author").first).to_have_text("demo")

    # A guest posts from the page too; an empty form is refused with the reason.
    reader.click("#publish")
    expect(reader.locator("#hint")).to_contain_text("required")
    reader.fill("#id_title", "Guests can post as well")
    reader.fill("#id_body", "No reload needed on either side.")
    reader.click("#publish")
    expect(reader.locator(".post .post-title")).to_have_text(
        [
            "Guests can post as well",
            "Written in the admin <img src=x onerror=alert(1)>",
            "headrace demo is live",
        ]
    )
    assert reader.evaluate("window.stillTheSamePage") is True
    screenshot(reader, "blog.png")


# -- a server restart ----------------------------------------------------------------------------


@pytest.mark.slow
def test_pages_reconnect_after_the_server_restarts(browser: Browser, tmp_path: Path) -> None:
    server = DemoServer(tmp_path).start()
    context = browser.new_context(base_url=server.url)
    try:
        chat = context.new_page()
        chat.goto("/chat/restart/")
        chat.fill("#nick", "Rita")
        chat.click("#nick-form button")
        expect_live(chat)
        blog = context.new_page()
        blog.goto("/blog/")
        expect_live(blog)
        progress = context.new_page()
        progress.goto("/progress/")
        expect_live(progress)
        progress.click("#go-button")
        expect(bar(progress, 0)).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d?$"))

        pgid = server.process.pid if server.process else 0
        assert server.stop() in (0, -signal.SIGINT, 128 + signal.SIGINT)
        assert not group_alive(pgid), "Ctrl-C left a process of the demo running"
        for page in (chat, blog, progress):
            expect(page.locator("#conn")).to_have_attribute("data-state", "waiting")
            expect(page.locator("#conn")).to_contain_text(re.compile(r"Reconnecting in \d+ s"))
        expect(chat.locator("#message")).to_be_disabled()

        server.start()
        for page in (chat, blog, progress):
            expect_live(page)
        chat.fill("#message", "Back after a restart")
        chat.press("#message", "Enter")
        expect(chat.locator(".msg .msg-text")).to_have_text(["Back after a restart"])

        # A post saved after the restart reaches the blog page as before.
        blog.fill("#id_title", "Still live")
        blog.fill("#id_body", "The page reconnected on its own.")
        blog.click("#publish")
        expect(blog.locator(".post .post-title").first).to_have_text("Still live")

        # The restart lost the job's next step (the in-memory layer went with the process): the
        # page notices the job went quiet, and the server resumes it from its stored progress.
        expect(bar(progress, 0)).to_have_attribute("aria-valuenow", "100")
        assert "resuming job" in server.log()
    finally:
        context.close()
        server.stop()


# -- Redis mode ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_with_redis_url_the_worker_runs_in_its_own_process(
    browser: Browser, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = servers(request.config).new(name="demo")
    server = DemoServer(tmp_path, env={"REDIS_URL": redis.url}).start()
    context = browser.new_context(base_url=server.url)
    try:
        assert server.process is not None
        pgid = server.process.pid
        worker = subprocess.run(
            ["pgrep", "-g", str(pgid), "-f", "manage.py runworker prog-rocker"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert worker.stdout.strip(), f"no worker process:\n{server.log()}"

        page = context.new_page()
        page.goto("/progress/")
        expect(page.locator("footer")).to_contain_text("RedisChannelLayer")
        expect_live(page)
        page.click("#go-button")
        expect(bar(page, 0)).to_have_attribute("aria-valuenow", "100")
        # The in-memory task backend runs jobs only in the server, which runs no workers here.
        expect(page.locator("#task-unavailable")).to_be_visible()

        reader = context.new_page()
        reader.goto("/blog/")
        expect_live(reader)
        page.goto("/blog/")
        page.fill("#id_title", "Through Redis")
        page.fill("#id_body", "post_save in the server process, group_send through Redis.")
        page.click("#publish")
        expect(reader.locator(".post .post-title").first).to_have_text("Through Redis")
    finally:
        context.close()
        assert server.stop() in (0, -signal.SIGINT, 128 + signal.SIGINT)
    assert not group_alive(pgid), "Ctrl-C left the worker (or the server) running"
    assert "worker stopped" in server.log()
