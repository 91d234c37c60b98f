// The review player: one JIT session over WebRTC (see whep.js for the connection).
//
// Every frame the worker sends comes with a frame report (frame, SMPTE timecode, playing),
// which drives the readout and the scrub bar; the transport, the seek box, the audio choice,
// the audio routing matrix and the keyboard send commands. The session itself (state, frame count) is polled.
//
// The timecode is the source time code: the file's start time code (the session's
// stats.start_timecode) plus the frame number; a timecode typed in the seek box is one of
// those labels, and the worker finds its frame.

import { ApiError, json } from "./api.js";
import {
  compareKeys,
  compareReport,
  compareStats,
  sessionName,
  startCompare,
  videoCount,
} from "./compare.js";
import { byId, el, fileName } from "./dom.js";
import { showFrames } from "./frameid.js";
import { complete, fromFrame, learnRate, toFrame } from "./timecode.js";
import { SessionLink, plainPath, signedPrefix } from "./whep.js";

// Opened through a review link (/s/<token>/session/<id>/view), the page asks for the session
// under the same prefix; the gateway answers with URLs (WHEP, control) that carry it.
const sid = plainPath().split("/")[2];
const sessionPath = `${signedPrefix()}/session/${sid}`;
const video = byId("video");
const onScreen = showFrames(video, byId("shown")); // the frame on screen, by RTP timestamp
const POLL_MS = 2000;
const REFRESH_AFTER_MS = 1000;
const MAX_RATE = 16;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const state = {
  view: null, // the SessionView
  frame: null, // the frame shown (last report)
  exact: true, // false while that frame's picture is the seek proxy's
  timecode: "",
  playing: false,
  rate: 1,
  frameCount: 0,
  fps: null, // { fps, drop } once known
  start: undefined, // the source time code of frame 0 once the stats say ("" none)
  reportAt: 0,
  scrubbing: false,
};

let link = null; // the SessionLink while connected or connecting
let reconnectDelay = 1000;
let ended = false;

// -- messages ------------------------------------------------------------------------------------

function say(title, text, { spinner = true, actions = [] } = {}) {
  byId("message-title").textContent = title;
  byId("message-text").textContent = text;
  byId("spinner").hidden = !spinner;
  byId("message-actions").replaceChildren(...actions);
  byId("message-actions").hidden = actions.length === 0;
  byId("message").hidden = false;
}

function quiet() {
  byId("message").hidden = true;
}

const HINT = "Space play/pause · ← → one frame · Shift ten · J K L shuttle · G go to · ? all keys";

/** Say `text` under the transport (an error in red); nothing: the keyboard hint. */
function status(text, bad = false) {
  const line = byId("status-line");
  line.textContent = text || HINT;
  line.classList.toggle("bad", bad);
}

function connection(kind, text) {
  byId("connection").className = `badge ${kind}`;
  byId("connection").firstElementChild.className = `dot ${kind}`;
  byId("connection-text").textContent = text;
}

// -- the readout ---------------------------------------------------------------------------------

/** Show icon `name` (a symbol of the page's sprite) on button `id`. */
function icon(id, name, label) {
  const button = byId(id);
  button.querySelector("use").setAttribute("href", `#i-${name}`);
  button.setAttribute("aria-label", label);
}

let drawPending = false;
function draw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const { frame, frameCount } = state;
    byId("frame").textContent = frame === null ? "–" : String(frame);
    // A seek proxy's picture (a quick JPEG of the frame) until the exact one is decoded.
    byId("frame").classList.toggle("proxy", !state.exact);
    byId("frame").title = state.exact ? "" : "proxy picture: the exact one is being decoded";
    byId("timecode").textContent = state.timecode || "--:--:--:--";
    byId("frame-count").textContent = frameCount ? String(frameCount) : "–";
    byId("last-frame").textContent = frameCount ? String(frameCount - 1) : "–";
    icon("play", state.playing ? "pause" : "play", state.playing ? "Pause" : "Play");
    icon("mute", video.muted ? "muted" : "sound", video.muted ? "Unmute" : "Mute");
    byId("rate").textContent = `${state.rate}×`;
    const scrub = byId("scrub");
    scrub.max = String(Math.max(0, frameCount - 1));
    scrub.disabled = !frameCount || ended;
    if (!state.scrubbing && frame !== null) scrub.value = String(frame);
  });
}

