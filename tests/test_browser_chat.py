"""The chat page for real answers, in Chromium against daphne: Markdown (and hostile answers),
streaming, past run timelines after a reload, rename, search, copy, retry, phone width.

History is written straight into the server's database (tests/seed_history.py); live model
answers come from the scripted chat-completions server of tests/test_llm_provider.py, run
on its own event loop thread, with daphne started with AGENT_PROVIDER=openai.
"""

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from agents.testing import API_KEY, MODEL, Reply, ScriptedLLM, chunk, text_chunks
from tests.seed_history import seed_command
from tests.servers import Server, Servers
from tests.test_browser import (  # noqa: F401 - `browser` is a fixture used here
    DESKTOP,
    PHONE,
    browser,
    log_in,
    new_user,
    open_new_thread,
    shot_path,
)

pytestmark = pytest.mark.chromium

MARKDOWN = """## Results

Some **bold**, some *italics* and `inline code`.

- first item
- second item

1. one
2. two

| name | value |
|------|-------|
| a    | 1     |

```python
print("a very long line of code that must scroll sideways rather than widen the page " * 3)
```

See [the docs](https://example.com/docs) for more.
"""

HOSTILE = """Hello <script>window.__pwned = 1</script> there.

<img src="x" onerror="window.__pwned = 2">

[click me](javascript:window.__pwned=3) and [data](data:text/html;base64,PHNjcmlwdD4=)

<iframe src="https://example.com"></iframe>

<svg><script>window.__pwned = 4</script><circle onload="window.__pwned = 5"></circle></svg>

<a href="https://example.com" onclick="window.__pwned = 6">styled</a>

![tracker](https://example.com/pixel.png)
"""

HOSTILE_CHECK = """
(root) => ({
  script: root.querySelectorAll("script").length,
  img: root.querySelectorAll("img").length,
  iframe: root.querySelectorAll("iframe").length,
  svg: root.querySelectorAll("svg").length,
  handlers: [...root.querySelectorAll("*")].filter(
    (n) => [...n.attributes].some((a) => a.name.startsWith("on"))).length,
  badLinks: [...root.querySelectorAll("a")].filter(
    (a) => !/^(https?:|mailto:)/i.test(a.getAttribute("href") || "")).length,
  pwned: window.__pwned ?? null,
})
"""


