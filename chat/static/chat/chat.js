// The chat page: connection status, the composer's state (drawn by composer.js), and the
// live run timelines in the history.

import { Composer, newClientMsgId, pendingBubble } from "./composer.js";
import { byMessageId, el } from "./dom.js";
import { PastRuns } from "./history.js";
import { copyWithFeedback, drawServerAnswer } from "./answers.js";
import { bindCodeCopy } from "./markdown.js";
import { ApprovalAnswer, ClientFrameType, ErrorCode, EventType, FrameType } from "./protocol.js";
import { RunView } from "./runs.js";
import { ThreadSocket } from "./socket.js";
import { actionButton, announcementOf, describeClose, describeState } from "./status.js";
import { ThreadTitle, touchCurrentThread } from "./threads.js";

const NEAR_BOTTOM_PX = 120;

const RELOAD_GUARD_MS = 60000;

/** Reloads the page unless it was reloaded for `key` within the last minute (no loop). */
function reloadOnce(key) {
  const last = Number(window.sessionStorage.getItem(key) || 0);
  if (Date.now() - last < RELOAD_GUARD_MS) return false;
  window.sessionStorage.setItem(key, String(Date.now()));
  window.location.reload();
  return true;
}

class ChatPage {
  constructor(root) {
    this.root = root;
    this.threadId = root.dataset.threadId;
    this.loginUrl = root.dataset.loginUrl || "/accounts/login/";
    this.threadsUrl = root.dataset.threadsUrl || "/threads/";
    this.history = document.getElementById("history");
    this.announcer = document.getElementById("announcer");
    this.status = document.getElementById("conn-status");

    this.runs = new Map();
    this.outbox = new Map();
    this.activeRunId = null;
    this.cancelling = false;
    this.connection = "connecting";
    this.closedReason = null;
    this.notice = null;

    const resumeAfter = Number.parseInt(root.dataset.resumeAfter ?? root.dataset.lastSeq ?? "0", 10) || 0;
    this.socket = new ThreadSocket({
      threadId: this.threadId,
      afterSeq: resumeAfter,
      callbacks: {
        onStatus: (info) => this.onStatus(info),
        onEvent: (event) => this.onEvent(event),
        onFrame: (frame) => this.onFrame(frame),
        onReady: () => this.onReady(),
      },
    });
    this.composer = new Composer({
      onSubmit: () => this.submit(),
      onCancel: () => this.cancelRun(),
      onInput: () => this.renderComposer(),
    });
    this.input = this.composer.input;
    this.note = this.composer.note;
    bindCodeCopy(this.history, (text) => this.announce(text));
    this.title = new ThreadTitle({ threadId: this.threadId, announce: (text) => this.announce(text) });
    this.past = new PastRuns({
      threadId: this.threadId,
      history: this.history,
      upTo: resumeAfter,
      makeRun: (runId) => this.addPastRun(runId),
      drawMessage: (li) => this.drawMessage(li),
    });
    this.stuck = true;
    this.history.addEventListener("scroll", () => {
      this.stuck = this.isNearBottom();
    });
    this.scrollToBottom(true);
    this.renderComposer();
    this.socket.start();
    this.past.start().then(() => {
      if (this.stuck) this.scrollToBottom(true);
      this.history.dataset.pastReady = "1";
    });
  }

  // --- composer ---------------------------------------------------------------------------

  get busy() {
    return this.activeRunId !== null || this.outbox.size > 0;
  }

  submit(text = this.input.value) {
    const body = text.trim();
    if (!body || this.busy || this.connection !== "connected") {
      this.renderComposer();
      return;
    }
    const clientMsgId = newClientMsgId();
    const bubble = pendingBubble(clientMsgId, body);
    document.getElementById("empty-thread")?.remove();
    this.history.append(bubble);
    this.outbox.set(clientMsgId, { clientMsgId, text: body, bubble });
    if (text === this.input.value) this.input.value = "";
    this.sendMessage(clientMsgId);
    this.scrollToBottom(true);
    this.renderComposer();
  }

  sendMessage(clientMsgId) {
    const message = this.outbox.get(clientMsgId);
    if (!message) return;
    this.socket.send({ type: ClientFrameType.USER_MESSAGE, text: message.text, client_msg_id: clientMsgId });
  }