function onReport(report) {
  state.frame = report.frame;
  state.exact = report.exact !== false;
  state.timecode = report.timecode;
  state.playing = report.playing;
  state.reportAt = performance.now();
  compareReport(report);
  learn();
  draw();
}

/** Learn the frame rate from the last report, once the start time code is known. */
function learn() {
  if (state.fps || state.start === undefined || state.frame === null) return;
  state.fps = learnRate(state.frame, state.timecode, state.start);
}

/** The source time code of `frame`, or "" while the rate or the start is not known. */
function labelOf(frame, rate) {
  if (!rate || state.start === undefined) return "";
  if (!state.start) return fromFrame(frame, rate);
  const counting = { fps: rate.fps, drop: state.start.includes(";") };
  return fromFrame(toFrame(state.start, counting) + frame, counting);
}

/** The frame rate for labels and J: learnt from reports, else the session's override. */
function knownRate() {
  if (state.fps) return state.fps;
  const { frame_rate_num: num, frame_rate_den: den } = state.view?.options ?? {};
  if (num) {
    const exact = num / (den || 1);
    const fps = Math.ceil(exact - 1e-9);
    const drop = [30000 / 1001, 60000 / 1001].some((r) => Math.abs(exact - r) < 1e-6);
    return { fps, drop };
  }
  return null;
}

// -- commands ------------------------------------------------------------------------------------

/** Send a command ({type: "seek", frame: 3}); resolves with the worker's reply. */
async function command(cmd) {
  const reply = link ? await link.command(cmd) : { ok: false, error: "not connected yet" };
  if (!reply.ok) status(reply.error, true);
  else if (byId("status-line").classList.contains("bad")) status(""); // the error is over
  return reply;
}

async function play() {
  const reply = await command({ type: "play" });
  if (reply.ok) state.playing = true;
  draw();
}

async function pause() {
  const reply = await command({ type: "pause" });
  if (reply.ok) state.playing = false;
  draw();
}

function togglePlay() {
  return state.playing ? pause() : play();
}

async function setRate(rate) {
  const reply = await command({ type: "rate", rate });
  if (reply.ok) state.rate = rate;
  draw();
  return reply.ok;
}

// Steps and scrubbing coalesce: while one command is in flight, further key repeats or drags
// add up, and go as one command when it is answered.
let stepDelta = 0;
let stepping = false;
async function step(delta) {
  stepDelta += delta;
  if (stepping) return;
  stepping = true;
  while (stepDelta !== 0) {
    const d = stepDelta;
    stepDelta = 0;
    const reply = await command({ type: "step", delta: d });
    if (reply.ok) state.playing = false;
  }
  stepping = false;
  draw();
}

let seekWanted = null;
let seeking = false;
async function seekTo(frame) {
  const last = state.frameCount ? state.frameCount - 1 : Number.MAX_SAFE_INTEGER;
  seekWanted = Math.max(0, Math.min(last, Math.round(frame)));
  if (seeking) return;
  seeking = true;
  while (seekWanted !== null) {
    const target = seekWanted;
    seekWanted = null;
    await command({ type: "seek", frame: target });
  }
  seeking = false;
}

/** L: play at 1×, or faster when already playing. */
async function forward() {
  if (!state.playing) {
    if (state.rate !== 1) await setRate(1);
    await play();
  } else if (state.rate < MAX_RATE) {
    await setRate(Math.min(MAX_RATE, state.rate * 2));
  }
}

