// One agent run drawn as a timeline: start, thinking steps, tool cards, the streamed answer
// and the end state. Built from run events only, so replayed and live events draw the same.

import { el, formatDuration, formatJson } from "./dom.js";
import { MarkdownStream } from "./markdown.js";
import { ApprovalAnswer, ApprovalDecision, EventType, RunStatus, TOOL_DENIED, TOOL_OK } from "./protocol.js";

const STATE_LABELS = {
  running: "Working…",
  waiting: "Waiting for your approval",
  [RunStatus.COMPLETED]: "Completed",
  [RunStatus.FAILED]: "Failed",
  [RunStatus.CANCELLED]: "Cancelled",
};

export class RunView {
  /** `past`: a run drawn from the event log after a reload, its timeline collapsed. */
  constructor({ runId, onRetry, onCopy, onApprove, past = false }) {
    this.runId = runId;
    this.onRetry = onRetry;
    this.onCopy = onCopy;
    // onApprove(approvalId, decision, comment) -> true when the answer was sent.
    this.onApprove = onApprove;
    this.approvals = new Map();
    this.past = past;
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
      { class: "run-steps", open: !past },
      el("summary", {}, this.summaryText, " ", this.badge),
      this.steps,
    );
    this.answerText = el("div", { class: "text md" });
    this.markdown = new MarkdownStream(this.answerText);
    this.actions = el("div", { class: "answer-actions", hidden: true });
    this.answer = el(
      "div",
      { class: "msg msg-assistant answer", hidden: true, "aria-busy": "true" },
      el("span", { class: "who", text: "Agent" }),
      this.answerText,
      this.actions,
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
    if (past) this.root.classList.add("past");
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
      case EventType.APPROVAL_REQUESTED:
        return this.askApproval(data);
      case EventType.APPROVAL_RESOLVED:
        return this.resolveApproval(data);
      case EventType.PARTIAL_RESULT:
        this.assistantMessageId = data.message_id || this.assistantMessageId;
        this.answer.hidden = false;
        this.markdown.append(data.text || "");
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
    const approval = el("div", { class: "tool-approval" });
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
      approval,
      body,
    );
    this.toolCards.set(data.tool_call_id, { card, status, body, approval });
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
    const denied = data.status === TOOL_DENIED;
    const took = formatDuration(data.duration_ms);
    entry.card.dataset.state = ok ? "ok" : denied ? "denied" : "error";
    entry.status.textContent = ok ? `done in ${took}` : denied ? "denied" : `failed after ${took}`;
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
    if (denied) return `The ${data.tool} tool did not run: denied.`;
    return ok ? `The ${data.tool} tool finished.` : `The ${data.tool} tool failed: ${data.error?.message || ""}`;
  }

  /** approval_requested: the call's card shows the reason, an optional comment and the
   * Approve / Deny buttons (native buttons: Tab and Enter/Space work). */
  askApproval(data) {
    let entry = this.toolCards.get(data.tool_call_id);
    if (!entry) {
      this.addToolCard({ tool_call_id: data.tool_call_id, tool: data.tool, args: data.args });
      entry = this.toolCards.get(data.tool_call_id);
    }
    const id = data.approval_id;
    const commentId = `approval-comment-${id}`;
    const comment = el("input", { type: "text", id: commentId, class: "approval-comment", maxlength: "2000" });
    comment.setAttribute("placeholder", "Optional comment");
    const approve = el("button", { type: "button", class: "approve", text: "Approve" });
    const deny = el("button", { type: "button", class: "secondary deny", text: "Deny" });
    const state = el("span", { class: "approval-state" });
    const box = el(
      "div",
      { class: "approval", dataset: { approvalId: id, state: "pending" } },
      el("p", { class: "approval-reason" }, el("strong", { text: "Needs your approval: " }), data.reason || ""),
      el("label", { for: commentId, class: "approval-label", text: "Comment" }),
      comment,
      el("div", { class: "approval-buttons" }, approve, deny, state),
    );
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", `Approve or deny the ${data.tool} call`);
    if (data.expires_at) box.title = `Expires at ${new Date(data.expires_at).toLocaleString()}`;
    const answer = (decision) => {
      if (!this.onApprove) return;
      const sent = this.onApprove(id, decision, comment.value.trim());
      if (!sent) return;
      for (const control of [approve, deny, comment]) control.disabled = true;
      state.textContent = "Sending your answer…";
    };
    approve.addEventListener("click", () => answer(ApprovalAnswer.APPROVE));
    deny.addEventListener("click", () => answer(ApprovalAnswer.DENY));
    entry.approval.replaceChildren(box);
    entry.card.dataset.state = "waiting";
    entry.status.textContent = "waiting for your approval";
    this.approvals.set(id, { box, entry });
    this.setState("waiting");
    if (this.past) this.details.open = true;
    return `The ${data.tool} tool asks for your approval: ${data.reason || ""} Approve or deny it below.`;
  }

  /** approval_resolved (here or on another device): the buttons go, the decision stays. */
  resolveApproval(data) {
    const found = this.approvals.get(data.approval_id);
    const label = {
      [ApprovalDecision.APPROVED]: "Approved",
      [ApprovalDecision.DENIED]: "Denied",
      [ApprovalDecision.EXPIRED]: "Expired: nobody answered in time",
    }[data.decision] || data.decision;
    const said = `${label}${data.comment ? `: ${data.comment}` : ""}.`;
    if (found) {
      found.box.dataset.state = data.decision;
      found.box.replaceChildren(el("p", { class: "approval-outcome", text: said }));
      found.entry.card.dataset.state = "running";
      found.entry.status.textContent = data.decision === ApprovalDecision.APPROVED ? "running…" : "";
    }
    this.setState("running");
    return `The approval was answered: ${said}`;
  }

  setState(state) {
    if (this.finished) return;
    this.root.dataset.state = state;
    this.badge.textContent = STATE_LABELS[state];
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
    this.errorBox.replaceChildren(...parts);
    this.errorBox.hidden = false;
  }

  complete(data) {
    this.finished = true;
    const status = data.status || RunStatus.COMPLETED;
    this.assistantMessageId = data.message_id || this.assistantMessageId;
    const text = typeof data.text === "string" && data.text ? data.text : this.markdown.text;
    this.markdown.finish(text);
    this.answer.hidden = text === "";
    this.answer.setAttribute("aria-busy", "false");
    this.showActions(status, text);
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

  /** The answer's actions: copy it as Markdown; retry a failed run (a new message). */
  showActions(status, text) {
    const buttons = [];
    if (text && this.onCopy) {
      const copy = el("button", { type: "button", class: "secondary copy-answer", text: "Copy" });
      copy.setAttribute("aria-label", "Copy the answer as Markdown");
      copy.addEventListener("click", () => this.onCopy(this.markdown.text, copy));
      buttons.push(copy);
    }
    if (buttons.length) {
      this.actions.replaceChildren(...buttons);
      this.actions.hidden = false;
    }
    if (status === RunStatus.FAILED && this.onRetry) {
      const retry = el("button", { type: "button", class: "secondary retry", text: "Retry" });
      retry.setAttribute("aria-label", "Retry: send the same message again");
      retry.addEventListener("click", () => this.onRetry(this));
      this.errorBox.append(" ", retry);
      this.errorBox.hidden = false;
    }
  }

  updateSummary() {
    const tools = this.toolCount ? `, ${this.toolCount} tool call${this.toolCount > 1 ? "s" : ""}` : "";
    this.summaryText.textContent = `Run timeline: ${this.stepCount} step${this.stepCount !== 1 ? "s" : ""}${tools}`;
  }
}
