// SMPTE timecode arithmetic for the review page: the same rules as the worker's
// pipeline/producers/jit/timecode.py. Pure: no DOM.
//
// A rate is { fps, drop }: `fps` frames counted per timecode second (25, 24, 30 for 29.97),
// `drop` true for drop-frame (29.97 and 59.94, written with ";" before the frames), where the
// labels ;00 and ;01 (;00-;03 at 59.94) are skipped at each minute not divisible by ten.

const TIMECODE = /^(\d{1,2}):(\d{1,2}):(\d{1,2})([:;])(\d{1,3})$/;

function droppedPerMinute(fps) {
  return fps >= 60 ? 4 : 2;
}

/** The fields of a timecode, or null when `text` is not one. */
export function fields(text) {
  const match = TIMECODE.exec(text.trim());
  if (!match) return null;
  const [, h, m, s, sep, f] = match;
  return { h: Number(h), m: Number(m), s: Number(s), f: Number(f), drop: sep === ";" };
}

/** A timecode completed from the right: "5:12" is 00:00:05:12, "1:00:00" is 00:01:00:00. */
export function complete(text) {
  const parts = text.trim().split(/([:;])/);
  const numbers = parts.filter((_, i) => i % 2 === 0);
  if (numbers.length < 2 || numbers.length > 4 || numbers.some((n) => !/^\d{1,3}$/.test(n))) return null;
  const drop = text.includes(";");
  while (numbers.length < 4) numbers.unshift("0");
  const [h, m, s, f] = numbers.map((n) => n.padStart(2, "0"));
  return `${h}:${m}:${s}${drop ? ";" : ":"}${f}`;
}

/** The frame number of `text` at `rate`; throws an Error saying what is wrong. */
export function toFrame(text, rate) {
  const tc = fields(text);
  if (!tc) throw new Error(`${text} is not a timecode like 00:01:02:03`);
  const { fps } = rate;
  if (tc.m > 59 || tc.s > 59 || tc.f >= fps) {
    throw new Error(`${text} has a field out of range at ${fps} frames per second`);
  }
  const count = ((tc.h * 60 + tc.m) * 60 + tc.s) * fps + tc.f;
  if (!tc.drop) return count;
  if (!rate.drop) throw new Error(`${text} is drop-frame, which this video does not use`);
  const dropped = droppedPerMinute(fps);
  const minutes = tc.h * 60 + tc.m;
  if (tc.s === 0 && tc.f < dropped && minutes % 10 !== 0) {
    throw new Error(`${text} is a label drop-frame timecode skips`);
  }
  return count - dropped * (minutes - Math.floor(minutes / 10));
}

/** The timecode of frame `frame` (0-based) at `rate`. */
export function fromFrame(frame, rate) {
  const { fps } = rate;
  let n = frame;
  if (rate.drop) {
    const dropped = droppedPerMinute(fps);
    const perMinute = fps * 60 - dropped;
    const perTen = fps * 600 - 9 * dropped;
    const tens = Math.floor(n / perTen);
    const rest = n % perTen;
    let skipped = 9 * dropped * tens;
    if (rest >= dropped) skipped += dropped * Math.floor((rest - dropped) / perMinute);
    n += skipped;
  }
  const pad = (v) => String(v).padStart(2, "0");
  const f = n % fps;
  const s = Math.floor(n / fps) % 60;
  const m = Math.floor(n / (fps * 60)) % 60;
  const h = Math.floor(n / (fps * 3600)) % 24;
  return `${pad(h)}:${pad(m)}:${pad(s)}${rate.drop ? ";" : ":"}${pad(f)}`;
}

/**
 * The rate a (frame, timecode) pair from the worker implies, or null when it cannot tell yet
 * (in the first second every rate gives the same label). `start` is the label of frame 0 (the
 * source time code the session reports), "" for none (labels from 00:00:00:00).
 */
export function learnRate(frame, timecode, start = "") {
  const tc = fields(timecode);
  const from = start ? fields(start) : { h: 0, m: 0, s: 0, f: 0, drop: tc?.drop };
  if (!tc || !from || tc.drop !== from.drop) return null;
  if (tc.drop) {
    // 29.97 and 59.94 label the first frames alike: a rate only when one of them fits.
    const fits = [30, 60]
      .map((fps) => ({ fps, drop: true }))
      .filter((rate) => {
        try {
          return toFrame(timecode, rate) - toFrame(start || "00:00:00;00", rate) === frame;
        } catch {
          return false; // not a valid label at this rate
        }
      });
    return fits.length === 1 ? fits[0] : null;
  }
  const seconds = (tc.h * 60 + tc.m) * 60 + tc.s - ((from.h * 60 + from.m) * 60 + from.s);
  if (seconds <= 0) return null;
  const fps = (frame - (tc.f - from.f)) / seconds;
  return Number.isInteger(fps) && fps > Math.max(tc.f, from.f) ? { fps, drop: false } : null;
}
