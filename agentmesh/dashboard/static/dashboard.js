// agentmesh dashboard: renders /api/state and follows /api/events (server-sent events).
// Everything is built with DOM calls and textContent: no HTML from the mesh is ever parsed.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  let current = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function shortDid(did) {
    if (!did) return "–";
    return did.length > 24 ? did.slice(0, 14) + "…" + did.slice(-6) : did;
  }

  function time(ms) {
    if (!ms) return "–";
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function badge(text, kind) {
    return el("span", { class: "badge " + (kind || text) }, text);
  }

  function replaceRows(table, rows) {
    const body = document.querySelector(table + " tbody");
    body.replaceChildren(...rows);
    return rows.length;
  }

  function nameOf(state, did) {
    if (!did) return "–";
    for (const agent of state.agents) if (agent.did === did) return agent.name;
    return shortDid(did);
  }

  function renderHeader(state) {
    document.getElementById("mesh").textContent = "mesh " + state.mesh;
    document.getElementById("mode").textContent = state.mode === "demo" ? "demo (in memory)" : state.mode;
    const access = document.getElementById("access");
    access.textContent = state.actions ? "signed actions allowed" : "read-only";
    access.className = "chip" + (state.actions ? " actions" : "");
    document.getElementById("updated").textContent = "updated " + time(state.generated_at_ms);
    const warnings = document.getElementById("warnings");
    warnings.hidden = !state.warnings.length;
    warnings.replaceChildren(...state.warnings.map((w) => el("div", {}, "⚠ " + w)));
    document.getElementById("operations-panel").hidden = !state.actions;
  }

  function renderAgents(state) {
    const rows = state.agents.map((a) => {
      const blocked = a.status === "quarantined" || a.status === "revoked";
      const report = a.report;
      let last = "no report";
      if (report) {
        const age = Math.max(0, Math.round((state.generated_at_ms - report.received_at_ms) / 1000));
        last = age + " s ago";
      }
      const refused = report ? Object.values(report.rejected).reduce((x, y) => x + y, 0) : null;
      return el(
        "tr",
        { "data-did": a.did, "data-status": a.status, class: blocked ? "blocked" : a.drift ? "drifting" : "" },
        el("td", { class: "name" }, a.name),
        el("td", { class: "did", title: a.did }, shortDid(a.did)),
        el("td", { class: "status" }, badge(a.status), a.held && a.status !== "held" ? badge("held") : null),
        el("td", {}, a.ring === null ? "–" : el("span", { class: "ring r" + a.ring }, String(a.ring))),
        el("td", {}, a.score === null ? "–" : a.score.toFixed(3)),
        el("td", { class: "drift" }, a.drift ? badge(a.drift.kind, "drift") : "–"),
        el("td", {}, a.capabilities.join(", ") || "–"),
        el("td", {}, report && report.stale ? badge(last, "stale") : last),
        el("td", {}, refused === null ? "–" : String(refused)),
      );
    });
    replaceRows("#agents", rows);
    document.getElementById("agent-count").textContent = "(" + rows.length + ")";
  }

  function renderGraph(state) {
    const graph = state.trust;
    const root = document.getElementById("trust-graph");
    const meta = document.getElementById("graph-meta");
    meta.textContent = graph.available
      ? "(" + graph.nodes.length + " agents, " + graph.edges.length + " edges, " + graph.receipts + " receipts)"
      : "(receipt stream unavailable)";
    const width = 520, height = 420, cx = width / 2, cy = height / 2;
    const radius = Math.min(cx, cy) - 60;
    const nodes = graph.nodes.slice().sort((a, b) => a.name.localeCompare(b.name) || a.did.localeCompare(b.did));
    const blocked = new Set(state.agents.filter((a) => a.status === "quarantined" || a.status === "revoked").map((a) => a.did));
    const at = new Map();
    const size = new Map(graph.nodes.map((n) => [n.did, 7 + 14 * Math.sqrt(n.score)]));
    nodes.forEach((n, i) => {
      const angle = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2;
      at.set(n.did, [cx + radius * Math.cos(angle), cy + radius * Math.sin(angle)]);
    });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa0a6" }));
    defs.append(marker);
    const edges = svg("g", { class: "edges" });
    const maxEvidence = Math.max(1, ...graph.edges.map((e) => e.evidence));
    for (const e of graph.edges) {
      const from = at.get(e.source), to = at.get(e.target);
      if (!from || !to) continue;
      const hue = Math.round(120 * e.estimate);
      // End the arrow at the subject's rim, not its centre.
      const dx = to[0] - from[0], dy = to[1] - from[1];
      const length = Math.max(1, Math.hypot(dx, dy));
      const back = (size.get(e.target) || 8) + 3;
      const x2 = to[0] - (dx * back) / length, y2 = to[1] - (dy * back) / length;
      const line = svg("line", {
        class: "edge", x1: from[0], y1: from[1], x2: x2.toFixed(1), y2: y2.toFixed(1),
        stroke: "hsl(" + hue + ", 70%, 40%)",
        "stroke-width": (1 + 3 * Math.sqrt(e.evidence / maxEvidence)).toFixed(2),
        "stroke-opacity": 0.55, "marker-end": "url(#arrow)",
      });
      const title = svg("title");
      title.textContent = nameOf(state, e.source) + " → " + nameOf(state, e.target) +
        ": estimate " + e.estimate.toFixed(2) + ", evidence " + e.evidence.toFixed(1);
      line.append(title);
      edges.append(line);
    }
    const group = svg("g", { class: "nodes" });
    for (const n of nodes) {
      const [x, y] = at.get(n.did);
      const cls = "node r" + n.ring + (n.drift ? " drift" : "") + (blocked.has(n.did) ? " blocked" : "");
      const g = svg("g", { class: cls, "data-did": n.did });
      g.append(svg("circle", { cx: x, cy: y, r: size.get(n.did).toFixed(1) }));
      const label = svg("text", { x: x, y: y + (y < cy ? -16 : 26), "text-anchor": "middle" });
      label.textContent = n.name + (n.drift ? " ⚠ drift" : "") + (n.pre_trusted ? " ★" : "");
      const title = svg("title");
      title.textContent = n.did + "\nring " + n.ring + ", score " + n.score.toFixed(3) + (n.drift ? "\ndrift detected" : "");
      g.append(label, title);
      group.append(g);
    }
    root.replaceChildren(defs, edges, group);
  }

  function renderRefusals(state) {
    const rows = state.refusals.map((r) =>
      el(
        "tr",
        { "data-code": r.code },
        el("td", {}, time(r.at_ms)),
        el("td", { title: r.node }, r.node_name),
        el("td", { title: r.peer || "" }, r.peer_name || shortDid(r.peer)),
        el("td", {}, badge(r.code, "failed")),
        el("td", { class: "rule" }, r.rule || "–"),
        el("td", { class: "detail" }, r.detail),
      ),
    );
    document.getElementById("refusals-empty").hidden = replaceRows("#refusals", rows) > 0;
  }

  function renderQuarantines(state) {
    const rows = state.quarantines.map((q) =>
      el(
        "tr",
        { "data-did": q.did },
        el("td", { title: q.did }, q.name),
        el("td", {}, badge(q.status)),
        el("td", { class: "did", title: q.issuer }, q.issuer_name || shortDid(q.issuer)),
        el("td", { class: "detail" }, q.reason),
        el("td", {}, time(q.issued_at_ms)),
      ),
    );
    document.getElementById("quarantines-empty").hidden = replaceRows("#quarantines", rows) > 0;
  }

  function timelineClass(kind) {
    if (kind.includes("failed") || kind.includes("attention")) return "failed";
    if (kind.includes("compensat") || kind.includes("handoff")) return "compensation";
    if (kind.includes("succeeded") || kind === "saga.completed") return "done";
    return "";
  }

  function renderSagas(state) {
    const open = new Set(Array.from(document.querySelectorAll("#sagas details[open]")).map((d) => d.dataset.saga));
    const cards = state.sagas.map((s) => {
      const steps = el("div", { class: "steps" },
        ...s.steps.map((step) => el("span", { class: "step " + step.status, title: step.agent || "" },
          step.name + ": " + step.status + (step.code ? " (" + step.code + ")" : ""))));
      // Compensations matter once a saga turned back; a completed one has none to run.
      const undo = s.status === "completed" ? [] : s.compensations.filter((c) => c.status !== "not-needed");
      const comps = undo.length
        ? el("div", { class: "muted" }, "compensations: " +
            undo.map((c) => c.step + " " + c.status).join(", "))
        : null;
      const items = s.timeline.map((r) =>
        el("li", { class: timelineClass(r.kind) },
          time(r.at_ms) + " ", el("span", { class: "kind" }, r.kind),
          r.step ? " " + r.step : "", r.agent ? " @" + (r.agent_name || shortDid(r.agent)) : "",
          r.detail ? " — " + r.detail : ""));
      const details = el("details", { "data-saga": s.id, open: open.has(s.id) ? "" : null },
        el("summary", {}, "timeline (" + s.timeline.length + " records)"),
        el("ol", { class: "timeline" }, ...items));
      return el("div", { class: "saga", "data-saga": s.id },
        el("strong", {}, s.id), " ", badge(s.status), " ",
        el("span", { class: "muted" }, s.name + ", updated " + time(s.updated_ms)),
        steps, comps, details);
    });
    document.getElementById("sagas").replaceChildren(...cards);
    document.getElementById("sagas-empty").hidden = cards.length > 0;
  }

  function number(value, digits) {
    return typeof value === "number" ? value.toFixed(digits) : "–";
  }

  function renderSlo(state) {
    const rows = state.slo.map((s) => {
      const burn = typeof s.burn_rate === "number" ? s.burn_rate : 0;
      const budget = typeof s.error_budget_remaining === "number" ? s.error_budget_remaining : 0;
      return el(
        "tr",
        {},
        el("td", { title: s.node }, s.node_name),
        el("td", {}, String(s.capability ?? "–")),
        el("td", {}, number(s.objective, 3)),
        el("td", {}, number(s.success_rate, 3)),
        el("td", {}, el("meter", { min: 0, max: 1, low: 0.25, high: 0.6, optimum: 1, value: budget }), " " + number(budget, 2)),
        el("td", {}, burn > 1 || s.burning === true ? badge(burn.toFixed(2) + "×" + (s.burning ? " burning" : ""), "failed") : burn.toFixed(2) + "×"),
      );
    });
    document.getElementById("slo-empty").hidden = replaceRows("#slo", rows) > 0;
  }

  function render(state) {
    // Versions count per dashboard process: after a restart, take the new one's.
    if (current && state.dashboard === current.dashboard && state.version < current.version) return;
    current = state;
    renderHeader(state);
    renderAgents(state);
    renderGraph(state);
    renderRefusals(state);
    renderQuarantines(state);
    renderSagas(state);
    renderSlo(state);
    document.body.dataset.version = String(state.version);
  }

  function connection(live) {
    const chip = document.getElementById("connection");
    chip.textContent = live ? "live" : "reconnecting";
    chip.className = "chip " + (live ? "live" : "offline");
  }

  function follow() {
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => connection(true));
    source.addEventListener("error", () => connection(false));
    source.addEventListener("state", (event) => {
      connection(true);
      render(JSON.parse(event.data));
    });
  }

  async function submitOperation() {
    const result = document.getElementById("operation-result");
    result.textContent = "sending…";
    try {
      const response = await fetch("/api/operations", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: document.getElementById("operation").value,
      });
      const answer = await response.json();
      result.textContent = response.ok
        ? "applied: " + answer.kind + " " + answer.subject
        : "refused (" + answer.error + "): " + answer.detail;
    } catch (error) {
      result.textContent = "not sent: " + error;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("submit-operation").addEventListener("click", submitOperation);
    fetch("/api/state")
      .then((response) => response.json())
      .then((state) => { if (state.version !== undefined) render(state); })
      .catch(() => connection(false))
      .finally(follow);
  });
})();
