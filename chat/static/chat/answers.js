// Answers outside a live run: a server-rendered answer drawn as Markdown with its Copy
// button, and the copy-with-feedback every Copy button of an answer uses.

import { el } from "./dom.js";
import { copyText, renderMarkdown } from "./markdown.js";

/** Draws a server-rendered answer (`li.msg-assistant`) as Markdown, once, with Copy. */
export function drawServerAnswer(li, onCopy) {
  if (!li.classList.contains("msg-assistant") || li.dataset.drawn) return;
  li.dataset.drawn = "1";
  const box = li.querySelector(".text");
  const source = box.textContent;
  box.classList.add("md");
  box.replaceChildren(renderMarkdown(source));
  const copy = el("button", { type: "button", class: "secondary copy-answer", text: "Copy" });
  copy.setAttribute("aria-label", "Copy the answer as Markdown");
  copy.addEventListener("click", () => onCopy(source, copy));
  li.append(el("div", { class: "answer-actions" }, copy));
}

/** Copies an answer's Markdown; the button and the announcer say whether it worked. */
export async function copyWithFeedback(text, button, announce) {
  const ok = await copyText(text);
  button.textContent = ok ? "Copied" : "Copy failed";
  announce(ok ? "The answer was copied as Markdown." : "Could not copy the answer.");
  window.setTimeout(() => {
    button.textContent = "Copy";
  }, 1500);
}
