"""Approvals in the web chat, in Chromium against daphne: the built-in agent's send_note
asks; the call's card shows the arguments, the reason, a comment field and Approve / Deny
buttons (keyboard-usable, announced); the pending request is there after a reload and on a
second page, and an answer on one page updates the other live. The pending card's
screenshot is saved as docs/approval.png."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.servers import ROOT, Server
from tests.test_browser import (  # noqa: F401 - `browser` is a fixture used here
    DESKTOP,
    ask,
    browser,
    last_run,
    log_in,
    new_user,
    open_new_thread,
    shot_path,
)

pytestmark = pytest.mark.chromium

SERVER_ENV = {"AGENT_STREAM_DELAY": "0"}
SCREENSHOT = ROOT / "docs" / "approval.png"


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:  # noqa: F811
    """A fresh page; no uncaught script error may happen on it (as in tests/test_browser.py)."""
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    tab.screenshot(path=str(shot_path(request)), full_page=False)
    context.close()
    assert errors == [], f"uncaught script errors on the page: {errors}"


def pending_card(page: Page, text: str) -> None:
    """Asks for a note and waits for its card to ask for approval."""
    ask(page, f"send a note: {text}")
    card = last_run(page).locator(".tool-card[data-tool='send_note']")
    expect(card).to_have_attribute("data-state", "waiting")
    expect(card.locator(".tool-args")).to_contain_text(text)
    expect(card.locator(".approval-reason")).to_contain_text(
        f"Send this note to the thread: {text}"
    )
    expect(last_run(page).locator(".run-state")).to_have_text("Waiting for your approval")
    expect(page.locator("#announcer")).to_contain_text("asks for your approval")
    expect(page.locator("#composer-note")).to_contain_text("waits for your approval")


def test_approve_from_the_page_with_the_keyboard(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Approve a note")
    pending_card(page, "lunch at noon")
    page.screenshot(path=str(SCREENSHOT))
    approve = page.get_by_role("button", name="Approve")
    approve.focus()
    page.keyboard.press("Enter")
    run = last_run(page)
    expect(run).to_have_attribute("data-state", "completed")
    card = run.locator(".tool-card[data-tool='send_note']")
    expect(card).to_have_attribute("data-state", "ok")
    expect(card.locator(".approval-outcome")).to_have_text("Approved.")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(run.locator(".answer .text")).to_have_text("I sent the note: lunch at noon")


def test_deny_from_the_page_with_a_comment(page: Page, server: Server) -> None:
    log_in(page, server, new_user(server))
    open_new_thread(page, "Deny a note")
    pending_card(page, "spam everyone")
    page.get_by_label("Comment").fill("not today")
    page.get_by_role("button", name="Deny").click()
    run = last_run(page)
    expect(run).to_have_attribute("data-state", "completed")
    card = run.locator(".tool-card[data-tool='send_note']")
    expect(card).to_have_attribute("data-state", "denied")
    expect(card.locator(".approval-outcome")).to_have_text("Denied: not today.")
    expect(card.locator(".tool-error")).to_contain_text("not today")
    expect(run.locator(".answer .text")).to_have_text(
        "I did not send the note: you declined (not today)."
    )


def test_pending_after_a_reload_and_answered_on_another_page(
    page: Page,
    server: Server,
    browser: Browser,  # noqa: F811
) -> None:
    username = new_user(server)
    log_in(page, server, username)
    open_new_thread(page, "Two devices")
    pending_card(page, "call the bank")
    page.reload()
    card = last_run(page).locator(".tool-card[data-tool='send_note']")
    expect(card).to_have_attribute("data-state", "waiting")
    expect(card.get_by_role("button", name="Approve")).to_be_visible()

    other = browser.new_context(viewport=DESKTOP)
    phone = other.new_page()
    try:
        log_in(phone, server, username)
        phone.goto(page.url)
        expect(phone.locator("#conn-status")).to_have_text("Connected")
        theirs = last_run(phone).locator(".tool-card[data-tool='send_note']")
        expect(theirs).to_have_attribute("data-state", "waiting")
        theirs.get_by_role("button", name="Approve").click()
        expect(last_run(phone)).to_have_attribute("data-state", "completed")
    finally:
        other.close()
    expect(card.locator(".approval-outcome")).to_have_text("Approved.")
    expect(last_run(page)).to_have_attribute("data-state", "completed")
    expect(last_run(page).locator(".answer .text")).to_have_text("I sent the note: call the bank")
