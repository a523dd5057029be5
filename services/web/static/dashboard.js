// warmwire's web page: the live dashboard (app.js pushes each {"op": "status"} here).
// Uses app.js's helpers ($, el, formatMs); every text goes in with textContent.
"use strict";

function formatUptime(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function fill(list, pairs) {
  const nodes = [];
  for (const [name, value] of pairs) nodes.push(el("dt", "", name), el("dd", "", value ?? "–"));
  $(list).replaceChildren(...nodes);
}

function renderStatus(message) {
  const banner = $("dash-banner");
  banner.hidden = message.ok;
  if (!message.ok) { banner.textContent = message.error; return; }
  const status = message.status;
  const health = $("dash-health");
  health.textContent = status.healthy ? "all healthy" : "not all healthy";
  health.className = `badge ${status.healthy ? "state-healthy" : "state-restarting"}`;
  const rows = status.services.map((service) => {
    const row = el("tr");
    row.dataset.service = service.name;
    const state = el("td", `state state-${service.shown}`, service.shown);
    row.append(el("td", "name", service.name), state, el("td", "pid", service.pid ?? "–"),
               el("td", "restarts", service.restarts), el("td", "uptime", formatUptime(service.uptime)));
    return row;
  });
  document.querySelector("#services tbody").replaceChildren(...rows);
  const stats = (name) => (status.services.find((s) => s.name === name) || {}).stats || {};
  const pool = stats("pool-manager"), router = stats("router");
  const agents = pool.pool || {};
  fill("pool", [["backend", pool.backend], ["ready", agents.ready], ["busy", agents.busy],
                ["warming", agents.warming], ["idle (kept for a chat)", agents.idle]]);
  const jobs = router.jobs || {}, load = pool.load || {};
  const from = load.by_cpu === undefined ? "not measured yet"
    : `by CPU ${load.by_cpu} (${load.idle_cores} idle cores), by memory ${load.by_memory} (${load.available_mb} MB free)`;
  fill("jobs", [["queue", jobs.queued === undefined ? null : `${jobs.queued} of ${jobs.max_queued}`],
                ["running", jobs.in_flight], ["concurrency limit", pool.limit === undefined ? null : `${pool.limit} of at most ${pool.max_concurrency}`],
                ["computed from", from]]);
  fill("tiers", Object.entries(router.tiers || {}));
  const spend = router.spend_today || {};
  const budget = spend.budget_usd || 0;
  fill("spend", [["tokens", spend.tokens], ["cost", spend.cost_usd === undefined ? null : `$${spend.cost_usd.toFixed(4)}`],
                 ["daily budget", budget ? `$${budget.toFixed(2)}` : "none set"]]);
  $("budget").max = budget || 1;
  $("budget").value = budget ? Math.min(spend.cost_usd || 0, budget) : 0;
  const latency = router.latency || {};
  drawChart("chart-p50", router.latency_series || [], 1, "#2f6fde");
  drawChart("chart-p99", router.latency_series || [], 2, "#d13b3b");
  $("cap-p50").textContent = `p50 per second · last minute ${latency.p50_ms == null ? "–" : formatMs(latency.p50_ms)}`;
  $("cap-p99").textContent = `p99 per second · last minute ${latency.p99_ms == null ? "–" : formatMs(latency.p99_ms)} (${latency.count || 0} replies)`;
  const events = message.events.slice().reverse().map((event) =>
    el("li", "", `${new Date(event.at * 1000).toLocaleTimeString()} ${event.service}: ${event.text}`));
  $("events").replaceChildren(...events);
}

function drawChart(id, series, column, colour) {
  const canvas = $(id);
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 4, now = Date.now() / 1000, span = 60;
  g.clearRect(0, 0, w, h);
  const top = Math.max(...series.map((point) => point[column]), 0.001);
  g.fillStyle = "#667085";
  g.font = "11px sans-serif";
  g.fillText(formatMs(top), pad, 12);
  g.strokeStyle = colour;
  g.lineWidth = 2;
  g.beginPath();
  series.forEach((point, index) => {
    const x = pad + (w - 2 * pad) * (1 - Math.min(span, Math.max(0, now - point[0])) / span);
    const y = h - pad - (h - 2 * pad - 14) * (point[column] / top);
    if (index === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}
