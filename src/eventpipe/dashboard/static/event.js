// One event: where it is in the pipeline (accepted, counted, archived, dead-lettered), from the
// api's trace. While it is still on its way, it is traced again a few times.

import { ApiProblem, api, el, projectId } from "./app.js";

const main = document.getElementById("main");
const messageId = main.dataset.messageId;
const status = document.getElementById("trace-status");
const list = document.getElementById("trace");
const ON_ITS_WAY = new Set(["in_kafka", "counted"]);
const KNOWN = new Set(["stage", "reached", "detail"]);
let tries = 0;

function stage(step) {
  const extra = Object.entries(step)
    .filter(([name, value]) => !KNOWN.has(name) && value !== null && value !== undefined && value !== "")
    .map(([name, value]) => `${name} ${value}`)
    .join(" · ");
  return el("li", { class: step.reached ? "reached" : "missed" },
    el("span", { class: "stage", text: step.stage.replace("_", " ") }), " ",
    el("span", { text: step.detail }),
    extra ? el("div", { class: "muted small", text: extra }) : "");
}

async function trace() {
  tries += 1;
  try {
    const answer = await api(`/api/projects/${projectId}/events/${encodeURIComponent(messageId)}/trace`);
    status.textContent = answer.explanation;
    status.classList.remove("muted");
    status.dataset.status = answer.status;
    list.replaceChildren(...answer.stages.map(stage));
    if (ON_ITS_WAY.has(answer.status) && tries < 10) setTimeout(trace, 3000);
    if (answer.status === "archived" && !document.getElementById("event-json")) {
      status.append(" ", el("a", { href: location.pathname, text: "Show its content" }));
    }
  } catch (error) {
    if (error instanceof ApiProblem && error.status !== 401) status.textContent = `The trace failed: ${error.message}`;
  }
}

trace();
