// Talking to the gateway: JSON in and out, and the API token when the gateway asks for one.
//
// A gateway on loopback needs no token. One reachable from elsewhere answers 401 to what
// starts work (POST /session, signalling, control): the page then asks for the token once and
// keeps it in this browser's localStorage.

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

/** fetch() with the token; on a 401, ask for the token and try once more. */
export async function send(path, { method = "GET", body, type, keepalive = false } = {}) {
  const init = () => ({
    method,
    body,
    keepalive,
    cache: "no-store",
    headers: headers(type ? { "Content-Type": type } : {}),
  });
  let response = await fetch(path, init());
  if (response.status === 401 && (await askToken())) response = await fetch(path, init());
  return response;
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

/** Ask for the API token in a small dialog; true when one was given. */
function askToken() {
  asking ??= new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    const form = document.createElement("form");
    form.method = "dialog";
    const title = document.createElement("h3");
    title.textContent = "API token needed";
    const text = document.createElement("p");
    text.textContent =
      "This gateway is reachable from other machines, so starting and controlling sessions " +
      "needs its API token (in <data dir>/api-token on the server). It is kept in this browser.";
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
    form.append(title, text, input, actions);
    dialog.append(form);
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const given = dialog.returnValue === "ok" && input.value.trim();
      if (given) localStorage.setItem(TOKEN_KEY, given);
      dialog.remove();
      asking = null;
      resolve(Boolean(given));
    });
    dialog.showModal();
  });
  return asking;
}
