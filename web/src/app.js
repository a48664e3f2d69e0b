// Tandem's dashboard: a client of the coordinator's HTTP API (docs/api.md). Pages are hash routes
// (#/cluster, #/jobs, #/job/JOB); each page polls only what it shows, incrementally (metrics, events
// and logs after the last sequence number seen), every POLL_MS while the cluster is live. In
// history mode (`tandem dashboard`) the data is loaded once. A token given as ?token=... is kept
// in sessionStorage and sent as a bearer token.
"use strict";

const POLL_MS = 2000;
// New versions are fetched at most every 5 s, less often for long tables: the coordinator copies
// its whole table for each request (~0.15 s at 10,000 versions).
const versionsEvery = (n) => Math.max(5000, 3 * n);
const VERSIONS_REFRESHED = 8;     // the newest versions fetched again (their state changes)
const PAGE = 2000;                // rows per metrics/logs request (keeps each request short)
const MAX_LOG_LINES = 20000;
const STALE_HIST = "weights/staleness_hist/";  // per-step trajectories by versions behind
const SHOWN_LOG_LINES = 600;

const state = { mode: "live", timer: null, page: null, gen: 0 };

// ---------- API ----------

function token() {
  const q = new URLSearchParams(location.search);
  if (q.get("token")) {
    sessionStorage.setItem("tandem-token", q.get("token"));
    history.replaceState(null, "", location.pathname + location.hash);
  }
  return sessionStorage.getItem("tandem-token") || "";
}

