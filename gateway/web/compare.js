// A/B compare on the review page: the controls of a session of two videos (POST /session with
// "compare"), which send compare/1 commands; the worker composes A and B into the one picture
// the page shows, so what is shown side by side is always the pair asked for.
//
// - mode: side by side, wipe (A left of the split, B right of it), difference;
// - show: A, A|B (the mode), B: the toggle (keys A, B and C; C for "compare");
// - split: where the wipe's edge is, a slider, or a drag on the picture;
// - offset: frames B is ahead of A (keys [ and ]);
// - which frame of B is shown (each frame report's frame_b), labels on the picture, and the
//   wipe's edge drawn over it.
//
// The settings shown are the worker's: its reply to each command, else its heartbeat's stats.

import { byId, el, fileName } from "./dom.js";

const MODES = [
  ["side-by-side", "Side by side"],
  ["wipe", "Wipe"],
  ["difference", "Difference"],
];
const SHOWS = [
  ["A", "A", "Show A alone (A)"],
  ["both", "A|B", "Compare A and B (C)"],
  ["B", "B", "Show B alone (B)"],
];
const HELP = [
  [["A", "B"], "Show A or B alone"],
  [["C"], "Compare A and B again"],
  [["[", "]"], "Offset of B: one frame less / more"],
];
const STATS_AFTER_MS = 4000; // a heartbeat polled soon after a reply may predate it

const ab = {
  active: false,
  send: null, // review.js's command(): resolves with the worker's reply
  settings: { mode: "side-by-side", split: 0.5, offset: 0, show: "both" },
  replyAt: -Infinity,
  frameB: null,
  frameCountB: 0,
  video: null,
  labels: [],
  line: null,
};

/** How many of a session's inputs are videos (the others are audio). */
export function videoCount(view) {
  return view?.options?.compare ? 2 : 1;
}

/** What the page calls the session: "a.mov" or "a.mov vs b.mov". */
export function sessionName(view) {
  const names = view.inputs.slice(0, videoCount(view)).map((i) => fileName(i.url));
  return names.join(" vs ");
}

/** Show the controls of a compare session in #compare; `send` sends a command. */
export function startCompare(view, send) {
  if (ab.active || !view.options.compare) return;
  ab.active = true;
  ab.send = send;
  const { compare: mode, compare_offset: offset } = view.options;
  ab.settings = { ...ab.settings, mode, offset: offset ?? 0 };
  ab.video = byId("video");
  buildControls();
  buildOverlay();
  addHelp();
  draw();
}

/** A frame report: which frame of B the picture shows. */
export function compareReport(report) {
  if (!ab.active) return;
  ab.frameB = report.frame_b ?? null;
  drawReadout();
}

/** The worker's stats: its settings (unless a reply said newer ones) and B's length. */
export function compareStats(stats) {
  if (!ab.active || !stats.compare) return;
  ab.frameCountB = stats.frame_count_b ?? 0;
  if (performance.now() - ab.replyAt > STATS_AFTER_MS) ab.settings = stats.compare;
  draw();
}

export const compareKeys = {
  a: () => change({ show: "A" }),
  b: () => change({ show: "B" }),
  c: () => change({ show: "both" }),
  "[": () => change({ offset: ab.settings.offset - 1 }),
  "]": () => change({ offset: ab.settings.offset + 1 }),
};

// -- commands ------------------------------------------------------------------------------------

// Changes coalesce like the page's seeks: while one is in flight, later ones (a slider or a
// drag) merge, and go as one command when it is answered.
let wanted = null;
let sending = false;
async function change(fields) {
  if (!ab.active) return;
  wanted = { ...wanted, ...fields };
  if (sending) return;
  sending = true;
  while (wanted) {
    const cmd = wanted;
    wanted = null;
    const reply = await ab.send({ type: "compare", ...cmd });
    if (reply.compare) {
      ab.settings = reply.compare;
      ab.replyAt = performance.now();
    }
    draw();
  }
  sending = false;
}

// -- the controls --------------------------------------------------------------------------------

function buildControls() {
  const mode = el(
    "select",
    { id: "compare-mode", "aria-label": "Compare mode", title: "How A and B are composed" },
    ...MODES.map(([value, text]) => el("option", { value }, text)),
  );
  mode.addEventListener("change", () => {
    mode.blur(); // the arrow keys step frames again
    change({ mode: mode.value });
  });
  const shows = el(
    "span",
    { class: "ab" },
    ...SHOWS.map(([value, text, title]) => {
      const onclick = () => change({ show: value });
      return el("button", { type: "button", class: "small", "data-show": value, title, onclick }, text);
    }),
  );
  const split = el("input", {
    id: "compare-split",
    type: "range",
    min: 0,
    max: 1000,
    step: 1,
    "aria-label": "Wipe split",
    title: "Where the wipe's edge is (or drag on the picture)",
  });
  split.addEventListener("input", () => change({ split: Number(split.value) / 1000 }));
  split.addEventListener("change", () => split.blur()); // the arrow keys step frames again
  const offset = el("input", {
    id: "compare-offset",
    type: "number",
    step: 1,
    "aria-label": "Offset of B in frames",
    title: "Frames B is ahead of A (Enter; [ and ] step it)",
  });
  offset.addEventListener("change", () => {
    const value = Number.parseInt(offset.value, 10);
    if (Number.isFinite(value)) change({ offset: value });
    offset.blur();
  });
  const readout = el(
    "span",
    { class: "frame", title: "The frame of B in the picture" },
    "B ",
    el("b", { id: "frame-b" }, "–"),
    " / ",
    el("span", { id: "frame-count-b" }, "–"),
  );
  const offsetLabel = el("label", { class: "offset" }, "Offset", offset);
  const box = byId("compare");
  box.replaceChildren(mode, shows, offsetLabel, split, readout);
  box.hidden = false;
}

