// A mosaic over WebRTC: one WHEP viewer of /play/<fp>/whep (gateway/mosaic_whep.py), fed by
// the stitcher's own H.264 encode.
//
// - connect(): a recvonly video and audio offer (the stitcher sends the mosaic's sound as Opus
//   when it carries one, else leaves the audio inactive; no data channel), sent
//   once its ICE candidates are in it (the answer is complete: no trickle ICE), POSTed as
//   application/sdp. A 201 answers it; anything else throws WhepRefused, whose `kind` says what
//   the player should do: "starting" (503, Retry-After 1: the stitcher is not up, and the POST
//   woke it: offer again), "full" (503: the mosaic has its maximum of WebRTC viewers: play
//   HLS), "transient" (429, 5xx: offer again in a moment, a few times) or "refused" (no WHEP
//   here, or the stitcher will not send to this browser: play HLS).
// - sample(): getStats() read as frames decoded (is the picture moving?) and the parts of the
//   delay it measures; WebRtcPlayer (the link as the page's player) adds what
//   requestVideoFrameCallback says and makes it seconds behind live, with how.
// - close(): hangs up (DELETE on the Location), so the stitcher frees the viewer now rather
//   than when the connection times out.
//
// ICE servers: asked of the gateway before each offer (OPTIONS on the WHEP URL answers with
// `Link: <url>; rel="ice-server"` headers, RFC 9725), since the offer must carry the candidates:
// STUN where the deployment names one, and TURN with fresh credentials when its TURN server is
// on, so a browser behind NAT reaches the stitcher through the relay. With none, this works
// where the browser reaches the stitcher's own addresses; elsewhere the player falls back to HLS.

import { gathered, signedPrefix } from "./whep.js";

const NTP_UNIX_OFFSET_MS = 2_208_988_800_000; // 1900-01-01 to 1970-01-01
const CLOCK_SKEW_S = 0.05; // a clock-based age below -this means the two clocks disagree
const MAX_PLAUSIBLE_S = 30;

export class WhepRefused extends Error {
  constructor(kind, status, message, retryAfter) {
    super(message);
    this.kind = kind; // "starting" | "full" | "transient" | "refused"
    this.status = status;
    this.retryAfter = retryAfter; // seconds
  }
}

/** RTCIceServer objects from a Link header value (RFC 9725 §4.6); [] when there are none. */
export function iceServersOf(link) {
  const servers = [];
  for (const match of (link || "").matchAll(/<([^>]*)>((?:\s*;\s*[\w-]+="(?:[^"\\]|\\.)*")*)/g)) {
    const params = {};
    for (const p of match[2].matchAll(/([\w-]+)="((?:[^"\\]|\\.)*)"/g)) {
      params[p[1].toLowerCase()] = p[2].replace(/\\(.)/g, "$1");
    }
    if (params.rel !== "ice-server") continue;
    const server = { urls: match[1] };
    if (params.username !== undefined) {
      server.username = params.username;
      server.credential = params.credential ?? "";
    }
    servers.push(server);
  }
  return servers;
}

/** The ICE servers the gateway gives viewers of this WHEP URL ([] when it cannot say). */
async function askIceServers(whepPath) {
  try {
    const response = await fetch(whepPath, { method: "OPTIONS", cache: "no-store" });
    return response.ok ? iceServersOf(response.headers.get("Link")) : [];
  } catch {
    return [];
  }
}

/** What a non-201 answer to the offer means for the player (see the header). */
function refusal(response, body) {
  const status = response.status;
  const retryAfter = Number(response.headers.get("Retry-After")) || 1;
  const message = body.error || `${status} ${response.statusText}`;
  if (status === 503) {
    // The gateway says "starting" with Retry-After: 1 and "full" with a longer one; a
    // body.code of "full" says it outright where the gateway sends one.
    const full = body.code === "full" || retryAfter > 1;
    return new WhepRefused(full ? "full" : "starting", status, message, retryAfter);
  }
  if (status === 429 || status >= 500) return new WhepRefused("transient", status, message, retryAfter);
  return new WhepRefused("refused", status, message, retryAfter);
}

export class MosaicLink extends EventTarget {
  constructor(fp, iceServers = []) {
    super();
    this.whepPath = `${signedPrefix()}/play/${fp}/whep`; // signed, on a signed page
    this.iceServers = iceServers;
    this.pc = null;
    this.location = null;
    this.stream = new MediaStream();
    this.last = null; // the previous inbound-rtp stats, for rates between two samples
  }

