// The home page: mosaics, sessions and recent activity (refreshed), the mosaic form with its
// live UrlDsl expansion, and the session form.

import { ApiError, askToken, json, post, send } from "./api.js";
import { ago, byId, el, every, fileName } from "./dom.js";

const REFRESH_MS = 3000;
const EXPAND_DELAY_MS = 150;
const ACTIVITY_MS = 5000;

// -- health ------------------------------------------------------------------------------------

async function showHealth() {
  const box = byId("health");
  let ok = false;
  let text = "gateway unreachable";
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    ok = response.ok;
    const missing = body.jetstream?.missing ?? [];
    text = ok ? `NATS ${body.nats?.server ?? "connected"}` : `unhealthy: missing ${missing.join(", ")}`;
  } catch {
    // unreachable: said above
  }
  box.replaceChildren(el("span", { class: `dot ${ok ? "ok" : "bad"}` }), el("span", {}, text));
}

// -- lists -------------------------------------------------------------------------------------

/** The grid in small: `tiles` are each tile's place in cells ({x, y, w, h}), so a focus
 * layout's large tile spans its block. */
function gridPreview(cols, rows, tiles) {
  const box = el("span", { class: "grid-preview", "aria-hidden": "true" });
  box.style.gridTemplateColumns = `repeat(${cols}, 10px)`;
  box.style.gridTemplateRows = `repeat(${rows}, 6px)`;
  for (const tile of tiles.slice(0, 64)) {
    const cell = el("i");
    cell.style.gridColumn = `${tile.x + 1} / span ${tile.w}`;
    cell.style.gridRow = `${tile.y + 1} / span ${tile.h}`;
    box.append(cell);
  }
  return box;
}

/** How many alarms the mosaic's tiles show now (the list's `alarms`; its page lists them). */
function alarmBadge(m) {
  const n = m.alarms ?? 0;
  if (!n) return el("span", { class: "badge", "data-alarms": 0, title: "No tile in alarm" }, "none");
  const text = `${n} alarm${n > 1 ? "s" : ""}`;
  const title = "Open the mosaic to see which tiles";
  return el("a", { class: "badge alarm", "data-alarms": n, href: m.view_url, title }, text);
}

function mosaicRow(m, now) {
  const names = m.names.filter(Boolean);
  const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? `, +${names.length - 3}` : "");
  const viewers = m.watched
    ? el("span", { class: "badge ok" }, el("span", { class: "dot ok" }), "watched")
    : el("span", { class: "badge" }, el("span", { class: "dot" }), "idle");
  return el(
    "tr",
    { "data-fp": m.fp },
    el(
      "td",
      { class: "name" },
      el("a", { href: m.view_url }, m.title || "Untitled mosaic"),
      el("span", { class: "sub mono", title: m.fp }, m.fp),
    ),
    el("td", { class: "num" }, `${m.tiles}`, el("span", { class: "sub" }, shown || "no names")),
    el("td", { class: "alarms" }, alarmBadge(m)),
    el(
      "td",
      { class: "num optional" },
      `${m.width}×${m.height}`,
      el("span", { class: "sub" }, `${m.fps} fps`),
    ),
    el(
      "td",
      {},
      viewers,
      el("span", { class: "sub" }, m.last_viewer_at ? `last ${ago(m.last_viewer_at, now)}` : "never watched"),
    ),
    el("td", {}, el("a", { class: "button small", href: m.view_url }, "Watch")),
  );
}

// -- refusals: a list the gateway shows only to a token with a scope -----------------------------

/** Show why list `name` is empty when the gateway refused it for want of a token; true if so. */
function showRefused(name, error) {
  if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) return false;
  byId(name).hidden = true;
  const empty = byId(`${name}-empty`);
  empty.hidden = false;
  empty.classList.add("refused");
  empty.textContent = error.message;
  byId("token-button").hidden = false;
  return true;
}