function draw() {
  if (!ab.active) return;
  const { mode, split, offset, show } = ab.settings;
  byId("compare-mode").value = mode;
  for (const button of byId("compare").querySelectorAll("[data-show]")) {
    button.setAttribute("aria-pressed", String(button.dataset.show === show));
  }
  const slider = byId("compare-split");
  slider.hidden = mode !== "wipe" || show !== "both";
  if (document.activeElement !== slider) slider.value = String(Math.round(split * 1000));
  const box = byId("compare-offset");
  if (document.activeElement !== box) box.value = String(offset);
  drawReadout();
  drawOverlay();
}

function drawReadout() {
  byId("frame-b").textContent = ab.frameB === null ? "–" : String(ab.frameB);
  byId("frame-count-b").textContent = ab.frameCountB ? String(ab.frameCountB) : "–";
}

function addHelp() {
  const table = document.querySelector("#help table");
  if (!table) return;
  for (const [keys, text] of HELP) {
    const kbds = keys.flatMap((k, i) => [i ? " " : "", el("kbd", {}, k)]);
    table.append(el("tr", {}, el("td", {}, ...kbds), el("td", {}, text)));
  }
}

// -- over the picture: labels, the wipe's edge, dragging it ----------------------------------------

/** Where the picture is drawn in the video element (object-fit: contain), in its pixels. */
function pictureBox() {
  const video = ab.video;
  const width = video.clientWidth;
  const height = video.clientHeight;
  if (!video.videoWidth || !video.videoHeight) return { left: 0, top: 0, width, height };
  const scale = Math.min(width / video.videoWidth, height / video.videoHeight);
  const w = video.videoWidth * scale;
  const h = video.videoHeight * scale;
  const left = video.offsetLeft + (width - w) / 2;
  return { left, top: video.offsetTop + (height - h) / 2, width: w, height: h };
}

function buildOverlay() {
  const stage = ab.video.parentElement;
  ab.labels = [el("span", { class: "ab-label" }), el("span", { class: "ab-label" })];
  ab.line = el("div", { class: "wipe-line", hidden: true });
  stage.append(...ab.labels, ab.line);
  new ResizeObserver(drawOverlay).observe(ab.video);
  ab.video.addEventListener("loadedmetadata", drawOverlay);
  ab.video.addEventListener("resize", drawOverlay);
  let dragging = false;
  const follow = (event) => {
    const box = pictureBox();
    const x = event.offsetX - (box.left - ab.video.offsetLeft);
    const split = Math.min(1, Math.max(0, x / box.width));
    ab.settings = { ...ab.settings, split }; // drawn at once; the worker's reply confirms
    drawOverlay();
    change({ split });
  };
  ab.video.addEventListener("pointerdown", (event) => {
    if (ab.settings.mode !== "wipe" || ab.settings.show !== "both") return;
    dragging = true;
    ab.video.setPointerCapture(event.pointerId);
    follow(event);
  });
  ab.video.addEventListener("pointermove", (event) => dragging && follow(event));
  ab.video.addEventListener("pointerup", () => {
    dragging = false;
  });
}

function drawOverlay() {
  if (!ab.active || !ab.line) return;
  const { mode, split, show } = ab.settings;
  const box = pictureBox();
  const place = (label, text, x) => {
    label.textContent = text;
    label.hidden = !text;
    label.style.left = `${x}px`;
    label.style.top = `${box.top + 10}px`;
  };
  const [first, second] = ab.labels;
  const wiping = mode === "wipe" && show === "both";
  if (show !== "both") {
    place(first, show, box.left + 10);
    place(second, "", 0);
  } else if (mode === "difference") {
    place(first, "|A − B|", box.left + 10);
    place(second, "", 0);
  } else if (wiping) {
    // Each at its side's outer edge, while its side is wide enough to hold it.
    place(first, split * box.width > 48 ? "A" : "", box.left + 10);
    place(second, (1 - split) * box.width > 48 ? "B" : "", box.left + box.width - 30);
  } else {
    place(first, "A", box.left + 10);
    place(second, "B", box.left + box.width / 2 + 10);
  }
  ab.line.hidden = !wiping;
  ab.video.parentElement.classList.toggle("wiping", wiping);
  if (wiping) {
    ab.line.style.left = `${box.left + split * box.width}px`;
    ab.line.style.top = `${box.top}px`;
    ab.line.style.height = `${box.height}px`;
  }
}
