// The mosaic player: the live HLS stream of one mosaic, full window, with how far behind live
// it is. hls.js (served by the gateway at /vendor/hls.js) where the browser has Media Source
// Extensions, else the browser's own HLS (Safari, iOS).
//
// Until the mosaic has a first segment (its workers are starting) the page polls the playlist
// and says so; asking for the playlist is what tells the gateway someone watches.

import { byId } from "./dom.js";

const fp = window.location.pathname.split("/")[2];
const playlistUrl = `/play/${fp}/index.m3u8`;
const video = byId("video");
const POLL_MS = 1000;
const IDLE_MS = 3000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let hls = null; // the hls.js instance while it plays
let tiles = 0;
let targetDuration = 2;
let generation = 0; // bumped by every (re)start, so a stale loop stops
let attached = false; // a player is attached to the video element
let lastTime = -1;
let sinceMoved = 0;

// -- the centre message ------------------------------------------------------------------------

function say(title, text, { spinner = true } = {}) {
  byId("message-title").textContent = title;
  byId("message-text").textContent = text;
  byId("spinner").hidden = !spinner;
  byId("message").hidden = false;
}

function quiet() {
  byId("message").hidden = true;
}

// -- starting ----------------------------------------------------------------------------------

/** Poll the playlist until it lists a segment; false when the mosaic does not exist. */
async function firstSegment(mine) {
  const started = performance.now();
  while (mine === generation) {
    try {
      const response = await fetch(playlistUrl, { cache: "no-store" });
      if (response.status === 404) {
        say("No such mosaic", "It may have been made on another gateway. Go back to the list.", {
          spinner: false,
        });
        return false;
      }
      const text = await response.text();
      const target = /#EXT-X-TARGETDURATION:(\d+)/.exec(text);
      if (target) targetDuration = Number(target[1]);
      if (text.includes("#EXTINF")) return true;
      const seconds = Math.round((performance.now() - started) / 1000);
      const sources = tiles ? `${tiles} source${tiles > 1 ? "s" : ""}` : "the sources";
      say("Starting the mosaic…", `Pulling ${sources} and composing the first segment (${seconds} s).`);
    } catch {
      say("Reconnecting…", "The gateway does not answer; trying again.");
    }
    await sleep(POLL_MS);
  }
  return false;
}

async function start() {
  const mine = ++generation;
  stopPlayer();
  if (!(await firstSegment(mine)) || mine !== generation) return;
  say("Starting the mosaic…", "First segment ready: buffering.");
  if (window.Hls?.isSupported()) playWithHlsJs(mine);
  else if (video.canPlayType("application/vnd.apple.mpegurl")) playNatively();
  else {
    document.body.dataset.engine = "none";
    say(
      "This browser cannot play the mosaic here",
      "hls.js did not load from this gateway (/vendor/hls.js): its Tessera install is broken " +
        `and needs reinstalling. Or open ${playlistUrl} in Safari or VLC.`,
      { spinner: false },
    );
    return;
  }
  attached = true;
  sinceMoved = performance.now();
  video.play().catch(() => say("Click to play", "The browser wants a click first.", { spinner: false }));
}

function stopPlayer() {
  attached = false;
  if (hls) {
    hls.destroy();
    hls = null;
  } else if (video.getAttribute("src")) {
    video.removeAttribute("src");
    video.load();
  }
}

function playWithHlsJs(mine) {
  const Hls = window.Hls;
  document.body.dataset.engine = "hls.js";
  hls = new Hls({
    backBufferLength: 30, // an ops wall plays all day: keep memory flat
    liveSyncDurationCount: 3,
    maxLiveSyncPlaybackRate: 1.25, // catch up gently after a stall instead of jumping
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (!data.fatal || mine !== generation) return;
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      hls.recoverMediaError();
    } else {
      say("Reconnecting…", `The stream stopped (${data.details}); starting again.`);
      setTimeout(() => mine === generation && start(), POLL_MS);
    }
  });
  hls.loadSource(playlistUrl);
  hls.attachMedia(video);
}

function playNatively() {
  document.body.dataset.engine = "native";
  video.src = playlistUrl;
}

/**
 * A live picture that stops moving is a problem whatever the player says (a native player may
 * not report it): say so after a moment, and start again after a few segments' worth.
 */
