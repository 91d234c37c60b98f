// The mosaic player: one mosaic, full window, with how it arrives and how far behind live it
// is. Two transports, best first:
//
// - WebRTC (mosaic-webrtc.js): WHEP to /play/<fp>/whep, a few tenths of a second behind live.
// - HLS (mosaic-hls.js): /play/<fp>/index.m3u8 with hls.js (or the browser's own HLS):
//   "LL-HLS" for the CMAF playlist with 0.2 s parts (about a second behind), "HLS" when the
//   gateway serves legacy MPEG-TS segments (TESSERA_HLS_FORMAT=ts; a few seconds behind).
//
// The page plays WebRTC when it can and falls back to HLS when WebRTC does not connect or
// shows no picture within FIRST_PICTURE_MS of the answer (WHEP_ATTEMPTS times), when the
// gateway or the stitcher refuses it (no WHEP route, no H.264 High in this browser), or at
// once when the mosaic has its maximum of WebRTC viewers. While on HLS after a fallback it
// tries WebRTC again in the background (after UPGRADE_FIRST_MS, doubling up to UPGRADE_MAX_MS)
// and switches only once the new connection shows pictures.
//
// ?via=webrtc or ?via=hls (e.g. /view/<fp>?via=hls) forces one transport, for people and
// tests: the page then never tries the other and keeps retrying the one asked for.
//
// Opened through a signed URL (/s/<token>/view/<fp>, a gateway with --play-secret), the page
// asks for the playlist and WHEP under the same /s/<token> prefix; a 403 (expired, revoked)
// ends the page with the gateway's reason.
//
// Recovery (a stitcher restart, a network cut): a WebRTC connection that fails, or whose
// frames stop for STILL_MS, is connected again (the WHEP POST answers 503 while the stitcher
// is down, and wakes it); an HLS player that hits a fatal error (hls.js has retried already)
// or whose picture stops moving is destroyed and started again from the playlist. Until the
// mosaic has its first media (its workers are starting) the page says so; asking for the
// playlist, or offering WHEP, is what tells the gateway someone watches.

import { byId } from "./dom.js";
import { HlsPlayer, describePlaylist } from "./mosaic-hls.js";
import { MosaicLink, WebRtcPlayer, WhepRefused } from "./mosaic-webrtc.js";
import { plainPath, signedPrefix } from "./whep.js";

