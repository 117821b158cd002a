// Exports: while an export is queued or running, read its job (GET /api/jobs/{id}) every 2 s and
// show its state and progress, then its size, error, finish time and download link.
// Without scripts, reloading the page shows the same (jobs.py renders the rows alike).

import { api, el, formatTime } from "./app.js";

const UNFINISHED = new Set(["queued", "running"]);
const UNITS = ["B", "kB", "MB", "GB", "TB"];

const unfinished = () =>
  [...document.querySelectorAll("tr[data-job]")].filter((row) => UNFINISHED.has(row.dataset.state));
const field = (row, name) => row.querySelector(`[data-field="${name}"]`);

function sizeText(size) {
  if (size === null || size === undefined) return "";
  let value = size, unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) [value, unit] = [value / 1000, unit + 1];
  return unit === 0 ? `${size} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

function rowsText({ rows, estimated }) {
  const count = (n) => n.toLocaleString("en-US");
  return estimated === null ? `${count(rows)} rows` : `${count(rows)} of about ${count(estimated)} rows`;
}

function showProgress(bar, job) {
  const { rows, estimated } = job.progress;
  if (job.state === "succeeded") [bar.max, bar.value] = [1, 1];
  else if (estimated) [bar.max, bar.value] = [estimated, Math.min(rows, estimated)];
  else if (job.state === "running") bar.removeAttribute("value"); // indeterminate
}

function show(row, job) {
  row.dataset.state = job.state;
  field(row, "state").textContent = job.state;
  field(row, "rows").textContent = rowsText(job.progress);
  showProgress(row.querySelector("progress"), job);
  field(row, "size").textContent = sizeText(job.size_bytes);
  field(row, "error").textContent = job.error || "";
  if (job.finished_at) {
    field(row, "finished").replaceChildren(
      el("time", { datetime: job.finished_at, text: formatTime(job.finished_at) }));
  }
  if (job.download_url) {
    field(row, "download").replaceChildren(el("a", { href: job.download_url }, "Download",
      el("span", { class: "visually-hidden", text: ` the ${job.format} file of export ${job.id}` })));
  }
}

async function follow() {
  const rows = unfinished();
  if (rows.length === 0) return;
  await Promise.all(rows.map(async (row) => {
    try {
      show(row, await api(`/api/jobs/${row.dataset.job}`));
    } catch {
      // Read again at the next turn (a 401 has gone to the sign-in page already).
    }
  }));
  setTimeout(follow, 2000);
}

setTimeout(follow, 2000);