/** J: slower when faster than 1×; else back one second (there is no reverse playback). */
async function backward() {
  if (state.playing && state.rate > 1) {
    await setRate(Math.max(1, state.rate / 2));
    return;
  }
  const second = state.fps?.fps ?? 25;
  await seekTo((state.frame ?? 0) - second);
}

// -- seeking by text -----------------------------------------------------------------------------

/**
 * Where "text" in the seek box goes: a frame (120, +10, -10) as { frame }, or a source time
 * code (01:00:05:12, 5:12, 00:01:00;02) as { timecode }, which the worker finds the frame of
 * (it knows the start and the rate, and says so when the label is not in the video).
 */
function parseTarget(text) {
  const value = text.trim();
  if (/^\d+$/.test(value)) return { frame: Number(value) };
  if (/^[+-]\d+$/.test(value)) return { frame: (state.frame ?? 0) + Number(value) };
  const timecode = complete(value);
  if (!timecode) throw new Error(`"${value}" is neither a frame number nor a timecode (00:00:05:12)`);
  return { timecode };
}

async function submitSeek(event) {
  event.preventDefault();
  const input = byId("seek");
  try {
    const target = parseTarget(input.value);
    input.classList.remove("invalid");
    input.blur(); // so the keyboard shortcuts work again at once
    if (target.timecode) await command({ type: "seek-timecode", timecode: target.timecode });
    else await seekTo(target.frame);
  } catch (error) {
    input.classList.add("invalid");
    status(error.message, true);
  }
}

// -- audio channels --------------------------------------------------------------------------------

/** One option per pair of channels across the audio inputs (in order), then each alone. */
function audioOptions(inputs) {
  const channels = [];
  inputs.forEach((input, i) => {
    const count = input.channel_count ?? 2; // unknown: most files are stereo
    const name = input.id || fileName(input.url) || `audio ${i + 1}`;
    for (let c = 0; c < count; c++) channels.push({ name, c });
  });
  const label = (k) => `${channels[k].name} ch ${channels[k].c + 1}`;
  const options = [];
  for (let k = 0; k + 1 < channels.length; k += 2) {
    const same = channels[k].name === channels[k + 1].name;
    const text = same
      ? `${channels[k].name} · ch ${channels[k].c + 1}–${channels[k + 1].c + 1}`
      : `${label(k)} + ${label(k + 1)}`;
    options.push({ value: `${k},${k + 1}`, text: `${k + 1}–${k + 2}: ${text}` });
  }
  channels.forEach((_, k) => options.push({ value: `${k}`, text: `${k + 1}: ${label(k)} (mono)` }));
  return options;
}

function showAudio(view) {
  const select = byId("audio");
  const options = audioOptions(view.inputs.slice(videoCount(view)));
  if (!options.length) {
    select.replaceChildren(el("option", {}, "No audio"));
    select.disabled = true;
    return;
  }
  select.replaceChildren(...options.map((o) => el("option", { value: o.value }, o.text)));
  const wanted = view.options.channels ?? 2;
  const cho = view.options.cho ?? 0;
  const start = Array.from({ length: wanted }, (_, i) => cho + i).join(",");
  if (options.some((o) => o.value === start)) select.value = start;
  select.disabled = false;
}

async function chooseAudio() {
  const select = byId("audio");
  select.blur(); // the arrow keys step frames again
  const channels = select.value.split(",").map(Number);
  const reply = await command({ type: "channels", channels });
  heardReply(reply);
  const names = channels.map((c) => c + 1).join(" and ");
  if (reply.ok) status(`Listening to channel${channels.length > 1 ? "s" : ""} ${names}`);
}

// -- audio routing matrix -------------------------------------------------------------------------
// Rows: the session's audio channels (their input number and channel name, from the worker's
// stats); columns: the output's L and R. A toggle sends the whole matrix as route-channels/1
// (a channel turned on gets gain 1, the others keep theirs); a preset sends its name. The
// worker's reply, or its heartbeat's stats, says what is routed now, and the toggles show that.

