// eventpipe's dashboard: what every page's script shares.
//
// Safety rule: event content (and every other value from the api) enters the page as text only
// (textContent, Node.append of strings), never as HTML; the Content-Security-Policy backs it up.

const main = document.getElementById("main");
export const projectId = main ? main.dataset.project : undefined;

export class ApiProblem extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// --- session: the access cookie lives 15 minutes; the refresh cookie renews it ----------------

let refreshing = null;

function withLock(task) {
  // One refresh at a time across this browser's tabs: two tabs spending the same refresh token
  // would look like a stolen one, and the server would end the sign-in.
  return navigator.locks ? navigator.locks.request("eventpipe-session", task) : task();
}

export function refreshSession() {
  if (!refreshing) {
    refreshing = withLock(async () => {
      // Another tab may have renewed the cookies while this one waited: they are shared.
      const probe = await fetch("/auth/me", { credentials: "same-origin", cache: "no-store" });
      if (probe.ok) return true;
      const answer = await fetch("/session/refresh", { method: "POST", credentials: "same-origin" });
      return answer.ok;
    }).catch(() => false).finally(() => { refreshing = null; });
  }
  return refreshing;
}

export function signIn() {
  const here = location.pathname + location.search;
  location.assign("/signin?next=" + encodeURIComponent(here));
}

async function problemOf(answer) {
  try {
    const body = await answer.json();
    return new ApiProblem(answer.status, body.error.message);
  } catch {
    return new ApiProblem(answer.status, answer.statusText || "request failed");
  }
}

/** GET (or `options`) a JSON api path with the session cookie; renews it once on a 401. */
export async function api(path, options = {}) {
  const send = () => fetch(path, { credentials: "same-origin", cache: "no-store", ...options });
  let answer = await send();
  if (answer.status === 401 && (await refreshSession())) answer = await send();
  if (answer.status === 401) {
    signIn();
    throw new ApiProblem(401, "signed out");
  }
  if (!answer.ok) throw await problemOf(answer);
  return answer.json();
}

// --- the project's live stream (server-sent events) ---------------------------------------------

/**
 * Follow /api/projects/<id>/live: `handlers.events({t, n, events})`, `.second({t, n})`,
 * `.reset(data)`, `.state("live" | "reconnecting")`. Reconnects (renewing the session when the
 * stream ended for it) and resumes after the last event seen.
 */
export function followLive(handlers) {
  let source = null;
  let lastId = null;
  let delay = 500;

  const connect = () => {
    const resume = lastId ? "?last_event_id=" + encodeURIComponent(lastId) : "";
    source = new EventSource(`/api/projects/${projectId}/live${resume}`);
    source.addEventListener("open", () => {
      delay = 500;
      handlers.state?.("live");
    });
    source.addEventListener("events", (message) => {
      lastId = message.lastEventId || lastId;
      handlers.events?.(JSON.parse(message.data));
    });
    source.addEventListener("second", (message) => handlers.second?.(JSON.parse(message.data)));
    source.addEventListener("reset", (message) => handlers.reset?.(JSON.parse(message.data)));
    source.addEventListener("bye", (message) => {
      const { reason } = JSON.parse(message.data);
      source.close();
      if (reason === "revoked") signIn();
      else again(reason === "expired");
    });
    source.addEventListener("error", () => {
      // CLOSED: the server refused (401 after the token expired, 503, ...); otherwise the
      // browser is already reconnecting by itself.
      if (source.readyState === EventSource.CLOSED) again(true);
      else handlers.state?.("reconnecting");
    });
  };

  const again = async (renew) => {
    handlers.state?.("reconnecting");
    if (renew && !(await refreshSession())) return signIn();
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 30000);
  };

  connect();
  return { close: () => source && source.close() };
}

// --- building the page ----------------------------------------------------------------------------

/** An element with attributes (`text` sets its text) and children (strings become text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export function formatNumber(value) {
  return Number(value || 0).toLocaleString("en-US");
}

/** A time (ms since the epoch, or ISO-8601) as the dashboard shows it: UTC, to the second. */
export function formatTime(value) {
  const ms = typeof value === "number" ? value : Date.parse(value);
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
}

export function eventPath(messageId) {
  return `/projects/${projectId}/events/${encodeURIComponent(messageId)}`;
}

/** Single-key shortcuts (no modifier, not while typing in a field). */
export function onKeys(actions) {
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target instanceof Element && target.closest("input, textarea, select, [contenteditable]")) return;
    const action = actions[event.key.toLowerCase()] || actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
}

// Copy buttons: data-copy names the element whose text is copied.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent);
    button.textContent = "Copied";
  } catch {
    // No clipboard (plain http on another host): select the text for Ctrl-C.
    getSelection().selectAllChildren(source);
    button.textContent = "Selected: press Ctrl-C";
  }
});

// A page restored from the back-forward cache shows what it held when left (after a sign-out
// too): load it again, which asks the server whether the session still stands.
addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});
