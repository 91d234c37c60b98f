// Small DOM helpers shared by the pages. Text always goes in as text, never as HTML.

/** The element with this id (throws when a page lacks it: a bug, not a user error). */
export function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`no element #${id}`);
  return found;
}

/** el("td", {class: "num", title: "x"}, "text", child, ...): a new element. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** "4 s ago", "12 min ago", ... for a Unix time in seconds. */
export function ago(unixSeconds, now = Date.now() / 1000) {
  if (!unixSeconds) return "never";
  const s = Math.max(0, now - unixSeconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** The last part of a URL or path: what a person calls the file. */
export function fileName(url) {
  const path = url.split(/[?#]/)[0].replace(/\/+$/, "");
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1)) || url;
}

/** Call fn every `ms` while the page is visible (and once now). */
export function every(ms, fn) {
  let timer = 0;
  const tick = async () => {
    clearTimeout(timer);
    if (!document.hidden) {
      try {
        await fn();
      } catch (error) {
        console.warn(error);
      }
    }
    timer = setTimeout(tick, ms);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  tick();
}
