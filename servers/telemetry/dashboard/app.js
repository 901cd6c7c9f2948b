// The Geoplex telemetry dashboard: panels of PromQL over /api/v1/query_range drawn with
// uPlot, a query box, the firing alerts (/api/v1/alerts) and the silences
// (/api/v1/silences). Every label and message is written with textContent, never as
// HTML. The page state is on window.geoplexDashboard for tests and the console.
"use strict";

(function () {
  // the line colours, in series order (the browser test looks for the first)
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const TARGET_POINTS = 250;
  const NICE_STEPS = [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                      86400];
  const REFRESH_MS = 30000;
  // tick steps for bytes: 1, 2, 5, 10... B, then KiB, MiB... (whole binary units)
  const BINARY_INCRS = [0, 1, 2, 3, 4, 5].flatMap((k) => [1, 2, 5, 10, 20, 50, 100, 200, 500]
    .map((x) => x * 1024 ** k));
  // What the mesh writes: OTLP metrics named as Prometheus's OTLP receiver names them
  // (servers/telemetry/otlp.py: job = the resource's service.name, e.g. geoplex-maps),
  // node_exporter's names for the hosts, and the broker's consumer-group lag gauge.
  const PANELS = [
    { id: "rps", title: "Requests/s by service", unit: "/s",
      query: "sum by (job) (rate(rpc_server_call_duration_seconds_count[5m]))" },
    // streams and long polls (geoplex_rpc_waits="stream" | "poll") wait by design
    { id: "p99", title: "p99 latency by service", unit: "s",
      query: "histogram_quantile(0.99, sum by (job, le) " +
             "(rate(rpc_server_call_duration_seconds_bucket{geoplex_rpc_waits=\"\"}[5m])))" },
    // server errors as the RpcErrorRatioHigh rule counts them (UNKNOWN, DEADLINE_EXCEEDED,
    // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS): a client's bad request or a
    // stream it cancelled is not the service failing
    { id: "errors", title: "Server errors/s by service", unit: "/s",
      query: "sum by (job) (rate(rpc_server_call_duration_seconds_count" +
             "{rpc_grpc_status_code=~\"2|4|12|13|14|15\"}[5m]))" },
    { id: "lag", title: "Broker consumer lag (messages)", unit: "",
      query: "sum by (group, topic) (geoplex_broker_consumer_lag)" },
    { id: "cpu", title: "Host CPU busy", unit: "%",
      query: "1 - avg by (instance) (rate(node_cpu_seconds_total{mode=\"idle\"}[5m]))" },
    { id: "memory", title: "Host memory used", unit: "%",
      query: "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes" },
  ];

  const state = { ready: false, library: false, refreshes: 0, panels: {},
                  query: { runs: 0, state: "", series: 0 }, alerts: "", silences: "" };
  window.geoplexDashboard = state;
  const charts = new Map();   // container element -> uPlot instance

  const $ = (id) => document.getElementById(id);

  function setStatus(el, message, kind) {
    el.textContent = message;
    el.className = "status" + (kind ? " " + kind : "");
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  // -- numbers and units ---------------------------------------------------------------

  function trim(x, digits) {
    const text = x.toFixed(digits);
    return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
  }

  function si(v) {
    const a = Math.abs(v);
    for (const [size, suffix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (a >= size) return trim(v / size, 2) + suffix;
    }
    if (a === 0 || a >= 1) return trim(v, 2);
    if (a >= 0.01) return trim(v, 3);
    return v.toPrecision(2);
  }

  function formatValue(v, unit) {
    if (v == null || !Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    switch (unit) {
      case "s":
        if (a === 0) return "0";
        if (a < 1e-3) return trim(v * 1e6, 1) + " µs";
        if (a < 1) return trim(v * 1e3, 1) + " ms";
        return trim(v, 2) + " s";
      case "%":
        return trim(v * 100, 1) + "%";
      case "B":
      case "B/s": {
        const units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let n = 0;
        while (n < units.length - 1 && a >= 1024 ** (n + 1)) n += 1;
        return trim(v / 1024 ** n, 1) + " " + units[n] + (unit === "B/s" ? "/s" : "");
      }
      case "/s":
        return si(v) + "/s";
      default:
        return si(v);
    }
  }

  // the unit a typed query's metric name suggests (a rough reading, as the CLI's)
  function guessUnit(query) {
    const text = query.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, "\"\"")
      .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)/g, " ")
      .replace(/\{[^{}]*\}/g, "").replace(/\[[^\]]*\]/g, "");
    const names = text.match(/\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()/g) || [];
    const rate = /\b(i?rate|deriv)\s*\(/.test(text);
    const quantile = /histogram_quantile\s*\(/.test(text);
    const units = new Set();
    for (const name of names) {
      let base = name.replace(/_(bucket|sum|count|total)$/, "");
      const counter = base !== name;
      let unit = "";
      if (/_bytes$/.test(base)) unit = "B";
      else if (/_seconds$/.test(base)) unit = "s";
      else if (/_ratio$/.test(base)) unit = "%";
      if (!quantile && rate && counter) unit = unit === "B" ? "B/s" : "/s";
      if (unit || /_/.test(name)) units.add(unit);
    }
    return units.size === 1 ? [...units][0] : "";
  }

  // -- series and legend ---------------------------------------------------------------

  function selectorText(metric) {
    const name = metric.__name__ || "";
    const rest = Object.keys(metric).filter((k) => k !== "__name__").sort()
      .map((k) => `${k}="${metric[k]}"`);
    return rest.length ? `${name}{${rest.join(", ")}}` : (name || "{}");
  }

  // the labels that tell the series apart (not the whole label sets)
  function legendLabels(metrics, query) {
    if (metrics.length === 1) {
      return [Object.keys(metrics[0]).length ? selectorText(metrics[0]) : query];
    }
    const names = [...new Set(metrics.flatMap((m) => Object.keys(m)))].sort();
    const differ = names.filter((k) => new Set(metrics.map((m) => m[k])).size > 1);
    return metrics.map((m, n) => differ.filter((k) => k in m)
      .map((k) => (k === "__name__" ? m[k] : `${k}=${m[k]}`)).join(", ") || `series ${n + 1}`);
  }

  function toColumns(result) {
    const times = [...new Set(result.flatMap((s) => s.values.map((p) => p[0])))]
      .sort((a, b) => a - b);
    const index = new Map(times.map((t, n) => [t, n]));
    const columns = result.map((s) => {
      const column = new Array(times.length).fill(null);
      for (const [t, raw] of s.values) {
        const v = parseFloat(raw);
        column[index.get(t)] = Number.isFinite(v) ? v : null;
      }
      return column;
    });
    return [times, ...columns];
  }

  function stepFor(seconds) {
    const wanted = seconds / TARGET_POINTS;
    return NICE_STEPS.find((s) => s >= wanted) || Math.ceil(wanted / 86400) * 86400;
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok || !body || body.status === "error") {
      const error = new Error((body && body.error) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  async function queryRange(query) {
    const end = Math.floor(Date.now() / 1000);
    const range = Number($("range").value);
    const step = stepFor(range);
    const params = new URLSearchParams({ query, start: String(end - range),
                                         end: String(end), step: String(step) });
    const body = await getJson("/api/v1/query_range?" + params.toString());
    const result = (body.data && body.data.result) || [];
    return { result: result.filter((s) => s.values && s.values.length),
             resolution: body.resolution || "raw", warnings: body.warnings || [], step };
  }

  // -- drawing -------------------------------------------------------------------------

  // the y axis's width: room for its longest tick label
  function axisWidth(values) {
    const longest = Math.max(0, ...(values || []).map((v) => String(v).length));
    return Math.max(40, longest * 7 + 20);
  }

  function draw(container, answer, unit, query, height) {
    const old = charts.get(container);
    if (old) {
      old.destroy();
      charts.delete(container);
    }
    clear(container);
    const labels = legendLabels(answer.result.map((s) => s.metric || {}), query);
    const data = toColumns(answer.result);
    const opts = {
      width: Math.max(container.clientWidth, 200),
      height,
      scales: { x: { time: true } },
      legend: { live: false },
      cursor: { drag: { x: true, y: false } },
      axes: [
        { stroke: "#555", grid: { stroke: "#eee" } },
        Object.assign({ stroke: "#555", grid: { stroke: "#eee" },
                        size: (u, values) => axisWidth(values),
                        values: (u, splits) => splits.map((v) => formatValue(v, unit)) },
                      unit === "B" || unit === "B/s" ? { incrs: BINARY_INCRS } : {}),
      ],
      series: [{}].concat(labels.map((label, n) => ({
        label, stroke: COLOURS[n % COLOURS.length], width: 1.6,
        value: (u, v) => formatValue(v, unit),
      }))),
    };
    charts.set(container, new window.uPlot(opts, data, container));
  }

  function noteFor(answer) {
    const notes = [];
    if (answer.resolution && answer.resolution !== "raw") {
      notes.push(`from the ${answer.resolution} rollup tier`);
    }
    return notes.concat(answer.warnings).join("; ");
  }

  async function runPanel(panel, el) {
    const status = el.querySelector(".status");
    const chart = el.querySelector(".chart");
    try {
      const answer = await queryRange(panel.query);
      if (!answer.result.length) {
        const old = charts.get(chart);
        if (old) { old.destroy(); charts.delete(chart); }
        clear(chart);
        setStatus(status, "no data", "empty");
        state.panels[panel.id] = { state: "no data", series: 0 };
        return;
      }
      if (!state.library) {
        setStatus(status, `${answer.result.length} series (no chart library)`, "empty");
        state.panels[panel.id] = { state: "no library", series: answer.result.length };
        return;
      }
      draw(chart, answer, panel.unit, panel.query, 180);
      setStatus(status, noteFor(answer), "note");
      state.panels[panel.id] = { state: "drawn", series: answer.result.length };
    } catch (e) {
      setStatus(status, String(e.message || e), "error");
      state.panels[panel.id] = { state: "error", error: String(e.message || e) };
    }
  }

  function buildPanels() {
    const template = $("panel-template");
    const root = $("panels");
    return PANELS.map((panel) => {
      const el = template.content.firstElementChild.cloneNode(true);
      el.id = "panel-" + panel.id;
      el.querySelector("h2").textContent = panel.title;
      el.querySelector(".promql").textContent = panel.query;
      root.appendChild(el);
      return [panel, el];
    });
  }

  async function runQuery() {
    const query = $("query").value.trim();
    const status = $("query-status");
    const chart = $("query-chart");
    if (!query) return;
    state.query.state = "running";
    setStatus(status, "running…", "");
    try {
      const answer = await queryRange(query);
      state.query.series = answer.result.length;
      if (!answer.result.length) {
        const old = charts.get(chart);
        if (old) { old.destroy(); charts.delete(chart); }
        clear(chart);
        setStatus(status, "no data", "empty");
        state.query.state = "no data";
      } else if (!state.library) {
        setStatus(status, `${answer.result.length} series (no chart library)`, "empty");
        state.query.state = "no library";
      } else {
        draw(chart, answer, guessUnit(query), query, 300);
        setStatus(status, [`${answer.result.length} series`, noteFor(answer)]
          .filter(Boolean).join("; "), "note");
        state.query.state = "drawn";
      }
    } catch (e) {
      setStatus(status, String(e.message || e), "error");
      state.query.state = "error";
    }
    state.query.runs += 1;
  }

  // -- alerts and silences -------------------------------------------------------------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
  }

  function fillTable(table, rows) {
    const body = table.querySelector("tbody");
    clear(body);
    for (const values of rows) {
      const tr = document.createElement("tr");
      for (const v of values) cell(tr, v);
      body.appendChild(tr);
    }
    table.hidden = rows.length === 0;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  async function loadAlerts() {
    const status = $("alerts-status");
    const table = $("alerts");
    try {
      const body = await getJson("/api/v1/alerts");
      const alerts = (body.data && body.data.alerts) || [];
      const firing = alerts.filter((a) => a.state === "firing");
      const pending = alerts.length - firing.length;
      fillTable(table, firing.map((a) => {
        const labels = Object.assign({}, a.labels || {});
        const name = labels.alertname || "";
        delete labels.alertname;
        return [name, selectorText(labels), a.state || "", when(a.activeAt),
                (a.annotations && a.annotations.summary) || ""];
      }));
      state.alerts = firing.length ? `${firing.length} firing` : "none firing";
      setStatus(status, (firing.length ? `${firing.length} firing` : "no alerts firing") +
                (pending ? `, ${pending} pending` : ""), firing.length ? "alert" : "empty");
    } catch (e) {
      table.hidden = true;
      if (e.status === 404) {
        state.alerts = "alerting off";
        setStatus(status, "alerting off (no rule files: GEOPLEX_TELEMETRY_RULE_FILES)",
                  "empty");
      } else {
        state.alerts = "error";
        setStatus(status, String(e.message || e), "error");
      }
    }
  }

  async function loadSilences() {
    const status = $("silences-status");
    const table = $("silences");
    try {
      const body = await getJson("/api/v1/silences");
      const data = body.data || {};
      const silences = data.silences || [];
      fillTable(table, silences.map((s) => [s.text || "", (s.status && s.status.state) || "",
                                            when(s.endsAt), s.createdBy || "",
                                            s.comment || ""]));
      if (!data.notifiers) {
        state.silences = "no notifier";
        setStatus(status, "no notifier configured (GEOPLEX_TELEMETRY_NOTIFIERS)", "empty");
      } else {
        state.silences = `${silences.length}`;
        setStatus(status, [silences.length ? `${silences.length} silence(s)` : "no silences"]
          .concat(body.warnings || []).join("; "), silences.length ? "note" : "empty");
      }
    } catch (e) {
      table.hidden = true;
      state.silences = "error";
      setStatus(status, e.status === 404 ? "silences unavailable" : String(e.message || e),
                e.status === 404 ? "empty" : "error");
    }
  }

  // -- the chart library ---------------------------------------------------------------

  function loadLibrary(config) {
    const notice = $("library");
    if (!config.chartLibrary) {
      notice.textContent = "The chart library (uPlot) is not installed on this server, so " +
        "the panels show no charts. Install it with: " + config.install;
      notice.hidden = false;
      return Promise.resolve(false);
    }
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = "/dashboard/vendor/uPlot.min.css";
    document.head.appendChild(css);
    return new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = "/dashboard/vendor/uPlot.iife.min.js";
      script.addEventListener("load", () => resolve(typeof window.uPlot === "function"));
      script.addEventListener("error", () => resolve(false));
      document.head.appendChild(script);
    }).then((ok) => {
      if (!ok) {
        notice.textContent = "The chart library (uPlot) failed to load; the panels show no " +
          "charts. Install it with: " + config.install;
        notice.hidden = false;
      }
      return ok;
    });
  }

  // -- start ---------------------------------------------------------------------------

  let panels = [];
  let busy = false;

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      await Promise.all([...panels.map(([p, el]) => runPanel(p, el)), loadAlerts(),
                         loadSilences()]);
      if ($("query").value.trim()) await runQuery();
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      state.refreshes += 1;
    } finally {
      busy = false;
    }
  }

  async function start() {
    panels = buildPanels();
    let config = { chartLibrary: false, install: "make browser-deps" };
    try {
      config = await getJson("/dashboard/config.json");
    } catch (e) {
      // the page still shows alerts and silences
    }
    state.library = await loadLibrary(config);
    $("query-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runQuery();
    });
    $("refresh").addEventListener("click", () => refresh());
    $("range").addEventListener("change", () => refresh());
    window.addEventListener("resize", () => {
      for (const [container, chart] of charts) {
        chart.setSize({ width: Math.max(container.clientWidth, 200), height: chart.height });
      }
    });
    await refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
    state.ready = true;
  }

  start();
})();
