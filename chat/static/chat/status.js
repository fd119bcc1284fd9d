// What the connection status says after a final close (4000-4499): the words, the link or
// button that helps, and the reason the composer shows.

import { el } from "./dom.js";
import { CloseCode } from "./protocol.js";

/** A small button of the status line or the composer note. */
export function actionButton(label, onClick) {
  const button = el("button", { type: "button", class: "link conn-action", text: label });
  button.addEventListener("click", onClick);
  return button;
}

/** {state (a data-state override or null), text, extra (nodes), reason} for a close. */
export function describeClose(info, { loginUrl, threadsUrl, onReconnect }) {
  const message = info.error?.message;
  if (info.code === CloseCode.UNAUTHENTICATED) {
    return {
      state: "expired",
      text: "Your session has expired.",
      extra: [el("a", { href: loginUrl, class: "conn-action", text: "Log in again" })],
      reason: "Your session has expired: log in again to keep chatting.",
    };
  }
  if (info.code === CloseCode.THREAD_NOT_FOUND) {
    return {
      state: "gone",
      text: "This thread no longer exists.",
      extra: [el("a", { href: threadsUrl, class: "conn-action", text: "Back to your threads" })],
      reason: "This thread is gone; start a new one from your threads.",
    };
  }
  if (info.code === CloseCode.FORBIDDEN) {
    return {
      state: null,
      text: "Your account may not use the chat.",
      extra: [],
      reason: message || "This account is not permitted to chat.",
    };
  }
  const what = {
    [CloseCode.PROTOCOL_ERROR]: "The server closed the connection after invalid messages.",
    [CloseCode.AUTH_TIMEOUT]: "The server could not check your login in time.",
    [CloseCode.RATE_LIMITED]: "Too many connections or messages.",
  }[info.code] || `The server closed the connection (${info.code}).`;
  return {
    state: null,
    text: what,
    extra: [actionButton("Reconnect", onReconnect)],
    reason: message ? `${message}` : `${what} Reconnect when ready.`,
  };
}

/** The indicator's words for any state but "closed" (describeClose has those), and a
 * "Retry now" button while a reconnect waits. */
export function describeState(info, onRetry) {
  switch (info.state) {
    case "connecting":
      return { text: "Connecting…", extra: [] };
    case "connected":
      return { text: "Connected", extra: [] };
    case "reconnecting":
      if (info.seconds > 0) {
        return {
          text: `Reconnecting in ${info.seconds} s (attempt ${info.attempt})`,
          extra: [actionButton("Retry now", onRetry)],
        };
      }
      return { text: "Reconnecting…", extra: [] };
    case "offline":
      return { text: "Offline: waiting for the network", extra: [] };
    default:
      return { text: info.message || info.state, extra: [] };
  }
}

/** What a screen reader is told when the connection goes from `previous` to `state`. */
export function announcementOf(previous, state) {
  if (state === previous) return null;
  return (
    {
      connected: previous === "connecting" ? null : "Connected again.",
      reconnecting: previous === "connected" ? "The connection was lost; reconnecting." : null,
      offline: "You are offline.",
    }[state] || null
  );
}
