"""The web chat in a real browser: Playwright driving Debian's Chromium against daphne."""

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    ViewportSize,
    WebSocket,
    expect,
    sync_playwright,
)

from tests.helpers import require
from tests.seed_history import seed_command
from tests.servers import ROOT, Server, Servers

pytestmark = pytest.mark.chromium

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
PASSWORD = "pw-Secret-123"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
DESKTOP: ViewportSize = {"width": 1200, "height": 820}
PHONE: ViewportSize = {"width": 390, "height": 844}

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; skips loudly (or fails under NETRA_REQUIRE) without it."""
    require(
        "chromium",
        os.access(CHROMIUM, os.X_OK),
        f"{CHROMIUM} is missing (apt-get install chromium)",
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Restartable:
    """A daphne server of one test, which the test may stop and start again."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.server = servers.start()

    def restart(self) -> Server:
        """Starts a new daphne process on the same port and database (stopping the old one)."""
        old = self.server
        old.stop()
        self.server = self.servers.start(
            port=old.port, workdir=old.workdir, env={"DATABASE_URL": old.env["DATABASE_URL"]}
        )
        return self.server


@pytest.fixture
def own_server(servers: Servers) -> Iterator[Restartable]:
    """A server of this test alone; list it before `page` so the screenshot sees it running."""
    box = Restartable(servers)
    yield box
    box.server.stop()


def shot_path(request: pytest.FixtureRequest) -> Path:
    """Where the screenshot of this test's final page goes."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}.png"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context and page; its final state is saved as a screenshot."""
    viewport: ViewportSize = getattr(request, "param", DESKTOP)
    context = browser.new_context(viewport=viewport)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
    yield tab
    tab.screenshot(path=str(shot_path(request)), full_page=False)
    context.close()
    assert errors == [], f"uncaught script errors on the page: {errors}"


def new_user(server: Server, name: str = "") -> str:
    """Creates a user (with a unique name unless given); returns the name."""
    name = name or f"u{uuid.uuid4().hex[:10]}"
    server.make_user(name, PASSWORD)
    return name


def log_in(page: Page, server: Server, username: str) -> None:
    """Logs in through the login form and lands on the thread list."""
    page.goto(f"{server.http}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()


def open_new_thread(page: Page, title: str = "") -> None:
    """Creates a thread from the thread list and waits for its socket."""
    if title:
        page.get_by_placeholder("Title (optional)").fill(title)
    page.get_by_role("button", name="New thread").click()
    expect(page.locator("#conn-status")).to_have_text("Connected")


def ask(page: Page, text: str) -> None:
    """Types a message and sends it with Enter."""
    box = page.get_by_label("Message")
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")


def last_run(page: Page) -> Locator:
    """The most recent run timeline on the page."""
    return page.locator("#history .run").last


def test_ask_the_agent_and_see_the_tool_card_and_answer(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Multiplication")
    box = page.get_by_label("Message")
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    expect(page.locator("#history .msg-user")).to_have_count(0)

    ask(page, "what is 12*7")

    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "completed")
    card = run.locator(".tool-card")
    expect(card).to_have_count(1)
    expect(card.locator(".tool-name")).to_have_text("calculator")
    expect(card.locator(".tool-args")).to_contain_text("12*7")
    expect(card).to_have_attribute("data-state", "ok")
    expect(card.locator(".tool-result")).to_contain_text("84")
    expect(card.locator(".tool-status")).to_contain_text(re.compile(r"done in \d"))
    expect(run.locator(".step-thinking").first).to_be_visible()
    expect(run.locator(".answer .text")).to_contain_text("84")
    expect(run.locator(".run-end")).to_contain_text(re.compile(r"Completed in \d"))
    expect(page.locator("#history .msg-user .text")).to_have_text(["what is 12*7"])
    expect(page.get_by_label("Message")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_hidden()


def test_our_pages_log_no_console_error_and_no_failed_request(page: Page, server: Server) -> None:
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: problems.append(f"console {msg.text}") if msg.type == "error" else None,
    )
    page.on("requestfailed", lambda req: problems.append(f"failed {req.url}: {req.failure}"))
    page.on(
        "response",
        lambda res: problems.append(f"{res.status} {res.url}") if res.status >= 400 else None,
    )
    log_in(page, server, new_user(server))  # the login page, then the thread list
    page.wait_for_load_state("networkidle")
    open_new_thread(page, "Quiet console")
    page.wait_for_load_state("networkidle")
    assert problems == []
    href = page.locator("link[rel=icon]").get_attribute("href", timeout=1000)
    icon = page.request.get(f"{server.http}{href}")
    assert icon.ok and icon.headers["content-type"].startswith("image/"), (href, icon.status)


def test_a_failing_tool_shows_an_error_card_and_the_run_completes(
    page: Page, server: Server
) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Division by zero")

    ask(page, "what is 1/0")

    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "completed")
    card = run.locator(".tool-card")
    expect(card).to_have_attribute("data-state", "error")
    expect(card.locator(".tool-status")).to_contain_text("failed after")
    expect(card.locator(".tool-error")).to_be_visible()
    expect(run.locator(".answer .text")).to_contain_text("could not be computed")
    expect(run.locator(".run-state")).to_have_text("Completed")


