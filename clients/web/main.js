// The demo page: pick a task and a source, (for segmentation) paint the first frame's mask,
// then stream frames to a session and show what comes back, with fps and latency. The tasks
// offered are those the server serves (GET /v1/models); the others stay in view, disabled,
// each with its reason. A file the browser cannot play is named with what it does play and
// the command line that sends it. A server with API keys answers 401 until the user gives
// the page a key; it is kept for the tab (sessionStorage), never shown.
//
// window.vidserveDemo mirrors the page's state for tests and for curious users.

import { describeWindow, renderLabels, windowSummary } from "./actions.js";
import { explainUnplayable, playableFormats } from "./formats.js";
import { colourOf, decodeIndexPng, drawOverlay, maskFromRles, maskMessage } from "./masks.js";
import { Painter } from "./painter.js";
import { Api, FrameError, KEY_PATTERN, Stream, StreamClosed, describeClose, isUnauthorized } from "./protocol.js";
import { UnplayableError, VideoSource, capture, encode, frameSize, mediaError } from "./source.js";

const $ = (selector) => document.querySelector(selector);
const OBJECTS = 4; // the server's default max_objects for a segmentation session
const FPS_WINDOW_MS = 2000;
// the server's names of its tasks (Task.title), for "this server serves no … model"
const TASK_TITLES = { interpolate: "interpolation", segment: "segmentation", embed: "clip encoder" };

const api = new Api();
const source = new VideoSource($("#video"));
const painter = new Painter($("#paint"), (objects) => {
  demo.paintedObjects = objects;
  updateButtons();
});

const demo = {
  state: "idle", // idle → opening → ready → connecting → streaming → finishing → done | stopped | error
  task: "interpolate",
  serverReady: false, // the server is up and serves at least one model that is ready
  needsKey: false, // the server answered 401: no key, or the one given was refused
  keyStored: false, // the page holds a key (never the key itself: this object is public)
  models: null, // the server's models: [{name, task, state, reason}], once read
  tasks: {}, // each task of the page: {offered, reason}, reason saying why one is not, once read
  playableFormats: [], // the formats this browser says it plays (canPlayType), named
  sessionId: null,
  framesSent: 0,
  framesAnswered: 0, // frames answered with their results (frame_done, or a segmentation result)
  framesFailed: 0, // frames answered with an error
  resultsReceived: 0, // interpolation: in-between images; segmentation: masks; embed: windows
  skipped: 0, // webcam frames not sent because the server was busy
  overlaidFrames: 0, // segmentation results that had some object to draw
  overlayPixels: 0, // pixels covered by objects in the last mask drawn
  objectsSeen: [],
  paintedObjects: [],
  lastWindow: null, // embed: the last window's result, less its embedding
  lastRttMs: null,
  lastServerMs: null,
  errors: [],
  lastError: null,
  close: null, // {code, reason} once the stream closed
  server: null, // the session object, fetched from the server when streaming ends
};
window.vidserveDemo = demo;

let run = null; // the streaming run in progress: its stream, size and bookkeeping
let openings = 0; // sources opened so far: a source chosen later makes an earlier one's result moot
let openedFile = null; // the file the source plays, if it is one

// --- state and display ---------------------------------------------------------------------

function setState(state) {
  demo.state = state;
  const pill = $("#status");
  pill.textContent = state;
  pill.dataset.state = state;
  document.body.dataset.state = state;
  updateButtons();
}

function updateButtons() {
  const busy = ["connecting", "streaming", "finishing", "stopping"].includes(demo.state);
  const painted = demo.task !== "segment" || painter.objects.length > 0;
  const offered = demo.tasks[demo.task]?.offered !== false; // why !== false: offered until the models say
  const startable = source.kind && demo.serverReady && !demo.needsKey && painted && offered;
  $("#start").disabled = busy || !startable;
  $("#stop").disabled = !busy && demo.state !== "done"; // a finished file's session stays open until Stop
  for (const control of document.querySelectorAll("#setup fieldset:not(#brush) :is(input, select, button)")) {
    control.disabled = busy || isUnservedTask(control);
  }
}

