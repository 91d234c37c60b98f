// One viewer's connection to a JIT session: WebRTC signalled with WHEP, plus the session's
// "control" data channel.
//
// - connect(): a recvonly video + audio offer with a data channel labelled "control", POSTed
//   as application/sdp to the session's WHEP URL. The worker's answer is complete (no trickle
//   ICE), so the offer waits for its own candidates first. A 503 means the session is still
//   starting: the POST is retried after Retry-After. close() hangs up (DELETE on Location).
// - command({type: "seek", frame: 120}): sent on the channel as {"type": "seek/1", ...} and
//   answered in order by {"type": "reply/1", ok, error, position}; without an open channel it
//   goes to the session's control URL over HTTP instead.
// - Events: "report" (detail: a frame-report/1: frame, timecode, pts, playing, rtp), "track"
//   (detail: a MediaStreamTrack), "state" (detail: the peer connection's state), "open" (the
//   channel), "starting" (the session is not ready yet).

import { ApiError, send } from "./api.js";

const GATHER_MS = 3000;
const REPLY_MS = 5000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * "/s/<token>" when this page was opened through a signed URL (a shared mosaic, a review
 * link), else "". Every request the page makes for its mosaic or session goes under it, as
 * the gateway then refuses them without it; static files (/static, /vendor) stay unsigned.
 */
export function signedPrefix(pathname = window.location.pathname) {
  const match = /^\/s\/([^/]+)\//.exec(pathname);
  return match ? `/s/${match[1]}` : "";
}

/** The page's path without its signed prefix: /view/<fp>, /session/<id>/view. */
export function plainPath(pathname = window.location.pathname) {
  return pathname.slice(signedPrefix(pathname).length);
}

/**
 * The path of a URL the gateway gave: same origin as the page, whatever host it named, and
 * under the page's signed prefix (the gateway gives it already to a page opened with one).
 */
function pathOf(url) {
  const path = new URL(url, window.location.href).pathname;
  const prefix = signedPrefix();
  return prefix && !path.startsWith("/s/") ? prefix + path : path;
}

export class SessionLink extends EventTarget {
  constructor(view) {
    super();
    this.whepPath = pathOf(view.whep_url);
    this.controlPath = pathOf(view.control_url);
    this.iceServers = view.ice_servers ?? [];
    this.pc = null;
    this.channel = null;
    this.location = null;
    this.replies = []; // {resolve, done} of commands sent on the channel, oldest first
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  get open() {
    return this.channel?.readyState === "open";
  }

  async connect() {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const channel = pc.createDataChannel("control");
    this.channel = channel;
    channel.addEventListener("open", () => this.emit("open"));
    channel.addEventListener("message", (event) => this.receive(event.data));
    pc.addEventListener("track", (event) => this.emit("track", event.track));
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc === pc) this.emit("state", pc.connectionState);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await this.offer(pc.localDescription.sdp);
    if (this.pc === pc) await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  async offer(sdp) {
    for (;;) {
      const response = await send(this.whepPath, { method: "POST", body: sdp, type: "application/sdp" });
      if (response.status === 201) {
        this.location = response.headers.get("Location");
        return response.text();
      }
      const body = await response.json().catch(() => ({}));
      if (response.status !== 503) {
        throw new ApiError(response.status, body.error || response.statusText, body);
      }
      this.emit("starting", body.error);
      await sleep(1000 * Number(response.headers.get("Retry-After") || 2));
    }
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "frame-report/1") this.emit("report", message);
    else if (message.type === "reply/1") settle(this.replies.shift(), message);
  }

  /** Send a command ({type: "seek", frame: 3}); resolves with the worker's reply. */
  async command(cmd) {
    if (this.open) {
      return new Promise((resolve) => {
        // Replies come in order; one that never comes must not hold up the next ones.
        const entry = { resolve, done: false };
        this.replies.push(entry);
        this.channel.send(JSON.stringify({ ...cmd, type: `${cmd.type}/1` }));
        setTimeout(() => settle(entry, { ok: false, error: "the session did not answer" }), REPLY_MS);
      });
    }
    const response = await send(this.controlPath, {
      method: "POST",
      body: JSON.stringify(cmd),
      type: "application/json",
    });
    const reply = await response.json().catch(() => ({}));
    return reply.ok === undefined ? { ok: false, error: reply.error ?? `${response.status}` } : reply;
  }

  /** Hang up: the worker drops this viewer now rather than when the connection times out. */
  close() {
    if (this.location) {
      send(this.location, { method: "DELETE", keepalive: true }).catch(() => {});
      this.location = null;
    }
    for (const entry of this.replies) settle(entry, { ok: false, error: "disconnected" });
    this.replies = [];
    this.channel = null;
    this.pc?.close();
    this.pc = null;
  }
}

function settle(entry, reply) {
  if (entry && !entry.done) {
    entry.done = true;
    entry.resolve(reply);
  }
}

/**
 * Wait until the connection has its ICE candidates (at most GATHER_MS): a WHEP answer is
 * complete and there is no trickle ICE, so the offer must carry them. The mosaic player uses
 * it too (mosaic-webrtc.js).
 */
export function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, GATHER_MS); // send what there is: host candidates come first
  });
}