def test_server_restart_between_messages_reconnects_and_shows_each_answer_once(
    own_server: Restartable, page: Page
) -> None:
    server = own_server.server
    log_in(page, server, new_user(server))
    open_new_thread(page, "Restart")
    ask(page, "what is 12*7")
    expect(last_run(page).locator(".run-end")).to_contain_text("Completed")

    server.stop()
    status = page.locator("#conn-status")
    expect(status).to_contain_text("Reconnecting")
    expect(page.locator("#composer-note")).to_contain_text("Not connected")
    own_server.restart()
    expect(status).to_have_text("Connected", timeout=40_000)
    ask(page, "what is 2**10")
    expect(page.locator("#history .run")).to_have_count(2)
    expect(last_run(page).locator(".run-end")).to_contain_text("Completed")

    answers = page.locator("#history .msg-assistant .text")
    expect(answers).to_have_count(2)
    expect(answers.nth(0)).to_contain_text("84")
    expect(answers.nth(1)).to_contain_text("1024")
    expect(page.locator("#history .msg-user .text")).to_have_text(["what is 12*7", "what is 2**10"])
    page.reload()
    expect(status).to_have_text("Connected")
    expect(page.locator("#history .msg-assistant .text")).to_have_text(
        ["12*7 = 84.", "2**10 = 1024."]
    )


def test_reload_in_the_middle_of_a_run_shows_the_run_so_far_then_its_end(
    page: Page, server: Server
) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Reload mid-run")
    ask(page, "wait 3 seconds and what is 2+2")
    wait_card = page.locator(".tool-card[data-tool='wait']")
    expect(wait_card).to_have_attribute("data-state", "running")
    expect(page.get_by_label("Message")).to_be_disabled()
    expect(page.locator("#composer-note")).to_contain_text("The agent is answering")
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()

    page.reload()

    expect(page.locator("#history .msg-user .text")).to_have_text(
        ["wait 3 seconds and what is 2+2"]
    )
    run = page.locator("#history .run")
    expect(run).to_have_count(1)
    expect(run.locator(".step-start")).to_have_count(1)
    expect(run.locator(".step-thinking").first).to_contain_text("wait 3")
    expect(run.locator(".tool-card[data-tool='wait']")).to_have_count(1)
    expect(run).to_have_attribute("data-state", "completed")
    expect(run.locator(".tool-card[data-tool='calculator'] .tool-result")).to_contain_text("4")
    expect(run.locator(".answer .text")).to_contain_text("2+2 = 4")
    expect(page.locator("#history .msg-assistant")).to_have_count(1)
    expect(page.get_by_label("Message")).to_be_enabled()


def test_cancel_button_stops_the_run(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Cancel")
    ask(page, "wait 20 seconds")
    expect(page.locator(".tool-card[data-tool='wait']")).to_have_attribute("data-state", "running")

    page.get_by_role("button", name="Cancel run").click()

    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "cancelled")
    expect(run.locator(".run-end")).to_contain_text("Cancelled after")
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    expect(page.get_by_label("Message")).to_be_enabled()


def test_expired_session_shows_the_login_link_and_stops_reconnecting(
    own_server: Restartable, page: Page, request: pytest.FixtureRequest
) -> None:
    server = own_server.server
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.clock.install()
    log_in(page, server, new_user(server))
    open_new_thread(page, "Expiry")
    # From here on, timers run only when the test advances the clock: the retries are countable.
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)
    server.manage(
        "shell",
        "-c",
        "from django.contrib.sessions.models import Session; Session.objects.all().delete()",
    )
    server.stop()
    status = page.locator("#conn-status")
    expect(status).to_contain_text("Reconnecting")
    own_server.restart()
    page.clock.run_for(20_000)
    expect(status).to_contain_text("Your session has expired.")
    link = status.get_by_role("link", name="Log in again")
    expect(link).to_have_attribute("href", re.compile(r"^/accounts/login/\?next=/threads/"))
    expect(page.locator("#composer-note")).to_contain_text("log in again")
    expect(page.get_by_label("Message")).to_be_disabled()

    page.clock.run_for(300_000)
    expect(status).to_have_attribute("data-state", "expired")
    assert len(sockets) == 2, f"one socket, one retry, then none; saw {len(sockets)}"
    page.screenshot(path=str(shot_path(request)).replace(".png", "_expired.png"))

    link.click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_a_deleted_thread_says_so_and_links_back_to_the_threads(
    own_server: Restartable, page: Page
) -> None:
    server = own_server.server
    log_in(page, server, new_user(server))
    open_new_thread(page, "Soon gone")
    thread_id = page.locator("#chat").get_attribute("data-thread-id")
    server.stop()
    server.manage(
        "shell",
        "-c",
        f"from chat.models import Thread; Thread.objects.filter(pk='{thread_id}').delete()",
    )
    status = page.locator("#conn-status")
    expect(status).to_contain_text("Reconnecting")
    own_server.restart()

    expect(status).to_contain_text("This thread no longer exists.", timeout=40_000)
    expect(status.get_by_role("link", name="Back to your threads")).to_have_attribute(
        "href", "/threads/"
    )
    expect(page.get_by_label("Message")).to_be_disabled()
    expect(page.locator("#composer-note")).to_contain_text("This thread is gone")