const prefix = signedPrefix();
const fp = plainPath().split("/")[2];
const playlistUrl = `${prefix}/play/${fp}/index.m3u8`;
const video = byId("video");
const POLL_MS = 1000;
const IDLE_MS = 3000;
const FIRST_PICTURE_MS = 6000; // ICE on a LAN and the next keyframe (one a second) fit in 2
const WHEP_ATTEMPTS = 3; // answered offers without a picture (or errors) before HLS
const WHEP_STUCK_MS = 5000; // the playlist moves (the stitcher runs) but WHEP says "starting"
const WHEP_START_MS = 120_000; // a mosaic still starting after this: play HLS, which waits on
// How long a picture may stand still before the page says "Buffering…", and before it starts
// again. WebRTC has no buffer and a keyframe every second: two seconds without a decoded frame
// is a dead connection (a stitcher restart, a network cut). HLS rides out a late part or two.
const STILL_MS = { webrtc: { warn: 1000, restart: 2000 }, hls: { warn: 2000, restart: 6000 } };
const UPGRADE_FIRST_MS = 30_000;
const UPGRADE_MAX_MS = 300_000;
const RETRY_MAX_MS = 10_000;
// None fixed here: each connection asks the gateway (OPTIONS on the WHEP URL, see mosaic-webrtc.js).
const ICE_SERVERS = [];
const VIA_NAMES = { webrtc: "WebRTC", "ll-hls": "LL-HLS", hls: "HLS" };
const VIA_TITLES = {
  webrtc: "WebRTC (WHEP): the stitcher's H.264 sent straight to this page, no segments.",
  "ll-hls": "Low-Latency HLS: CMAF parts of 0.2 s, fetched as the gateway makes them.",
  hls: "HLS with whole MPEG-TS segments (this gateway's TESSERA_HLS_FORMAT=ts).",
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const asked = new URLSearchParams(window.location.search).get("via");
const forced = asked === "webrtc" || asked === "hls" ? asked : null;
if (asked && !forced) console.warn(`?via=${asked}: use webrtc or hls; playing the best one`);
const webrtcHere = typeof RTCPeerConnection === "function";

let player = null; // the HlsPlayer or WebRtcPlayer attached to the video element
let generation = 0; // bumped by every (re)start, so a stale loop stops
let tiles = 0;
let targetDuration = 1;
let lastProgress = -1;
let sinceMoved = 0;
let everPlayed = false; // a picture was shown: a restart is "Reconnecting", not "Starting"
let fallback = ""; // why the page plays HLS though WebRTC was wanted
let webrtcAfter = 0; // performance.now() before which WebRTC is not tried (it just failed)
let upgradeDelay = UPGRADE_FIRST_MS;
let upgrading = false;

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

function seconds(since) {
  return Math.round((performance.now() - since) / 1000);
}

function starting(since) {
  const sources = tiles ? `${tiles} source${tiles > 1 ? "s" : ""}` : "the sources";
  const took = `${seconds(since)} s`;
  if (everPlayed) say("Reconnecting…", `The mosaic is restarting (${took}).`);
  else say("Starting the mosaic…", `Pulling ${sources} and composing the first picture (${took}).`);
}

/** The gateway refused this page's URL (403): say why; nothing more will play. */
function refused(reason) {
  generation += 1;
  stopPlayer();
  say("This link does not open the mosaic", reason || "Ask whoever shared it for a new one.", {
    spinner: false,
  });
}

function noSuchMosaic() {
  say("No such mosaic", "It may have been made on another gateway. Go back to the list.", {
    spinner: false,
  });
}

// -- starting ----------------------------------------------------------------------------------

async function start() {
  const mine = ++generation;
  stopPlayer();
  if (wantsWebRtc()) {
    const outcome = await playWebRtc(mine);
    if (outcome !== "fallback" || mine !== generation) return;
  }
  await playHls(mine);
}

function restart(reason) {
  say("Reconnecting…", `${reason}; starting again.`);
  start();
}

function wantsWebRtc() {
  if (forced) return forced === "webrtc";
  return webrtcHere && performance.now() >= webrtcAfter;
}

function stopPlayer() {
  player?.stop();
  player = null;
}

function adopt(next) {
  player = next;
  next.start();
  document.body.dataset.engine = next.engine;
  lastProgress = -1;
  sinceMoved = performance.now();
  showVia();
  video.play().catch(() => say("Click to play", "The browser wants a click first.", { spinner: false }));
}

/** The playlist as the gateway has it now: {status, text}, or null when it does not answer. */
async function fetchPlaylist() {
  try {
    const response = await fetch(playlistUrl, { cache: "no-store" });
    if (response.status === 403) {
      const body = await response.json().catch(() => ({}));
      return { status: 403, text: "", error: body.error ?? "" };
    }
    return { status: response.status, text: response.ok ? await response.text() : "" };
  } catch {
    return null;
  }
}

// -- WebRTC --------------------------------------------------------------------------------------

/**
 * Offer WHEP until a connection shows a picture ("playing"), or WebRTC is given up
 * ("fallback"; never when forced), or a newer start took over ("stale").
 */
async function playWebRtc(mine) {
  const began = performance.now();
  let failures = 0;
  let reason = "";
  let listed = null; // the playlist at the last "starting" answer
  let movingSince = null; // since when it changes from poll to poll while WHEP says "starting"
  let retryMs = POLL_MS;
  for (;;) {
    if (mine !== generation) return "stale";
    const link = new MosaicLink(fp, ICE_SERVERS);
    let wait = POLL_MS;
    try {
      await link.connect();
      if (await firstPicture(link, mine)) {
        if (mine !== generation) {
          link.close();
          return "stale";
        }
        webrtcWorked();
        adopt(new WebRtcPlayer(video, link, (state) => linkState(link, state)));
        return "playing";
      }
      failures += 1;
      reason = `no picture within ${FIRST_PICTURE_MS / 1000} s of the answer (connection ${link.state})`;
      link.close();
    } catch (error) {
      link.close();
      if (error instanceof WhepRefused && error.status === 403) {
        refused(error.message);
        return "stale";
      }
      if (!(error instanceof WhepRefused)) {
        failures += 1; // the gateway is away, or the browser refused the answer
        reason = error.message;
      } else if (error.kind === "full" || error.kind === "refused") {
        if (giveUp(`the gateway said: ${error.message}`)) return "fallback";
        failures = 0;
        wait = Math.max(retryMs, error.retryAfter * 1000);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      } else if (error.kind === "transient") {
        failures += 1;
        reason = `the gateway said: ${error.message}`;
        wait = error.retryAfter * 1000;
      } else {
        // "starting": the stitcher is not up. Its playlist says whether it is coming up, or
        // running with a WebRTC output that does not answer (then HLS is the way).
        wait = error.retryAfter * 1000;
        const got = await fetchPlaylist();
        if (got?.status === 404) {
          noSuchMosaic();
          return "stale";
        }
        if (got?.status === 403) {
          refused(got.error);
          return "stale";
        }
        const text = got?.text ?? null;
        movingSince = text && listed && text !== listed ? (movingSince ?? performance.now()) : null;
        listed = text;
        if (movingSince !== null && performance.now() - movingSince > WHEP_STUCK_MS) {
          if (giveUp("the mosaic plays, but its WebRTC output does not answer")) return "fallback";
          movingSince = null;
        } else if (performance.now() - began > WHEP_START_MS) {
          if (giveUp("the mosaic is taking long to start")) return "fallback";
        }
        if (mine === generation) starting(began);
      }
    }
    if (failures >= WHEP_ATTEMPTS) {
      if (giveUp(reason)) return "fallback";
      failures = 0;
      wait = retryMs;
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
    await sleep(wait);
  }
}

/** True when the page falls back to HLS; when WebRTC is forced, say why it keeps trying. */
function giveUp(reason) {
  if (forced === "webrtc") {
    say("Reconnecting…", `WebRTC does not play (${reason}); trying again (?via=webrtc).`);
    return false;
  }
  webrtcFailed(reason);
  return true;
}

function webrtcFailed(reason) {
  fallback = reason;
  webrtcAfter = performance.now() + upgradeDelay;
  console.info(`WebRTC: ${reason}; HLS instead, WebRTC again in ${upgradeDelay / 1000} s`);
  upgradeDelay = Math.min(upgradeDelay * 2, UPGRADE_MAX_MS);
}

function webrtcWorked() {
  fallback = "";
  webrtcAfter = 0;
  upgradeDelay = UPGRADE_FIRST_MS;
}

/** True once the link has decoded a frame, within FIRST_PICTURE_MS. */
async function firstPicture(link, mine) {
  const deadline = performance.now() + FIRST_PICTURE_MS;
  while (mine === generation && performance.now() < deadline) {
    if (link.state === "failed" || link.state === "closed") return false;
    if ((await link.sample()).frames > 0) return true;
    await sleep(200);
  }
  return false;
}

function linkState(link, state) {
  if (player?.link !== link) return;
  if (state === "failed") restart("The WebRTC connection failed");
  // "disconnected" can mend by itself (ICE consent checks resume): the frame watchdog decides.
  else if (state === "disconnected") say("Reconnecting…", "The WebRTC connection is interrupted.");
}

/**
 * On HLS after a fallback: try WebRTC again in the background, without touching the picture,
 * and switch once the new connection has decoded a frame.
 */
async function upgrade() {
  // Only from a playing HLS player: not while a (re)start is under way, which tries WebRTC.
  if (forced || upgrading || !webrtcHere || !player || player.via === "webrtc") return;
  if (performance.now() < webrtcAfter) return;
  upgrading = true;
  const mine = generation;
  const link = new MosaicLink(fp, ICE_SERVERS);
  try {
    await link.connect();
    if (!(await firstPicture(link, mine)) || mine !== generation) {
      throw new Error(`no picture within ${FIRST_PICTURE_MS / 1000} s of the answer`);
    }
    generation += 1; // whatever the HLS player was doing is over
    stopPlayer();
    webrtcWorked();
    adopt(new WebRtcPlayer(video, link, (state) => linkState(link, state)));
  } catch (error) {
    link.close();
    // A restart meanwhile (mine is stale) tries WebRTC itself: this failure says nothing.
    if (mine === generation) {
      webrtcFailed(error.message);
      showVia();
    }
  } finally {
    upgrading = false;
  }
}

// -- HLS -----------------------------------------------------------------------------------------

async function playHls(mine) {
  const began = performance.now();
  let playlist = null;
  while (mine === generation) {
    const got = await fetchPlaylist();
    if (got?.status === 404) return noSuchMosaic();
    if (got?.status === 403) return refused(got.error);
    if (got?.status === 200) {
      playlist = describePlaylist(got.text);
      targetDuration = playlist.targetDuration;
      if (playlist.hasMedia) break;
      starting(began);
    } else {
      say("Reconnecting…", "The gateway does not answer; trying again.");
    }
    await sleep(POLL_MS);
  }
  if (mine !== generation) return;
  if (!HlsPlayer.available(video)) {
    document.body.dataset.engine = "none";
    say(
      "This browser cannot play the mosaic here",
      "hls.js did not load from this gateway (/vendor/hls.js): its Tessera install is broken " +
        `and needs reinstalling. Or open ${playlistUrl} in Safari or VLC.`,
      { spinner: false },
    );
    return;
  }
  if (!everPlayed) say("Starting the mosaic…", "First segment ready: buffering.");
  const next = new HlsPlayer(video, playlistUrl, playlist, (reason) => {
    if (player === next) restart(`The stream stopped (${reason})`);
  });
  adopt(next);
}

// -- watching the picture ----------------------------------------------------------------------

/**
 * Twice a second: how far behind live, and whether the picture moves. A live picture that
 * stops moving is a problem whatever the player says (a native player may not report it, a
 * WebRTC track stays "live" with no frames): say so after a moment, start again after a while.
 */
let monitoring = false;
async function monitor() {
  const current = player;
  if (!current || monitoring) return;
  let sample = null;
  monitoring = true;
  try {
    sample = await current.sample();
  } catch {
    // a connection closing under getStats(): the next tick has the next player
  } finally {
    monitoring = false;
  }
  if (current !== player || !sample) return;
  showLatency(sample);
  showVia();
  watchdog(sample.progress);
  upgrade();
}

function watchdog(progress) {
  const now = performance.now();
  // A live stream never ends: "ended" is a player that took the playlist for a finished one.
  const halted = video.paused && !video.ended;
  if (halted || progress !== lastProgress) {
    if (progress !== lastProgress && lastProgress >= 0 && video.readyState >= 2 && !halted) {
      everPlayed = true;
      quiet();
    }
    lastProgress = progress;
    sinceMoved = now;
    return;
  }
  const still = now - sinceMoved;
  const webrtc = player.via === "webrtc";
  const limits = webrtc ? STILL_MS.webrtc : STILL_MS.hls;
  // Long segments (a legacy playlist's may be) come late by more: four of them, then.
  const restartMs = webrtc ? limits.restart : Math.max(limits.restart, targetDuration * 4000);
  if (still > restartMs) restart("The picture stopped moving");
  else if (still > limits.warn) say("Buffering…", "Waiting for the next picture.");
}

video.addEventListener("playing", () => {
  if (player) quiet();
});
video.addEventListener("click", () => video.paused && video.play());

// -- the chips -----------------------------------------------------------------------------------

function showVia() {
  const chip = byId("via");
  if (!player) return;
  chip.hidden = false;
  chip.textContent = VIA_NAMES[player.via];
  document.body.dataset.via = player.via;
  const notes = [VIA_TITLES[player.via]];
  if (forced) notes.push(`Chosen by ?via=${forced} in the address.`);
  else {
    if (fallback) {
      const wait = Math.max(0, Math.round((webrtcAfter - performance.now()) / 1000));
      notes.push(`WebRTC did not play (${fallback}); it is tried again in ${wait} s.`);
    }
    notes.push("Add ?via=webrtc or ?via=hls to the address to choose.");
  }
  chip.title = notes.join(" ");
}

function showLatency(sample) {
  const text = byId("latency-text");
  const badge = byId("live");
  if (video.readyState < 2 || sample.seconds === null || sample.seconds === undefined) {
    text.textContent = "–";
    return;
  }
  const age = sample.seconds;
  text.textContent = `${age.toFixed(age < 1 ? 2 : 1)} s behind live`;
  byId("latency").title = sample.title ?? "How far behind live the picture is.";
  const edge = sample.behindEdge;
  const near = player.via === "webrtc" ? age < 2 : edge === null || edge <= targetDuration * 4;
  badge.textContent = near ? "LIVE" : "BEHIND";
  badge.classList.toggle("live", near);
}

function goLive() {
  player?.goLive();
  video.play().catch(() => {});
}

// -- page chrome -------------------------------------------------------------------------------

async function describe() {
  // The list needs the admin's token on a gateway that signs URLs: a shared link goes without.
  if (prefix) return;
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
// Hang up a WebRTC viewer now rather than when the stitcher notices the silence.
window.addEventListener("pagehide", () => {
  generation += 1;
  stopPlayer();
});

awake();
describe();
if (!window.Hls && forced !== "webrtc") byId("no-hlsjs").hidden = false;
start();
setInterval(monitor, 500);