const OUTPUTS = ["L", "R"];
const routing = { inputs: [], names: [], routes: null, replyAt: -Infinity };

/** The routing a command's reply says is in force (newer than the polled stats for a while). */
function heardReply(reply) {
  if (!reply.routes) return;
  routing.routes = reply.routes;
  routing.replyAt = performance.now();
  if (!byId("matrix").hidden) drawMatrix();
}

function routeOf(routes, output, channel) {
  return (routes?.[output] ?? []).find(([c]) => c === channel);
}

function channelLabel(channel) {
  const input = routing.inputs[channel];
  const within = routing.inputs.slice(0, channel).filter((i) => i === input).length;
  return `${channel}: input ${input} · ${routing.names[channel] || `ch ${within + 1}`}`;
}

/** The presets each audio input allows: its L/R pair; a 5.1 downmix when its channels say so. */
function presets() {
  const found = [];
  for (const input of [...new Set(routing.inputs)]) {
    const names = routing.names.filter((_, c) => routing.inputs[c] === input);
    found.push({ text: `L/R of input ${input}`, preset: "pair", input });
    const has = (...any) => any.some((n) => names.includes(n));
    if (has("FL") && has("FR") && has("FC") && has("BL", "SL") && has("BR", "SR")) {
      found.push({ text: `5.1 → stereo (ITU) of input ${input}`, preset: "downmix", input });
    }
  }
  return found;
}

function drawMatrix() {
  const table = byId("matrix-table");
  if (!routing.inputs.length) {
    table.replaceChildren(el("tr", {}, el("td", {}, "No audio channels known yet")));
    byId("matrix-presets").replaceChildren();
    return;
  }
  const head = el("tr", {}, el("th", {}, "Source"), ...OUTPUTS.map((o) => el("th", {}, o)));
  const rows = routing.inputs.map((_, channel) =>
    el(
      "tr",
      {},
      el("td", {}, channelLabel(channel)),
      ...OUTPUTS.map((name, output) => {
        const route = routeOf(routing.routes, output, channel);
        const box = el("input", {
          type: "checkbox",
          "aria-label": `channel ${channel} to ${name}`,
          title: route ? `gain ${route[1].toFixed(3)}` : `not in ${name}`,
          onchange: (event) => {
            event.target.blur(); // Space plays again, rather than toggling the box
            toggleRoute(output, channel, event.target.checked);
          },
        });
        box.checked = Boolean(route && route[1] > 0);
        return el("td", {}, box);
      }),
    ),
  );
  table.replaceChildren(head, ...rows);
  byId("matrix-presets").replaceChildren(
    ...presets().map((p) => {
      const onclick = () => sendRoutes({ preset: p.preset, input: p.input });
      return el("button", { class: "small", type: "button", onclick }, p.text);
    }),
  );
}

function learnRouting(stats) {
  const inputs = stats.channel_inputs ?? [];
  if (inputs.length !== routing.inputs.length) {
    routing.inputs = inputs;
    routing.names = stats.channel_names ?? [];
  }
  // A heartbeat polled soon after a reply may predate it: the reply wins for two polls.
  if (performance.now() - routing.replyAt > 2 * POLL_MS) routing.routes = stats.routes ?? routing.routes;
  if (!byId("matrix").hidden) drawMatrix();
}

async function sendRoutes(fields) {
  const reply = await command({ type: "route-channels", ...fields });
  heardReply(reply);
  if (reply.ok) {
    const heard = OUTPUTS.map((o, i) => {
      const sources = (routing.routes?.[i] ?? []).map(([c]) => c);
      return `${o}: ${sources.join("+") || "–"}`;
    });
    status(`Routing ${heard.join(", ")}`);
  }
  drawMatrix();
}