CLIENT_ORDERING_CHECK = """
async () => {
  const { ThreadSocket, backoffDelay, isFinalClose } = await import("/static/chat/socket.js");
  const delivered = [];
  const sent = [];
  const socket = new ThreadSocket({
    threadId: "t",
    afterSeq: 5,
    callbacks: {
      onEvent: (event) => delivered.push(event.seq),
      onFrame: () => {},
      onStatus: () => {},
      onReady: () => {},
    },
  });
  socket.send = (frame) => { sent.push(frame); return true; };
  const event = (seq) => ({ type: "agent_thinking", seq, run_id: "r", data: { step: 1 } });
  for (const seq of [5, 6, 6, 8, 9]) socket.onRunEvent(event(seq));
  const sentAtGap = JSON.parse(JSON.stringify(sent));
  for (const seq of [7, 8, 9]) socket.onRunEvent(event(seq));
  socket.onResumeComplete({ type: "resume_complete", after_seq: 6, last_seq: 9, recovered: true });
  return {
    delivered,
    sentAtGap,
    sentInAll: sent.length,
    lastSeq: socket.lastSeq,
    delays: [0, 1, 2, 3, 10].map((attempt) => backoffDelay(attempt, () => 1)),
    shortest: backoffDelay(2, () => 0),
    final: [4400, 4401, 4404, 4429, 4500, 4503, 1006, 1001].map(isFinalClose),
  };
}
"""


def test_client_drops_duplicates_resumes_on_a_gap_and_backs_off(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    result = page.evaluate(CLIENT_ORDERING_CHECK)
    assert result["delivered"] == [6, 7, 8, 9], "each seq once, in order, the gap filled"
    assert result["sentAtGap"] == [{"type": "resume", "after_seq": 6}]
    assert result["sentInAll"] == 1
    assert result["lastSeq"] == 9
    assert result["delays"] == [500, 1000, 2000, 4000, 15000]
    assert result["shortest"] == 1000, "jitter keeps at least half of the step"
    assert result["final"] == [True, True, True, True, False, False, False, False]


@pytest.mark.parametrize("page", [PHONE], indirect=True)
def test_phone_width_is_readable(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "On the phone")
    ask(page, "what is 12*7 and 2**10")
    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "completed")
    expect(run.locator(".answer .text")).to_contain_text("1024")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    expect(page.get_by_role("button", name="Send")).to_be_visible()


SCREENSHOT_MARKDOWN = """### Powers of two

The **calculator** tool works them out; `2**10` is *1024*.

| n | 2**n |
|---|------|
| 8 | 256 |
| 10 | 1024 |

```python
print([2**n for n in range(11)])
```
"""


def test_screenshot_of_a_finished_run(
    page: Page, server: Server, request: pytest.FixtureRequest
) -> None:
    log_in(page, server, new_user(server, "ada"))
    open_new_thread(page, "What time is it?")
    ask(page, "what time is it")
    expect(page.locator("#history .run")).to_have_attribute("data-state", "completed")
    page.goto(f"{server.http}/threads/")
    open_new_thread(page, "Arithmetic with tools")
    # An earlier answer in Markdown, from the event log: its timeline is collapsed.
    thread_id = page.locator("#chat").get_attribute("data-thread-id") or ""
    server.manage("shell", "-c", seed_command(thread_id, 1, SCREENSHOT_MARKDOWN))
    page.reload()
    expect(page.locator("#history")).to_have_attribute("data-past-ready", "1")
    ask(page, "what is 12*7 and 2**10 and 1/0")

    run = page.locator("#history .run").last
    expect(run).to_have_attribute("data-state", "completed")
    expect(run.locator(".tool-card")).to_have_count(3)
    expect(run.locator(".answer .text")).to_contain_text("1024")
    current = page.locator(".sidebar .current")
    expect(current).to_have_count(1)
    expect(current.get_by_role("link")).to_have_text("Arithmetic with tools")
    expect(current.get_by_role("link")).to_have_attribute("aria-current", "page")
    expect(page.locator(".sidebar .threads li")).to_have_count(2)
    page.locator("#input").blur()
    # The picture: the Markdown answer under its timeline (opened), the new run's closed.
    run.locator("summary").click()
    past = page.locator("#history .run.past")
    past.locator("summary").click()
    expect(past.locator(".tool-card")).to_be_visible()
    past.evaluate("node => node.scrollIntoView({ block: 'start' })")
    target = os.environ.get("NETRA_SCREENSHOT")
    if target:
        path = Path(target)
        if not path.is_absolute():
            path = ROOT / path
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
        assert path.stat().st_size > 0


