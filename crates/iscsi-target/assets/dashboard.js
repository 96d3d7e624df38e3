// portshift target dashboard: polls dashboard.json every second and draws, per portal, each
// metric over the last minutes (HIGH and LOW lines, moves marked), the configuration table
// (FIG. 2), the iSNS registrations (FIG. 3) and the event log. Every name shown comes from the
// network, so it is always written as text (textContent), never as markup.
"use strict";

const POLL_MS = 1000;
const KEEP = 300;            // samples kept: five minutes at one a second
const MIN_SPAN_MS = 60000;   // the charts show at least the last minute
const MOVES = new Set(["logout_requested", "forced_move"]);
const SVG = "http://www.w3.org/2000/svg";

const state = { metrics: [], fractions: [], history: [], status: null, now: null, last: 0, lastOk: 0, updates: 0 };

function el(tag, attrs, ...children) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function fmt(v, fraction) {
  if (v === null || v === undefined) return "–";
  v = v + 0;
  if (fraction) return (v * 100).toFixed(1) + "%";
  const r = Math.round(v * 10) / 10;
  return Number.isInteger(r) ? String(r) : r.toFixed(1);
}

function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

const portalName = (id) => "P" + id;

// The thresholds of `metric` in the balancing policy, or null when it is not balanced on.
function thresholds(metric) {
  const b = state.status && state.status.balance;
  const spec = b && b.specs.find((s) => s.metric === metric);
  return spec ? spec.thresholds : null;
}

// Metrics to chart: the balanced ones first, then every other one that is measured.
function chartedMetrics() {
  const idx = state.metrics.map((m, i) => i);
  const measured = (i) => state.history.some((s) => s.loads.some((p) => p[i] !== null && p[i] !== undefined));
  const balanced = idx.filter((i) => thresholds(state.metrics[i]));
  const others = idx.filter((i) => !thresholds(state.metrics[i]) && measured(i));
  return balanced.concat(others);
}

function niceMax(v, integer) {
  if (!(v > 0)) return integer ? 1 : 1e-9;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    const c = m * p;
    if (c >= v) return integer ? Math.max(1, Math.ceil(c)) : c;
  }
  return v;
}

function describe(k) {
  const t = k.target ? " (" + k.target + ")" : "";
  switch (k.type) {
    case "login":
    case "logout":
      return k.initiator + t + " on " + portalName(k.portal);
    case "registration_deleted":
    case "registration_restored":
      return k.target + " on " + portalName(k.portal);
    case "logout_requested":
    case "redirected":
      return k.initiator + t + " " + portalName(k.from) + " → " + portalName(k.to);
    case "forced_move":
      return k.initiator + t + " " + portalName(k.from) + " → " + (k.to === null ? "?" : portalName(k.to)) +
        " dropped after " + k.waited_ms + " ms (Time2Logout " + k.time2logout + " s)";
    case "failed":
      return k.what;
    case "operator":
      return k.action;
    default:
      return k.type;
  }
}