const isUnservedTask = (control) => control.name === "task" && demo.tasks[control.value]?.offered === false;

/** A source that cannot play: said beside the file input as well as in the errors. */
function reportSourceError(text) {
  reportError(text);
  $("#source-error").textContent = text;
  $("#source-error").hidden = false;
}

function reportError(text) {
  demo.errors.push(text);
  demo.lastError = text;
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("#errors").append(item);
  console.warn(text); // why warn, not error: the server's answers are expected outcomes
}

const average = (values) => values.reduce((a, b) => a + b, 0) / (values.length || 1);
const ms = (value) => (value === null ? "–" : `${value.toFixed(1)} ms`);

function showStats() {
  if (!run) return;
  const now = performance.now();
  run.answerTimes = run.answerTimes.filter((t) => now - t < FPS_WINDOW_MS);
  const span = Math.min(FPS_WINDOW_MS, now - run.startedAt);
  $("#fps").textContent = span > 0 ? ((run.answerTimes.length * 1000) / span).toFixed(1) : "–";
  $("#rtt").textContent = `${ms(demo.lastRttMs)} last, ${ms(average(run.rtts.slice(-30)))} mean of 30`;
  $("#server-ms").textContent = `${ms(demo.lastServerMs)} last, ${ms(average(run.serverMs.slice(-30)))} mean of 30`;
  $("#counts").textContent = `${demo.framesSent} / ${demo.framesAnswered} / ${demo.framesFailed}`;
  $("#results").textContent = String(demo.resultsReceived);
  $("#skipped").textContent = String(demo.skipped);
}

function resetCounters() {
  Object.assign(demo, {
    sessionId: null,
    framesSent: 0,
    framesAnswered: 0,
    framesFailed: 0,
    resultsReceived: 0,
    skipped: 0,
    overlaidFrames: 0,
    overlayPixels: 0,
    objectsSeen: [],
    lastWindow: null,
    lastRttMs: null,
    lastServerMs: null,
    errors: [],
    lastError: null,
    close: null,
    server: null,
  });
  $("#errors").replaceChildren();
  $("#session").textContent = "–";
}

function drawTo(canvas, image) {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").drawImage(image, 0, 0);
  return canvas.getContext("2d", { willReadFrequently: true });
}

// --- setup ---------------------------------------------------------------------------------

/** A number field's value; the fallback only when empty, so a bad number reaches the server's check. */
function numberIn(selector, fallback) {
  const value = $(selector).value.trim();
  return value === "" ? fallback : Number(value);
}

function settings() {
  return {
    task: document.querySelector('input[name="task"]:checked').value,
    maxWidth: Number($("#max-width").value) || 320,
    encoding: $("#encoding").value,
    inFlight: Math.max(1, Number($("#in-flight").value) || 1),
    factor: Number($("#factor").value) || 2,
    processingSize: $("#processing-size").value === "" ? null : Number($("#processing-size").value),
    maskFormat: $("#mask-format").value,
    embedModel: $("#embed-model").value || null,
    framesPerClip: numberIn("#frames-per-clip", 16),
    samplingRate: numberIn("#sampling-rate", 4),
    keepRatio: numberIn("#keep-ratio", 1),
    drop: $("#drop").value,
  };
}

function sessionBody(options) {
  if (options.task === "interpolate") {
    const format = { "image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp" }[options.encoding];
    return { task: "interpolate", factor: options.factor, output_format: format };
  }
  if (options.task === "embed") {
    // why no stride: the server's default puts windows side by side, each frame in one window
    return {
      task: "embed",
      ...(options.embedModel ? { model: options.embedModel } : {}),
      frames_per_clip: options.framesPerClip,
      sampling_rate: options.samplingRate,
      keep_ratio: options.keepRatio,
      drop: options.drop,
    };
  }
  return {
    task: "segment",
    processing_size: options.processingSize,
    max_objects: OBJECTS,
    output_format: options.maskFormat,
  };
}

