// Which source frame the review page shows: known from the RTP timestamp of each picture on
// screen, not from the last frame report (which runs ahead of the picture by the encode, the
// network and the jitter buffer).
//
// The worker stamps every picture it sends on its session's 90 kHz clock and says the stamp
// in that picture's frame report (`rtp`; pipeline/producers/jit/rtpclock.py). aiortc makes
// the RTP timestamp by adding a random origin of its own, constant for one connection, and
// `video.requestVideoFrameCallback` gives the page that RTP timestamp for each picture shown.
// So once the page knows the origin, every picture's RTP timestamp less the origin is the
// stamp of its report, and the report says its frame.
//
// Learning the origin: each (picture shown, report) pair proposes one (the picture's RTP
// timestamp less the report's stamp). A proposal is refuted by any picture it puts strictly
// between the oldest and the newest report remembered on a stamp no report has (reports come
// in stamp order, all of them once the control channel is open). It is accepted when it is the
// only unrefuted proposal that explains two pictures, one of them a picture sent while paused:
// those are stamped at the wall time a command arrived, so two of them are told apart by their
// distance alone, while pictures of one playing run are 90000/fps apart, where a picture one
// frame off explains as well. (A viewer that joins while the session plays learns it at the
// first pause or step; one that joins while paused, from the picture it gets and one more,
// which review.js asks for.) A picture that the accepted origin puts on a missing stamp refutes
// it, and it is learnt again from the pictures that follow.
//
// showFrames(video, readout) shows the frame on screen in `readout` ("–" while not known),
// follows a SessionLink's reports (follow(link): a new connection, a new origin) and says
// whether it knows (known; also true where the browser gives no RTP timestamps: nothing to wait
// for). FrameIdentity is the bookkeeping alone, without the page.

const WRAP = 2 ** 32; // RTP timestamps are 32 bits
const HALF = WRAP / 2;
const REPORTS = 512; // remembered: 20 s at 25 fps, 8 s at 60
const PICTURES = 32; // pictures shown, remembered while learning the origin

/** `a - b` on the 32-bit RTP clock (mod 2**32, so 0 to 2**32 - 1). */
const minus = (a, b) => (((a - b) % WRAP) + WRAP) % WRAP;

export class FrameIdentity {
  constructor() {
    this.reset();
  }

  /** Forget everything: a new connection has a new origin. */
  reset() {
    this.reports = new Map(); // stamp -> { frame, paused }, oldest first
    this.oldest = null;
    this.newest = null;
    this.pictures = []; // RTP timestamps of the pictures shown, oldest first
    this.origin = null;
    this.frame = null; // the frame on screen, null while not known
  }

  /** A frame report (frame-report/1); one without `rtp` (an older worker) says nothing. */
  report({ rtp, frame, playing }) {
    if (typeof rtp !== "number") return this.frame;
    this.reports.set(rtp, { frame, paused: !playing });
    if (this.reports.size > REPORTS) this.reports.delete(this.reports.keys().next().value);
    this.oldest = this.reports.keys().next().value;
    this.newest = rtp;
    return this.update();
  }

  /** A picture shown, by its RTP timestamp; returns the frame on screen (null: not known). */
  shown(rtpTimestamp) {
    this.pictures.push(rtpTimestamp);
    if (this.pictures.length > PICTURES) this.pictures.shift();
    return this.update();
  }

  /** Where `origin` puts the picture `rtpTimestamp`: "match", "refuted" or "unknown" (before
   * the oldest report remembered, or after the newest: nothing to say). */
  judge(origin, rtpTimestamp) {
    const stamp = minus(rtpTimestamp, origin);
    if (this.reports.has(stamp)) return "match";
    const age = minus(this.newest, stamp);
    return age < HALF && age < minus(this.newest, this.oldest) ? "refuted" : "unknown";
  }

  update() {
    const latest = this.pictures.at(-1);
    if (latest === undefined || this.newest === null) return this.frame;
    if (this.origin !== null) {
      const verdict = this.judge(this.origin, latest);
      if (verdict !== "refuted") {
        const found = this.reports.get(minus(latest, this.origin));
        this.frame = found ? found.frame : null;
        return this.frame;
      }
      // A missing stamp: the origin was wrong after all. Learn it again from new pictures
      // only: one of these may be what refuted it (and would refute the right one too).
      this.origin = null;
      this.pictures = [];
      this.frame = null;
      return this.frame;
    }
    this.frame = null;
    this.origin = this.learn(latest);
    if (this.origin !== null) this.frame = this.reports.get(minus(latest, this.origin)).frame;
    return this.frame;
  }

  /** The one origin the pictures remembered prove, or null. */
  learn(latest) {
    let proven = null;
    for (const stamp of this.reports.keys()) {
      const origin = minus(latest, stamp);
      let matches = 0;
      let paused = false;
      let refuted = false;
      for (const picture of this.pictures) {
        const verdict = this.judge(origin, picture);
        if (verdict === "refuted") {
          refuted = true;
          break;
        }
        if (verdict === "match") {
          matches += 1;
          paused ||= this.reports.get(minus(picture, origin)).paused;
        }
      }
      if (refuted || matches < 2 || !paused) continue;
      if (proven !== null) return null; // two explain the pictures: not proven yet
      proven = origin;
    }
    return proven;
  }
}

/** Show the frame on screen in `readout`, from `video`'s pictures and a link's reports. */
export function showFrames(video, readout) {
  const identity = new FrameIdentity();
  const supported = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
  let stamped = supported; // until a picture comes without an RTP timestamp (not WebRTC)
  const draw = () => {
    const frame = identity.frame;
    readout.textContent = frame === null ? "–" : String(frame);
  };
  const onPicture = (_now, metadata) => {
    if (typeof metadata.rtpTimestamp === "number") {
      identity.shown(metadata.rtpTimestamp);
      draw();
    } else if (stamped) {
      stamped = false;
      readout.title = "This browser does not say the RTP timestamp of the picture it shows";
    }
    video.requestVideoFrameCallback(onPicture);
  };
  if (supported) video.requestVideoFrameCallback(onPicture);
  else readout.title = "This browser does not say which picture it shows";
  let followed = null;
  return {
    identity,
    /** Follow `link`'s frame reports (forgetting the last link's). */
    follow(link) {
      followed = link;
      identity.reset();
      draw();
      link.addEventListener("report", (event) => {
        if (followed !== link) return;
        identity.report(event.detail);
        draw();
      });
    },
    /** Whether the frame on screen is known (or cannot be, in this browser). */
    get known() {
      return !stamped || identity.origin !== null;
    },
  };
}