  /** Sends the answer to an approval; true when it went out (the run's approval_resolved
   * then updates every page showing it, this one included). */
  answerApproval(approvalId, decision, comment) {
    const frame = { type: ClientFrameType.APPROVAL, approval_id: approvalId, decision };
    if (comment) frame.comment = comment.slice(0, 2000);
    if (!this.socket.send(frame)) {
      this.showNotice("Not connected: answer again once the connection is back.");
      return false;
    }
    this.announce(decision === ApprovalAnswer.APPROVE ? "Approving." : "Denying.");
    return true;
  }

  cancelRun() {
    if (!this.activeRunId || this.cancelling) return;
    if (this.socket.send({ type: ClientFrameType.CANCEL, run_id: this.activeRunId })) {
      this.cancelling = true;
      this.announce("Cancelling the run.");
    }
    this.renderComposer();
  }

  renderComposer() {
    this.composer.render({
      closedReason: this.closedReason,
      busy: this.busy,
      waiting: this.runs.get(this.activeRunId)?.root.dataset.state === "waiting",
      cancelling: this.cancelling,
      connected: this.connection === "connected",
      runActive: this.activeRunId !== null,
      notice: this.notice,
    });
  }

  // --- connection status --------------------------------------------------------------------

  onStatus(info) {
    const previous = this.connection;
    this.connection = info.state;
    this.status.dataset.state = info.state;
    const text = this.status.querySelector(".conn-text");
    const extra = [];
    if (info.state === "closed") {
      this.showClosed(info, text, extra);
    } else {
      const shown = describeState(info, () => this.socket.reconnectNow());
      text.textContent = shown.text;
      extra.push(...shown.extra);
    }
    this.status.replaceChildren(this.status.querySelector(".conn-dot"), text, ...extra);
    const said = announcementOf(previous, info.state);
    if (said) this.announce(said);
    if (info.state !== "connected") this.cancelling = false;
    this.renderComposer();
  }

  showClosed(info, text, extra) {
    const closed = describeClose(info, {
      loginUrl: this.loginUrl,
      threadsUrl: this.threadsUrl,
      onReconnect: () => {
        this.closedReason = null;
        this.socket.reconnectNow();
      },
    });
    if (closed.state) this.status.dataset.state = closed.state;
    text.textContent = closed.text;
    extra.push(...closed.extra);
    this.closedReason = closed.reason;
    this.announce(`${text.textContent} ${this.closedReason}`);
  }

  // --- frames and events --------------------------------------------------------------------

  onReady() {
    // Anything sent but not acknowledged before the connection dropped (the outbox holds a
    // message until its ack or error) goes again with the same client_msg_id; the server
    // answers a retry with duplicate:true, never a second run.
    for (const message of this.outbox.values()) this.sendMessage(message.clientMsgId);
    this.renderComposer();
  }

  onFrame(frame) {
    switch (frame.type) {
      case FrameType.ACK:
        this.onAck(frame);
        break;
      case FrameType.ERROR:
        this.onError(frame);
        break;
      case FrameType.OUT_OF_SYNC:
        this.showNotice(frame.message, "Reload", () => window.location.reload());
        break;
      case FrameType.HISTORY_PRUNED:
        // Reload the thread's history once; if that did not help, say so and stop.
        if (this.outbox.size === 0 && reloadOnce(`netra.pruned:${window.location.pathname}`)) break;
        this.showNotice(frame.message, "Reload", () => window.location.reload());
        break;
      default:
        break;
    }
    this.renderComposer();
  }

  onAck(frame) {
    const message = this.outbox.get(frame.client_msg_id);
    if (!message) return;
    this.outbox.delete(frame.client_msg_id);
    const { bubble } = message;
    const existing = byMessageId(this.history, frame.message_id);
    if (existing && existing !== bubble) {
      bubble.remove();
    } else {
      bubble.dataset.messageId = frame.message_id;
      bubble.classList.remove("pending");
      bubble.querySelector(".msg-state")?.remove();
      const run = this.runs.get(frame.run_id);
      if (run) this.history.insertBefore(bubble, run.root);
    }
    const run = this.runs.get(frame.run_id);
    if (!run || !run.finished) this.activeRunId = frame.run_id;
  }

  onError(frame) {
    if (frame.close_code) return;
    const message = frame.ref ? this.outbox.get(frame.ref) : null;
    if (message) {
      this.outbox.delete(frame.ref);
      message.bubble.classList.add("failed");
      const state = message.bubble.querySelector(".msg-state");
      if (state) state.textContent = `not sent: ${frame.message}`;
      if (!this.input.value) this.input.value = message.text;
      this.announce(`Your message was not sent: ${frame.message}`);
      return;
    }
    if (frame.code === ErrorCode.APPROVAL_RESOLVED || frame.code === ErrorCode.APPROVAL_NOT_FOUND) {
      this.showNotice(
        frame.code === ErrorCode.APPROVAL_RESOLVED
          ? "That approval had already been answered."
          : "That approval no longer exists.",
      );
      return;
    }
    if (frame.code === ErrorCode.RUN_NOT_ACTIVE) {
      this.cancelling = false;
      this.showNotice("That run had already ended.");
      return;
    }
    this.showNotice(`The server says: ${frame.message}`);
  }