async function api(path) {
  const headers = {};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  const r = await fetch(path, { headers });
  const text = await r.text();
  let body = null;
  try { body = JSON.parse(text); } catch (e) { body = null; }
  if (!r.ok) {
    const msg = body && body.error ? body.error : text;
    const err = new Error(`${r.status}: ${msg}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

// ---------- helpers ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function fmtTime(ns) {
  if (!ns) return "-";
  const d = new Date(ns / 1e6);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtNum(v, digits) {
  if (v === undefined || v === null || Number.isNaN(v)) return "-";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && digits === undefined) return String(v);
  return v.toFixed(digits === undefined ? 3 : digits);
}
function fmtDuration(s) {
  if (s === undefined || s === null || s < 0) return "-";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fmtBytes(b) {
  if (typeof b !== "number") return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; ++i; }
  return (i ? b.toFixed(1) : String(b)) + " " + units[i];
}
function stateSpan(s) { return el("span", { class: `state state-${s}` }, s); }
function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status" + (isError ? " error" : "");
}
function jobLink(id, text) { return el("a", { href: `#/job/${id}` }, text || id); }

// Renders `rows` (objects) into a table with sortable columns. cols: [{key, label, num, render,
// value}]; `sort` holds {key, asc} across re-renders.
function table(cols, rows, sort, onSort) {
  const head = el("tr", {}, cols.map((c) => {
    const th = el("th", { class: [c.num ? "num" : "", c.sortable === false ? "" : "sortable",
                                  sort && sort.key === c.key ? "sorted" + (sort.asc ? " asc" : "") : ""]
                                   .join(" ").trim() }, c.label);
    if (sort && c.sortable !== false) {
      th.addEventListener("click", () => {
        if (sort.key === c.key) sort.asc = !sort.asc; else { sort.key = c.key; sort.asc = true; }
        onSort();
      });
    }
    return th;
  }));
  let list = rows.slice();
  if (sort && sort.key) {
    const col = cols.find((c) => c.key === sort.key);
    const val = (r) => (col && col.value ? col.value(r) : r[sort.key]);
    list.sort((a, b) => {
      const x = val(a), y = val(b);
      const cmp = (x === y) ? 0 : (x === undefined || x === null) ? 1 : (y === undefined || y === null) ? -1 :
                  (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return sort.asc ? cmp : -cmp;
    });
  }
  const body = list.map((r) => el("tr", {}, cols.map((c) =>
    el("td", { class: c.num ? "num" : "" }, c.render ? c.render(r) : fmtNum(r[c.key])))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
}

// ---------- charts ----------

const PALETTE = ["#1f5fbf", "#c62828", "#1a7f37", "#b26a00", "#7b1fa2", "#00838f", "#5d4037",
                 "#ad1457", "#455a64", "#827717"];

// A line chart of some series over the step axis. `data` is the page's columnar store:
// {steps: [...], cols: {key: [...]}}.
class Chart {
  constructor(title, keys, opts) {
    this.title = title;
    this.keys = keys;  // series keys, or a function(store) -> keys
    this.opts = opts || {};
    this.plot = null;
    this.node = el("div", { class: "chart", "data-chart": title, "data-points": "0" },
                   el("h3", {}, title), el("div", { class: "empty" }, "no data yet"));
    this.seriesKeys = [];
  }
  update(store) {
    const keys = (typeof this.keys === "function" ? this.keys(store) : this.keys)
      .filter((k) => store.cols[k]);
    if (!keys.length || !store.steps.length || typeof uPlot === "undefined") return;
    const data = [store.steps, ...keys.map((k) => store.cols[k])];
    const width = Math.max(300, this.node.clientWidth - 14);
    if (!this.plot || keys.join("|") !== this.seriesKeys.join("|")) {
      if (this.plot) this.plot.destroy();
      this.node.replaceChildren(el("h3", {}, this.title));
      this.seriesKeys = keys;
      const series = [{ label: "step" }, ...keys.map((k, i) => ({
        label: this.opts.labels ? this.opts.labels(k) : k, stroke: PALETTE[i % PALETTE.length],
        width: 1.5, points: { show: false }, spanGaps: true }))];
      this.plot = new uPlot({ width, height: 210, series, scales: { x: { time: false } },
                              axes: [{ label: "step" }, {}], legend: { live: true } },
                            data, this.node);
    } else {
      this.plot.setData(data);
    }
    let n = 0;
    for (const k of keys) n += store.cols[k].filter((v) => v !== null && v !== undefined).length;
    this.node.setAttribute("data-points", String(n));
  }
  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(300, this.node.clientWidth - 14), height: 210 });
  }
  destroy() { if (this.plot) this.plot.destroy(); }
}

// ---------- pages ----------

function navActive(name) {
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.getAttribute("data-nav") === name);
  }
}

// Cluster: the summary, nodes with their actors.
function clusterPage(root) {
  navActive("cluster");
  const summary = el("div", { class: "card kv", id: "cluster-summary" });
  const nodes = el("div", { id: "nodes" });
  root.append(el("h1", {}, "Cluster"), summary, el("h2", {}, "Nodes"), nodes);
  const sort = { key: "id", asc: true };
  let last = null;
  const render = () => {
    if (!last) return;
    const [cluster, nodeList, actorsByNode] = last;
    summary.replaceChildren(
      ...[["name", cluster.name], ["version", cluster.version], ["epoch", cluster.epoch],
          ["uptime", fmtDuration(cluster.uptime_s)],
          ["nodes", `${cluster.nodes.alive} alive, ${cluster.nodes.dead} dead`],
          ["jobs", Object.entries(cluster.jobs).map(([k, v]) => `${v} ${k}`).join(", ") || "none"]]
        .map(([k, v]) => el("div", {}, el("span", {}, k), String(v))));
    const res = (r) => r ? `${r.cpus ?? 0} cpu, ${r.memory_mb ?? 0} MB, ${r.gpus ?? 0} gpu` : "-";
    nodes.replaceChildren(table([
      { key: "id", label: "node" },
      { key: "role", label: "role" },
      { key: "host", label: "host" },
      { key: "state", label: state.mode === "history" ? "state (as last recorded)" : "state",
        render: (n) => stateSpan(n.state) },
      { key: "resources", label: "resources", render: (n) => res(n.resources), sortable: false },
      { key: "free", label: "free", render: (n) => res(n.free), sortable: false },
      { key: "last_seen_s_ago", label: "heartbeat age", num: true,
        render: (n) => n.last_seen_s_ago < 0 ? "-" : fmtDuration(n.last_seen_s_ago) },
      { key: "actors", label: "actors", sortable: false,
        render: (n) => el("div", {}, (actorsByNode[n.id] || []).map((a) =>
          el("div", { class: "small" }, jobLink(a.job, a.actor), " ", stateSpan(a.phase)))) },
    ], nodeList.nodes, sort, render));
  };
  return async () => {
    const [cluster, nodeList, jobs] = await Promise.all([api("/api/v1/cluster"), api("/api/v1/nodes"),
                                                          api("/api/v1/jobs")]);
    const actorsByNode = {};
    const open = jobs.jobs.filter((j) => j.state === "RUNNING" || j.state === "PENDING");
    const details = await Promise.all(open.map((j) => api(`/api/v1/jobs/${j.job}`)));
    for (const d of details) {
      for (const a of d.actors || []) {
        if (!a.node) continue;
        (actorsByNode[a.node] = actorsByNode[a.node] || []).push({ job: d.job, actor: a.actor, phase: a.phase });
      }
    }
    last = [cluster, nodeList, actorsByNode];
    render();
  };
}

// Jobs: state, progress, step time and reward; filter and sort.
function jobsPage(root) {
  navActive("jobs");
  const filter = el("input", { id: "job-filter", placeholder: "filter by id or name" });
  const stateSel = el("select", { id: "job-state" }, ["", "PENDING", "RUNNING", "SUCCEEDED", "FAILED",
    "CANCELLED"].map((s) => el("option", { value: s }, s || "any state")));
  const list = el("div", { id: "jobs" });
  root.append(el("h1", {}, "Jobs"), el("div", { class: "filters" }, filter, stateSel), list);
  const sort = { key: "job", asc: false };
  const details = {};  // job -> detail (final jobs are fetched once)
  let jobs = [];
  const render = () => {
    const f = filter.value.trim().toLowerCase();
    const rows = jobs.filter((j) => (!f || j.job.includes(f) || j.name.toLowerCase().includes(f)) &&
                                    (!stateSel.value || j.state === stateSel.value))
      .map((j) => {
        const m = (details[j.job] && details[j.job].metrics) || {};
        return Object.assign({}, j, { step_s: m["timing_s/step"], reward: m["rollout/reward_mean"] });
      });
    list.replaceChildren(table([
      { key: "job", label: "job", render: (j) => jobLink(j.job) },
      { key: "name", label: "name" },
      { key: "kind", label: "kind" },
      { key: "state", label: "state", render: (j) => stateSpan(j.state) },
      { key: "step", label: "step", num: true },
      { key: "progress", label: "progress", num: true,
        render: (j) => j.progress === null || j.progress === undefined ? "-" :
          el("span", {}, el("span", { class: "bar", style: `width:${Math.round(60 * j.progress)}px` }),
             ` ${Math.round(100 * j.progress)}%`) },
      { key: "step_s", label: "step time", num: true, render: (j) => j.step_s === undefined ? "-" : fmtDuration(j.step_s) },
      { key: "reward", label: "reward", num: true, render: (j) => fmtNum(j.reward) },
      { key: "versions", label: "versions", num: true },
      { key: "submitted_ns", label: "submitted", render: (j) => fmtTime(j.submitted_ns) },
      { key: "reason", label: "reason", render: (j) => el("span", { class: "small muted" }, j.reason || "") },
    ], rows, sort, render));
    list.setAttribute("data-rows", String(rows.length));
  };
  filter.addEventListener("input", render);
  stateSel.addEventListener("change", render);
  return async () => {
    jobs = (await api("/api/v1/jobs")).jobs;
    const need = jobs.filter((j) => !details[j.job] || !["SUCCEEDED", "FAILED", "CANCELLED"].includes(details[j.job].state));
    const got = await Promise.all(need.slice(-100).map((j) => api(`/api/v1/jobs/${j.job}`)));
    for (const d of got) details[d.job] = d;
    render();
  };
}

// One job: charts of its per-step metrics, the version timeline, events and logs.
function jobPage(root, jobId) {
  navActive("jobs");
  const header = el("div", { class: "card kv", id: "job-summary" });
  const actors = el("div", { id: "job-actors" });
  const charts = [
    new Chart("reward", ["rollout/reward_mean", "rollout/reward_min", "rollout/reward_max"]),
    new Chart("KL", ["train/kl"]),
    new Chart("entropy", ["train/entropy"]),
    new Chart("response length", ["rollout/response_length"]),
    new Chart("clip fraction", ["train/clip_fraction"]),
    new Chart("grad norm", ["train/grad_norm"]),
    new Chart("policy loss", ["train/policy_loss"]),
    new Chart("step time breakdown (s)", (s) => Object.keys(s.cols).filter((k) => k.startsWith("timing_s/")).sort()),
    new Chart("tokens/s", (s) => Object.keys(s.cols).filter((k) => k.startsWith("throughput/")).sort()),
    new Chart("staleness (versions)", ["weights/staleness_mean", "staleness/consumed_min", "staleness/consumed_max"],
              { labels: (k) => ({ "staleness/consumed_min": "trainer version - oldest consumed",
                                  "staleness/consumed_max": "trainer version - newest consumed" }[k] || k) }),
    new Chart("weight version and lag", ["weights/version", "weights/consumed_version_min", "weights/consumed_version_max"]),
    new Chart("trajectories dropped / rejected", ["weights/dropped_trajectories", "weights/rejected_unknown_version"]),
  ];
  // The share of each step's trajectories by how many versions behind they were: from the per-step
  // metrics weights/staleness_hist/<behind>, or (jobs run before the trainer reported those) from
  // the trainer's own metrics file (RUN_DIR/jobs/JOB/metrics.jsonl) when the coordinator can read it.
  const staleHist = new Chart("staleness histogram (share of trajectories, by versions behind)",
                              (h) => Object.keys(h.cols).sort((a, b) => parseInt(a.split("=")[1]) - parseInt(b.split("=")[1])));
  charts.push(staleHist);
  const other = new Chart("other metrics", (s) => Object.keys(s.cols).filter((k) =>
    !charts.some((c) => c !== staleHist && c.seriesKeys.includes(k)) && !k.startsWith("staleness/") &&
    !k.startsWith(STALE_HIST)).sort());
  charts.push(other);
  const chartBox = el("div", { class: "charts", id: "charts" }, charts.map((c) => c.node));

  const versionsBox = el("div", { id: "versions", class: "versions-box" });
  const versionChart = el("div", { class: "chart", id: "version-timeline", "data-points": "0", "data-fetches": "0" },
                          el("h3", {}, "version timeline: publish time, and when each rollout had fetched it (s since the first version)"));
  const weightsBox = el("div", { class: "card kv small", id: "weights-summary" });
  const eventsBox = el("div", { id: "events" });

  const level = el("select", { id: "log-level" }, ["", "debug", "info", "warn", "error"].map((l) =>
    el("option", { value: l }, l ? `${l} and above` : "any level")));
  const actorSel = el("select", { id: "log-actor" }, el("option", { value: "" }, "any actor"));
  const text = el("input", { id: "log-text", placeholder: "text" });
  const follow = el("input", { id: "log-follow", type: "checkbox", checked: "" });
  const logBox = el("div", { class: "logs", id: "logs", "data-lines": "0" });

  root.append(el("h1", {}, "Job ", el("span", { id: "job-title" }, jobId)),
              header, actors,
              el("div", { class: "tabs small" }, el("a", { href: "#charts" }, "charts"),
                 el("a", { href: "#versions-h" }, "versions"), el("a", { href: "#events-h" }, "events"),
                 el("a", { href: "#logs-h" }, "logs")),
              el("h2", {}, "Per-step metrics"), chartBox,
              el("h2", { id: "versions-h" }, "Weight versions"), weightsBox, versionChart, versionsBox,
              el("h2", { id: "events-h" }, "Events"), eventsBox,
              el("h2", { id: "logs-h" }, "Logs ", el("a", { class: "small", href: `#/logs/${jobId}` },
                                                     "(every process's lines about this job)")),
              el("div", { class: "filters" }, level, actorSel, text,
                 el("label", {}, follow, " follow"), el("span", { class: "small muted", id: "log-count" })),
              logBox);

  const store = { steps: [], cols: {} };
  const hstore = { steps: [], cols: {} };  // staleness histogram shares by step
  const st = { lastStep: -1, lastEvent: 0, lastLog: 0, logs: [], actors: new Set(), versionsAt: 0,
               versionsCount: -1, versions: [], job: null, vplot: null, trainerOffset: 0,
               fetches: new Map(), histFromMetrics: false };

  const appendMetrics = (rows) => {
    for (const row of rows) {
      const hist = {};
      for (const [k, v] of Object.entries(row.values))
        if (k.startsWith(STALE_HIST) && typeof v === "number") hist[k.slice(STALE_HIST.length)] = v;
      if (Object.keys(hist).length) {
        st.histFromMetrics = true;
        appendHistogram({ step: row.step, metrics: { "weights/staleness_hist": hist } });
      }
      const i = store.steps.length;
      store.steps.push(row.step);
      for (const [k, v] of Object.entries(row.values)) {
        if (typeof v !== "number" || k.startsWith(STALE_HIST)) continue;
        if (!store.cols[k]) store.cols[k] = new Array(i).fill(null);
        store.cols[k].push(v);
      }
      // Lag of the consumed versions behind the trainer's (the staleness band).
      const vals = row.values;
      if (typeof vals["weights/version"] === "number" && typeof vals["weights/consumed_version_min"] === "number" &&
          vals["weights/consumed_version_min"] >= 0) {
        for (const [k, src] of [["staleness/consumed_min", "weights/consumed_version_min"],
                                ["staleness/consumed_max", "weights/consumed_version_max"]]) {
          if (!store.cols[k]) store.cols[k] = new Array(i).fill(null);
          store.cols[k].push(Math.max(0, vals["weights/version"] - vals[src]));
        }
      }
      for (const col of Object.values(store.cols)) if (col.length < i + 1) col.push(null);
      st.lastStep = row.step;
    }
  };

  const appendHistogram = (line) => {
    const hist = line.metrics && line.metrics["weights/staleness_hist"];
    if (typeof line.step !== "number" || !hist || typeof hist !== "object") return;
    const i = hstore.steps.length;
    hstore.steps.push(line.step);
    let total = 0;
    for (const n of Object.values(hist)) total += n;
    for (const [behind, n] of Object.entries(hist)) {
      const k = `behind=${behind}`;
      if (!hstore.cols[k]) hstore.cols[k] = new Array(i).fill(null);
      hstore.cols[k].push(total ? n / total : 0);
    }
    for (const col of Object.values(hstore.cols)) if (col.length < i + 1) col.push(0);
  };

  const renderHeader = (j) => {
    header.replaceChildren(...[
      ["job", j.job], ["name", j.name], ["kind", j.kind], ["state", stateSpan(j.state)],
      ["step", j.step], ["progress", j.progress === null ? "-" : `${Math.round(100 * j.progress)}%`],
      ["latest version", j.latest_version ?? "-"], ["versions", j.versions],
      ["restarts", `${j.restarts_used}/${j.max_actor_restarts}`],
      ["submitted", fmtTime(j.submitted_ns)], ["started", fmtTime(j.started_ns)],
      ["finished", fmtTime(j.finished_ns)], ["reason", j.reason || "-"],
    ].map(([k, v]) => el("div", {}, el("span", {}, k), v)));
    actors.replaceChildren(table([
      { key: "actor", label: "actor" }, { key: "node", label: "node" },
      { key: "attempt", label: "attempt", num: true },
      { key: "phase", label: "phase", render: (a) => stateSpan(a.phase) },
      { key: "progress", label: "step", num: true, render: (a) => fmtNum(a.progress && a.progress.step) },
      { key: "last_error", label: "last error", render: (a) => el("span", { class: "small" }, a.last_error || "") },
    ], j.actors || [], null));
  };

  // The weight-plane counters each actor reports (progress.weights, rl::WeightTelemetry): the
  // trainer's publishes and leases, and each rollout's newest fetches, kept here as they arrive.
  const takeWeights = (j) => {
    const parts = [];
    for (const a of j.actors || []) {
      const w = a.progress && a.progress.weights;
      if (!w || typeof w !== "object") continue;
      for (const f of w.fetches || []) st.fetches.set(`${a.actor}@${f.version}@${f.start_ns}`, Object.assign({ actor: a.actor }, f));
      if (typeof w.published_versions === "number") {
        parts.push(["published by " + a.actor, `${w.published_versions} versions, ${fmtBytes(w.published_bytes)}` +
                    (w.published_versions ? `, ${fmtNum(1000 * w.publish_seconds / w.published_versions)} ms each` : "")],
                   ["leases held now", w.leases_held], ["publishes that waited for a lease", w.lease_waits],
                   ["served by the trainer", fmtBytes((w.served_bytes || {}).publisher)]);
      }
      if (typeof w.last_fetch_bytes_per_second === "number") {
        parts.push([a.actor, `${fmtBytes(Object.values(w.fetched_bytes || {}).reduce((x, y) => x + y, 0))} fetched, ` +
                    `last ${fmtNum(w.last_fetch_bytes_per_second / 1e9)} GB/s, relayed ${fmtBytes((w.served_bytes || {}).relay)}` +
                    (w.checksum_failures ? `, ${w.checksum_failures} chunks re-read` : "")]);
      }
    }
    weightsBox.replaceChildren(...parts.map(([k, v]) => el("div", {}, el("span", {}, k), String(v ?? "-"))));
    weightsBox.setAttribute("data-fetches", String(st.fetches.size));
  };

  const renderVersions = (versions) => {
    const t0 = versions.length ? versions[0].published_ns : 0;
    // One x axis for both series: publish times, and the ends of the fetches that were seen.
    const fetches = [...st.fetches.values()].filter((f) => versions.length && f.start_ns >= t0);
    const points = versions.map((v) => [(v.published_ns - t0) / 1e9, v.version, null])
      .concat(fetches.map((f) => [(f.start_ns - t0) / 1e9 + f.seconds, null, f.version]))
      .sort((a, b) => a[0] - b[0]);
    const data = [points.map((p) => p[0]), points.map((p) => p[1]), points.map((p) => p[2])];
    versionChart.setAttribute("data-points", String(versions.length));
    versionChart.setAttribute("data-fetches", String(fetches.length));
    if (versions.length && typeof uPlot !== "undefined") {
      const width = Math.max(300, versionChart.clientWidth - 14);
      if (!st.vplot) {
        st.vplot = new uPlot({ width, height: 180, scales: { x: { time: false } },
          series: [{ label: "s" }, { label: "published", stroke: PALETTE[0], width: 0,
                                     points: { show: true, size: 5, fill: PALETTE[0] } },
                   { label: "fetched by a rollout", stroke: PALETTE[1], width: 0,
                     points: { show: true, size: 4, fill: PALETTE[1] } }],
          axes: [{ label: "seconds since version " + versions[0].version }, { label: "version" }] },
          data, versionChart);
      } else {
        st.vplot.setData(data);
      }
    }
    const byVersion = new Map();
    for (const f of st.fetches.values()) {
      if (!byVersion.has(f.version)) byVersion.set(f.version, []);
      byVersion.get(f.version).push(f);
    }
    const shown = versions.slice(-200).reverse();
    versionsBox.replaceChildren(
      el("div", { class: "small muted" }, `${versions.length} versions; the newest ${shown.length} below`),
      table([
        { key: "version", label: "version", num: true },
        { key: "published_ns", label: "published", render: (v) => fmtTime(v.published_ns) },
        { key: "gap", label: "since previous", num: true, render: (v) => v.gap === undefined ? "-" : fmtDuration(v.gap) },
        { key: "state", label: "state", render: (v) => stateSpan(v.state || (v.available ? "available" : "unavailable")) },
        { key: "reason", label: "retired / unavailable because", render: (v) => el("span", { class: "small" }, v.reason || "") },
        { key: "publishers", label: "publishers", render: (v) => (v.publishers || []).map((p) =>
            `${p.actor || "?"}${p.attempt >= 0 ? " #" + p.attempt : ""} on ${p.node || "?"}`).join(", ") },
        { key: "relays", label: "relay tree (reader <- parent)", render: (v) => el("div", { class: "small" },
            (v.relays || []).map((l) => el("div", {}, `${l.reader} <- ${l.parent || "publisher"} (depth ${l.depth})`))) },
        { key: "fetches", label: "fetches (rollout: after publish, lease held, GB/s, read path, from)", render: (v) =>
            el("div", { class: "small fetch-rows" }, (byVersion.get(v.version) || []).sort((a, b) => a.start_ns - b.start_ns).map((f) =>
              el("div", { class: "fetch-row" }, `${f.actor.split("/").pop()}: +${fmtDuration((f.start_ns - v.published_ns) / 1e9)}, ` +
                 `lease ${fmtDuration(f.seconds)} then released, ${fmtNum(f.seconds > 0 ? f.bytes / f.seconds / 1e9 : 0)} GB/s, ` +
                 `${f.transport}, from ${f.source === "publisher" ? "the trainer" : f.source}` +
                 (f.rereads ? `, ${f.rereads} chunks re-read` : "")))) },
      ], shown.map((v, i) => {
        const prev = versions[versions.length - 1 - i - 1];
        return Object.assign({}, v, prev ? { gap: (v.published_ns - prev.published_ns) / 1e9 } : {});
      }), null));
  };

  const LEVELS = { debug: 0, info: 1, warn: 2, warning: 2, error: 3, critical: 4 };
  const renderLogs = () => {
    const minLevel = level.value ? LEVELS[level.value] : -1;
    const a = actorSel.value, t = text.value.toLowerCase();
    const lines = st.logs.filter((l) => (LEVELS[l.level] ?? 1) >= minLevel && (!a || l.actor === a) &&
                                        (!t || l.msg.toLowerCase().includes(t)));
    const shown = lines.slice(-SHOWN_LOG_LINES);
    logBox.replaceChildren(...shown.map((l) => el("div", { class: `lv-${l.level}` },
      `${fmtTime(l.ts_ns)} ${l.actor.padEnd(26)} ${l.level.padEnd(5)} ${l.msg}`)));
    logBox.setAttribute("data-lines", String(lines.length));
    document.getElementById("log-count").textContent =
      `${lines.length} of ${st.logs.length} lines` + (lines.length > shown.length ? ` (the last ${shown.length} shown)` : "");
    if (follow.checked) logBox.scrollTop = logBox.scrollHeight;
  };
  for (const c of [level, actorSel, text, follow]) c.addEventListener(c === text ? "input" : "change", renderLogs);

  const onResize = () => charts.forEach((c) => c.resize());
  window.addEventListener("resize", onResize);

  const poll = async () => {
    const j = await api(`/api/v1/jobs/${jobId}`);
    st.job = j;
    document.getElementById("job-title").textContent = `${j.job} (${j.name})`;
    renderHeader(j);
    const fetchesBefore = st.fetches.size;
    takeWeights(j);
    // Metrics, events and logs after what we have, page by page.
    for (let page = 0; page < 250; ++page) {
      const m = await api(`/api/v1/jobs/${j.job}/metrics?after=${st.lastStep}&limit=${PAGE}`);
      appendMetrics(m.metrics);
      if (m.metrics.length < PAGE) break;
    }
    // Asked again every poll while missing: the trainer opens its file once it has started.
    if (j.kind === "grpo" && !st.histFromMetrics) {
      for (let page = 0; page < 50; ++page) {
        const t = await api(`/api/v1/trainer-metrics/${j.job}?offset=${st.trainerOffset}`);
        if (!t.available) {
          const empty = staleHist.node.querySelector(".empty");
          if (empty) empty.textContent = "no data: the trainer's metrics file is not on this machine (yet)";
          break;
        }
        for (const line of t.lines) appendHistogram(line);
        const moved = t.next_offset !== st.trainerOffset;
        st.trainerOffset = t.next_offset;
        if (!moved || t.next_offset >= t.bytes) break;
      }
    }
    charts.forEach((c) => c.update(c === staleHist ? hstore : store));
    const ev = await api(`/api/v1/jobs/${j.job}/events?after=${st.lastEvent}&limit=10000`);
    if (ev.events.length) {
      for (const e of ev.events) {
        st.lastEvent = e.seq;
        eventsBox.appendChild(el("div", { class: "small event" }, el("span", { class: "muted" }, fmtTime(e.ts_ns)),
                                 " ", el("b", {}, e.kind), " ", e.message));
      }
      eventsBox.setAttribute("data-events", String(st.lastEvent));
    }
    let newLogs = false;
    for (let page = 0; page < 100; ++page) {
      const l = await api(`/api/v1/jobs/${j.job}/logs?after=${st.lastLog}&limit=${PAGE}`);
      for (const line of l.logs) {
        st.lastLog = line.seq;
        st.logs.push(line);
        if (!st.actors.has(line.actor)) {
          st.actors.add(line.actor);
          actorSel.appendChild(el("option", { value: line.actor }, line.actor));
        }
      }
      newLogs = newLogs || l.logs.length > 0;
      if (l.logs.length < PAGE) break;
    }
    if (st.logs.length > MAX_LOG_LINES) st.logs.splice(0, st.logs.length - MAX_LOG_LINES);
    if (newLogs || !logBox.hasChildNodes()) renderLogs();
    // Versions: only the new ones and the newest few again (their state changes as slots are
    // reclaimed); the whole table once when the page opens.
    const now = Date.now();
    const ended = ["SUCCEEDED", "FAILED", "CANCELLED"].includes(j.state);
    if (st.versionsCount < 0 || (j.versions !== st.versionsCount &&
                                 (ended || now - st.versionsAt > versionsEvery(st.versions.length)))) {
      st.versionsAt = now;
      st.versionsCount = j.versions;
      const known = st.versions.length ? st.versions[st.versions.length - 1].version : -1;
      const after = known < 0 ? -1 : Math.max(-1, known - VERSIONS_REFRESHED);
      const fresh = (await api(`/api/v1/jobs/${j.job}/versions?after=${after}`)).versions;
      const byVersion = new Map(st.versions.map((v) => [v.version, v]));
      for (const v of fresh) byVersion.set(v.version, v);
      st.versions = [...byVersion.values()].sort((a, b) => a.version - b.version);
      renderVersions(st.versions);
    } else if (st.fetches.size !== fetchesBefore && st.versions.length) {
      renderVersions(st.versions);
    }
  };
  poll.cleanup = () => {
    window.removeEventListener("resize", onResize);
    charts.forEach((c) => c.destroy());
    if (st.vplot) st.vplot.destroy();
  };
  return poll;
}

// Logs of every process (RUN_DIR/logs/*.jsonl: coordinator, node agents, actors through their
// agent), merged by time, with process, level, job and text filters and live follow.
function logsPage(root, jobFilter) {
  navActive("logs");
  const TAIL_BYTES = 256 * 1024;
  const procSel = el("select", { id: "plog-process" }, el("option", { value: "" }, "any process"));
  const level = el("select", { id: "plog-level" }, ["", "debug", "info", "warn", "error"].map((l) =>
    el("option", { value: l }, l ? `${l} and above` : "any level")));
  const job = el("input", { id: "plog-job", placeholder: "job", value: jobFilter || "" });
  const text = el("input", { id: "plog-text", placeholder: "text" });
  const follow = el("input", { id: "plog-follow", type: "checkbox", checked: "" });
  const box = el("div", { class: "logs tall", id: "plogs", "data-lines": "0" });
  root.append(el("h1", {}, "Logs of all processes"),
              el("div", { class: "filters" }, procSel, level, job, text, el("label", {}, follow, " follow"),
                 el("span", { class: "small muted", id: "plog-count" })), box);
  const st = { offsets: {}, lines: [], procs: new Set() };
  const LEVELS = { trace: -1, debug: 0, info: 1, warn: 2, warning: 2, error: 3, critical: 4 };
  const render = () => {
    const min = level.value ? LEVELS[level.value] : -2;
    const p = procSel.value, j = job.value.trim(), t = text.value.toLowerCase();
    const lines = st.lines.filter((l) => (LEVELS[l.level] ?? 1) >= min && (!p || l.process === p) &&
      (!j || l.job === j || (l.actor || "").startsWith(j + "/")) && (!t || (l.msg || "").toLowerCase().includes(t)));
    const shown = lines.slice(-SHOWN_LOG_LINES);
    box.replaceChildren(...shown.map((l) => el("div", { class: `lv-${l.level}` },
      `${(l.ts || "").replace("T", " ").slice(0, 23)} ${String(l.process).padEnd(12)} ${String(l.level || "").padEnd(5)} ` +
      `${l.component ? "[" + l.component + "] " : ""}${l.actor ? l.actor + ": " : ""}${l.msg || ""}`)));
    box.setAttribute("data-lines", String(lines.length));
    document.getElementById("plog-count").textContent = `${lines.length} of ${st.lines.length} lines` +
      (lines.length > shown.length ? ` (the last ${shown.length} shown)` : "");
    if (follow.checked) box.scrollTop = box.scrollHeight;
  };
  for (const c of [procSel, level, follow]) c.addEventListener("change", render);
  for (const c of [job, text]) c.addEventListener("input", render);
  return async () => {
    const list = (await api("/api/v1/process-logs")).processes;
    let added = 0;
    for (const p of list) {
      if (!st.procs.has(p.process)) {
        st.procs.add(p.process);
        procSel.appendChild(el("option", { value: p.process }, p.process));
      }
      for (let page = 0; page < 8; ++page) {
        const from = st.offsets[p.process] ?? -TAIL_BYTES;
        const r = await api(`/api/v1/process-logs/${encodeURIComponent(p.process)}?offset=${from}`);
        for (const l of r.lines) { l.process = p.process; st.lines.push(l); }
        added += r.lines.length;
        const moved = r.next_offset !== st.offsets[p.process];
        st.offsets[p.process] = r.next_offset;
        if (!moved || r.next_offset >= r.bytes) break;
      }
    }
    if (added) {
      st.lines.sort((a, b) => (a.ts || "") < (b.ts || "") ? -1 : (a.ts || "") > (b.ts || "") ? 1 : 0);
      if (st.lines.length > MAX_LOG_LINES) st.lines.splice(0, st.lines.length - MAX_LOG_LINES);
    }
    if (added || !box.hasChildNodes()) render();
  };
}

// ---------- router ----------

async function route() {
  const gen = ++state.gen;
  if (state.timer) clearTimeout(state.timer);
  if (state.page && state.page.cleanup) state.page.cleanup();
  const root = document.getElementById("page");
  root.replaceChildren();
  const hash = location.hash.replace(/^#\/?/, "");
  const parts = hash.split("/");
  let poll;
  if (parts[0] === "job" && parts[1]) poll = jobPage(root, decodeURIComponent(parts[1]));
  else if (parts[0] === "jobs") poll = jobsPage(root);
  else if (parts[0] === "logs") poll = logsPage(root, parts[1] ? decodeURIComponent(parts[1]) : "");
  else poll = clusterPage(root);
  state.page = poll;
  const tick = async () => {
    if (gen !== state.gen) return;
    try {
      await poll();
      if (gen !== state.gen) return;
      setStatus(state.mode === "history" ? "loaded " + new Date().toLocaleTimeString()
                                         : "updated " + new Date().toLocaleTimeString());
      document.body.setAttribute("data-loaded", String(Number(document.body.getAttribute("data-loaded") || 0) + 1));
    } catch (e) {
      if (gen !== state.gen) return;
      setStatus(e.status === 401 || e.status === 403
        ? `${e.message} (open the dashboard as /?token=TOKEN with a viewer token)` : e.message, true);
    }
    if (state.mode === "live" && gen === state.gen) state.timer = setTimeout(tick, POLL_MS);
  };
  await tick();
}

async function main() {
  token();
  try {
    const m = await (await fetch("/ui/mode.json")).json();
    state.mode = m.mode;
  } catch (e) { state.mode = "live"; }
  if (state.mode === "history") {
    document.getElementById("mode").textContent = "history: a stopped cluster's state, read-only";
  }
  window.addEventListener("hashchange", route);
  route();
}

main();
