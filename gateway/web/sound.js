// The mosaic's sound on the viewer page: a mute button, and a "Sound" selector saying whose
// sound the mosaic carries (Auto: the first tile with audio; one tile; Off).
//
// The page starts muted: browsers let a page play sound by itself only after a click. The
// button (or M) turns it on and off.
//
// Whose sound is part of the mosaic (audio= of /create, in its fingerprint), so choosing
// another does not change this mosaic: it asks the gateway for the sibling mosaic with that
// sound (POST /mosaics/<fp>/audio: the same tiles and grabbers, another fingerprint) and goes
// to the sibling's page, keeping ?via= and, when the sound was on, asking the next page to turn
// it on too (?sound=on: it does once the picture plays, if the browser lets it, as Chromium
// does after a click on the same site; else it stays muted). This mosaic parks once nobody
// watches it. The tiles and the current choice come from GET /mosaics/<fp>/alarms (its
// layout's tiles and its audio).
//
// Who may switch is who may /create, and the page knows it by its own address. Unsigned, the
// gateway does not sign play URLs (it would have refused the page), so /create is open and
// the selector shows. Through a signed link (/s/<token>/view/<fp>) the link lets its viewer
// watch, nothing more: the selector shows only when this browser keeps an API token (api.js;
// the home page asks for one on such a gateway), which the request carries, and the gateway
// answers with the sibling's page signed for it. A refusal (no token, or one without the
// mosaics scope) hides the selector again.

import { hasToken, send } from "./api.js";
import { byId, el } from "./dom.js";
import { plainPath, signedPrefix } from "./whep.js";

const RETRY_MS = 2000;
const ATTEMPTS = 5;

const fp = plainPath().split("/")[2];
const prefix = signedPrefix();
const params = new URLSearchParams(window.location.search);
const video = byId("video");
const muteButton = byId("mute");
const picker = byId("sound");
const select = byId("sound-choice");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let current = null; // the option of the mosaic's own sound: "auto", "off" or a tile index
let carries = true; // false for a mosaic without sound (audio=off)

// -- muting ------------------------------------------------------------------------------------

function showMute() {
  const muted = video.muted;
  muteButton.textContent = muted ? "Unmute" : "Mute";
  muteButton.setAttribute("aria-pressed", String(!muted));
  muteButton.disabled = !carries;
  muteButton.title = !carries
    ? "This mosaic carries no sound: choose a tile under Sound"
    : muted
      ? "The sound is off in this page: click (or press M) to hear the mosaic"
      : "Click (or press M) to mute";
  document.body.dataset.muted = String(muted);
}

function toggleMute() {
  video.muted = !video.muted;
  if (!video.muted) video.play().catch(() => {});
  showMute();
}

/** ?sound=on (a switch from a page with the sound on): unmute once the picture plays. */
function unmuteWhenPlaying() {
  if (params.get("sound") !== "on") return;
  video.addEventListener(
    "playing",
    () => {
      video.muted = false;
      // Without a recent click Chromium pauses a video unmuted by a script: play it muted.
      if (video.paused) {
        video.muted = true;
        video.play().catch(() => {});
      }
    },
    { once: true },
  );
}

// -- whose sound -------------------------------------------------------------------------------

function tileLabel(tile) {
  const number = `Tile ${tile.tile + 1}`;
  return tile.name ? `${number} · ${tile.name}` : number;
}

function optionOf(audio) {
  return audio === "" ? "auto" : audio;
}

function fill(layout, audio) {
  select.replaceChildren(
    el("option", { value: "auto", title: "The first tile whose source has sound" }, "Auto"),
    ...layout.tiles.map((tile) => el("option", { value: String(tile.tile) }, tileLabel(tile))),
    el("option", { value: "off" }, "Off"),
  );
  current = optionOf(audio);
  select.value = current;
  carries = audio !== "off";
  document.body.dataset.sound = current;
  showMute();
}

/** Whether this page may switch (see the header): known from its own address. */
function maySwitch() {
  return !prefix || hasToken();
}

/** The mosaic's tiles and sound, asked until the gateway answers (a new mosaic: a moment). */
async function describe() {
  for (let attempt = 1; attempt <= ATTEMPTS; attempt += 1) {
    try {
      const response = await fetch(`${prefix}/mosaics/${fp}/alarms`, { cache: "no-store" });
      if (response.ok) return await response.json();
      if (response.status !== 503) return null;
    } catch {
      // the gateway is away: try again
    }
    await sleep(RETRY_MS * attempt);
  }
  return null;
}

/** The sibling's page, with this page's ?via= and its sound on if it was on here. */
function nextPage(view) {
  const query = new URLSearchParams();
  const via = params.get("via");
  if (via) query.set("via", via);
  if (!video.muted) query.set("sound", "on");
  const text = query.toString();
  return text ? `${view}?${text}` : view;
}

async function choose() {
  const chosen = select.value;
  if (chosen === current) return;
  const tile = chosen === "auto" || chosen === "off" ? chosen : Number(chosen);
  select.disabled = true;
  let reason = "";
  try {
    // Never under the signed prefix: a signed link lets its viewer watch, and no more.
    const response = await send(`/mosaics/${fp}/audio`, {
      method: "POST",
      body: JSON.stringify({ tile }),
      type: "application/json",
      ask: false,
    });
    const body = await response.json().catch(() => ({}));
    if (response.ok) {
      window.location.assign(nextPage(body.view));
      return;
    }
    reason = body.error || `${response.status} ${response.statusText}`;
    if (response.status === 401 || response.status === 403) picker.hidden = true;
  } catch (error) {
    reason = `the gateway does not answer (${error.message})`;
  }
  console.warn(`Sound not switched: ${reason}`);
  picker.title = `Not switched: ${reason}`;
  picker.dataset.error = reason;
  select.value = current;
  select.disabled = false;
}

async function start() {
  showMute();
  unmuteWhenPlaying();
  const mosaic = await describe();
  if (!mosaic) return;
  fill(mosaic.layout, mosaic.audio);
  picker.hidden = !maySwitch();
}

muteButton.addEventListener("click", toggleMute);
video.addEventListener("volumechange", showMute);
select.addEventListener("change", choose);
document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLSelectElement || event.ctrlKey || event.metaKey) return;
  if ((event.key === "m" || event.key === "M") && carries) toggleMute();
});
if (fp) start();
