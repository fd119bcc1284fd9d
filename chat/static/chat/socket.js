// The thread's WebSocket: reconnects with backoff, resumes by seq, and hands the page a
// gapless, duplicate-free stream of run events (docs/protocol.md).

import { ClientFrameType, CloseCode, FrameType, isFinalClose } from "./protocol.js";

export { isFinalClose };

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;
const MAX_RESUMES_WITHOUT_PROGRESS = 3;

/** The delay before reconnect attempt `attempt` (0-based): exponential, capped, jittered. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * One logical connection to a thread, made of as many sockets as it takes.
 *
 * Callbacks: onStatus({state, ...}), onEvent(event) for each run event in seq order,
 * onFrame(frame) for the other server frames, onReady() after each (re)connect has caught up.
 */
export class ThreadSocket {
  constructor({ threadId, afterSeq, callbacks }) {
    this.threadId = threadId;
    this.lastSeq = afterSeq;
    this.callbacks = callbacks;
    this.ws = null;
    this.attempt = 0;
    this.final = false;
    this.pending = new Map();
    this.resumeInFlight = false;
    this.resumesWithoutProgress = 0;
    this.lastError = null;
    this.timers = { retry: null, countdown: null, ping: null, pong: null };
    window.addEventListener("online", () => this.onOnline());
    window.addEventListener("offline", () => this.onOffline());
  }

  /** Opens the first socket. */
  start() {
    this.open("connecting");
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one frame; returns false when there is no open socket to send it on. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Skips the remaining wait and reconnects now (the "Retry now" button, or after a final close). */
  reconnectNow() {
    this.final = false;
    this.clearRetry();
    this.attempt = 0;
    this.open("connecting");
  }

  url() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${window.location.host}/ws/chat/${this.threadId}/?after_seq=${this.lastSeq}`;
  }

  open(state) {
    this.detach();
    this.status({ state, attempt: this.attempt });
    this.lastError = null;
    this.resumeInFlight = false;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      this.status({ state: "failed", message: `The browser refused the connection: ${err.message}` });
      return;
    }
    this.ws = ws;
    ws.addEventListener("message", (msg) => this.onMessage(ws, msg));
    ws.addEventListener("close", (ev) => this.onClose(ws, ev));
  }

  detach() {
    this.stopKeepalive();
    if (this.ws !== null) {
      const old = this.ws;
      this.ws = null;
      if (old.readyState === WebSocket.OPEN || old.readyState === WebSocket.CONNECTING) {
        old.close(CloseCode.NORMAL, "replaced");
      }
    }
  }

  onMessage(ws, msg) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch (err) {
      console.error("netra: a frame that is not JSON", err, msg.data);
      return;
    }
    if (typeof frame.seq === "number") {
      this.onRunEvent(frame);
      return;
    }
    switch (frame.type) {
      case FrameType.CONNECTION_ESTABLISHED:
        this.attempt = 0;
        this.startKeepalive();
        this.status({ state: "connected" });
        break;
      case FrameType.RESUME_COMPLETE:
        this.onResumeComplete(frame);
        break;
      case FrameType.PONG:
        clearTimeout(this.timers.pong);
        this.timers.pong = null;
        break;
      case FrameType.ERROR:
        if (frame.close_code) this.lastError = frame;
        this.callbacks.onFrame(frame);
        break;
      default:
        this.callbacks.onFrame(frame);
    }
  }

  onRunEvent(event) {
    if (event.seq <= this.lastSeq) return;
    if (event.seq > this.lastSeq + 1) {
      this.pending.set(event.seq, event);
      this.requestResume();
      return;
    }
    this.deliver(event);
    this.drain();
  }

  deliver(event) {
    this.lastSeq = event.seq;
    this.resumesWithoutProgress = 0;
    this.callbacks.onEvent(event);
  }

  drain() {
    for (const seq of [...this.pending.keys()].sort((a, b) => a - b)) {
      if (seq <= this.lastSeq) {
        this.pending.delete(seq);
      } else if (seq === this.lastSeq + 1) {
        const event = this.pending.get(seq);
        this.pending.delete(seq);
        this.deliver(event);
      } else {
        break;
      }
    }
  }

  requestResume() {
    if (this.resumeInFlight) return;
    if (this.resumesWithoutProgress >= MAX_RESUMES_WITHOUT_PROGRESS) {
      this.callbacks.onFrame({
        type: FrameType.OUT_OF_SYNC,
        message: "Some events could not be recovered; reload the page to see the whole thread.",
      });
      return;
    }
    if (this.send({ type: ClientFrameType.RESUME, after_seq: this.lastSeq })) {
      this.resumeInFlight = true;
      this.resumesWithoutProgress += 1;
    }
  }

  onResumeComplete(frame) {
    this.resumeInFlight = false;
    if (!frame.recovered) {
      // The events after lastSeq were pruned: no resume can fill that gap, so the page
      // reloads the thread's history (its messages stay) instead of asking again.
      this.pending.clear();
      this.lastSeq = Math.max(this.lastSeq, frame.last_seq);
      this.callbacks.onFrame({
        type: FrameType.HISTORY_PRUNED,
        message: "Older events of this thread were pruned; reload the page to see the whole thread.",
      });
      this.callbacks.onReady();
      return;
    }
    this.drain();
    if (this.pending.size > 0) this.requestResume();
    this.callbacks.onReady();
  }

  onClose(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.stopKeepalive();
    this.pending.clear();
    if (isFinalClose(ev.code)) {
      this.final = true;
      this.status({ state: "closed", code: ev.code, error: this.lastError });
      return;
    }
    this.scheduleReconnect(ev.code);
  }

  scheduleReconnect(code) {
    this.clearRetry();
    if (navigator.onLine === false) {
      this.status({ state: "offline" });
      return;
    }
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      this.status({ state: "reconnecting", seconds, attempt: this.attempt, code });
    };
    tick();
    this.timers.countdown = setInterval(tick, 1000);
    this.timers.retry = setTimeout(() => {
      this.clearRetry();
      this.open("reconnecting");
    }, delay);
  }

  clearRetry() {
    clearTimeout(this.timers.retry);
    clearInterval(this.timers.countdown);
    this.timers.retry = null;
    this.timers.countdown = null;
  }

  onOnline() {
    if (this.final || this.isOpen) return;
    if (this.ws === null) this.reconnectNow();
  }

  onOffline() {
    if (this.final) return;
    if (this.ws === null) {
      this.clearRetry();
      this.status({ state: "offline" });
    }
  }

  startKeepalive() {
    this.stopKeepalive();
    this.timers.ping = setInterval(() => {
      if (!this.send({ type: ClientFrameType.PING }) || this.timers.pong !== null) return;
      this.timers.pong = setTimeout(() => this.onPongMissing(), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  stopKeepalive() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.pong);
    this.timers.ping = null;
    this.timers.pong = null;
  }

  onPongMissing() {
    // The socket looks open but nothing comes back: drop it and reconnect.
    this.timers.pong = null;
    this.detach();
    this.scheduleReconnect(CloseCode.ABNORMAL);
  }

  status(info) {
    this.callbacks.onStatus(info);
  }
}