function toggleRoute(output, channel, on) {
  const routes = OUTPUTS.map((_, o) => (routing.routes?.[o] ?? []).filter(([c]) => c !== channel));
  OUTPUTS.forEach((_, o) => {
    const before = routeOf(routing.routes, o, channel);
    const wanted = o === output ? on : Boolean(before);
    if (wanted) routes[o].push([channel, before && before[1] > 0 ? before[1] : 1]);
  });
  sendRoutes({ routes });
}

function toggleMatrix() {
  const panel = byId("matrix");
  panel.hidden = !panel.hidden;
  if (!panel.hidden) drawMatrix();
}

// -- the session and its connection ----------------------------------------------------------------

function endedMessage(view) {
  for (const control of document.querySelectorAll(".transport :is(button, input, select)")) {
    control.disabled = true;
  }
  const home = el("a", { class: "button", href: "/" }, "All sessions");
  const what = view.state === "failed" ? "This session failed" : "This session has ended";
  say(what, view.reason || "Start a new session from the home page.", { spinner: false, actions: [home] });
  connection("", view.state);
}

async function refresh() {
  let view;
  try {
    view = await json(sessionPath);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      ended = true;
      say("No such session", "It may have been removed.", { spinner: false });
    } else if (error instanceof ApiError && error.status === 403) {
      ended = true;
      hangUp();
      say("This link does not open the session", error.message, { spinner: false });
    }
    return;
  }
  const first = state.view === null;
  state.view = view;
  if (first) {
    const name = sessionName(view);
    byId("file-name").textContent = name;
    byId("file-name").title = view.inputs.slice(0, videoCount(view)).map((i) => i.url).join("\n");
    document.title = `${name} · Review · Tessera`;
    showAudio(view);
    startCompare(view, command); // a session of two videos: the A/B controls
  }
  const stats = view.stats;
  if (stats) {
    if (stats.frame_count) state.frameCount = stats.frame_count;
    if (stats.rate) state.rate = stats.rate;
    learnRouting(stats);
    compareStats(stats);
    // A report says whether it plays; without one for a while (paused, or the end reached),
    // the worker's heartbeat does.
    if (performance.now() - state.reportAt > POLL_MS) state.playing = stats.playing;
    // Compared each time: a worker still opening the file reports no start yet.
    const start = stats.start_timecode ?? "";
    if (start !== state.start) {
      state.start = start;
      state.fps = null; // learnt again against this start
      byId("timecode").title = start
        ? `Source time code of the frame shown (the file starts at ${start})`
        : "Time code of the frame shown (the file records none: from 00:00:00:00)";
      learn();
    }
  }
  if ((view.state === "ended" || view.state === "failed") && !ended) {
    ended = true;
    hangUp();
    endedMessage(view);
  }
  draw();
}

function hangUp() {
  link?.close();
  link = null;
}

async function connect() {
  hangUp();
  if (ended) return;
  connection("warn", "connecting");
  const mine = new SessionLink(state.view);
  link = mine;
  onScreen.follow(mine);
  const stream = new MediaStream();
  mine.addEventListener("report", (event) => onReport(event.detail));
  mine.addEventListener("open", () => ensurePicture(mine));
  mine.addEventListener("starting", () => say("Starting the session…", "The worker is opening the file."));
  mine.addEventListener("track", (event) => {
    stream.addTrack(event.detail);
    if (video.srcObject !== stream) video.srcObject = stream;
    startVideo();
  });
  mine.addEventListener("state", (event) => {
    if (link !== mine) return;
    if (event.detail === "connected") {
      connection("ok", "connected");
      reconnectDelay = 1000;
    } else if (event.detail === "failed" || event.detail === "disconnected") {
      connection("bad", event.detail);
      if (event.detail === "failed") reconnect();
    }
  });
  await mine.connect();
}

/**
 * The worker sends the current frame as a viewer connects, which can be before the control
 * channel is open (its report is then lost) or before the browser can show it. So when, a
 * moment after the channel opens, there is still no report or no picture and nothing plays,
 * ask for the current frame again: a step of 0 frames. Also while the frame on screen is not
 * known yet (frameid.js: a second picture sent while paused tells it).
 */
