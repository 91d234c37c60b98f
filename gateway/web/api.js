// Talking to the gateway: JSON in and out, and the API token when the gateway asks for one.
//
// A gateway on loopback needs no token. One reachable from elsewhere (or signing play URLs)
// answers 401 to what starts work (POST /session, signalling, control) and to the admin's
// routes, and 403 with "code": "scope" to a token without the scope a route needs: the page
// then asks for a token (one from `tessera tokens create`, or the gateway's own) and keeps it in
// this browser's localStorage. Cancelled once, it is not asked again on its own (a page that
// polls would ask every few seconds); askToken() asks again.

const TOKEN_KEY = "tessera.api-token";

export class ApiError extends Error {
  constructor(status, message, body = {}) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const all = { ...extra };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) all.Authorization = `Bearer ${token}`;
  return all;
}

/** The one-line reason of a refusal that a (better) token would lift, else null: a 401, or a
 * 403 saying the token lacks a scope (not a signed URL's 403, which no token changes). */
async function tokenWanted(response) {
  if (response.status !== 401 && response.status !== 403) return null;
  const body = await bodyOf(response.clone());
  if (response.status === 403 && body.code !== "scope") return null;
  return body.error || `${response.status} ${response.statusText}`;
}

/** fetch() with the token; refused for want of one (see tokenWanted), ask for it and try once
 * more. `ask: false`: never ask (the caller shows the refusal its own way). */
export async function send(path, { method = "GET", body, type, keepalive = false, ask = true } = {}) {
  const init = () => ({
    method,
    body,
    keepalive,
    cache: "no-store",
    headers: headers(type ? { "Content-Type": type } : {}),
  });
  let response = await fetch(path, init());
  if (!ask || declined) return response;
  const reason = await tokenWanted(response);
  if (reason !== null && (await askToken(reason))) response = await fetch(path, init());
  return response;
}

/** True when this browser keeps a token for the gateway. */
export function hasToken() {
  return Boolean(localStorage.getItem(TOKEN_KEY));
}

/** Forget the kept token (the next refusal asks again). */
export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  declined = false;
}

async function bodyOf(response) {
  const text = await response.text();
  try {
    return text ? JSON.parse(text) : {};
  } catch {
    return { error: text.slice(0, 200) };
  }
}

/** The JSON answer of a request, or ApiError with the gateway's one-line reason. */
export async function json(path, options = {}) {
  const response = await send(path, options);
  const body = await bodyOf(response);
  if (!response.ok) {
    throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`, body);
  }
  return body;
}

/** POST (or another method) a JSON body; the JSON answer. */
export function post(path, value, method = "POST") {
  return json(path, { method, body: JSON.stringify(value), type: "application/json" });
}

let asking = null;
let declined = false;

/** Ask for an API token in a small dialog (`reason`: the gateway's, shown above it); true when
 * one was given. Cancelling it stops send() from asking on its own. */
export function askToken(reason = "") {
  declined = false;
  asking ??= new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    const form = document.createElement("form");
    form.method = "dialog";
    const title = document.createElement("h3");
    title.textContent = "API token needed";
    const text = document.createElement("p");
    text.textContent =
      "This gateway asks for an API token here: one made with `tessera tokens create` (with " +
      "the scope it needs), or the gateway's own (in <data dir>/api-token on the server). " +
      "It is kept in this browser.";
    const why = document.createElement("p");
    why.className = "why";
    why.textContent = reason;
    const input = document.createElement("input");
    input.type = "password";
    input.autocomplete = "off";
    input.placeholder = "token";
    const actions = document.createElement("div");
    actions.className = "actions";
    const ok = document.createElement("button");
    ok.className = "primary";
    ok.textContent = "Use token";
    ok.value = "ok";
    const cancel = document.createElement("button");
    cancel.textContent = "Cancel";
    cancel.value = "cancel";
    actions.append(ok, cancel);
    form.append(title, ...(reason ? [why] : []), text, input, actions);
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const given = dialog.returnValue === "ok" && input.value.trim();
      if (given) localStorage.setItem(TOKEN_KEY, given);
      declined = !given;
      dialog.remove();
      asking = null;
      resolve(Boolean(given));
    });
    dialog.showModal();
  });
  return asking;
}