const CAPTIONS = {
  interpolate: ["Original (later frame of the pair)", "Interpolated (in between)"],
  segment: ["Frame sent", "Mask, live"],
  embed: ["Frame sent", "Result"],
};

function selectTask() {
  demo.task = settings().task;
  document.body.dataset.task = demo.task;
  [$("#original-caption").textContent, $("#output-caption").textContent] = CAPTIONS[demo.task];
  updateButtons();
}

/** Offer the tasks the server serves, the others disabled with why, and its ready VideoMAE models. */
async function offerServedTasks() {
  try {
    demo.models = (await api.models()).map(({ name, task, state, reason }) => ({ name, task, state, reason }));
  } catch (error) {
    if (isUnauthorized(error)) askForKey(error);
    else reportError(`reading the server's models: ${error.message}`);
    return;
  }
  keyAccepted();
  showTasks();
  offerEmbedModels(demo.models.filter((model) => model.task === "embed" && model.state === "ready"));
}

function showTasks() {
  const radios = [...document.querySelectorAll('input[name="task"]')];
  for (const radio of radios) {
    const reason = unservedReason(radio.value);
    demo.tasks[radio.value] = { offered: reason === null, reason };
    const label = radio.closest("label");
    label.classList.toggle("unserved", reason !== null);
    label.querySelector(".reason").textContent = reason ?? "";
  }
  const offered = radios.filter((radio) => demo.tasks[radio.value].offered);
  if (offered.length > 0 && !demo.tasks[settings().task].offered) {
    offered[0].checked = true;
    selectTask();
  }
  updateButtons();
}

/** Why `task` cannot run here, or null: the server serves no model of it, or none is ready yet. */
function unservedReason(task) {
  const models = demo.models.filter((model) => model.task === task);
  if (models.length === 0) return `this server serves no ${TASK_TITLES[task]} model`;
  if (models.some((model) => model.state === "ready")) return null;
  return models.map(modelState).join("; ");
}

const modelState = ({ name, state, reason }) =>
  state === "failed" ? `${name} failed to load: ${reason ?? "the server gave no reason"}` : `${name} is ${state}`;

function offerEmbedModels(models) {
  const picker = $("#embed-model");
  const chosen = picker.value; // why kept: the list is read again while other models load
  picker.replaceChildren(...models.map((model) => new Option(model.name, model.name)));
  if (models.some((model) => model.name === chosen)) picker.value = chosen;
}

function buildObjectPicker() {
  const picker = $("#objects");
  for (const id of [...Array(OBJECTS).keys()].map((i) => i + 1).concat(0)) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.object = String(id);
    button.setAttribute("role", "radio");
    button.textContent = id === 0 ? "erase" : String(id);
    button.title = id === 0 ? "erase (paint background)" : `paint object ${id}`;
    button.style.background = id === 0 ? "#5a6570" : colourOf(id);
    button.addEventListener("click", () => pickObject(id));
    picker.append(button);
  }
  pickObject(1);
}

function pickObject(id) {
  painter.objectId = id;
  for (const button of document.querySelectorAll("#objects button")) {
    button.setAttribute("aria-checked", String(Number(button.dataset.object) === id));
  }
}

/** The first frame, at the size frames will be sent, for the painter. */
async function loadFirstFrame() {
  if (!source.kind) return;
  await source.rewind();
  const canvas = capture(source.video, frameSize(source.width, source.height, settings().maxWidth));
  painter.load(canvas);
  demo.paintedObjects = [];
  drawTo($("#original"), canvas);
}