/** List `name` was shown: its refusal (if any) is over. */
function shown(name) {
  byId(`${name}-empty`).classList.remove("refused");
}

/** Fetch a list's JSON; a refusal for want of a token is shown in the list's place (null). */
async function listed(name, path) {
  try {
    const body = await json(path);
    shown(name);
    return body;
  } catch (error) {
    if (showRefused(name, error)) return null;
    throw error;
  }
}

async function useToken() {
  if (await askToken()) {
    byId("token-button").hidden = true;
    await Promise.allSettled([showMosaics(), showSessions(), showActivity()]);
  }
}

// -- recent activity ---------------------------------------------------------------------------

const ACTIONS = {
  "mosaic-create": "created a mosaic",
  "mosaic-watch": "watched a mosaic",
  "session-create": "started a session",
  "session-watch": "watched a session",
  "session-stop": "ended a session",
  "url-sign": "signed a URL",
  "viewer-revoke": "revoked a viewer",
  "token-create": "made a token",
  "token-revoke": "revoked a token",
};

function activityTarget(e) {
  // A signed URL's target names its scope ("mosaic:<fp>", "session:<id>").
  const [kind, id] = e.target.includes(":") ? e.target.split(":", 2) : [e.action.split("-")[0], e.target];
  const href =
    kind === "mosaic" && /^[0-9a-f]{32}$/.test(id)
      ? `/view/${id}`
      : kind === "session" && /^[0-9a-f]{32}$/.test(id)
        ? `/session/${id}/view`
        : null;
  const text = href ? id.slice(0, 12) : e.target;
  return href ? el("a", { href, class: "mono", title: id }, text) : el("span", { class: "mono" }, text);
}

function activityRow(e, now) {
  return el(
    "tr",
    {},
    el("td", { class: "when", title: new Date(e.at * 1000).toISOString() }, ago(e.at, now)),
    el(
      "td",
      { class: "who", title: e.who },
      e.who,
      e.client ? el("span", { class: "sub mono" }, e.client) : null,
    ),
    el("td", {}, ACTIONS[e.action] ?? e.action, e.detail ? el("span", { class: "sub" }, e.detail) : null),
    el("td", { class: "name" }, activityTarget(e)),
  );
}

async function showActivity() {
  const body = await listed("activity", "/api/audit?limit=20");
  if (body === null) return;
  const table = byId("activity");
  table.tBodies[0].replaceChildren(...body.entries.map((e) => activityRow(e, body.now)));
  table.hidden = body.entries.length === 0;
  const empty = byId("activity-empty");
  empty.hidden = body.entries.length > 0;
  empty.textContent = "Nothing recorded yet.";
}

// -- lists -------------------------------------------------------------------------------------

async function showMosaics() {
  const body = await listed("mosaics", "/api/mosaics");
  if (body === null) return;
  const table = byId("mosaics");
  table.tBodies[0].replaceChildren(...body.mosaics.map((m) => mosaicRow(m, body.now)));
  table.hidden = body.mosaics.length === 0;
  byId("mosaics-empty").hidden = body.mosaics.length > 0;
  byId("mosaics-empty").textContent = "No mosaics yet: make one from a pattern.";
  byId("mosaic-count").textContent = body.mosaics.length ? `${body.mosaics.length}` : "";
}

const STATE_BADGE = { requested: "warn", running: "ok", ended: "", failed: "bad" };