PRUNE_UNDER_THE_PAGE = """
from chat import pruning
from chat.models import Thread
from tests import lifecycle_scenario
thread = Thread.objects.get(pk='{thread_id}')
lifecycle_scenario.make_run(thread, age=lifecycle_scenario.OLD)
lifecycle_scenario.make_run(thread, age=lifecycle_scenario.OLD)
print(pruning.run_prune().runs)
"""


def test_a_resume_from_pruned_events_reloads_the_history_once(
    own_server: Restartable, page: Page
) -> None:
    server = own_server.server
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    log_in(page, server, new_user(server))
    open_new_thread(page, "Pruned under the page")
    ask(page, "what is 2+3")
    expect(last_run(page)).to_have_attribute("data-state", "completed")
    thread_id = page.locator("#chat").get_attribute("data-thread-id")
    server.stop()
    # Two more runs while the page is away; the first of them (not the newest) is pruned,
    # so the page's resume point lies before the first kept event.
    pruned = server.manage("shell", "-c", PRUNE_UNDER_THE_PAGE.format(thread_id=thread_id))
    assert pruned.strip().splitlines()[-1] == "1"  # the run right after the page's
    own_server.restart()

    # The page reloads the thread's history (the messages stay) instead of looping.
    expect(page.locator("#history .msg-user")).to_have_count(3, timeout=40_000)
    expect(page.locator("#conn-status")).to_have_text("Connected")
    page.wait_for_timeout(3000)
    # Retries while the server was down resume after 7; the reloaded page once after its end.
    resumes = [ws.url.rsplit("after_seq=", 1)[-1] for ws in sockets]
    after_reload = [seq for seq in resumes if seq not in ("0", "7")]
    assert len(after_reload) == 1 and resumes[-1] == after_reload[0], resumes
    expect(page.get_by_text("Some events could not be recovered")).to_have_count(0)


def test_delete_a_thread_from_the_list_after_confirming(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Keep me")
    page.goto(f"{server.http}/threads/")
    open_new_thread(page, "Delete me")
    chat = page.context.new_page()  # the thread open in another tab: its socket closes 4404
    chat.goto(page.url)
    expect(chat.locator("#conn-status")).to_have_text("Connected")
    page.goto(f"{server.http}/threads/")
    items = page.locator("#thread-list li")
    expect(items).to_have_count(2)

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete Delete me").click()
    page.wait_for_timeout(500)
    expect(items).to_have_count(2)  # not confirmed: nothing happened

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Delete me").click()
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Keep me")
    expect(chat.locator("#conn-status")).to_contain_text("This thread no longer exists.")
    page.reload()
    expect(page.locator("#thread-list li")).to_have_count(1)
    chat.close()


def test_the_new_thread_form_offers_the_agents_when_more_than_one(
    page: Page, server: Server, servers: Servers
) -> None:
    log_in(page, server, new_user(server))
    expect(page.get_by_label("Agent")).to_have_count(0)  # one agent: no picker
    open_new_thread(page, "Just one agent")
    expect(page.locator("#thread-agent")).to_have_count(0)  # nothing to tell apart

    two = servers.start(env={"NETRA_AGENTS": "echo=tests.agentmods.good.EchoAgent"})
    try:
        log_in(page, two, new_user(two))
        picker = page.get_by_label("Agent")
        expect(picker.locator("option")).to_have_text(["builtin", "echo"])
        expect(picker).to_have_value("builtin")
        picker.select_option("echo")
        open_new_thread(page, "Sums")
        # The thread page names its agent and what it is for.
        expect(page.locator("#thread-agent")).to_have_text(
            "Answered by echo: Computes what you write with the calculator."
        )
        ask(page, "6*7")
        run = last_run(page)
        expect(run).to_have_attribute("data-state", "completed")
        expect(run.locator(".tool-card .tool-name")).to_have_text("calculator")
        expect(run.locator(".answer .text")).to_have_text("It is 42.")
        page.goto(f"{two.http}/threads/")
        expect(page.locator("#thread-list li").first).to_contain_text("echo")
    finally:
        two.stop()
