// Answers in Markdown, drawn safely: model output is untrusted. The one place that turns
// answer text into DOM (history, live streams and the copy buttons all come through here).
//
// Three layers, each enough on its own for the usual attacks:
// 1. the parser never passes raw HTML through: an HTML block or tag in the text is drawn as
//    the literal text it is, and images become plain links (an answer loads nothing);
// 2. DOMPurify keeps only the tags and attributes below, and links only to http(s) and
//    mailto: anything else (javascript:, data:, event handlers, iframe, svg, style) is gone;
// 3. the page's Content-Security-Policy allows no inline script in any case.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

const ALLOWED_TAGS = [
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code",
  "pre", "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a",
];
const ALLOWED_ATTR = ["href", "title", "align", "start"];
const SAFE_URL = /^(?:https?:|mailto:)/i;
const PURIFY = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ALLOWED_URI_REGEXP: SAFE_URL,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const parser = new Marked({ gfm: true, breaks: true, async: false });
parser.use({
  renderer: {
    // Raw HTML in an answer is shown as text, never inserted as HTML.
    html({ text }) {
      return escapeHtml(text);
    },
    // An image would load a URL the model chose: it is drawn as a link to it instead.
    image({ href, text }) {
      return `<a href="${escapeHtml(href || "")}">${escapeHtml(text || href || "image")}</a>`;
    },
    // GFM task lists would need <input>: the box is drawn as text.
    checkbox({ checked }) {
      return checked ? "[x] " : "[ ] ";
    },
  },
});

/** A sanitized DocumentFragment for `markdown`, with links and code blocks finished. */
export function renderMarkdown(markdown) {
  const html = parser.parse(String(markdown ?? ""));
  const fragment = DOMPurify.sanitize(html, PURIFY);
  finishLinks(fragment);
  finishCodeBlocks(fragment);
  return fragment;
}

function finishLinks(root) {
  for (const link of root.querySelectorAll("a")) {
    const href = link.getAttribute("href") || "";
    if (!SAFE_URL.test(href)) {
      link.replaceWith(...link.childNodes);
      continue;
    }
    link.setAttribute("target", "_blank");
    link.setAttribute("rel", "noopener noreferrer");
  }
}

function finishCodeBlocks(root) {
  for (const pre of root.querySelectorAll("pre")) {
    const wrap = document.createElement("div");
    wrap.className = "code-block";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "secondary copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy this code");
    pre.replaceWith(wrap);
    pre.tabIndex = 0; // a scrolled block can be scrolled with the keyboard
    wrap.append(copy, pre);
  }
}

/** Copies `text` to the clipboard; resolves to true when it worked. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (err) {
    console.warn("copy to the clipboard failed", err);
    return false;
  }
}

/** Handles a click on a code block's copy button inside `container` (event delegation). */
export function bindCodeCopy(container, announce) {
  container.addEventListener("click", async (ev) => {
    const button = ev.target instanceof Element ? ev.target.closest(".copy-code") : null;
    if (!button) return;
    const code = button.parentElement?.querySelector("pre")?.textContent ?? "";
    const ok = await copyText(code);
    button.textContent = ok ? "Copied" : "Copy failed";
    announce?.(ok ? "Code copied." : "Could not copy the code.");
    window.setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });
}

/**
 * Draws a growing Markdown text into `target` at most once per animation frame. Text up to
 * the last blank line outside a code fence is final: it is parsed once and kept, and each
 * frame re-parses only the tail after it. `finish()` draws the whole text once, exactly.
 */
export class MarkdownStream {
  constructor(target) {
    this.target = target;
    this.text = "";
    this.doneUpTo = 0;
    this.done = document.createElement("div");
    this.tail = document.createElement("div");
    this.done.className = "md-done";
    this.tail.className = "md-tail";
    this.frame = null;
    this.streaming = false;
  }

  /** Adds a delta; the drawing happens on the next animation frame. */
  append(delta) {
    this.text += delta;
    if (!this.streaming) {
      this.streaming = true;
      this.target.replaceChildren(this.done, this.tail);
    }
    if (this.frame === null) this.frame = window.requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = null;
    const cut = stableEnd(this.text, this.doneUpTo);
    if (cut > this.doneUpTo) {
      this.done.append(renderMarkdown(this.text.slice(this.doneUpTo, cut)));
      this.doneUpTo = cut;
    }
    this.tail.replaceChildren(renderMarkdown(this.text.slice(this.doneUpTo)));
  }

  /** Draws `text` (the whole answer) once, replacing the streamed drawing. */
  finish(text = this.text) {
    if (this.frame !== null) window.cancelAnimationFrame(this.frame);
    this.frame = null;
    this.text = text;
    this.streaming = false;
    this.target.replaceChildren(renderMarkdown(text));
  }
}

/** The end of the last blank line after `from` that is outside a fenced code block. */
function stableEnd(text, from) {
  let inFence = false;
  let cut = from;
  let lineStart = from;
  while (lineStart < text.length) {
    const newline = text.indexOf("\n", lineStart);
    if (newline === -1) break;
    const line = text.slice(lineStart, newline);
    if (/^ {0,3}(```|~~~)/.test(line)) inFence = !inFence;
    else if (!inFence && line.trim() === "" && lineStart > from) cut = newline + 1;
    lineStart = newline + 1;
  }
  return cut;
}
