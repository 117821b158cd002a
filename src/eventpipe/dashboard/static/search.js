// Search: "Load more" appends the next page (from the JSON api, by its cursor) to the results.
// Without scripts, the same link opens the next page.

import { ApiProblem, api, el, eventPath, formatTime, projectId } from "./app.js";

const more = document.getElementById("more");
const results = document.getElementById("results").tBodies[0];

function row(event) {
  return el("tr", {},
    el("td", {}, el("time", { datetime: event.timestamp, text: formatTime(event.timestamp) })),
    el("td", { text: event.type }),
    el("td", {}, el("a", { href: eventPath(event.message_id), text: event.event || event.name || event.type })),
    el("td", { text: event.user_id || "" }),
    el("td", { class: "ellipsis", text: event.anonymous_id || "" }));
}

async function loadMore(click) {
  click.preventDefault();
  const params = new URLSearchParams(more.dataset.api);
  params.set("cursor", more.dataset.cursor);
  more.setAttribute("aria-busy", "true");
  try {
    const page = await api(`/api/projects/${projectId}/events?${params}`);
    results.append(...page.events.map(row));
    if (page.next_cursor) more.dataset.cursor = page.next_cursor;
    else more.remove();
  } catch (error) {
    if (error instanceof ApiProblem && error.status !== 401) more.textContent = `Load more (failed: ${error.message})`;
  } finally {
    more.removeAttribute("aria-busy");
  }
}

if (more) more.addEventListener("click", loadMore);
