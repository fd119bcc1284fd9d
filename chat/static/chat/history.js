// The thread's past: the server renders the last page of messages; this draws their runs'
// timelines from the event log (collapsed), and loads earlier pages when the reader
// scrolls up. Live runs (after the page's resume seq) come from the socket instead.

import { el } from "./dom.js";
import { EventType } from "./protocol.js";

const EVENTS_PER_REQUEST = 5000;
const OLDER_MARGIN_PX = 200; // how far above the view the marker starts the next page

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

export class PastRuns {
  /**
   * `history`: the <ol>; `upTo`: the page's resume seq (the socket draws what is after it);
   * `makeRun(runId)`: a collapsed RunView registered with the page; `drawMessage(li)`: turns
   * a server-drawn message into its final form (Markdown, actions).
   */
  constructor({ threadId, history, upTo, makeRun, drawMessage, onChange }) {
    this.threadId = threadId;
    this.history = history;
    this.upTo = upTo;
    this.makeRun = makeRun;
    this.drawMessage = drawMessage;
    this.onChange = onChange;
    this.loading = false;
    this.hasMore = history.dataset.hasMore === "1";
    const after = history.dataset.eventsAfter;
    this.eventsAfter = after === "" || after === undefined ? null : Number.parseInt(after, 10);
    this.failed = false;
  }

  /** Draws the timelines of the server-rendered page and starts watching for scroll-up. */
  async start() {
    const messages = [...this.history.querySelectorAll(".msg[data-message-id]")];
    this.oldestId = messages[0]?.dataset.messageId || null;
    for (const li of messages) this.drawMessage(li);
    this.watchOlder();
    if (this.eventsAfter !== null) await this.drawRuns(messages, this.eventsAfter, this.upTo);
  }

  /** Fetches the events in (after, upTo] and draws each complete run over its messages. */
  async drawRuns(messages, after, upTo) {
    this.placeRuns(await this.runEvents(after, upTo), messages);
  }

  /** The events in (after, upTo], or null (said on the console) if they could not be had. */
  async runEvents(after, upTo) {
    if (after >= upTo) return [];
    try {
      return await this.events(after, upTo);
    } catch (err) {
      console.warn("could not load the past run timelines", err);
      return null;
    }
  }

  /** Draws each run that starts and ends within `events` over its messages. */
  placeRuns(events, messages) {
    if (!events?.length) return;
    const byRun = new Map();
    for (const event of events) {
      if (!byRun.has(event.run_id)) byRun.set(event.run_id, []);
      byRun.get(event.run_id).push(event);
    }
    for (const [runId, runEvents] of byRun) {
      if (runEvents[0].type !== EventType.AGENT_STARTED) continue; // began on an older page
      if (runEvents.at(-1).type !== EventType.AGENT_COMPLETED) continue; // the socket has it
      this.place(runId, runEvents, messages);
    }
    this.onChange?.();
  }

  place(runId, runEvents, messages) {
    const mine = messages.filter((li) => li.dataset.runId === runId && li.isConnected);
    const answer = mine.find((li) => li.classList.contains("msg-assistant"));
    const asked = mine.find((li) => li.classList.contains("msg-user"));
    if (!answer && !asked) return;
    const run = this.makeRun(runId);
    if (!run) return;
    for (const event of runEvents) run.apply(event);
    if (answer) answer.replaceWith(run.root);
    else asked.after(run.root);
  }

  async events(after, upTo) {
    const collected = [];
    let cursor = after;
    while (cursor < upTo) {
      const limit = Math.min(EVENTS_PER_REQUEST, upTo - cursor);
      const page = await getJson(`/api/threads/${this.threadId}/events/?after_seq=${cursor}&limit=${limit}`);
      for (const event of page.events) if (event.seq <= upTo) collected.push(event);
      if (!page.events.length || !page.has_more) break;
      cursor = page.events.at(-1).seq;
    }
    return collected;
  }

  watchOlder() {
    const older = document.getElementById("older");
    if (!older) return;
    older.querySelector("button")?.addEventListener("click", () => this.loadOlder());
    if (!("IntersectionObserver" in window)) return;
    this.observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.loadOlder();
      },
      { root: this.history, rootMargin: `${OLDER_MARGIN_PX}px 0px 0px 0px` },
    );
    this.observer.observe(older);
  }

  /**
   * Loads the page of messages before the first one shown, with their runs' timelines. Both
   * are fetched first and drawn in one go, so the reader's place is kept from the moment of
   * drawing (a scroll during the fetches counts). If the marker is still in view afterwards
   * (a short page), the page before is loaded too: the observer would not fire again.
   */
  async loadOlder() {
    if (this.loading || !this.hasMore || this.failed) return;
    const older = document.getElementById("older");
    const before = this.oldestId;
    if (!before || !older) return;
    this.loading = true;
    older.setAttribute("aria-busy", "true");
    try {
      const page = await getJson(`/api/threads/${this.threadId}/history/?before=${encodeURIComponent(before)}`);
      const newerStart = this.eventsAfter;
      const events =
        page.events_after_seq !== null && newerStart !== null
          ? await this.runEvents(page.events_after_seq, newerStart)
          : [];
      const items = page.messages.map((m) => this.messageItem(m));
      const scroller = this.history;
      const fromBottom = scroller.scrollHeight - scroller.scrollTop;
      older.after(...items);
      for (const li of items) this.drawMessage(li);
      this.placeRuns(events, items);
      if (page.events_after_seq !== null) this.eventsAfter = page.events_after_seq;
      scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the reader's place
      this.hasMore = page.has_more;
      if (page.messages.length) this.oldestId = page.messages[0].id;
      if (!this.hasMore) {
        this.observer?.disconnect();
        older.remove();
      }
    } catch (err) {
      this.failed = true;
      console.warn("could not load earlier messages", err);
      older.replaceChildren(el("span", { class: "note", text: "Earlier messages could not be loaded: reload to try again." }));
    } finally {
      this.loading = false;
      older.removeAttribute("aria-busy");
    }
    if (this.hasMore && !this.failed && this.olderInView(older)) setTimeout(() => this.loadOlder(), 0);
  }

  /** Whether the marker is within the observer's reach (its root margin above the view). */
  olderInView(older) {
    const view = this.history.getBoundingClientRect();
    const marker = older.getBoundingClientRect();
    return marker.bottom >= view.top - OLDER_MARGIN_PX && marker.top <= view.bottom;
  }

  messageItem(message) {
    const attrs = { class: `msg msg-${message.role}`, dataset: { messageId: message.id } };
    if (message.run_id) attrs.dataset.runId = message.run_id;
    return el(
      "li",
      attrs,
      el("span", { class: "who", text: message.role === "user" ? "You" : "Agent" }),
      el("div", { class: "text", text: message.text }),
    );
  }
}
