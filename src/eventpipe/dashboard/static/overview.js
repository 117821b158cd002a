// The overview: totals, events over time against the previous period, top events.
// Figures come from /stats/overview; in a range that ends now, the live stream's per-second
// counts move them at once, and the overview is read again now and then to square them.

import {
  ApiProblem, api, el, followLive, formatNumber, formatTime, onKeys, projectId,
} from "./app.js";

const main = document.getElementById("main");
const range = main.dataset.range;
const ROLLING = new Set(["30m", "24h", "7d", "30d"]);
const STEPS = { minute: 60, hour: 3600, day: 86400 };
const RELOAD_MS = range === "30m" ? 15000 : 60000;
const $ = (id) => document.getElementById(id);

let view = null;
let chart = null;

function utcIso(local) {
  // The form's times are UTC, as every time on the dashboard.
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(local) ? local : local + "Z";
  return new Date(zoned).toISOString();
}

function query() {
  if (range) return "range=" + encodeURIComponent(range);
  const { from, to } = main.dataset;
  return new URLSearchParams({ from: utcIso(from), to: utcIso(to) }).toString();
}

function viewOf(data) {
  const xs = data.series.map((point) => Date.parse(point.t) / 1000);
  const before = data.previous ? data.previous.series : [];
  return {
    xs,
    ys: data.series.map((point) => point.total),
    prev: xs.map((_, i) => (i < before.length ? before[i].total : null)),
    step: STEPS[data.range.resolution],
    total: data.total,
    users: data.users,
    allTime: data.all_time,
    previous: data.previous,
    top: data.top,
  };
}

function change(now, before) {
  if (before === null || before === undefined) return "";
  if (before === 0) return now === 0 ? "same as the previous period" : `previous period: 0`;
  const percent = Math.round(((now - before) / before) * 100);
  const sign = percent > 0 ? "+" : "";
  return `${sign}${percent}% vs the previous period (${formatNumber(before)})`;
}

function showFigures() {
  $("total").textContent = formatNumber(view.total);
  $("users").textContent = formatNumber(view.users);
  $("all-time").textContent = formatNumber(view.allTime);
  $("total-change").textContent = change(view.total, view.previous?.total);
  $("users-change").textContent = change(view.users, view.previous?.users);
  const first = formatTime(view.xs[0] * 1000);
  const last = formatTime((view.xs.at(-1) + view.step) * 1000);
  $("chart-desc").textContent =
    `${formatNumber(view.total)} events from ${first} to ${last} UTC` +
    (view.previous ? `; ${formatNumber(view.previous.total)} in the previous period.` : ".");
}

function showTable() {
  const rows = view.xs.map((x, i) =>
    el("tr", {},
      el("td", { text: formatTime(x * 1000) }),
      el("td", { class: "num", text: formatNumber(view.ys[i]) }),
      el("td", { class: "num", text: view.prev[i] === null ? "–" : formatNumber(view.prev[i]) })));
  $("series-table").tBodies[0].replaceChildren(...rows);
}

function showTop() {
  const body = $("top").tBodies[0];
  if (!view.top.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "2", class: "muted", text: "No events in this range." })));
    return;
  }
  body.replaceChildren(...view.top.map((item) =>
    el("tr", {}, el("td", { text: item.name }), el("td", { class: "num", text: formatNumber(item.count) }))));
}

const two = (n) => String(n).padStart(2, "0");
// Whole counts only on the y axis.
const COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5,
  5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 1e9];

/** A tick of the time axis, in UTC: the day for daily buckets and at midnight, else hh:mm. */
function tick(seconds) {
  const at = new Date(seconds * 1000);
  const day = `${two(at.getUTCMonth() + 1)}-${two(at.getUTCDate())}`;
  if (view.step >= 86400 || (at.getUTCHours() === 0 && at.getUTCMinutes() === 0)) return day;
  return `${two(at.getUTCHours())}:${two(at.getUTCMinutes())}`;
}

function colour(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawChart() {
  const box = $("chart");
  const data = [view.xs, view.ys, view.prev];
  if (chart) {
    chart.setData(data);
    return;
  }
  const accent = colour("--accent");
  const axis = { stroke: colour("--muted"), grid: { stroke: colour("--line") }, ticks: { stroke: colour("--line") } };
  chart = new uPlot({
    width: box.clientWidth,
    height: 280,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    legend: { show: false },
    scales: { y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] } },
    axes: [
      { ...axis, values: (_u, splits) => splits.map(tick) },
      { ...axis, size: 56, incrs: COUNT_STEPS, values: (_u, splits) => splits.map(formatNumber) },
    ],
    series: [
      {},
      { label: "This period", stroke: accent, width: 2, fill: accent + "22", points: { show: false } },
      { label: "Previous period", stroke: colour("--previous"), width: 1.5, dash: [6, 4], points: { show: false } },
    ],
  }, data, box);
  new ResizeObserver(() => chart.setSize({ width: box.clientWidth, height: 280 })).observe(box);
}

function show() {
  showFigures();
  drawChart();
  showTable();
  showTop();
}

async function load() {
  try {
    view = viewOf(await api(`/api/projects/${projectId}/stats/overview?${query()}&compare=true`));
    $("overview-error").hidden = true;
    show();
  } catch (error) {
    if (!(error instanceof ApiProblem) || error.status === 401) return;
    $("overview-error").textContent = `The figures could not be read: ${error.message}`;
    $("overview-error").hidden = false;
  }
}

/** Add one second's count of new events to the bucket that holds it. */
function addSecond({ t, n }) {
  if (!view || !n || !view.xs.length) return;
  const bucket = Math.floor(t / view.step) * view.step;
  if (bucket < view.xs[0]) return;
  while (bucket > view.xs.at(-1)) {
    if (!ROLLING.has(range)) return load(); // "today" is over: read the new day
    view.xs.push(view.xs.at(-1) + view.step);
    view.ys.push(0);
    view.prev.push(null);
    view.xs.shift();
    view.ys.shift();
    view.prev.shift();
  }
  view.ys[view.xs.indexOf(bucket)] += n;
  view.total += n;
  view.allTime += n;
  show();
}

onKeys({
  r: () => location.assign("?range=30m"),
  d: () => location.assign("?range=today"),
  h: () => location.assign("?range=24h"),
  w: () => location.assign("?range=7d"),
  m: () => location.assign("?range=30d"),
  c: () => {
    const custom = document.querySelector("details.custom");
    custom.open = true;
    $("from").focus();
  },
});

await load();
if (range) {
  followLive({
    second: addSecond,
    state: (state) => { $("live-state").hidden = state !== "live"; },
  });
  setInterval(() => { if (!document.hidden) load(); }, RELOAD_MS);
}
