// IdentityLock ComfyUI extension: live training chart (LoRATrainAdaptive), seed results table (DriftSeedSearch),
// "Open report" button (IdentityMetrics) and pose/light readout (MatchedPortrait).
// Message schemas: docs/web.md. Pure logic lives in ./lib/logic.js (tested with `node --test web/`).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  SeedTable,
  TrainHistory,
  chartGeometry,
  portraitLines,
  reportPathFromOutput,
  reportUrl,
  seedRowCells,
} from "./lib/logic.js";

const PHASE_COLORS = { COARSE: "#e07b39", MID: "#d9b44a", MID_FINE: "#5aa469", FINAL_FINE: "#4a90d9" };

function findNode(id) {
  if (id === undefined || id === null) return null;
  const graph = app.graph;
  const direct = graph.getNodeById(Number(id)) ?? graph.getNodeById(id);
  if (direct) return direct;
  const last = String(id).split(":").pop(); // node inside a subgraph: "parent:child"
  return graph.getNodeById(Number(last)) ?? null;
}

// Heights include the ~20 px the front end (1.35, ComfyUI 0.8) takes as the DOM widget's margin: at 190 the
// training panel's fourth line (ETA) was cut off in a real run (170 px shown for 182 px of content).
function addPanel(node, name, el, height) {
  el.style.width = "100%";
  el.style.boxSizing = "border-box";
  if (typeof node.addDOMWidget === "function") {
    node.addDOMWidget(name, "identitylock", el, { serialize: false, getMinHeight: () => height, getHeight: () => height });
  }
  return el;
}

function panelBox() {
  const el = document.createElement("div");
  el.style.cssText = "font:11px monospace;color:#ddd;background:#1d1d1d;border-radius:4px;padding:4px;overflow:auto;";
  return el;
}

// ------------------------------------------------------------------------------------------------------ training
function setupTrain(node) {
  const box = addPanel(node, "identitylock_train", panelBox(), 215);
  const canvas = document.createElement("canvas");
  canvas.width = 300;
  canvas.height = 120;
  canvas.style.cssText = "width:100%;height:120px;display:block;";
  const text = document.createElement("pre");
  text.style.cssText = "margin:2px 0 0 0;white-space:pre-wrap;";
  text.textContent = "waiting for training…";
  box.append(canvas, text);
  node.__ilTrain = { history: new TrainHistory(), canvas, text };
}

function drawTrain(state) {
  const { history, canvas, text } = state;
  const w = (canvas.width = canvas.clientWidth || 300);
  const h = (canvas.height = canvas.clientHeight || 120);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const g = chartGeometry(history.points, history.boundaries, w, h, 8);
  ctx.font = "10px monospace";
  for (const b of g.bounds) {
    ctx.strokeStyle = PHASE_COLORS[b.phase] || "#888";
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(b.x, 0);
    ctx.lineTo(b.x, h);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(b.phase, b.x + 2, 10);
  }
  const stroke = (pts, color) => {
    if (!pts.length) return;
    ctx.strokeStyle = color;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
  };
  stroke(g.line, "#9ecbff");
  stroke(g.val, "#ffb36b");
  if (g.ymax !== null) {
    ctx.fillStyle = "#aaa";
    ctx.fillText(`${g.ymax.toPrecision(3)}${g.log ? " (log)" : ""}`, 2, h - 2 - (h - 16));
    ctx.fillText(g.ymin.toPrecision(3), 2, h - 2);
  }
  text.textContent = history.summary().join("\n");
}

// ----------------------------------------------------------------------------------------------------- seed table
function setupSeeds(node) {
  const box = addPanel(node, "identitylock_seeds", panelBox(), 170);
  const head = document.createElement("div");
  head.textContent = "seed search: waiting…";
  const table = document.createElement("table");
  table.style.cssText = "width:100%;border-collapse:collapse;";
  box.append(head, table);
  node.__ilSeeds = { table: new SeedTable(), head, el: table };
}