function sessionRow(s) {
  const video = s.inputs[0]?.url ?? "";
  const audio = s.inputs.length - 1;
  const live = s.state === "requested" || s.state === "running";
  const viewUrl = `/session/${s.id}/view`;
  const end = el("button", { class: "small", type: "button" }, "End");
  end.addEventListener("click", async () => {
    end.disabled = true;
    await send(`/session/${s.id}`, { method: "DELETE" });
    showSessions();
  });
  return el(
    "tr",
    { "data-session": s.id },
    el(
      "td",
      { class: "name" },
      el("a", { href: viewUrl, title: video }, fileName(video)),
      el("span", { class: "sub" }, audio > 0 ? `+ ${audio} audio file${audio > 1 ? "s" : ""}` : s.id),
    ),
    el(
      "td",
      {},
      el("span", { class: `badge ${STATE_BADGE[s.state] ?? ""}` }, s.state),
      s.reason ? el("span", { class: "sub", title: s.reason }, s.reason) : null,
    ),
    el("td", { class: "optional" }, ago(s.requested_at)),
    el(
      "td",
      {},
      el("a", { class: "button small", href: viewUrl }, live ? "Open" : "Details"),
      live ? " " : null,
      live ? end : null,
    ),
  );
}

async function showSessions() {
  const body = await listed("sessions", "/session");
  if (body === null) return;
  const table = byId("sessions");
  table.tBodies[0].replaceChildren(...body.sessions.slice(0, 50).map(sessionRow));
  table.hidden = body.sessions.length === 0;
  byId("sessions-empty").hidden = body.sessions.length > 0;
  byId("sessions-empty").textContent = "No sessions yet.";
  byId("session-count").textContent = body.sessions.length ? `${body.sessions.length}` : "";
}

// -- the mosaic form ---------------------------------------------------------------------------