async function ensurePicture(mine) {
  for (let attempt = 0; attempt < 3; attempt++) {
    await sleep(REFRESH_AFTER_MS);
    if (link !== mine || !mine.open) return;
    const pictured = state.reportAt > 0 && video.videoWidth > 0 && onScreen.known;
    if (pictured || state.playing) return;
    await command({ type: "step", delta: 0 });
  }
}

async function reconnect() {
  if (ended) return;
  say("Reconnecting…", "The connection to the session was lost.");
  await sleep(reconnectDelay);
  reconnectDelay = Math.min(reconnectDelay * 2, 10_000);
  await refresh();
  if (!ended) start();
}

async function start() {
  try {
    await connect();
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      await refresh();
      if (ended) return;
    }
    say("Cannot connect to the session", error.message, { spinner: false });
    connection("bad", "not connected");
    setTimeout(reconnect, reconnectDelay);
  }
}

function startVideo() {
  video.play().catch(() => {
    // Sound without a click is refused: play muted, say how to unmute.
    video.muted = true;
    video.play().catch(() => {});
    status("Sound is muted until you click the speaker or press M.");
    draw();
  });
}

// -- input ---------------------------------------------------------------------------------------

function toggleHelp() {
  byId("help").hidden = !byId("help").hidden;
}

function toggleMute() {
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  draw();
}

const KEYS = {
  " ": () => togglePlay(),
  k: () => pause(),
  l: () => forward(),
  j: () => backward(),
  ArrowRight: (shift) => step(shift ? 10 : 1),
  ArrowLeft: (shift) => step(shift ? -10 : -1),
  Home: () => seekTo(0),
  End: () => seekTo(state.frameCount ? state.frameCount - 1 : 0),
  g: () => byId("seek").focus(),
  m: () => toggleMute(),
  r: () => toggleMatrix(),
  "?": () => toggleHelp(),
  ...compareKeys,
};

document.addEventListener("keydown", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.id !== "scrub") {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (target instanceof HTMLSelectElement || event.ctrlKey || event.metaKey || event.altKey) return;
  const action = KEYS[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  if (!action) return;
  event.preventDefault(); // no page scroll on Space, no button click, no range nudge
  action(event.shiftKey);
});
// A focused button would also "click" on the Space keyup.
document.addEventListener("keyup", (event) => {
  if (event.key === " " && event.target instanceof HTMLButtonElement) event.preventDefault();
});

const buttons = {
  play: () => togglePlay(),
  back: () => step(-1),
  back10: () => step(-10),
  forward: () => step(1),
  forward10: () => step(10),
  mute: () => toggleMute(),
  "routing-button": () => toggleMatrix(),
  "help-button": () => toggleHelp(),
};
for (const [id, action] of Object.entries(buttons)) byId(id).addEventListener("click", action);

const scrub = byId("scrub");
scrub.addEventListener("input", () => {
  state.scrubbing = true;
  const frame = Number(scrub.value);
  const label = labelOf(frame, knownRate());
  status(`Frame ${frame}${label ? ` · ${label}` : ""}`);
  seekTo(frame);
});
scrub.addEventListener("change", () => {
  state.scrubbing = false;
  seekTo(Number(scrub.value));
});

byId("seek-form").addEventListener("submit", submitSeek);
byId("audio").addEventListener("change", chooseAudio);
video.addEventListener("loadeddata", quiet);
video.addEventListener("playing", quiet);
window.addEventListener("pagehide", hangUp);

// -- start ----------------------------------------------------------------------------------------

async function main() {
  status("");
  await refresh();
  if (!state.view || ended) return;
  if (state.view.state === "requested") say("Starting the session…", "The worker is opening the file.");
  await start();
  setInterval(refresh, POLL_MS);
}

main();