function drawSeeds(state) {
  const { table, head, el } = state;
  const c = table.counts();
  head.textContent = `${c.total} seeds, ${c.locked} locked — click a row to copy its seed`;
  el.replaceChildren();
  const tr = document.createElement("tr");
  for (const h of ["seed", "drift", ""]) {
    const th = document.createElement("th");
    th.textContent = h;
    th.style.textAlign = "left";
    tr.append(th);
  }
  el.append(tr);
  for (const row of table.sorted().slice(0, 200)) {
    const r = document.createElement("tr");
    r.style.cursor = "pointer";
    r.style.color = row.locked ? "#7fdc8a" : row.drift === null ? "#888" : "#ddd";
    r.title = "copy seed";
    for (const cell of seedRowCells(row)) {
      const td = document.createElement("td");
      td.textContent = cell; // text only: never HTML from messages
      r.append(td);
    }
    r.addEventListener("click", () => {
      const s = String(row.seed);
      (navigator.clipboard?.writeText(s) ?? Promise.reject()).then(
        () => (head.textContent = `copied seed ${s}`),
        () => window.prompt("Seed", s),
      );
    });
    el.append(r);
  }
}

// --------------------------------------------------------------------------------------------------- portrait
function setupPortrait(node) {
  const box = addPanel(node, "identitylock_portrait", panelBox(), 135);
  const pre = document.createElement("pre");
  pre.style.margin = "0";
  pre.textContent = "pose / light: waiting…";
  box.append(pre);
  node.__ilPortrait = pre;
}

// ------------------------------------------------------------------------------------------------------ report
function setupReport(node) {
  node.__ilReport = null;
  node.addWidget("button", "Open report", null, () => {
    const url = reportUrl(node.__ilReport);
    if (!url) {
      alert("IdentityMetrics: run the node first; the report link appears when it has written its report.");
      return;
    }
    window.open(api.apiURL ? api.apiURL(url) : url, "_blank", "noopener");
  });
}

app.registerExtension({
  name: "IdentityLock.Panels",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const setups = {
      LoRATrainAdaptive: setupTrain,
      DriftSeedSearch: setupSeeds,
      MatchedPortrait: setupPortrait,
      IdentityMetrics: setupReport,
    };
    const setup = setups[nodeData.name];
    if (!setup) return;
    const onCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onCreated?.apply(this, arguments);
      try {
        setup(this);
      } catch (err) {
        console.warn("IdentityLock: panel setup failed", err);
      }
      return r;
    };
    if (nodeData.name === "IdentityMetrics") {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const path = reportPathFromOutput(message);
        if (path) this.__ilReport = path;
      };
    }
  },
  async setup() {
    api.addEventListener("identitylock.train", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node?.__ilTrain) return;
      node.__ilTrain.history.push(detail);
      drawTrain(node.__ilTrain);
      node.setDirtyCanvas?.(true, false);
    });
    api.addEventListener("identitylock.seed", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node?.__ilSeeds) return;
      if (node.__ilSeeds.table.push(detail)) drawSeeds(node.__ilSeeds);
    });
    api.addEventListener("identitylock.portrait", ({ detail }) => {
      const node = findNode(detail?.node);
      if (node?.__ilPortrait) node.__ilPortrait.textContent = portraitLines(detail).join("\n") || "–";
    });
    api.addEventListener("identitylock.train_done", ({ detail }) => {
      const node = findNode(detail?.node);
      if (!node?.__ilTrain) return;
      node.__ilTrain.history.push({ event: "done", reason: detail.lora ? `saved ${detail.lora}` : undefined });
      drawTrain(node.__ilTrain);
    });
    api.addEventListener("identitylock.metrics_report", ({ detail }) => {
      const path = reportPathFromOutput(detail);
      if (!path) return;
      const node = findNode(detail?.node);
      // Sent without a node id: give the path to every IdentityMetrics node (onExecuted refines it per node).
      const targets = node ? [node] : (app.graph._nodes || []).filter((n) => "__ilReport" in n);
      for (const n of targets) if ("__ilReport" in n) n.__ilReport = path;
    });
  },
});
