// The session API and the websocket stream of docs/protocol.md, for the browser.
//
// A Stream pipelines frames: each sendFrame() returns a promise settled by that frame's
// answer. The server answers frames in the order sent (§5), so answers are matched to a
// FIFO of pending frames, and the frame_index the server names is checked against it.
//
// A server with API keys wants one on every /v1 request (Authorization: Bearer KEY) and on
// the stream, where a browser cannot set headers: there the key travels as the subprotocol
// `bearer.KEY` beside `vidserve`, and the server answers `vidserve`.

const KEY_STORAGE = "vidserve-api-key"; // sessionStorage: the key lasts as long as the tab
// what the server takes as a key: it must travel as a header value and a subprotocol token
export const KEY_PATTERN = /^[A-Za-z0-9\-._~]+$/;

/** An HTTP error from the session API: the body's {"error": {code, message}}. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.serverMessage = message;
  }
}

/** The server answered a frame with an `error` message (§6): its code, message and index. */
export class FrameError extends Error {
  constructor(message) {
    super(`frame ${message.frame_index}: ${message.code}: ${message.message}`);
    this.code = message.code;
    this.frameIndex = message.frame_index;
    this.serverMessage = message.message;
  }
}

/** The socket closed: the close code and reason (§2, §7) say why. */
export class StreamClosed extends Error {
  constructor(code, reason) {
    super(`stream closed with ${code}${reason ? `: ${reason}` : ""}`);
    this.code = code;
    this.reason = reason;
  }
}

// What close codes mean to a user (docs/protocol.md §7); the server's reason follows.
const CLOSE_MEANINGS = {
  1000: "closed",
  1001: "server going away",
  1006: "connection lost (no close frame)",
  1009: "frame too large for the server",
  1011: "server error",
  1012: "server restarting",
  1013: "server overloaded: reconnect and resend",
  4401: "API key missing or refused",
  4403: "this page's origin is not allowed (VIDSERVE_ALLOWED_ORIGINS)",
  4404: "no such session",
  4409: "another stream is attached to this session",
  4410: "session closed or expired",
};

export function describeClose(code, reason) {
  const meaning = CLOSE_MEANINGS[code] ?? "closed";
  return `${code} (${meaning})${reason ? `: ${reason}` : ""}`;
}

/** No key, or one the server does not know: an HTTP 401 or a stream closed with 4401. */
export function isUnauthorized(error) {
  return (error instanceof ApiError && error.status === 401) || (error instanceof StreamClosed && error.code === 4401);
}

