// The mosaic's alarms beside the player: a list of what its tiles show now (tile, kind, since
// when) and an outline over each tile in alarm, both from the gateway's live stream
// GET /mosaics/<fp>/alarms/events (Server-Sent Events: a snapshot, then raised and cleared).
//
// The stream says where the tiles are in the mosaic's picture (its snapshot's layout); the
// outlines are placed over the part of the video element the picture fills (object-fit:
// contain), in percent of it, so they follow any window size.
//
// The browser's EventSource reconnects by itself after a network cut (and gets a fresh
// snapshot); an answer that is not a stream (the gateway stopping, its maximum of streams, a
// refusal) ends it, and the page tries again after RETRY_MS, doubling up to RETRY_MAX_MS.
// A page opened through a signed URL (/s/<token>/view/<fp>) asks under the same prefix: the
// mosaic's signed URL opens its alarms too.

import { byId, el } from "./dom.js";
import { plainPath, signedPrefix } from "./whep.js";

const RETRY_MS = 2000;
const RETRY_MAX_MS = 60_000;
const KINDS = {
  black: "Black picture",
  freeze: "Frozen picture",
  silence: "Silence",
  loudness: "Loudness out of range",
  "no-audio": "No audio",
  lost: "Source lost",
};

const fp = plainPath().split("/")[2];
const video = byId("video");
const panel = byId("alarms");
const list = byId("alarm-list");
const overlay = byId("tile-alarms");

const active = new Map(); // key -> alarm item, as the gateway gave it
let layout = null; // {width, height, tiles: [{tile, name, x, y, w, h}]}
let skew = 0; // the gateway's clock minus this browser's, seconds
let retryMs = RETRY_MS;

const keyOf = (alarm) => `${alarm.tile}/${alarm.kind}/${alarm.onset}`;
const gatewayNow = () => Date.now() / 1000 + skew;

function tileLabel(alarm) {
  const tile = `Tile ${alarm.tile + 1}`;
  return alarm.name ? `${tile} · ${alarm.name}` : tile;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function lasted(since) {
  const s = Math.max(0, Math.round(gatewayNow() - since));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function sorted() {
  return [...active.values()].sort((a, b) => a.tile - b.tile || a.kind.localeCompare(b.kind));
}

// -- the list ------------------------------------------------------------------------------------

function row(alarm) {
  return el(
    "li",
    { "data-tile": alarm.tile, "data-kind": alarm.kind },
    el("span", { class: "badge bad kind" }, KINDS[alarm.kind] ?? alarm.kind),
    el("span", { class: "tile" }, tileLabel(alarm)),
    el(
      "span",
      { class: "since", title: `began ${new Date(alarm.onset_wall * 1000).toISOString()}` },
      `since ${clock(alarm.onset_wall)} · `,
      el("span", { class: "lasted", "data-since": alarm.onset_wall }, lasted(alarm.onset_wall)),
    ),
  );
}

function showList() {
  const alarms = sorted();
  list.replaceChildren(...alarms.map(row));
  byId("alarm-count").textContent = alarms.length ? `${alarms.length}` : "";
  panel.hidden = alarms.length === 0;
  document.body.dataset.alarms = String(alarms.length);
}

function tick() {
  for (const span of list.querySelectorAll(".lasted")) {
    span.textContent = lasted(Number(span.dataset.since));
  }
}

// -- the outlines --------------------------------------------------------------------------------

function showOutlines() {
  const byTile = new Map();
  for (const alarm of sorted()) {
    if (!byTile.has(alarm.tile)) byTile.set(alarm.tile, []);
    byTile.get(alarm.tile).push(alarm.kind);
  }
  const boxes = [];
  for (const [tile, kinds] of byTile) {
    const place = layout?.tiles[tile];
    if (!place) continue;
    const box = el(
      "div",
      { class: "tile-alarm", "data-tile": tile, title: kinds.map((k) => KINDS[k] ?? k).join(", ") },
      el("span", { class: "label" }, kinds.map((k) => KINDS[k] ?? k).join(" · ")),
    );
    box.style.left = `${(100 * place.x) / layout.width}%`;
    box.style.top = `${(100 * place.y) / layout.height}%`;
    box.style.width = `${(100 * place.w) / layout.width}%`;
    box.style.height = `${(100 * place.h) / layout.height}%`;
    boxes.push(box);
  }
  overlay.replaceChildren(...boxes);
  placeOverlay();
}

/** The overlay over the part of the video element the picture fills. */
function placeOverlay() {
  if (!layout) return;
  const frame = video.getBoundingClientRect();
  const width = video.videoWidth || layout.width;
  const height = video.videoHeight || layout.height;
  const scale = Math.min(frame.width / width, frame.height / height);
  const shown = { width: width * scale, height: height * scale };
  overlay.style.left = `${frame.left + (frame.width - shown.width) / 2}px`;
  overlay.style.top = `${frame.top + (frame.height - shown.height) / 2}px`;
  overlay.style.width = `${shown.width}px`;
  overlay.style.height = `${shown.height}px`;
}

function show() {
  showList();
  showOutlines();
}

// -- the stream ----------------------------------------------------------------------------------

function connect() {
  const source = new EventSource(`${signedPrefix()}/mosaics/${fp}/alarms/events`);
  source.addEventListener("snapshot", (event) => {
    const body = JSON.parse(event.data);
    retryMs = RETRY_MS;
    skew = body.now - Date.now() / 1000;
    layout = body.layout;
    active.clear();
    for (const alarm of body.active) active.set(keyOf(alarm), alarm);
    show();
  });
  source.addEventListener("raised", (event) => {
    const alarm = JSON.parse(event.data);
    active.set(keyOf(alarm), alarm);
    show();
  });
  source.addEventListener("cleared", (event) => {
    active.delete(keyOf(JSON.parse(event.data)));
    show();
  });
  source.addEventListener("error", () => {
    // CONNECTING: the browser reconnects by itself. CLOSED: the answer was no stream.
    if (source.readyState !== EventSource.CLOSED) return;
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
  });
}

if (fp) {
  window.addEventListener("resize", placeOverlay);
  video.addEventListener("loadedmetadata", placeOverlay);
  video.addEventListener("resize", placeOverlay);
  setInterval(tick, 1000);
  connect();
}