function watchdog() {
  const now = performance.now();
  // A live stream never ends: "ended" is a player that took the playlist for a finished one.
  const halted = video.paused && !video.ended;
  if (!attached || halted || video.currentTime !== lastTime) {
    lastTime = video.currentTime;
    sinceMoved = now;
    return;
  }
  const still = (now - sinceMoved) / 1000;
  if (still > Math.max(6, targetDuration * 4)) {
    say("Reconnecting…", "The picture stopped moving; starting again.");
    start();
  } else if (still > 2) {
    say("Buffering…", "Waiting for the next segment.");
  }
}

video.addEventListener("playing", quiet);
video.addEventListener("timeupdate", () => {
  if (video.readyState >= 3 && !byId("message").hidden && !video.paused) quiet();
});
video.addEventListener("click", () => video.paused && video.play());

// -- latency -----------------------------------------------------------------------------------

/** Seconds between now and the wall-clock time of the picture shown (PROGRAM-DATE-TIME). */
function pictureAge() {
  let shown = null;
  if (hls) shown = hls.playingDate;
  else if (video.getStartDate) {
    const start = video.getStartDate();
    if (start && !Number.isNaN(start.getTime())) {
      shown = new Date(start.getTime() + video.currentTime * 1000);
    }
  }
  return shown ? (Date.now() - shown.getTime()) / 1000 : null;
}

/** Seconds between the picture shown and the newest media the playlist lists. */
function behindEdge() {
  if (hls && Number.isFinite(hls.latency) && hls.latency > 0) return hls.latency;
  const ranges = video.seekable;
  return ranges.length ? Math.max(0, ranges.end(ranges.length - 1) - video.currentTime) : null;
}

function showLatency() {
  const age = pictureAge();
  const edge = behindEdge();
  const text = byId("latency-text");
  const badge = byId("live");
  if (video.readyState < 2 || (age === null && edge === null)) {
    text.textContent = "–";
    return;
  }
  const shown = age ?? edge;
  text.textContent = `${shown.toFixed(1)} s behind live`;
  const parts = [];
  if (age !== null) parts.push(`picture captured ${age.toFixed(1)} s ago (by its program date time)`);
  if (edge !== null) parts.push(`${edge.toFixed(1)} s behind the playlist's live edge`);
  byId("latency").title = `${parts.join("; ")}. Click to jump to live.`;
  const near = edge === null || edge <= targetDuration * 4;
  badge.textContent = near ? "LIVE" : "BEHIND";
  badge.classList.toggle("live", near);
}

function goLive() {
  if (hls && Number.isFinite(hls.liveSyncPosition)) video.currentTime = hls.liveSyncPosition;
  else if (video.seekable.length) {
    video.currentTime = video.seekable.end(video.seekable.length - 1) - targetDuration * 2;
  }
  video.play().catch(() => {});
}

// -- page chrome -------------------------------------------------------------------------------

async function describe() {
  try {
    const response = await fetch("/api/mosaics", { cache: "no-store" });
    const mosaic = (await response.json()).mosaics.find((m) => m.fp === fp);
    if (!mosaic) return;
    tiles = mosaic.tiles;
    const name = mosaic.title || `Mosaic ${fp.slice(0, 8)}`;
    document.title = `${name} · Tessera`;
    const size = `${mosaic.width}×${mosaic.height}`;
    byId("title").textContent = `${name} · ${tiles} tile${tiles > 1 ? "s" : ""} · ${size}`;
  } catch {
    // the title is a nicety; the player works without it
  }
}

let idleTimer = 0;
function awake() {
  document.body.classList.remove("idle");
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => document.body.classList.add("idle"), IDLE_MS);
}

function toggleFullscreen() {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen?.();
}

document.addEventListener("mousemove", awake);
document.addEventListener("keydown", (event) => {
  awake();
  if (event.key === "f" || event.key === "F") toggleFullscreen();
  if (event.key === "l" || event.key === "L") goLive();
});
video.addEventListener("dblclick", toggleFullscreen);
byId("latency").addEventListener("click", goLive);

awake();
describe();
if (!window.Hls) byId("no-hlsjs").hidden = false;
start();
setInterval(showLatency, 500);
setInterval(watchdog, 1000);