  showNotice(text, actionLabel, action) {
    this.notice = text;
    this.announce(text);
    this.renderComposer();
    if (actionLabel) this.note.append(" ", actionButton(actionLabel, action));
  }

  onEvent(event) {
    const stick = this.isNearBottom();
    let run = this.runs.get(event.run_id);
    if (!run) run = this.addRun(event);
    const said = run.apply(event);
    if (event.type === EventType.AGENT_STARTED) this.placeRun(run);
    if (!run.finished) this.activeRunId = run.runId;
    if (run.assistantMessageId) this.reconcileAnswer(run);
    if (event.type === EventType.AGENT_COMPLETED) {
      if (this.activeRunId === run.runId) this.activeRunId = null;
      this.cancelling = false;
      this.notice = null;
      touchCurrentThread();
    }
    if (said) this.announce(said);
    this.renderComposer();
    if (event.type === EventType.AGENT_COMPLETED && document.activeElement === document.body) this.input.focus();
    this.scrollToBottom(stick);
  }

  addRun(event) {
    const run = new RunView({
      runId: event.run_id,
      onRetry: (view) => this.retry(view),
      onCopy: (text, button) => this.copyAnswer(text, button),
      onApprove: (approvalId, decision, comment) => this.answerApproval(approvalId, decision, comment),
    });
    this.runs.set(event.run_id, run);
    document.getElementById("empty-thread")?.remove();
    this.history.append(run.root);
    return run;
  }

  /** A finished run drawn from the event log after a reload (history.js places it). */
  addPastRun(runId) {
    if (this.runs.has(runId)) return null;
    const run = new RunView({
      runId,
      past: true,
      onRetry: (view) => this.retry(view),
      onCopy: (text, button) => this.copyAnswer(text, button),
      onApprove: (approvalId, decision, comment) => this.answerApproval(approvalId, decision, comment),
    });
    this.runs.set(runId, run);
    return run;
  }

  /** A server-rendered message: an answer is drawn as Markdown, with its copy button. */
  drawMessage(li) {
    drawServerAnswer(li, (text, button) => this.copyAnswer(text, button));
  }

  copyAnswer(text, button) {
    copyWithFeedback(text, button, (said) => this.announce(said));
  }

  placeRun(run) {
    // The run goes right after the user message that started it; that message is in the
    // server-rendered history, or it was sent from this page, or it came from elsewhere.
    const userMessage = byMessageId(this.history, run.userMessageId);
    if (userMessage) {
      userMessage.after(run.root);
      return;
    }
    if (this.outbox.size === 0) {
      run.root.before(
        el(
          "li",
          { class: "msg msg-user elsewhere", dataset: { messageId: run.userMessageId || "" } },
          el("span", { class: "who", text: "You" }),
          el("div", { class: "text", text: "(a message sent from another window)" }),
        ),
      );
    }
  }

  reconcileAnswer(run) {
    // A run that ended between the page's render and the socket's replay has its answer
    // in the server-rendered history too: keep one. The timeline wins when it is complete.
    const rendered = [...this.history.querySelectorAll(".msg-assistant[data-message-id]")].find(
      (node) => node.dataset.messageId === run.assistantMessageId && !run.root.contains(node),
    );
    if (!rendered) return;
    if (run.sawStart) rendered.remove();
    else {
      run.root.remove();
      this.runs.delete(run.runId);
    }
  }

  retry(run) {
    const userMessage = byMessageId(this.history, run.userMessageId);
    const text = userMessage?.querySelector(".text")?.textContent;
    if (!text || userMessage.classList.contains("elsewhere")) {
      this.input.focus();
      return;
    }
    this.submit(text);
  }

  // --- helpers --------------------------------------------------------------------------------

  announce(text) {
    this.announcer.textContent = "";
    window.setTimeout(() => {
      this.announcer.textContent = text;
    }, 50);
  }

  isNearBottom() {
    const scroller = this.history;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom(force) {
    if (force) this.history.scrollTop = this.history.scrollHeight;
  }
}

const root = document.getElementById("chat");
if (root) new ChatPage(root);
