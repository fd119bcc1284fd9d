// Thread management on the pages: the search box over thread titles (the thread list and
// the chat page's sidebar) and the inline rename of the chat page's title.

import { el } from "./dom.js";

/** Filters the list named by the search box's data-filter as the reader types. */
function bindSearch(input) {
  const list = document.getElementById(input.dataset.filter);
  if (!list) return;
  const none = el("p", { class: "note no-match", text: "No thread title matches.", hidden: true });
  list.after(none);
  const apply = () => {
    const needle = input.value.trim().toLocaleLowerCase();
    let shown = 0;
    for (const item of list.querySelectorAll("li:not(.empty)")) {
      const title = item.querySelector("a")?.textContent.toLocaleLowerCase() ?? "";
      const match = !needle || title.includes(needle);
      item.hidden = !match;
      if (match) shown += 1;
    }
    none.hidden = shown > 0 || !needle;
  };
  input.addEventListener("input", apply);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && input.value) {
      input.value = "";
      apply();
    }
  });
  apply();
}

for (const input of document.querySelectorAll("input[data-filter]")) bindSearch(input);

/** The open thread just had activity: the sidebar (by last activity) shows it first. */
export function touchCurrentThread() {
  const current = document.querySelector(".sidebar .current");
  const time = current?.querySelector("time");
  if (time) {
    time.textContent = "just now";
    time.setAttribute("datetime", new Date().toISOString());
  }
  if (current?.parentElement && current.parentElement.firstElementChild !== current) {
    current.parentElement.prepend(current);
  }
}

function csrfToken() {
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
}

/** The chat page's title, renamed in place: a click on Rename, Enter saves, Escape cancels. */
export class ThreadTitle {
  constructor({ threadId, announce }) {
    this.threadId = threadId;
    this.announce = announce;
    this.box = document.getElementById("thread-title");
    this.heading = document.getElementById("thread-heading");
    this.button = document.getElementById("rename");
    if (!this.box || !this.heading || !this.button) return;
    this.button.hidden = false;
    this.button.addEventListener("click", () => this.edit());
  }

  edit() {
    const input = el("input", {
      type: "text",
      class: "rename-input",
      maxlength: 200,
      value: this.box.dataset.title || "",
      "aria-label": "Thread title",
      placeholder: this.box.dataset.defaultTitle || "Title",
    });
    const form = el("form", { class: "rename-form" }, input);
    const error = el("span", { class: "form-error", role: "alert" });
    form.append(error);
    let done = false;
    const close = () => {
      done = true;
      form.replaceWith(this.heading);
      this.button.hidden = false;
      this.button.focus();
    };
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (done) return;
      const saved = await this.save(input.value, error);
      if (saved) close();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        close();
      }
    });
    this.heading.replaceWith(form);
    this.button.hidden = true;
    input.focus();
    input.select();
  }

  async save(title, error) {
    let response;
    try {
      response = await fetch(`/api/threads/${this.threadId}/`, {
        method: "PATCH",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ title }),
      });
    } catch (err) {
      error.textContent = "Not saved: the server could not be reached.";
      return false;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      error.textContent = `Not saved: ${body.error?.message || response.status}`;
      return false;
    }
    this.show(body.title);
    return true;
  }

  show(title) {
    const shown = title || this.box.dataset.defaultTitle || "Thread";
    this.box.dataset.title = title;
    this.heading.textContent = shown;
    document.title = `${shown} · netra-chat`;
    const current = document.querySelector(".sidebar .current a");
    if (current) current.textContent = shown;
    this.announce?.(`Renamed to ${shown}.`);
  }
}