@pytest.fixture
def context(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserContext]:  # noqa: F811
    """A browser context that may use the clipboard; the viewport from the test's param."""
    ctx = browser.new_context(
        viewport=getattr(request, "param", DESKTOP),
        permissions=["clipboard-read", "clipboard-write"],
    )
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page that fails its test on any console error, uncaught error or dialog."""
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"pageerror {exc}"))
    tab.on(
        "console",
        lambda msg: problems.append(f"console {msg.text}") if msg.type == "error" else None,
    )

    def on_dialog(dialog: Dialog) -> None:
        problems.append(f"dialog {dialog.message}")
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    yield tab
    tab.screenshot(path=str(shot_path(request)))
    assert problems == [], problems


def thread_id(page: Page) -> str:
    value = page.locator("#chat").get_attribute("data-thread-id")
    assert value
    return value


def seeded(page: Page, server: Server, runs: int, answer: str, **options: Any) -> str:
    """Adds finished runs to the open thread, reloads, waits for the timelines; returns the id."""
    tid = thread_id(page)
    server.manage("shell", "-c", seed_command(tid, runs, answer, **options))
    page.reload()
    expect(page.locator("#conn-status")).to_have_text("Connected")
    expect(page.locator("#history")).to_have_attribute("data-past-ready", "1")
    return tid


def test_every_markdown_element_after_reload_and_copy(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Markdown")
    seeded(page, server, 1, MARKDOWN)
    md = page.locator("#history .run .answer .md")
    expect(md.locator("h2")).to_have_text("Results")
    expect(md.locator("strong")).to_have_text("bold")
    expect(md.locator("em")).to_have_text("italics")
    expect(md.locator("p > code")).to_have_text("inline code")
    expect(md.locator("ul > li")).to_have_text(["first item", "second item"])
    expect(md.locator("ol > li")).to_have_text(["one", "two"])
    expect(md.locator("table th")).to_have_text(["name", "value"])
    expect(md.locator("table td")).to_have_text(["a", "1"])
    block = md.locator(".code-block")
    expect(block.locator("pre code")).to_contain_text('print("a very long line')
    assert block.locator("pre").evaluate("p => getComputedStyle(p).overflowX") == "auto"
    assert "mono" in block.locator("pre").evaluate("p => getComputedStyle(p).fontFamily")
    link = md.get_by_role("link", name="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    block.get_by_role("button", name="Copy this code").click()
    expect(block.get_by_role("button", name="Copy this code")).to_have_text("Copied")
    code = page.evaluate("navigator.clipboard.readText()")
    assert code.startswith('print("a very long line') and "```" not in code
    page.get_by_role("button", name="Copy the answer as Markdown").click()
    expect(page.locator("#announcer")).to_have_text("The answer was copied as Markdown.")
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN


def test_a_hostile_answer_from_history_creates_nothing_and_runs_nothing(
    page: Page, server: Server
) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Hostile history")
    seeded(page, server, 1, HOSTILE)
    answer = page.locator("#history .run .answer .md")
    expect(answer).to_contain_text("<script>window.__pwned = 1</script>")  # shown as text
    found = answer.evaluate(HOSTILE_CHECK)
    assert found == {
        "script": 0,
        "img": 0,
        "iframe": 0,
        "svg": 0,
        "handlers": 0,
        "badLinks": 0,
        "pwned": None,
    }
    expect(answer.get_by_role("link", name="tracker")).to_have_attribute(
        "href", "https://example.com/pixel.png"
    )
    expect(answer).to_contain_text('<a href="https://example.com" onclick=')
    expect(answer.get_by_role("link", name="styled")).to_have_count(0)
    expect(answer.get_by_role("link")).to_have_count(1)  # only the image, as a link


def test_past_run_timeline_after_reload_is_collapsed_and_expands(
    page: Page, server: Server
) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Timeline")
    page.get_by_label("Message").fill("what is 12*7 and 1/0")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#history .run")).to_have_attribute("data-state", "completed")

    page.reload()
    expect(page.locator("#history")).to_have_attribute("data-past-ready", "1")
    run = page.locator("#history .run")
    expect(run).to_have_count(1)
    expect(run).to_have_class("run past")
    details = run.locator("details.run-steps")
    expect(details).not_to_have_attribute("open", "")
    cards = run.locator(".tool-card")
    expect(cards.first).to_be_hidden()
    expect(run.locator(".answer .md")).to_contain_text("84")
    expect(page.locator("#history .msg-assistant")).to_have_count(1)

    details.locator("summary").click()
    expect(cards).to_have_count(2)
    expect(cards.nth(0)).to_be_visible()
    expect(cards.nth(0).locator(".tool-args")).to_contain_text("12*7")
    expect(cards.nth(0).locator(".tool-result")).to_contain_text("84")
    expect(cards.nth(0).locator(".tool-status")).to_contain_text("done in")
    expect(cards.nth(1).locator(".tool-error")).to_contain_text("division_by_zero")
    expect(cards.nth(1).locator(".tool-status")).to_contain_text("failed after")
    expect(run.locator(".run-end")).to_contain_text("Completed in")
    details.locator("summary").press("Enter")  # the keyboard closes it again
    expect(cards.first).to_be_hidden()


# Notes when the page has drawn its past runs (data-past-ready on #history).
PAST_READY_AT = """
new MutationObserver((_, observer) => {
  const history = document.getElementById("history");
  if (history && history.dataset.pastReady) {
    window.__pastReadyAt = performance.now();
    observer.disconnect();
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-past-ready"] });
"""

HISTORY_STATE = """
() => {
  const h = document.getElementById("history"), older = document.getElementById("older");
  const top = h.getBoundingClientRect().top;
  return { runs: h.querySelectorAll(".run").length, scrollTop: h.scrollTop,
           scrollHeight: h.scrollHeight, clientHeight: h.clientHeight,
           olderBusy: older?.getAttribute("aria-busy") ?? null,
           olderText: older?.textContent ?? null,
           olderTop: older ? older.getBoundingClientRect().top - top : null };
}
"""

FIRST_PAINT = """
() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return { fcp: paint ? paint.startTime : null, domContentLoaded: nav.domContentLoadedEventEnd,
           load: nav.loadEventEnd, ready: window.__pastReadyAt ?? null };
}
"""


def test_a_500_run_thread_opens_fast_and_loads_older_runs_on_scroll_up(
    page: Page, server: Server
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    log_in(page, server, new_user(server))
    open_new_thread(page, "Long thread")
    tid = seeded(page, server, 500, "The answer is **42**.")
    page.add_init_script(PAST_READY_AT)
    timings = []
    for _ in range(3):
        page.goto(f"{server.http}/threads/{tid}/")
        expect(page.locator("#history")).to_have_attribute("data-past-ready", "1")
        timings.append(page.evaluate(FIRST_PAINT))
    print("first paint of a 500-run thread (ms):", json.dumps(timings))
    runs = page.locator("#history .run")
    expect(runs).to_have_count(20)
    expect(page.locator("#history .msg-user").last).to_contain_text("(#500)")

    page.locator("#history").evaluate("h => { h.scrollTop = 0; }")
    expect(runs).to_have_count(40)
    expect(page.locator("#history .msg-user").first).to_contain_text("(#461)")
    older = runs.first
    older.locator("summary").click()
    expect(older.locator(".tool-card .tool-result")).to_contain_text("42")
    while page.locator("#older").count():
        shown = runs.count()
        page.locator("#history").evaluate("h => { h.scrollTop = 0; }")
        try:
            page.wait_for_function(
                "(n) => document.querySelectorAll('#history .run').length > n",
                arg=shown,
                timeout=20_000,
            )
        except PlaywrightTimeoutError as exc:
            raise AssertionError(
                f"no page after {shown} runs: {page.evaluate(HISTORY_STATE)}; "
                f"console: {console[-10:]}; server: {server.log_tail(20)}"
            ) from exc
    expect(runs).to_have_count(500)
    expect(page.locator("#older")).to_have_count(0)
    expect(page.locator("#history .msg-user").first).to_contain_text("(#1)")


MARKER_OUT_OF_REACH = """
() => {
  const older = document.getElementById("older");
  if (!older) return true;
  const view = document.getElementById("history").getBoundingClientRect();
  return older.getBoundingClientRect().bottom < view.top - 200;
}
"""


def test_a_view_taller_than_a_page_loads_older_pages_until_it_is_full(
    page: Page, server: Server
) -> None:
    """The observer fires when the marker comes into view, not while it stays there: a page
    that does not fill a tall window must not leave the marker showing and loading stopped."""
    log_in(page, server, new_user(server))
    open_new_thread(page, "Tall window")
    page.set_viewport_size({"width": 1280, "height": 12_000})
    seeded(page, server, 120, "The answer is **42**.")
    page.wait_for_function(MARKER_OUT_OF_REACH, timeout=20_000)
    shown = page.locator("#history .run").count()
    assert shown > 40, page.evaluate(HISTORY_STATE)


def test_retry_a_failed_run_sends_the_same_text_with_a_new_client_msg_id(
    page: Page, server: Server
) -> None:
    sent: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))),
    )
    log_in(page, server, new_user(server))
    open_new_thread(page, "Retry")
    seeded(page, server, 1, "", question="what is 6*7", failed_last=True)
    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "failed")
    expect(run.locator(".run-error")).to_contain_text("The model is down.")
    run.get_by_role("button", name="Retry: send the same message again").click()

    expect(page.locator("#history .run")).to_have_count(2)
    expect(page.locator("#history .run").last).to_have_attribute("data-state", "completed")
    expect(page.locator("#history .run").last.locator(".answer")).to_contain_text("42")
    messages = [f for f in sent if f.get("type") == "user_message"]
    assert [m["text"] for m in messages] == ["what is 6*7 (#1)"]
    page.reload()
    expect(page.locator("#history")).to_have_attribute("data-past-ready", "1")
    retried = page.locator("#history .run").last
    expect(retried).to_have_attribute("data-state", "completed")
    user_texts = page.locator("#history .msg-user .text")
    expect(user_texts).to_have_text(["what is 6*7 (#1)", "what is 6*7 (#1)"])
    assert messages[0]["client_msg_id"], "a fresh client_msg_id"


def test_rename_inline_and_only_the_owner_may(page: Page, server: Server) -> None:
    name = new_user(server)
    log_in(page, server, name)
    open_new_thread(page, "Old name")
    page.get_by_role("button", name="Rename").click()
    box = page.get_by_label("Thread title")
    expect(box).to_be_focused()
    box.fill("Thrown away")
    box.press("Escape")
    expect(page.locator("#thread-heading")).to_have_text("Old name")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Thread title").fill("  New name  ")
    page.get_by_label("Thread title").press("Enter")
    expect(page.locator("#thread-heading")).to_have_text("New name")
    expect(page.locator(".sidebar .current a")).to_have_text("New name")
    expect(page).to_have_title("New name · netra-chat")
    page.reload()
    expect(page.locator("#thread-heading")).to_have_text("New name")

    tid = thread_id(page)
    other = server.make_user(f"o{uuid.uuid4().hex[:8]}")
    status, body = server.api("PATCH", f"/api/threads/{tid}/", other, {"title": "mine now"})
    assert (status, body["error"]["code"]) == (404, "thread_not_found")
    status, body = server.api("PATCH", f"/api/threads/{tid}/", other, {"title": 5})
    assert status == 400
    owner = server.manage("create_api_token", name).strip().splitlines()[-1]
    status, body = server.api("PATCH", f"/api/threads/{tid}/", owner, {"title": "x" * 300})
    assert status == 200 and body["title"] == "x" * 200


def test_search_over_thread_titles(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    for title in ("Quarterly report", "Holiday plans", "Report draft"):
        page.goto(f"{server.http}/threads/")
        open_new_thread(page, title)
    # The sidebar: the newest first and the open thread highlighted.
    expect(page.locator(".sidebar .threads li a")).to_have_text(
        ["Report draft", "Holiday plans", "Quarterly report"]
    )
    expect(page.locator(".sidebar .current a")).to_have_text("Report draft")
    page.get_by_label("Search threads").fill("report")
    expect(page.locator(".sidebar .threads li:visible a")).to_have_text(
        ["Report draft", "Quarterly report"]
    )

    page.goto(f"{server.http}/threads/")
    search = page.get_by_label("Search threads")
    search.fill("HOLI")
    expect(page.locator("#thread-list li:visible a")).to_have_text(["Holiday plans"])
    search.fill("nothing like it")
    expect(page.locator(".no-match")).to_be_visible()
    search.press("Escape")
    expect(page.locator("#thread-list li:visible a")).to_have_count(3)
    page.goto(f"{server.http}/threads/?q=draft")  # the same search without script
    expect(page.locator("#thread-list li a")).to_have_text(["Report draft"])


@pytest.mark.parametrize("context", [PHONE], indirect=True)
def test_markdown_at_phone_width_does_not_scroll_sideways(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Phone")
    seeded(page, server, 2, MARKDOWN)
    page.get_by_label("Message").fill("what is 12*7")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#history .run").last).to_have_attribute("data-state", "completed")
    page.locator("#history .run").first.locator("summary").click()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
    pre = page.locator(".code-block pre").first
    assert pre.evaluate("p => p.scrollWidth > p.clientWidth"), "the code block scrolls itself"
    expect(page.get_by_role("button", name="Send")).to_be_visible()


# --- a real model answer, streamed: the scripted chat-completions server -------------------


class ThreadedLLM:
    """The scripted chat-completions server on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = self.call(self._make())

    async def _make(self) -> ScriptedLLM:
        return await ScriptedLLM().start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def script(self, *replies: Reply) -> None:
        self.loop.call_soon_threadsafe(self.fake.script, *replies)

    def close(self) -> None:
        self.call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def model_server(servers: Servers) -> Iterator[tuple[Server, ThreadedLLM]]:
    llm = ThreadedLLM()
    server = servers.start(
        env={
            "AGENT_PROVIDER": "openai",
            "OPENAI_BASE_URL": llm.fake.url,
            "OPENAI_API_KEY": API_KEY,
            "AGENT_MODEL": MODEL,
        }
    )
    yield server, llm
    server.stop()
    llm.close()


def pieces(text: str, size: int = 40) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_a_hostile_streamed_answer_creates_nothing_and_runs_nothing(
    page: Page, model_server: tuple[Server, ThreadedLLM]
) -> None:
    server, llm = model_server
    llm.script(Reply(chunks=text_chunks(*pieces(HOSTILE))))
    log_in(page, server, new_user(server))
    open_new_thread(page, "Hostile live")
    page.get_by_label("Message").fill("say something nasty")
    page.get_by_label("Message").press("Enter")
    run = page.locator("#history .run")
    expect(run).to_have_attribute("data-state", "completed")
    answer = run.locator(".answer .md")
    expect(answer).to_contain_text("<iframe")
    assert answer.evaluate(HOSTILE_CHECK) == {
        "script": 0,
        "img": 0,
        "iframe": 0,
        "svg": 0,
        "handlers": 0,
        "badLinks": 0,
        "pwned": None,
    }
    assert page.locator("#history").evaluate(HOSTILE_CHECK)["pwned"] is None


def test_markdown_renders_while_the_answer_streams(
    page: Page, model_server: tuple[Server, ThreadedLLM]
) -> None:
    server, llm = model_server
    head = "## Streaming\n\n- one\n- two\n\nStill writing"
    llm.script(
        Reply(
            chunks=[
                chunk({"role": "assistant", "content": ""}),
                *(chunk({"content": p}) for p in pieces(head, 8)),
            ],
            hold=True,
            trickle=0.2,
        )
    )
    log_in(page, server, new_user(server))
    open_new_thread(page, "Streaming")
    page.get_by_label("Message").fill("stream please")
    page.get_by_label("Message").press("Enter")
    run = page.locator("#history .run")
    expect(run.locator(".answer .md h2")).to_have_text("Streaming")
    expect(run.locator(".answer .md li")).to_have_text(["one", "two"])
    expect(run).to_have_attribute("data-state", "running")
    expect(run.locator(".answer .md")).to_contain_text("Still writing..")  # the trickled dots
    page.get_by_role("button", name="Cancel run").click()
    expect(run).to_have_attribute("data-state", "cancelled")


FRAME_TIMES = """
async ({ words, deltaWords, everyMs }) => {
  const { RunView } = await import("/static/chat/runs.js");
  const history = document.getElementById("history");
  const run = new RunView({ runId: "frame-test", onCopy: () => {} });
  history.append(run.root);
  const base = { run_id: "frame-test", thread_id: "t", ts: "" };
  run.apply({ ...base, type: "agent_started", seq: 1, data: { agent: "test", message_id: "m" } });
  const SECTION = "\\n\\n## Section\\n\\n- an item\\n- another\\n\\n```\\ncode\\n```\\n\\n";
  const vocabulary = ["alpha", "**bold**", "beta", "`code`", "gamma", "delta", "*it*", "epsilon"];
  const parts = [];
  for (let i = 0; i < words; i += 1) {
    parts.push(vocabulary[i % vocabulary.length]);
    if (i % 60 === 59) parts.push("\\n\\n");
    if (i % 600 === 599) parts.push(SECTION);
  }
  const text = parts.join(" ");
  const chunks = [];
  const per = Math.ceil(text.length / Math.ceil(words / deltaWords));
  for (let i = 0; i < text.length; i += per) chunks.push(text.slice(i, i + per));
  const frames = [];
  let last = performance.now();
  let going = true;
  const tick = (now) => {
    frames.push(now - last);
    last = now;
    if (going) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  const started = performance.now();
  for (const [i, piece] of chunks.entries()) {
    const data = { message_id: "a", text: piece };
    run.apply({ ...base, type: "partial_result", seq: i + 2, data });
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  run.apply({ ...base, type: "agent_completed", seq: chunks.length + 2,
              data: { status: "completed", message_id: "a", text, duration_ms: 1 } });
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  going = false;
  const streamMs = performance.now() - started;
  const sorted = [...frames].sort((a, b) => a - b);
  const pick = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return {
    words, deltas: chunks.length, chars: text.length, streamMs: Math.round(streamMs),
    frames: frames.length, medianMs: pick(0.5), p95Ms: pick(0.95), p99Ms: pick(0.99),
    maxMs: sorted.at(-1), over50ms: frames.filter((f) => f > 50).length,
    headings: run.answerText.querySelectorAll("h2").length,
    codeBlocks: run.answerText.querySelectorAll(".code-block").length,
  };
}
"""


def test_a_5000_word_streamed_answer_renders_per_frame(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Long stream")
    result = page.evaluate(FRAME_TIMES, {"words": 5000, "deltaWords": 10, "everyMs": 8})
    print("frame times of a 5,000-word streamed answer:", json.dumps(result))
    assert result["headings"] == 8 and result["codeBlocks"] == 8, result
    assert result["frames"] > 10
