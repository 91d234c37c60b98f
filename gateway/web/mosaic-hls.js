// A mosaic over HLS: hls.js (served by the gateway at /vendor/hls.js) where the browser has
// Media Source Extensions, else the browser's own HLS (Safari, iOS, which play Low-Latency
// HLS themselves).
//
// The playlist decides the settings: a CMAF one with parts (EXT-X-PART-INF) is Low-Latency
// HLS, played PART-HOLD-BACK behind its live edge (0.6 s: three 0.2 s parts); a legacy
// MPEG-TS one (TESSERA_HLS_FORMAT=ts) three segments behind. sample() says how far behind
// live the picture is, by the program date time of what is on screen.

/** What a playlist's text says about how to play it. */
export function describePlaylist(text) {
  const target = /#EXT-X-TARGETDURATION:(\d+)/.exec(text);
  const part = /#EXT-X-PART-INF:PART-TARGET=([\d.]+)/.exec(text);
  const holdBack = /PART-HOLD-BACK=([\d.]+)/.exec(text);
  const partTarget = part ? Number(part[1]) : null;
  return {
    hasMedia: text.includes("#EXTINF"),
    targetDuration: target ? Number(target[1]) : 2,
    partTarget,
    // RFC 8216bis: PART-HOLD-BACK is at least twice the part target; three parts is usual.
    partHoldBack: holdBack ? Number(holdBack[1]) : partTarget ? 3 * partTarget : null,
  };
}

/** hls.js settings for a playlist as describePlaylist() describes it. */
export function hlsConfig({ partHoldBack, partTarget, targetDuration }) {
  const common = {
    backBufferLength: 30, // an ops wall plays all day: keep memory flat
    // Catch up after a stall by playing faster (hls.js does it within one target duration of
    // its target latency, in low-latency mode) rather than by a jump.
    maxLiveSyncPlaybackRate: 1.5,
  };
  if (partHoldBack === null) return { ...common, liveSyncDurationCount: 3 };
  return {
    ...common,
    lowLatencyMode: true,
    // Two parts behind the live edge, the least the spec allows (the playlist says three,
    // for players we do not know): measured in `just bench` (case 9), the picture is about
    // 0.35 s closer to live than at three parts (p50 0.75 s against 1.1 s glass to glass).
    // hls.js raises its target itself after a stall (liveSyncOnStallIncrease), so a slow
    // network costs latency, not a frozen picture. Given explicitly also because hls.js
    // accepts a liveMaxLatencyDuration only beside a liveSyncDuration.
    liveSyncDuration: partTarget ? Math.min(partHoldBack, 2 * partTarget) : partHoldBack,
    // Further behind than this at a playlist update (a long stall, a tab in the background):
    // jump to live. hls.js speeds up only up to one target duration past its target (which
    // itself grows by up to a target duration after stalls), so this leaves no gap between.
    liveMaxLatencyDuration: partHoldBack + 2 * targetDuration,
  };
}

export class HlsPlayer {
  /**
   * `playlist` is describePlaylist() of the playlist as it was polled; `onFatal(reason)` is
   * called once when the player cannot go on (the page then starts again).
   */
  constructor(video, url, playlist, onFatal) {
    this.video = video;
    this.url = url;
    this.playlist = playlist;
    this.onFatal = onFatal;
    this.hls = null;
    this.failed = false;
    this.recoveredAt = -Infinity;
    this.via = playlist.partTarget ? "ll-hls" : "hls";
    this.engine = window.Hls?.isSupported() ? "hls.js" : "native";
  }

  /** False when this browser has neither MSE with hls.js nor its own HLS. */
  static available(video) {
    return Boolean(window.Hls?.isSupported() || video.canPlayType("application/vnd.apple.mpegurl"));
  }

  start() {
    if (this.engine === "native") {
      this.video.src = this.url;
      return;
    }
    const Hls = window.Hls;
    const hls = new Hls(hlsConfig(this.playlist));
    this.hls = hls;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal || this.hls !== hls) return;
      // One media error (a decode hiccup) is worth hls.js's own recovery; a second soon after
      // is not. Anything else fatal (hls.js has already retried: twice on a playlist with one
      // rendition, e.g. while the stitcher restarts) means a new player.
      const now = performance.now();
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR && now - this.recoveredAt > 10_000) {
        this.recoveredAt = now;
        hls.recoverMediaError();
      } else {
        this.fail(data.details);
      }
    });
    hls.on(Hls.Events.LEVEL_UPDATED, (_event, data) => {
      // The gateway may serve the other format after a restart (its setting changed).
      this.via = data.details.partTarget ? "ll-hls" : "hls";
    });
    hls.loadSource(this.url);
    hls.attachMedia(this.video);
  }

  fail(reason) {
    if (this.failed) return;
    this.failed = true;
    this.onFatal(reason);
  }

  stop() {
    this.failed = true; // a late error from a stopped player is nobody's business
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    } else if (this.video.getAttribute("src")) {
      this.video.removeAttribute("src");
      this.video.load();
    }
  }

  /** The picture's progress and age: {progress, seconds, behindEdge, title}. */
  async sample() {
    const age = this.pictureAge();
    const edge = this.behindEdge();
    const parts = [];
    if (age !== null) {
      parts.push(`the picture was composed ${age.toFixed(1)} s ago (its program date time)`);
    }
    if (edge !== null) parts.push(`${edge.toFixed(1)} s behind the playlist's live edge`);
    const title = parts.length ? `${capitalise(parts.join("; "))}. Click to jump to live.` : null;
    return { progress: this.video.currentTime, seconds: age ?? edge, behindEdge: edge, title };
  }

  /** Seconds between now and the wall-clock time of the picture shown (PROGRAM-DATE-TIME). */
  pictureAge() {
    let shown = null;
    if (this.hls) shown = this.hls.playingDate;
    else if (this.video.getStartDate) {
      const start = this.video.getStartDate();
      if (start && !Number.isNaN(start.getTime())) {
        shown = new Date(start.getTime() + this.video.currentTime * 1000);
      }
    }
    return shown ? (Date.now() - shown.getTime()) / 1000 : null;
  }

  /** Seconds between the picture shown and the newest media the playlist lists. */
  behindEdge() {
    const hls = this.hls;
    if (hls && Number.isFinite(hls.latency) && hls.latency > 0) return hls.latency;
    const ranges = this.video.seekable;
    return ranges.length ? Math.max(0, ranges.end(ranges.length - 1) - this.video.currentTime) : null;
  }

  goLive() {
    const video = this.video;
    const sync = this.hls?.liveSyncPosition;
    if (Number.isFinite(sync)) video.currentTime = sync;
    else if (video.seekable.length) {
      const holdBack = this.playlist.partHoldBack ?? this.playlist.targetDuration * 3;
      video.currentTime = video.seekable.end(video.seekable.length - 1) - holdBack;
    }
  }
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
