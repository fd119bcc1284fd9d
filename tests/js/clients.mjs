// Drives netra-chat's HTTP streams with official clients, for tests/test_agui.py and
// tests/test_sse.py: the AG-UI TypeScript client (@ag-ui/client: HttpAgent, whose run
// pipeline parses the SSE stream, verifies every event with the protocol verifier and
// applies it) and a real EventSource (npm `eventsource`).
//
// Usage: node clients.mjs '<json options>'; prints one JSON object on stdout.
//   {"mode": "run", "url", "token", "threadId", "runId", "text", "cutAfterIds"?: n}
//   {"mode": "rejoin", "url", "token", "threadId", "runId", "lastEventId"}
//   {"mode": "eventsource", "url", "token", "untilCompleted": n, "timeoutMs"}
import { HttpAgent } from "@ag-ui/client";
import { EventSource } from "eventsource";

const options = JSON.parse(process.argv[2]);

// A fetch that records each SSE event's id, and, with cutAfterIds, ends the body right
// before the first event of the (n+1)-th distinct id: a dropped connection at an event
// boundary, after which the client knows its Last-Event-ID.
function recordingFetch(record, cutAfterIds) {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!response.body) return response;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    let buffer = "";
    let ids = [];
    let cut = false;
    const body = new ReadableStream({
      async pull(controller) {
        if (cut) { controller.close(); return; }
        const { value, done } = await reader.read();
        if (done) { controller.close(); return; }
        buffer += decoder.decode(value, { stream: true });
        let out = "";
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end + 2);
          buffer = buffer.slice(end + 2);
          const idLine = block.split("\n").find((line) => line.startsWith("id:"));
          if (idLine) {
            const id = Number(idLine.slice(3).trim());
            if (!ids.includes(id)) ids.push(id);
            if (cutAfterIds !== undefined && ids.length > cutAfterIds) {
              cut = true;
              reader.cancel().catch(() => {});
              break;
            }
            record.ids.push(id);
            record.lastEventId = id;
          }
          out += block;
        }
        if (out) controller.enqueue(encoder.encode(out));
        if (cut) controller.close();
      },
      cancel() { reader.cancel().catch(() => {}); },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

class RejoiningAgent extends HttpAgent {
  // The rejoin endpoint: a GET with Last-Event-ID instead of the POST of a new run.
  requestInit() {
    return {
      method: "GET",
      headers: { ...this.headers, Accept: "text/event-stream", "Last-Event-ID": String(options.lastEventId) },
      signal: this.abortController.signal,
    };
  }
}

async function runAgui() {
  const record = { ids: [], lastEventId: null };
  const headers = { Authorization: `Bearer ${options.token}` };
  const fetchImpl = recordingFetch(record, options.cutAfterIds);
  const Agent = options.mode === "rejoin" ? RejoiningAgent : HttpAgent;
  const agent = new Agent({ url: options.url, headers, threadId: options.threadId, fetch: fetchImpl });
  if (options.mode === "run") {
    agent.messages = [{ id: `user-${options.runId}`, role: "user", content: options.text }];
  }
  const events = [];
  let error = null;
  try {
    await agent.runAgent({ runId: options.runId }, { onEvent: ({ event }) => { events.push(event); } });
  } catch (exc) {
    error = String(exc && exc.message ? exc.message : exc);
  }
  return { events, error, ids: record.ids, lastEventId: record.lastEventId, messages: agent.messages };
}

async function runEventSource() {
  const events = [];
  let opens = 0;
  let completed = 0;
  const errors = [];
  return await new Promise((resolve) => {
    const source = new EventSource(options.url, {
      fetch: (input, init) =>
        fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${options.token}` } }),
    });
    const finish = (timedOut) => {
      source.close();
      resolve({ events, opens, errors, timedOut });
    };
    const timer = setTimeout(() => finish(true), options.timeoutMs ?? 20000);
    source.onopen = () => { opens += 1; };
    source.onerror = (err) => { errors.push(String(err && err.message ? err.message : err)); };
    const types = ["agent_started", "agent_thinking", "tool_executing", "tool_completed",
      "partial_result", "agent_error", "agent_completed", "approval_requested", "approval_resolved"];
    for (const type of types) {
      source.addEventListener(type, (message) => {
        events.push({ id: Number(message.lastEventId), type, data: JSON.parse(message.data) });
        if (type === "agent_completed") {
          completed += 1;
          if (completed >= options.untilCompleted) { clearTimeout(timer); finish(false); }
        }
      });
    }
  });
}

const result = options.mode === "eventsource" ? await runEventSource() : await runAgui();
process.stdout.write(JSON.stringify(result) + "\n");
