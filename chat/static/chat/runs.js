// One agent run drawn as a timeline: start, thinking steps, tool cards, the streamed answer
// and the end state. Built from run events only, so replayed and live events draw the same.

import { el, formatDuration, formatJson } from "./dom.js";
import { EventType, RunStatus, TOOL_OK } from "./protocol.js";

const STATE_LABELS = {
  running: "Working…",
  [RunStatus.COMPLETED]: "Completed",
  [RunStatus.FAILED]: "Failed",
  [RunStatus.CANCELLED]: "Cancelled",
};

export class RunView {
  constructor({ runId, onRetry }) {
    this.runId = runId;
    this.onRetry = onRetry;
    this.sawStart = false;
    this.finished = false;
    this.userMessageId = null;
    this.assistantMessageId = null;
    this.toolCards = new Map();
    this.stepCount = 0;
    this.toolCount = 0;

    this.badge = el("span", { class: "run-state", text: STATE_LABELS.running });
    this.summaryText = el("span", { class: "run-summary", text: "Agent run" });
    this.steps = el("ol", { class: "steps" });
    this.details = el(
      "details",
      { class: "run-steps", open: true },
      el("summary", {}, this.summaryText, " ", this.badge),
      this.steps,
    );
    this.answerText = el("div", { class: "text" });
    this.answer = el(
      "div",
      { class: "msg msg-assistant answer", hidden: true, "aria-busy": "true" },
      el("span", { class: "who", text: "Agent" }),
      this.answerText,
    );
    this.errorBox = el("div", { class: "run-error", hidden: true });
    this.end = el("p", { class: "run-end", hidden: true });
    this.root = el(
      "li",
      { class: "run", dataset: { runId, state: "running" } },
      this.details,
      this.answer,
      this.errorBox,
      this.end,
    );
  }

  /** Draws one run event; returns a short sentence for screen readers, or null. */
  apply(event) {
    const data = event.data || {};
    switch (event.type) {
      case EventType.AGENT_STARTED:
        this.sawStart = true;
        this.userMessageId = data.message_id || null;
        this.addStep("step-start", "Started", data.agent ? `the ${data.agent} agent` : "the agent");
        return "The agent started working.";
      case EventType.AGENT_THINKING:
        this.addStep("step-thinking", "Thinking", data.text || "");
        return null;
      case EventType.TOOL_EXECUTING:
        this.addToolCard(data);
        return `Calling the ${data.tool} tool.`;
      case EventType.TOOL_COMPLETED:
        return this.completeToolCard(data);
      case EventType.PARTIAL_RESULT:
        this.assistantMessageId = data.message_id || this.assistantMessageId;
        this.answer.hidden = false;
        this.answerText.textContent += data.text || "";
        return null;
      case EventType.AGENT_ERROR:
        this.showError(data);
        return `The run failed: ${data.message}`;
      case EventType.AGENT_COMPLETED:
        return this.complete(data);
      default:
        return null;
    }
  }

  addStep(kind, label, text) {
    this.stepCount += 1;
    this.steps.append(
      el("li", { class: `step ${kind}` }, el("span", { class: "step-label", text: label }), " ", text),
    );
    this.updateSummary();
  }

  addToolCard(data) {
    this.toolCount += 1;
    const status = el("span", { class: "tool-status", text: "running…" });
    const body = el("div", { class: "tool-body" });
    const card = el(
      "li",
      { class: "step tool-card", dataset: { state: "running", tool: data.tool || "" } },
      el(
        "div",
        { class: "tool-head" },
        el("span", { class: "step-label", text: "Tool" }),
        el("strong", { class: "tool-name", text: data.tool || "?" }),
        status,
      ),
      el("div", { class: "tool-args" }, el("span", { class: "kv", text: "args" }), el("code", { text: formatJson(data.args ?? {}) })),
      body,
    );
    this.toolCards.set(data.tool_call_id, { card, status, body });
    this.steps.append(card);
    this.updateSummary();
  }

  completeToolCard(data) {
    let entry = this.toolCards.get(data.tool_call_id);
    if (!entry) {
      this.addToolCard({ tool_call_id: data.tool_call_id, tool: data.tool, args: {} });
      entry = this.toolCards.get(data.tool_call_id);
    }
    const ok = data.status === TOOL_OK;
    const took = formatDuration(data.duration_ms);
    entry.card.dataset.state = ok ? "ok" : "error";
    entry.status.textContent = ok ? `done in ${took}` : `failed after ${took}`;
    entry.body.replaceChildren(
      ok
        ? el("div", { class: "tool-result" }, el("span", { class: "kv", text: "result" }), el("code", { text: formatJson(data.result) }))
        : el(
            "div",
            { class: "tool-error" },
            el("span", { class: "kv", text: "error" }),
            el("code", { text: data.error?.code || "error" }),
            " ",
            data.error?.message || "The tool failed.",
          ),
    );
    return ok ? `The ${data.tool} tool finished.` : `The ${data.tool} tool failed: ${data.error?.message || ""}`;
  }

  showError(data) {
    const hint = data.retryable
      ? "This looks temporary: sending the message again may work."
      : "Sending the same message again will not help.";
    const parts = [
      el("strong", { text: "The run failed: " }),
      data.message || data.code || "unknown error",
      el("span", { class: "error-code", text: ` (${data.code})` }),
      el("br"),
      el("span", { class: "retry-hint", text: hint }),
    ];
    if (data.retryable && this.onRetry) {
      const button = el("button", { type: "button", class: "secondary retry", text: "Send again" });
      button.addEventListener("click", () => this.onRetry(this));
      parts.push(" ", button);
    }
    this.errorBox.replaceChildren(...parts);
    this.errorBox.hidden = false;
  }

  complete(data) {
    this.finished = true;
    const status = data.status || RunStatus.COMPLETED;
    this.assistantMessageId = data.message_id || this.assistantMessageId;
    if (typeof data.text === "string" && data.text && this.answerText.textContent !== data.text) {
      this.answerText.textContent = data.text;
    }
    this.answer.hidden = this.answerText.textContent === "";
    this.answer.setAttribute("aria-busy", "false");
    this.root.dataset.state = status;
    this.badge.textContent = STATE_LABELS[status] || status;
    for (const { card, status: label } of this.toolCards.values()) {
      if (card.dataset.state === "running") {
        card.dataset.state = "error";
        label.textContent = "interrupted";
      }
    }
    const took = formatDuration(data.duration_ms);
    const sentence = {
      [RunStatus.COMPLETED]: `Completed in ${took}.`,
      [RunStatus.FAILED]: `Failed after ${took}.`,
      [RunStatus.CANCELLED]: `Cancelled after ${took}.`,
    }[status] || `Ended (${status}) after ${took}.`;
    this.end.textContent = sentence;
    this.end.hidden = false;
    if (status === RunStatus.COMPLETED) {
      const answer = this.answerText.textContent;
      return `Answer: ${answer} ${sentence}`.trim();
    }
    return `The run ${status === RunStatus.CANCELLED ? "was cancelled" : "failed"}. ${sentence}`;
  }

  updateSummary() {
    const tools = this.toolCount ? `, ${this.toolCount} tool call${this.toolCount > 1 ? "s" : ""}` : "";
    this.summaryText.textContent = `Run timeline: ${this.stepCount} step${this.stepCount !== 1 ? "s" : ""}${tools}`;
  }
}