function patterns() {
  return byId("pattern")
    .value.split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

let expandSeq = 0;
let expandTimer = 0;
let valid = false;

function showExpansion(body) {
  const box = byId("expansion");
  const summary = el(
    "div",
    { class: "summary" },
    el("b", {}, `${body.count} stream${body.count === 1 ? "" : "s"}`),
    el("span", {}, `${body.grid.cols}×${body.grid.rows} ${body.grid.layout}`),
    gridPreview(body.grid.cols, body.grid.rows, body.grid.tiles),
    el("span", {}, `(at most ${body.max})`),
  );
  const list = el(
    "ol",
    { id: "streams" },
    body.streams.map((s) =>
      el(
        "li",
        {},
        el("span", { class: "stream-name" }, s.name || "—"),
        el("span", { class: "stream-url", title: s.url }, s.url),
      ),
    ),
  );
  box.replaceChildren(summary, list);
}

function showExpansionError(body) {
  const box = byId("expansion");
  box.replaceChildren(
    el(
      "div",
      { class: "error", id: "pattern-error" },
      el("div", {}, body.error),
      body.caret ? el("pre", { class: "caret" }, body.caret) : null,
    ),
  );
}

function showIdle() {
  byId("expansion").replaceChildren(
    el("div", { class: "idle" }, "Type a pattern to see the streams it makes."),
  );
}

async function expand() {
  const seq = ++expandSeq;
  const list = patterns();
  const area = byId("pattern");
  if (!list.length) {
    valid = false;
    area.classList.remove("invalid");
    showIdle();
    byId("create").disabled = true;
    return;
  }
  const query = new URLSearchParams(list.map((p) => ["urls", p]));
  if (byId("layout").value !== "grid") query.append("layout", byId("layout").value);
  let response;
  let body;
  try {
    response = await fetch(`/api/urldsl?${query}`, { cache: "no-store" });
    body = await response.json();
  } catch (error) {
    if (seq !== expandSeq) return;
    valid = false;
    byId("create").disabled = true;
    showExpansionError({ error: `cannot reach the gateway: ${error.message}` });
    return;
  }
  if (seq !== expandSeq) return; // a newer keystroke already asked
  valid = response.ok;
  area.classList.toggle("invalid", !valid);
  if (valid) showExpansion(body);
  else showExpansionError(body);
  byId("create").disabled = !valid;
}

function scheduleExpand() {
  clearTimeout(expandTimer);
  expandTimer = setTimeout(expand, EXPAND_DELAY_MS);
}

async function createMosaic(event) {
  event.preventDefault();
  const error = byId("create-error");
  error.textContent = "";
  if (!valid) return;
  const query = new URLSearchParams(patterns().map((p) => ["urls", p]));
  for (const name of ["title", "size", "fps", "cols", "layout"]) {
    const field = byId(name);
    const value = field.value.trim();
    if (value && !field.disabled && !(name === "layout" && value === "grid")) query.append(name, value);
  }
  const button = byId("create");
  button.disabled = true;
  try {
    // /create answers 302 to /play/<fp>/index.m3u8 (signed: /s/<token>/play/...): fetch
    // follows it, and the final URL names the mosaic, and the prefix its page needs. Through
    // send(): where creating needs a token (the mosaics scope), it asks for one.
    const response = await send(`/create?${query}`);
    const match = /^(.*)\/play\/([0-9a-f]{32})\/index\.m3u8$/.exec(new URL(response.url).pathname);
    if (response.ok && match) {
      window.location.assign(`${match[1]}/view/${match[2]}`);
      return;
    }
    const body = await response.json().catch(() => ({}));
    const retry = response.headers.get("Retry-After");
    const reason = body.error ?? `${response.status} ${response.statusText}`;
    error.textContent = retry ? `${reason} (retry in ${retry} s)` : reason;
  } catch (exc) {
    error.textContent = `cannot reach the gateway: ${exc.message}`;
  }
  button.disabled = false;
}

// -- the session form --------------------------------------------------------------------------

function addAudioRow() {
  const remove = el("button", { type: "button", class: "small", title: "Remove" }, "✕");
  const row = el(
    "div",
    { class: "row audio-input" },
    el("input", { class: "audio-url", placeholder: "Audio file URL or path", required: true }),
    el("input", { class: "audio-channels", type: "number", min: 1, max: 64, placeholder: "channels" }),
    remove,
  );
  row.firstChild.style.flex = "3 1 220px";
  row.children[1].style.width = "110px";
  remove.addEventListener("click", () => row.remove());
  byId("audio-inputs").append(row);
  row.firstChild.focus();
}

async function startSession(event) {
  event.preventDefault();
  const error = byId("session-error");
  error.textContent = "";
  const inputs = [{ url: byId("video-url").value.trim() }];
  const body = { inputs };
  const videoB = byId("video-b-url").value.trim();
  if (videoB) {
    inputs.push({ url: videoB }); // an A/B compare: the second input is video B
    body.compare = byId("compare-mode").value;
  }
  for (const row of document.querySelectorAll(".audio-input")) {
    const url = row.querySelector(".audio-url").value.trim();
    const channels = Number.parseInt(row.querySelector(".audio-channels").value, 10);
    if (!url) continue;
    inputs.push(Number.isFinite(channels) ? { url, channel_count: channels } : { url });
  }
  const button = byId("start-session");
  button.disabled = true;
  try {
    const view = await post("/session", body);
    window.location.assign(`/session/${view.id}/view`);
    return;
  } catch (exc) {
    error.textContent = exc instanceof ApiError ? exc.message : `cannot reach the gateway: ${exc.message}`;
  }
  button.disabled = false;
}

// -- start -------------------------------------------------------------------------------------

byId("pattern").addEventListener("input", scheduleExpand);
byId("layout").addEventListener("change", () => {
  // The focus layout sets its own columns: /create refuses cols= with it.
  byId("cols").disabled = byId("layout").value === "focus";
  scheduleExpand();
});
byId("pattern").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) byId("create-form").requestSubmit();
});
byId("create-form").addEventListener("submit", createMosaic);
byId("session-form").addEventListener("submit", startSession);
byId("add-audio").addEventListener("click", addAudioRow);
byId("token-button").addEventListener("click", useToken);
showIdle();
if (patterns().length) expand(); // a pattern kept by the browser on "back"
every(10_000, showHealth);
every(REFRESH_MS, showMosaics);
every(REFRESH_MS, showSessions);
every(ACTIVITY_MS, showActivity);