  async connect() {
    // Asked every time: TURN credentials expire, and a restarted gateway may name others.
    const iceServers = this.iceServers.length ? this.iceServers : await askIceServers(this.whepPath);
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (event) => this.stream.addTrack(event.track));
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc === pc) this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (this.pc !== pc) throw new WhepRefused("refused", 0, "closed while connecting", 0);
    const response = await fetch(this.whepPath, {
      method: "POST",
      body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp" },
      cache: "no-store",
    });
    if (response.status !== 201) {
      const body = await response.json().catch(() => ({}));
      throw refusal(response, body);
    }
    this.location = response.headers.get("Location");
    const answer = await response.text();
    if (this.pc !== pc) {
      this.close(); // closed while the offer was out: hang up the viewer it made
      throw new WhepRefused("refused", 0, "closed while connecting", 0);
    }
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  get state() {
    return this.pc?.connectionState ?? "closed";
  }

  /**
   * What getStats() says about the picture: {frames} decoded so far, and the parts of its
   * delay it measures, in seconds or null: {network} (half the ICE round trip), {jitter} and
   * {decode} (per frame, since the last sample) and {clock} (see WebRtcPlayer.sample).
   */
  async sample() {
    const none = { frames: 0, network: null, jitter: null, decode: null, clock: null };
    if (!this.pc) return none;
    const report = await this.pc.getStats();
    let inbound = null;
    let transport = null;
    const pairs = [];
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
      else if (s.type === "transport") transport = s;
      else if (s.type === "candidate-pair") pairs.push(s);
    });
    if (!inbound) return none;
    const pair =
      (transport?.selectedCandidatePairId && report.get(transport.selectedCandidatePairId)) ||
      pairs.find((p) => p.nominated && p.state === "succeeded");
    const last = this.last;
    this.last = inbound;
    const per = (key, count) => {
      const frames = (inbound[count] ?? 0) - (last?.[count] ?? 0);
      return frames > 0 ? ((inbound[key] ?? 0) - (last?.[key] ?? 0)) / frames : null;
    };
    let clock = null;
    if (inbound.estimatedPlayoutTimestamp) {
      const age = (Date.now() - (inbound.estimatedPlayoutTimestamp - NTP_UNIX_OFFSET_MS)) / 1000;
      if (age > -CLOCK_SKEW_S && age < MAX_PLAUSIBLE_S) clock = Math.max(0, age);
    }
    return {
      frames: inbound.framesDecoded ?? 0,
      network: Number.isFinite(pair?.currentRoundTripTime) ? pair.currentRoundTripTime / 2 : null,
      jitter: per("jitterBufferDelay", "jitterBufferEmittedCount"),
      decode: per("totalDecodeTime", "framesDecoded"),
      clock,
    };
  }

  /** Hang up (safe twice): the stitcher drops this viewer now. */
  close() {
    if (this.location) {
      fetch(this.location, { method: "DELETE", keepalive: true }).catch(() => {});
      this.location = null;
    }
    this.pc?.close();
    this.pc = null;
  }
}

function ms(seconds) {
  return `${Math.round(seconds * 1000)} ms`;
}

/** A connected MosaicLink as the page's player (the same face as mosaic-hls.js's HlsPlayer). */
export class WebRtcPlayer {
  constructor(video, link, onState) {
    this.video = video;
    this.link = link;
    this.via = "webrtc";
    this.engine = "webrtc";
    this.shown = []; // seconds from each frame's last packet to its display, since the last sample
    this.frameCallback = 0;
    this.estimate = { seconds: null, behindEdge: null, title: null };
    link.addEventListener("state", (event) => onState(event.detail));
  }

  start() {
    this.video.srcObject = this.link.stream;
    if (this.video.requestVideoFrameCallback) this.watchFrames();
  }

  /** Each frame shown: how long after its last packet came (where the browser says). */
  watchFrames() {
    this.frameCallback = this.video.requestVideoFrameCallback((_now, frame) => {
      if (frame.receiveTime && frame.expectedDisplayTime && this.shown.length < 500) {
        this.shown.push((frame.expectedDisplayTime - frame.receiveTime) / 1000);
      }
      if (this.link.pc) this.watchFrames();
    });
  }

  stop() {
    this.video.cancelVideoFrameCallback?.(this.frameCallback);
    this.link.close();
    if (this.video.srcObject) this.video.srcObject = null;
  }

  /**
   * {progress, seconds, behindEdge, title}: progress is frames decoded (it moves in a
   * background tab too, unlike frames shown); seconds behind live, by preference:
   *
   * - the clock: estimatedPlayoutTimestamp is the frame on screen as the stitcher's clock
   *   stamped it when sending, through RTCP sender reports, so now minus it covers the
   *   network, jitter buffer and decode (if the two clocks agree). Chromium 156 left it out on
   *   these receive-only connections (it had no RTCP round trip to go with the reports).
   * - else what this end measures, from the stitcher sending a frame to it being on screen:
   *   half the round trip (the network), plus, per frame, the time from its last packet to
   *   its display (requestVideoFrameCallback: jitter buffer, decode, render) or, without
   *   that, the jitter buffer's delay and the decode time (getStats). The stitcher's encode
   *   before sending (milliseconds at the default x264 preset) is not in it.
   */
  async sample() {
    const got = await this.link.sample();
    const shown = this.shown;
    this.shown = [];
    const local = shown.length ? median(shown) : null;
    if (local === null && got.jitter === null && got.clock === null) {
      // No frame since the last sample (a freeze): the last estimate stands, for what it was.
      return { progress: got.frames, ...this.estimate };
    }
    const parts = [];
    if (got.network !== null) parts.push(`network ${ms(got.network)} (half the round trip)`);
    if (local !== null) parts.push(`from the last packet to the screen ${ms(local)} a frame`);
    else {
      if (got.jitter !== null) parts.push(`jitter buffer ${ms(got.jitter)}`);
      if (got.decode !== null) parts.push(`decode ${ms(got.decode)}`);
    }
    const measured = parts.length
      ? (got.network ?? 0) + (local ?? (got.jitter ?? 0) + (got.decode ?? 0))
      : null;
    let seconds = measured;
    let title = null;
    if (measured !== null) {
      title =
        `From the stitcher sending a frame to its display: ${parts.join(" + ")}. ` +
        "The encode before sending is not counted.";
    }
    if (got.clock !== null) {
      seconds = got.clock;
      title =
        `The picture on screen left the stitcher ${got.clock.toFixed(2)} s ago, by the ` +
        "stitcher's clock (RTCP sender reports) against this computer's" +
        (parts.length ? `; measured here: ${parts.join(" + ")}.` : ".");
    }
    this.estimate = { seconds, behindEdge: null, title };
    return { progress: got.frames, ...this.estimate };
  }

  goLive() {
    // WebRTC has no buffer to skip: it is always at the live edge.
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}