// One chart: the portal's load under metric `mi`, HIGH/LOW lines, moves off and onto it.
function chart(portalIndex, portalId, mi, t0, t1) {
  const metric = state.metrics[mi];
  const fraction = state.fractions[mi];
  const th = thresholds(metric);
  const pts = state.history
    .filter((s) => s.at_ms >= t0 && s.loads[portalIndex])
    .map((s) => [s.at_ms, s.loads[portalIndex][mi]]);
  const values = pts.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
  // "now" from the same snapshot as the tables (the newest history sample may be older).
  const current = state.now && state.now.loads[portalIndex];
  const now = current ? current[mi] : values.length ? values[values.length - 1] : null;
  const top = niceMax(Math.max(0, ...values, th ? th.high * 1.15 : 0) * 1.1, metric === "sessions");

  const svg = el("svg:svg", { role: "img", "aria-label": metric + " of " + portalName(portalId) });
  const W = Math.max(200, (document.querySelector("#portals .portal") || document.body).clientWidth - 30 || 560);
  const H = 110, L = 44, R = 6, T = 6, B = 16;
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const x = (ms) => L + ((ms - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);

  svg.append(el("svg:line", { class: "axis", x1: L, y1: y(0), x2: W - R, y2: y(0) }));
  svg.append(el("svg:line", { class: "axis", x1: L, y1: T, x2: L, y2: y(0) }));
  for (const v of [0, top / 2, top]) {
    svg.append(el("svg:text", { class: "tick", x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v, fraction)));
  }
  svg.append(el("svg:text", { class: "tick", x: L, y: H - 3 }, clock(t0)));
  svg.append(el("svg:text", { class: "tick", x: W - R, y: H - 3, "text-anchor": "end" }, clock(t1)));
  if (th) {
    svg.append(el("svg:line", { class: "high", x1: L, y1: y(th.high), x2: W - R, y2: y(th.high) }));
    svg.append(el("svg:text", { class: "label-high", x: W - R - 2, y: y(th.high) - 2, "text-anchor": "end" }, "HIGH " + fmt(th.high, fraction)));
    svg.append(el("svg:line", { class: "low", x1: L, y1: y(th.low), x2: W - R, y2: y(th.low) }));
    svg.append(el("svg:text", { class: "label-low", x: L + 4, y: y(th.low) - 2 }, "LOW " + fmt(th.low, fraction)));
  }

  // Moves: an orange mark where a session was asked off this portal, violet where one was sent to it.
  let moves = 0;
  for (const e of (state.status && state.status.events) || []) {
    const k = e.kind;
    if (!MOVES.has(k.type) || e.at_ms < t0 || e.at_ms > t1) continue;
    const out = k.from === portalId, into = k.to === portalId;
    if (!out && !into) continue;
    moves++;
    const cls = out ? "move-out" : "move-in";
    const mx = x(e.at_ms);
    const mark = el("svg:g", { class: "move", "data-event": e.seq },
      el("svg:title", {}, k.type.replace(/_/g, " ") + ": " + describe(k) + " — " + e.reason),
      el("svg:line", { class: cls, x1: mx, y1: T, x2: mx, y2: y(0) }),
      el("svg:text", { class: "label-move " + cls, x: mx + 2, y: T + 9 },
        (out ? "→" + portalName(k.to) : "←" + portalName(k.from))));
    svg.append(mark);
  }

  // The load, one polyline per run of measured samples.
  let drawn = 0, run = [];
  const flush = () => {
    if (run.length) svg.append(el("svg:polyline", { class: "load", points: run.join(" ") }));
    run = [];
  };
  for (const [ms, v] of pts) {
    if (v === null || v === undefined) { flush(); continue; }
    run.push(x(ms).toFixed(1) + "," + y(v).toFixed(1));
    drawn++;
  }
  flush();

  return el("figure", { class: "chart", "data-metric": metric, "data-points": drawn, "data-moves": moves },
    el("figcaption", {},
      el("span", {}, metric + (th ? " (balanced)" : "")),
      el("span", {}, "now ", el("b", {}, fmt(now, fraction)))),
    svg);
}

function renderPortals() {
  const box = document.getElementById("portals");
  const rows = state.status.table.portals;
  const last = state.history.length ? state.history[state.history.length - 1].at_ms : Date.now();
  const first = state.history.length ? state.history[0].at_ms : last;
  const t1 = last;
  const t0 = t1 - Math.min(KEEP * 1000, Math.max(MIN_SPAN_MS, t1 - first));
  const metrics = chartedMetrics();
  const cards = rows.map((row, i) =>
    el("section", { class: "portal", "data-portal": portalName(row.id) },
      el("h2", {}, portalName(row.id) + " ", el("small", {}, row.address + " · processor " + row.processor +
        " · " + row.sessions.length + " session" + (row.sessions.length === 1 ? "" : "s"))),
      ...metrics.map((mi) => chart(i, row.id, mi, t0, t1))));
  box.replaceChildren(...cards);
}

function loadCell(row) {
  const parts = [row.sessions.length + " sess", fmt(row.sessions.reduce((a, s) => a + s.iops, 0), false) + " iops"];
  const l = row.load || {};
  if (l.link_capacity) parts.push("bw " + fmt(Math.max(l.sent_bps, l.received_bps) / l.link_capacity, true));
  if ((l.cpu_busy || 0) + (l.cpu_wait || 0) > 0) parts.push("cpu " + fmt(l.cpu_busy + l.cpu_wait, true));
  return parts.join(" · ");
}

function renderFig2() {
  const body = document.querySelector("#fig2 tbody");
  const out = [];
  for (const row of state.status.table.portals) {
    const sessions = row.sessions.length ? row.sessions : [null];
    sessions.forEach((s, j) => {
      const tr = el("tr", { "data-portal": portalName(row.id) });
      if (j === 0) {
        const span = sessions.length;
        tr.append(el("td", { rowspan: span }, portalName(row.id)), el("td", { rowspan: span }, row.address),
          el("td", { rowspan: span }, "cpu" + row.processor), el("td", { rowspan: span }, loadCell(row)));
      }
      tr.append(el("td", {}, s ? s.initiator : "–"), el("td", {}, s ? s.target : "–"));
      out.push(tr);
    });
  }
  body.replaceChildren(...out);
}

function renderFig3() {
  const body = document.querySelector("#fig3 tbody");
  body.replaceChildren(...state.status.registrations.map((r) =>
    el("tr", { class: r.registered ? "registered" : "deleted" },
      el("td", {}, r.target), el("td", {}, portalName(r.portal)), el("td", {}, r.address),
      el("td", { class: "num" }, r.tag), el("td", {}, r.registered ? "registered" : "deleted by the balancer"))));
}

function renderEvents() {
  const body = document.querySelector("#events tbody");
  const events = state.status.events.slice().reverse();
  body.replaceChildren(...events.map((e) =>
    el("tr", { class: e.kind.type, "data-seq": e.seq },
      el("td", { class: "num" }, e.seq), el("td", {}, clock(e.at_ms)),
      el("td", {}, e.kind.type.replace(/_/g, " ")), el("td", {}, describe(e.kind)),
      el("td", { class: "reason" }, e.reason))));
}

function renderSummary() {
  const s = state.status;
  const parts = [];
  parts.push("iSNS " + (s.isns || "none") + (s.isns_contact ? (s.isns_contact.ok ? " (registered)" : " (" + s.isns_contact.detail + ")") : ""));
  if (s.balance) {
    parts.push("balance " + s.balance.specs.map((sp) => {
      const f = sp.metric === "bandwidth" || sp.metric === "cpu";
      return sp.metric + " HIGH " + fmt(sp.thresholds.high, f) + " LOW " + fmt(sp.thresholds.low, f);
    }).join(", ") + ", cooldown " + s.balance.cooldown_ms / 1000 + " s");
  } else {
    parts.push("balancing off");
  }
  parts.push("logout requests " + s.logout_requests + " · forced moves " + s.forced_moves + " · ping-pongs " + s.ping_pongs);
  document.getElementById("summary").textContent = parts.join(" — ");
}

function render() {
  if (!state.status) return;
  renderSummary();
  renderPortals();
  renderFig2();
  renderFig3();
  renderEvents();
}

function setConnection(ok, text) {
  const c = document.getElementById("connection");
  c.className = "state " + (ok ? "live" : "down");
  c.textContent = text;
}

async function poll() {
  try {
    const r = await fetch("dashboard.json?since=" + state.last, { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const feed = await r.json();
    state.metrics = feed.metrics;
    state.fractions = feed.fractions;
    state.status = feed.status;
    state.now = feed.now;
    for (const s of feed.history) {
      if (s.at_ms > state.last) {
        state.history.push(s);
        state.last = s.at_ms;
      }
    }
    if (state.history.length > KEEP) state.history.splice(0, state.history.length - KEEP);
    state.lastOk = Date.now();
    state.updates += 1;
    render();
    document.body.dataset.updates = state.updates;
    setConnection(true, "live · " + clock(state.lastOk));
  } catch (e) {
    setConnection(false, "no answer" + (state.lastOk ? " since " + clock(state.lastOk) : "") + ": " + e.message);
  }
  setTimeout(poll, POLL_MS);
}

poll();