async function request(method, url, body, headers = {}) {
  const init = { method, headers: { accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const error = payload?.error ?? {};
    const said = error.message ?? response.statusText;
    // why the details: a 422 names the offending fields there (each once: the message may name them)
    const fields = (error.details ?? []).map((d) => `${d.field}: ${d.message}`).filter((d) => !said.includes(d));
    const message = [said, fields.join("; ")].filter(Boolean).join(" — ");
    throw new ApiError(response.status, error.code ?? "http_error", message);
  }
  return payload;
}

/** The server's API, relative to the page: /demo/ → /v1/... also behind a path prefix. */
export class Api {
  constructor(base = new URL("../", document.baseURI)) {
    this.base = base;
    this.key = storage(() => sessionStorage.getItem(KEY_STORAGE)) || null;
  }

  /** Send `key` (null: none) from now on, and keep it for this tab only. */
  setKey(key) {
    this.key = key || null;
    storage(() => (this.key ? sessionStorage.setItem(KEY_STORAGE, this.key) : sessionStorage.removeItem(KEY_STORAGE)));
  }

  headers() {
    return this.key ? { authorization: `Bearer ${this.key}` } : {};
  }

  /** A stream's subprotocols: the key as `bearer.KEY` beside `vidserve`; none without a key. */
  protocols() {
    return this.key ? ["vidserve", `bearer.${this.key}`] : [];
  }

  url(path) {
    return new URL(path, this.base);
  }

  request(method, path, body) {
    return request(method, this.url(path), body, this.headers());
  }

  ready() {
    // why not request(): /readyz answers 503 with a useful body while engines load
    return fetch(this.url("readyz")).then((r) => r.json());
  }

  createSession(body) {
    return this.request("POST", "v1/sessions", body);
  }

  getSession(id) {
    return this.request("GET", `v1/sessions/${encodeURIComponent(id)}`);
  }

  deleteSession(id) {
    return this.request("DELETE", `v1/sessions/${encodeURIComponent(id)}`);
  }

  /** The configured models, each with its `task` and `state` (GET /v1/models). */
  models() {
    return this.request("GET", "v1/models").then((body) => body.models);
  }
}

/** sessionStorage may be off (a privacy setting): the key then lasts as long as the page. */
function storage(use) {
  try {
    return use();
  } catch {
    return null;
  }
}

/**
 * One websocket attached to a session of `task`.
 *
 * Answers (§4, §10): interpolation frames get zero or more `result` headers, each followed
 * by one binary image, then `frame_done`; segmentation frames get one `result` followed by
 * `bytes.length` binaries; embed frames get, when they complete a window, one `result`
 * with no binary, then `frame_done`. Any may get one `error` naming the frame instead.
 */
export class Stream {
  constructor(url, { task, protocols = [], onError = () => {}, onClose = () => {} } = {}) {
    this.url = url;
    this.protocols = protocols; // Api.protocols(): how the key reaches the server
    // why by task: only a segmentation frame ends at its result; the others end at frame_done
    this.endsAtResult = task === "segment";
    this.onError = onError; // errors not tied to a frame (a bad header or control)
    this.onClose = onClose;
    this.pending = []; // frames sent and not yet answered, in send order
    this.controls = []; // control messages awaiting their ack, in send order
    this.binaries = []; // lengths still expected after the last header
    this.current = null; // the result header those binaries belong to
    this.closed = null;
  }

  /** Connect; resolves with the session object of the first message (§2). */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, this.protocols);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      ws.onmessage = (event) => {
        if (!opened) {
          const message = JSON.parse(event.data);
          if (message.type !== "session") {
            reject(new Error(`expected the session message first, got ${message.type}`));
            return;
          }
          opened = true;
          resolve(message);
          return;
        }
        try {
          this.receive(event.data);
        } catch (error) {
          this.onError({ code: "client_error", message: error.message, frame_index: null });
        }
      };
      ws.onclose = (event) => {
        this.closed = new StreamClosed(event.code, event.reason);
        // why reject on close: 4404/4409/4410 arrive before any message (§2)
        if (!opened) reject(this.closed);
        for (const frame of this.pending.splice(0)) frame.reject(this.closed);
        for (const control of this.controls.splice(0)) control.reject(this.closed);
        this.onClose(this.closed);
      };
      // the close event that follows an error event carries the code; nothing to do here
      ws.onerror = () => {};
    });
  }

  /**
   * Send one frame: its header (with optional fields such as a mask), then its bytes.
   * Resolves with {index, results: [{header, data: [ArrayBuffer...]}], done, sentAt,
   * answeredAt}, or rejects with the server's error (an object with code and message).
   */
  sendFrame(bytes, header) {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      const frame = { index: header.frame_index, results: [], resolve, reject, sentAt: performance.now() };
      this.pending.push(frame);
      this.ws.send(JSON.stringify({ type: "frame", ...header }));
      this.ws.send(bytes);
    });
  }

  /** A control message (mask, remove_object, reset); resolves on its ack. */
  sendControl(message) {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.controls.push({ resolve, reject });
      this.ws.send(JSON.stringify(message));
    });
  }

  get inFlight() {
    return this.pending.length;
  }

  close(code = 1000, reason = "client done") {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
  }

  receive(data) {
    if (data instanceof ArrayBuffer) {
      this.receiveBinary(data);
      return;
    }
    if (this.binaries.length) throw new Error("a text message arrived where a binary was due");
    const message = JSON.parse(data);
    switch (message.type) {
      case "result":
        this.receiveResult(message);
        break;
      case "frame_done":
        this.finish(message.frame_index, { done: message });
        break;
      case "error":
        if (message.frame_index === null || message.frame_index === undefined) {
          // why first to the control queue: a control that fails is answered with
          // frame_index null instead of its ack (§10)
          const control = this.controls.shift();
          if (control) control.reject(message);
          this.onError(message);
        } else {
          this.finish(message.frame_index, { error: message });
        }
        break;
      case "ack":
        this.controls.shift()?.resolve(message);
        break;
      default:
        throw new Error(`unknown message type ${message.type}`);
    }
  }

  receiveResult(message) {
    // interpolation sends one number, segmentation a list (§4, §10), embed none
    const bytes = message.bytes ?? [];
    this.binaries = Array.isArray(bytes) ? [...bytes] : [bytes];
    this.current = { header: message, data: [] };
    if (this.binaries.length === 0) this.completeResult();
  }

  receiveBinary(data) {
    const expected = this.binaries.shift();
    if (expected === undefined) throw new Error("a binary message arrived without a result header");
    if (data.byteLength !== expected) {
      throw new Error(`binary of ${data.byteLength} bytes where the header said ${expected}`);
    }
    this.current.data.push(data);
    if (this.binaries.length === 0) this.completeResult();
  }

  completeResult() {
    const result = this.current;
    this.current = null;
    const frame = this.pending[0];
    if (!frame || frame.index !== result.header.frame_index) {
      throw new Error(`result for frame ${result.header.frame_index}, which is not the one awaited`);
    }
    frame.results.push(result);
    if (this.endsAtResult) this.finish(result.header.frame_index, { done: result.header });
  }

  /** The awaited frame's answer: `done` (frame_done or its result) or `error`. */
  finish(index, { done, error }) {
    const frame = this.pending[0];
    if (!frame) throw new Error(`an answer for frame ${index}, but no frame is pending`);
    if (frame.index !== index) {
      throw new Error(`an answer for frame ${index} while frame ${frame.index} was awaited`);
    }
    this.pending.shift();
    const answer = { index, results: frame.results, sentAt: frame.sentAt, answeredAt: performance.now() };
    if (error) frame.reject(Object.assign(new FrameError(error), answer));
    else frame.resolve({ ...answer, done });
  }
}