/** Open a source (`file`: the file chosen, if it is one); one that cannot play says why. */
async function openSource(open, file = null) {
  const opening = ++openings;
  try {
    stopRun();
    setState("opening");
    $("#source-error").hidden = true;
    openedFile = file;
    await open();
    if (opening !== openings) return;
    await loadFirstFrame();
    if (opening === openings) setState("ready");
  } catch (error) {
    if (opening !== openings) return;
    source.release(); // why: a source that cannot play is none, so Start stays off
    reportSourceError(file ? unplayable(file, error) : `source: ${error.message}`);
    setState("error");
  }
}

/** Why `file` cannot play, what this browser plays instead, and the CLI command for it. */
function unplayable(file, error) {
  const reason = error instanceof UnplayableError ? error.reason : error.message;
  const server = api.url("").href.replace(/\/$/, "");
  return explainUnplayable(file, reason, { formats: demo.playableFormats, task: settings().task, server });
}

async function watchReadiness() {
  // why poll: engines may still be loading (503 with a body) when the page opens, and one
  // model is served while another loads; a failed one stays failed until a restart
  for (;;) {
    try {
      const ready = await api.ready();
      // why before serverReady: Start is offered with the served tasks, not before them
      if (!demo.needsKey) await offerServedTasks(); // why not asking again: the key field waits
      const models = demo.models ?? [];
      const serving = models.filter((model) => model.state === "ready").map((model) => model.name);
      demo.serverReady = !ready.draining && (ready.ready || serving.length > 0);
      $("#ready").textContent = readiness(ready, serving);
      updateButtons();
      const settled = demo.models !== null && !models.some((model) => model.state === "loading");
      if (!ready.draining && (ready.ready || settled)) return;
    } catch (error) {
      $("#ready").textContent = `server unreachable: ${error.message}`;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function readiness(ready, serving) {
  if (ready.ready) return `ready: ${ready.models.join(", ")}`;
  const why = `not ready: ${ready.error ?? (ready.draining ? "draining" : "engines loading")}`;
  return serving.length > 0 && !ready.draining ? `serving ${serving.join(", ")}; ${why}` : why;
}

// --- the API key ---------------------------------------------------------------------------

/** A 401 (or 4401): show the key field; a key the server refused is forgotten. */
function askForKey(error) {
  const refused = api.key !== null;
  api.setKey(null);
  demo.needsKey = true;
  demo.keyStored = false;
  const said = error.serverMessage ?? error.reason ?? error.message;
  showKey(refused ? `The server refused the key: ${said}` : "This server needs an API key.", { asking: true });
  $("#api-key").focus();
  updateButtons();
}

function keyAccepted() {
  demo.needsKey = false;
  demo.keyStored = api.key !== null;
  showKey(demo.keyStored ? "Key accepted; kept for this tab only." : "", { asking: false });
  updateButtons();
}

function showKey(text, { asking }) {
  $("#auth").hidden = !asking && !demo.keyStored;
  $("#auth-status").textContent = text;
  $("#auth-entry").hidden = !asking;
  $("#forget-key").hidden = asking;
}

async function useKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (!KEY_PATTERN.test(key)) {
    $("#auth-status").textContent = "An API key is letters, digits and - . _ ~ only.";
    return;
  }
  $("#api-key").value = "";
  api.setKey(key);
  await offerServedTasks();
}

async function forgetKey() {
  api.setKey(null);
  demo.keyStored = false;
  await offerServedTasks(); // a server that needs a key asks for one again
}

// --- streaming -----------------------------------------------------------------------------

async function start() {
  const options = settings();
  resetCounters();
  setState("connecting");
  run = {
    options,
    size: frameSize(source.width, source.height, options.maxWidth),
    nextIndex: 0,
    sending: Promise.resolve(), // frames go out one after another, in the order grabbed
    showing: Promise.resolve(), // and are shown in the order answered
    answers: new Set(), // answers still awaited
    outstanding: 0, // frames queued to send or awaiting their answer
    answerTimes: [],
    rtts: [],
    serverMs: [],
    startedAt: performance.now(),
    unwatch: () => {},
    ending: false, // the client closes the stream: its close is not an error
  };
  const current = run;
  try {
    const session = await api.createSession(sessionBody(options));
    demo.sessionId = session.id;
    current.session = session;
    $("#session").textContent = session.id;
    if (options.task === "embed") showWindowProgress(current);
    current.stream = new Stream(session.stream_url, {
      task: options.task,
      protocols: api.protocols(),
      onError: (message) => reportError(`${message.code}: ${message.message}`),
      onClose: (closed) => onClose(current, closed),
    });
    await current.stream.open();
  } catch (error) {
    reportError(error instanceof StreamClosed ? `stream: ${describeClose(error.code, error.reason)}` : error.message);
    if (isUnauthorized(error)) askForKey(error);
    setState("error");
    return;
  }
  setState("streaming");
  current.stats = setInterval(showStats, 250);
  // why rewound before frame 0 is sent: its answer plays a paused file on (settled), and the
  // watch must be on by then, or the file's second frame plays unseen
  if (source.kind === "file" && !(await rewound(current))) return;
  // the first frame: the one painted on (segmentation), and where a file starts either way
  if (source.kind === "file" || options.task === "segment") queueFrame(current, painter.frame, 0);
  if (source.kind === "file") playFile(current);
  else current.unwatch = source.watch((time) => onVideoFrame(current, time));
}

async function rewound(current) {
  try {
    await source.rewind();
    return true;
  } catch (error) {
    sourceFailed(current, error);
    return false;
  }
}

/** Play the file from its first frame (sent already), sending each frame presented after it. */
function playFile(current) {
  const video = source.video;
  video.addEventListener("ended", () => finish(current), { once: true });
  let sentTime = 0; // the media time of the last frame sent: the rewound first frame's, at first
  current.unwatch = source.watch((time) => {
    // why: a frame presented again (the rewound first one, or one after a pause) is sent once
    if (time <= sentTime) return;
    sentTime = time;
    onVideoFrame(current, time);
  });
  video.play().catch((error) => {
    // why AbortError aside: a file paused for the server before it began playing is ours
    if (error.name !== "AbortError") sourceFailed(current, error);
  });
}

/** The file stopped playing part-way (a cut file): answer the frames sent, then end in error. */
async function sourceFailed(current, error) {
  if (current !== run || demo.state !== "streaming") return;
  const at = source.video.currentTime.toFixed(2);
  reportSourceError(`source: ${error.reason ?? error.message}, ${at} s into the file`);
  setState("finishing");
  await drain(current);
  if (current !== run) return;
  stopRun();
  source.release(); // why: what is left of it cannot play, so Start stays off
  setState("error");
}

/**
 * The video element failed. While a source opens, the step waiting on it says so (source.js);
 * a file ready to start can still fail after its first frame (a cut file), and a file
 * streaming ends its run.
 */
function onVideoError() {
  const error = mediaError(source.video);
  if (run && demo.state === "streaming") {
    sourceFailed(run, error);
  } else if (demo.state === "ready" && openedFile) {
    source.release();
    reportSourceError(unplayable(openedFile, error));
    setState("error");
  }
}

function onVideoFrame(current, time) {
  if (current !== run || demo.state !== "streaming") return;
  if (current.outstanding >= current.options.inFlight) {
    if (source.kind === "camera") {
      demo.skipped++; // live video: dropping a frame beats falling behind
      return;
    }
    source.video.pause(); // a file: wait for the server instead, so no frame is lost
  }
  queueFrame(current, capture(source.video, current.size), time);
}

/** Encode and send a captured frame after those before it; show its answer in turn. */
function queueFrame(current, frame, time) {
  current.outstanding++;
  current.sending = current.sending.then(() => send(current, frame, time)).catch((error) => {
    reportError(`sending frame: ${error.message}`);
    settled(current);
  });
}

async function send(current, frame, time) {
  const bytes = await encode(frame, current.options.encoding);
  if (current.stream.closed || current !== run) {
    settled(current);
    return;
  }
  const header = { frame_index: current.nextIndex++, pts: time };
  if (current.options.task === "segment" && header.frame_index === 0) {
    header.mask = maskMessage(painter.mask); // the painted mask comes with the first frame
  }
  demo.framesSent++;
  const answer = current.stream.sendFrame(bytes, header);
  current.answers.add(answer);
  answer
    .then((result) => {
      current.showing = current.showing.then(() => show(current, frame, result)).catch(onShowError);
    })
    .catch((error) => onFrameError(current, error))
    .finally(() => {
      current.answers.delete(answer);
      settled(current);
    });
}

/** A frame left the pipeline: a file paused for the server plays on. */
function settled(current) {
  current.outstanding--;
  const video = source.video;
  const waiting = source.kind === "file" && demo.state === "streaming" && video.paused && !video.ended;
  // why the empty catch: a file that stops decoding is reported by its error event (onVideoError)
  if (waiting && current === run && current.outstanding < current.options.inFlight) video.play().catch(() => {});
}

function onShowError(error) {
  reportError(`display: ${error.message}`);
}

function onFrameError(current, error) {
  if (error instanceof FrameError) {
    demo.framesFailed++;
    reportError(error.message);
  } else if (!(error instanceof StreamClosed)) {
    reportError(error.message); // a closed stream is reported once, by onClose
  }
}

async function show(current, frame, answer) {
  demo.framesAnswered++;
  const rtt = answer.answeredAt - answer.sentAt;
  demo.lastRttMs = rtt;
  demo.lastServerMs = answer.done.ms;
  current.rtts.push(rtt);
  current.serverMs.push(answer.done.ms);
  current.answerTimes.push(performance.now());
  drawTo($("#original"), frame);
  if (current.options.task === "interpolate") await showInterpolated(answer);
  else if (current.options.task === "embed") showActions(current, answer);
  else await showMask(frame, answer);
  showStats();
}

async function showInterpolated(answer) {
  for (const { header, data } of answer.results) {
    const image = await createImageBitmap(new Blob([data[0]]));
    drawTo($("#output"), image);
    image.close();
    demo.resultsReceived++;
    const [a, b] = header.source;
    $("#output-caption").textContent =
      `Interpolated: frames ${a}→${b} at t=${header.timestep}${header.scene_change ? " (scene change: a copy)" : ""}`;
  }
}

async function showMask(frame, answer) {
  const { header, data } = answer.results[0];
  let mask;
  let palette;
  if (header.format === "png") ({ mask, palette } = await decodeIndexPng(data[0]));
  else mask = maskFromRles(header.rles, frame.width, frame.height);
  const covered = drawOverlay(drawTo($("#output"), frame), mask, palette);
  demo.resultsReceived++;
  demo.overlayPixels = covered;
  if (covered > 0) demo.overlaidFrames++;
  demo.objectsSeen = [...new Set([...demo.objectsSeen, ...header.objects])].sort((a, b) => a - b);
  $("#output-caption").textContent = `Mask of frame ${header.frame_index}: objects ${header.objects.join(", ") || "none"}`;
}

function showActions(current, answer) {
  for (const { header } of answer.results) {
    renderLabels($("#labels"), header.labels);
    $("#window-info").textContent = describeWindow(header);
    const frames = `frames ${header.start_frame}–${header.end_frame}`;
    $("#window-caption").textContent = `Actions, window ${header.window}: ${frames}`;
    demo.lastWindow = windowSummary(header);
    demo.resultsReceived++;
  }
  if (!demo.lastWindow) showWindowProgress(current);
}

/** Before the first window: how many of the frames it needs have been answered. */
function showWindowProgress(current) {
  const needed = current.session.window_frames;
  $("#window-caption").textContent = `Actions: ${demo.framesAnswered} of the ${needed} frames the first window needs`;
  $("#labels").replaceChildren();
  $("#window-info").textContent =
    `a window is ${current.session.frames_per_clip} frames, one in every ${current.session.sampling_rate}, ` +
    `over ${needed} frames; one every ${current.session.stride} frames after that`;
}

/** A file that ended before its first window: say why nothing came, and what would help. */
function explainNoWindow(current) {
  if (current.options.task !== "embed" || demo.lastWindow) return;
  $("#window-caption").textContent =
    `No window: ${demo.framesAnswered} frames answered, a window needs ${current.session.window_frames}; ` +
    "use a longer video, fewer frames per clip or a lower sampling rate";
}

/** Stop sending, wait for the answers in flight, and read the session's counters. */
async function drain(current) {
  current.unwatch();
  await current.sending;
  await Promise.allSettled([...current.answers]);
  await current.showing;
  try {
    demo.server = await api.getSession(demo.sessionId);
    const s = demo.server;
    $("#session").textContent =
      `${s.id}: ${s.frames_done} done, ${s.frames_failed} failed, ${s.dropped} dropped` +
      (s.task === "interpolate" ? `, ${s.outputs} outputs` : "") +
      (s.task === "embed" ? `, ${s.windows} windows, ${s.tokens_run} tokens run` : "");
  } catch (error) {
    reportError(`reading the session: ${error.message}`);
  }
  showStats();
  clearInterval(current.stats);
}

/** A file played to its end: every frame answered; the session stays open until Stop. */
async function finish(current) {
  if (current !== run || demo.state !== "streaming") return;
  setState("finishing");
  await drain(current);
  explainNoWindow(current);
  if (current === run && demo.state === "finishing") setState("done");
}

async function stop() {
  const current = run;
  if (!current) return;
  const wasStreaming = ["streaming", "finishing"].includes(demo.state);
  setState("stopping");
  source.video.pause();
  if (wasStreaming && current.stream && !current.stream.closed) await drain(current);
  current.ending = true;
  current.stream?.close(1000, "client stopped");
  if (demo.sessionId) await api.deleteSession(demo.sessionId).catch(() => {}); // already gone is fine
  setState("stopped");
}

function stopRun() {
  if (!run) return;
  run.ending = true;
  run.unwatch();
  clearInterval(run.stats);
  run.stream?.close(1000, "client stopped");
  if (demo.sessionId) api.deleteSession(demo.sessionId).catch(() => {});
  run = null;
}

function onClose(current, closed) {
  demo.close = { code: closed.code, reason: closed.reason };
  if (current.ending || current !== run) return;
  if (demo.state === "done" || demo.state === "stopping") {
    // why still shown: e.g. 4410 when the finished session idled past its TTL
    reportError(`stream closed: ${describeClose(closed.code, closed.reason)}`);
    return;
  }
  current.unwatch();
  source.video.pause();
  clearInterval(current.stats);
  reportError(`stream closed: ${describeClose(closed.code, closed.reason)}`);
  if (isUnauthorized(closed)) askForKey(closed);
  setState("error");
}

// --- wiring --------------------------------------------------------------------------------

for (const radio of document.querySelectorAll('input[name="task"]')) radio.addEventListener("change", selectTask);
$("#camera").addEventListener("click", () => openSource(() => source.openCamera()));
$("#file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) openSource(() => source.openFile(file), file);
});
$("#video").addEventListener("error", () => onVideoError());
$("#max-width").addEventListener("change", () => {
  loadFirstFrame().catch((error) => reportError(`source: ${error.message}`));
});
$("#brush-size").addEventListener("input", (event) => {
  painter.radius = Number(event.target.value);
});
$("#clear").addEventListener("click", () => {
  painter.clear();
  demo.paintedObjects = [];
  updateButtons();
});
$("#start").addEventListener("click", () => start());
$("#auth").addEventListener("submit", (event) => useKey(event));
$("#forget-key").addEventListener("click", () => forgetKey());
$("#stop").addEventListener("click", () => stop());

demo.playableFormats = playableFormats(source.video);
buildObjectPicker();
selectTask();
setState("idle");
watchReadiness();
