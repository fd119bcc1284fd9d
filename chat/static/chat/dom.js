// Small DOM helpers: elements are built with textContent only, never from HTML strings.

/** Creates an element with attributes (class, dataset, others) and children (nodes or text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** "120 ms", "1.4 s", "2 min 5 s". */
export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** Compact JSON for arguments and results. */
export function formatJson(value) {
  try {
    return JSON.stringify(value);
  } catch (err) {
    return String(value);
  }
}

/** The element in `root` whose data-message-id is `id`, if any. */
export function byMessageId(root, id) {
  if (!id) return null;
  return root.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
}
