// Live events: the project's new events as the processor counts them, newest first, with
// pause/resume and a name filter; each opens to its full JSON and a link to its trace.

import { el, eventPath, followLive, formatNumber, formatTime, onKeys } from "./app.js";

const MAX_SHOWN = 300;
const MAX_HELD = 1000;
const $ = (id) => document.getElementById(id);
const feed = $("feed");
const pause = $("pause");
const filter = $("filter");

let paused = false;
let held = [];
let heldCount = 0;

function nameOf(record) {
  return record.event || record.name || record.type || "(no name)";
}

function whoOf(record) {
  if (record.user_id) return "user " + record.user_id;
  if (record.anonymous_id) return "anonymous " + record.anonymous_id;
  return "no user";
}

function matches(item) {
  const wanted = filter.value.trim().toLowerCase();
  return !wanted || item.dataset.name.includes(wanted);
}

function body(record) {
  return el("div", { class: "body" },
    el("pre", { class: "json", tabindex: "0", "aria-label": "The event as JSON", text: JSON.stringify(record, null, 2) }),
    el("a", { href: eventPath(record.message_id), text: "Trace and archive →" }));
}

function item(record) {
  const name = nameOf(record);
  const when = formatTime(record.timestamp || record.received_at);
  const details = el("details", {},
    el("summary", {},
      el("span", { class: "name", text: name }),
      el("span", { class: "meta", text: `${record.type} · ${whoOf(record)} · ${when}` })));
  // The JSON is built when opened: a busy feed makes many rows few people open.
  details.addEventListener("toggle", () => {
    if (details.open && details.children.length === 1) details.append(body(record));
  });
  const li = el("li", { "data-name": String(name).toLowerCase() }, details);
  li.hidden = !matches(li);
  return li;
}

function show(records) {
  if (!records.length) return;
  const batch = document.createDocumentFragment();
  for (let i = records.length - 1; i >= 0; i--) batch.append(item(records[i]));
  feed.prepend(batch);
  while (feed.children.length > MAX_SHOWN) feed.lastElementChild.remove();
  $("empty").hidden = true;
}

function onEvents(data) {
  if (!paused) return show(data.events);
  heldCount += data.n;
  held = held.concat(data.events).slice(-MAX_HELD);
  const plural = heldCount === 1 ? "" : "s";
  $("paused-note").textContent = `${formatNumber(heldCount)} new event${plural} while paused.`;
  $("paused-note").hidden = false;
}

function toggle() {
  paused = !paused;
  pause.setAttribute("aria-pressed", String(paused));
  pause.textContent = paused ? "Resume" : "Pause";
  if (!paused) {
    show(held);
    held = [];
    heldCount = 0;
    $("paused-note").hidden = true;
  }
}

pause.addEventListener("click", toggle);
filter.addEventListener("input", () => {
  for (const li of feed.children) li.hidden = !matches(li);
});
onKeys({ p: toggle, "/": () => filter.focus() });

followLive({
  events: onEvents,
  second: ({ n }) => { $("rate").textContent = `${formatNumber(n)} events/s`; },
  reset: () => { $("status").textContent = "Some events were missed while disconnected."; },
  state: (state) => { $("status").textContent = state === "live" ? "Live" : "Reconnecting…"; },
});
