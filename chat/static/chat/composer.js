// The composer of the chat page: its elements, their bindings, and how they are drawn from
// the page's state (chat.js decides that state; this module only shows it).

import { el } from "./dom.js";

/** A fresh client_msg_id: the retry key of one message. */
export function newClientMsgId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  return `m-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/** The history bubble of a message being sent, until its ack. */
export function pendingBubble(clientMsgId, text) {
  return el(
    "li",
    { class: "msg msg-user pending", dataset: { clientMsgId } },
    el("span", { class: "who", text: "You" }),
    el("div", { class: "text", text }),
    el("span", { class: "msg-state", text: "sending…" }),
  );
}

export class Composer {
  /** Binds the form: Enter or the button submits, Shift+Enter adds a line. */
  constructor({ onSubmit, onCancel, onInput }) {
    this.form = document.getElementById("composer");
    this.input = document.getElementById("input");
    this.sendButton = document.getElementById("send");
    this.cancelButton = document.getElementById("cancel");
    this.note = document.getElementById("composer-note");
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      onSubmit();
    });
    this.input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        onSubmit();
      }
    });
    this.input.addEventListener("input", onInput);
    this.cancelButton.addEventListener("click", onCancel);
  }

  /** Draws the composer: whether one can type and send, the cancel button, the note. */
  render({ closedReason, busy, waiting, cancelling, connected, runActive, notice }) {
    let reason = "";
    let canType = true;
    if (closedReason) {
      reason = closedReason;
      canType = false;
    } else if (busy) {
      reason = cancelling
        ? "Cancelling the run…"
        : waiting
          ? "The agent waits for your approval above. Approve or deny it, or cancel the run."
          : "The agent is answering. You can write again when it has finished, or cancel the run.";
      canType = false;
    } else if (!connected) {
      reason = "Not connected: you can send again once the connection is back.";
    } else {
      reason = "Enter sends, Shift+Enter adds a new line.";
    }
    const hadFocus = document.activeElement === this.input;
    this.input.disabled = !canType;
    this.sendButton.disabled = !canType || !connected || !this.input.value.trim();
    const showCancel = runActive && !closedReason;
    this.cancelButton.hidden = !showCancel;
    this.cancelButton.disabled = cancelling || !connected;
    this.cancelButton.textContent = cancelling ? "Cancelling…" : "Cancel run";
    if (hadFocus && !canType && showCancel) this.cancelButton.focus();
    this.note.textContent = notice ? `${notice} ${reason}` : reason;
    this.note.dataset.kind = closedReason ? "error" : busy ? "busy" : "info";
  }
}
