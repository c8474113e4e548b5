// Pure logic of the IdentityLock extension: no DOM, no ComfyUI imports, so `node --test web/` covers it.
// Message schemas are documented in docs/web.md.

export const PHASES = ["COARSE", "MID", "MID_FINE", "FINAL_FINE"];

/** Format seconds as "1h 02m", "3m 05s" or "12s"; unknown -> "–". */
export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds)) || seconds < 0) return "–";
  const s = Math.round(Number(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

/**
 * A finite number, or null. JSON `null` (what the nodes send for "not measured": no face in the render, no
 * validation loss this step) must not become 0, which `Number(null)` would give.
 */
export function num(value) {
  if (value === null || value === undefined || value === "" || typeof value === "boolean") return null;
  const v = Number(value);
  return Number.isFinite(v) ? v : null;
}

/** Number to fixed digits, or "–" for missing values. */
export function fmt(value, digits = 4) {
  if (value === null || value === undefined || !Number.isFinite(Number(value))) return "–";
  const v = Number(value);
  if (v !== 0 && Math.abs(v) < 10 ** -digits) return v.toExponential(2);
  return v.toFixed(digits);
}

/** Live training state of one LoRATrainAdaptive node, fed with `identitylock.train` messages. */
export class TrainHistory {
  constructor(maxPoints = 5000) {
    this.maxPoints = maxPoints;
    this.reset();
  }

  reset() {
    this.points = []; // {step, loss, val_loss}
    this.boundaries = []; // {step, phase}: where a new phase starts
    this.latest = null;
    this.done = false;
  }

  push(msg) {
    if (!msg || typeof msg !== "object") return false;
    if (msg.event === "start" || (num(msg.step) === 0 && this.points.length && msg.event !== "done")) {
      this.reset();
    }
    const step = num(msg.step);
    const loss = num(msg.loss);
    if (step !== null && loss !== null) {
      const last = this.points[this.points.length - 1];
      if (last && step < last.step) this.reset(); // a new run on the same node
      const prevPhase = this.latest ? this.latest.phase : null;
      if (msg.phase && msg.phase !== prevPhase) this.boundaries.push({ step, phase: msg.phase });
      const p = { step, loss };
      if (num(msg.val_loss) !== null) p.val_loss = num(msg.val_loss);
      this.points.push(p);
      if (this.points.length > this.maxPoints) this.points = downsample(this.points, Math.floor(this.maxPoints / 2));
    }
    this.latest = { ...(this.latest || {}), ...msg };
    if (msg.event === "done") this.done = true;
    return true;
  }

  /** Lines for the panel: phase, step, loss, slope, p-value, ETA. */
  summary() {
    const l = this.latest || {};
    const totalSteps = l.total_steps ?? l.max_steps;
    const total = totalSteps ? `/${totalSteps}` : "";
    return [
      `phase ${l.phase ?? "–"}${this.done ? " (done)" : ""}`,
      `step ${l.step ?? "–"}${total}   loss ${fmt(l.loss)}`,
      `slope ${fmt(l.slope, 6)}   p ${fmt(l.p_value, 3)}`,
      `ETA ${this.done ? "0s" : formatEta(l.eta_s ?? l.eta_seconds)}${l.reason ? "   " + l.reason : ""}`,
    ];
  }
}

/** Keep every k-th point (and the last) so long runs stay cheap to draw. */
export function downsample(points, target) {
  if (points.length <= target) return points.slice();
  const k = Math.ceil(points.length / target);
  const out = points.filter((_, i) => i % k === 0);
  if (out[out.length - 1] !== points[points.length - 1]) out.push(points[points.length - 1]);
  return out;
}

/**
 * Chart geometry in a w x h box (pixels, y down) with padding: the loss polyline, phase boundary x's and
 * the y range used. Log scale when the loss spans more than two decades.
 */
export function chartGeometry(points, boundaries, w, h, pad = 6) {
  if (!points.length) return { line: [], val: [], bounds: [], ymin: null, ymax: null, log: false };
  const xs = points.map((p) => p.step);
  const ys = points.flatMap((p) => (p.val_loss !== undefined ? [p.loss, p.val_loss] : [p.loss]));
  const xmin = Math.min(...xs);
  const xmax = Math.max(...xs);
  let ymin = Math.min(...ys);
  let ymax = Math.max(...ys);
  const log = ymin > 0 && ymax / ymin > 100;
  const ty = (v) => (log ? Math.log10(v) : v);
  let a = ty(ymin);
  let b = ty(ymax);
  if (a === b) {
    a -= 0.5;
    b += 0.5;
  }
  const X = (s) => pad + ((s - xmin) / Math.max(1e-12, xmax - xmin || 1)) * (w - 2 * pad);
  const Y = (v) => h - pad - ((ty(v) - a) / (b - a)) * (h - 2 * pad);
  const line = points.map((p) => [X(p.step), Y(p.loss)]);
  const val = points.filter((p) => p.val_loss !== undefined).map((p) => [X(p.step), Y(p.val_loss)]);
  const bounds = boundaries.filter((bd) => bd.step > xmin).map((bd) => ({ x: X(bd.step), phase: bd.phase }));
  return { line, val, bounds, ymin, ymax, log };
}

/** DriftSeedSearch results: one row per seed, best (lowest drift) first, renders without a face last. */
export class SeedTable {
  constructor() {
    this.rows = new Map();
  }

  push(msg) {
    if (!msg || typeof msg !== "object") return false;
    if (msg.event === "start" || msg.reset) {
      this.rows.clear();
      if (msg.seed === undefined) return true;
    }
    if (msg.seed === undefined || msg.seed === null) return false;
    const drift = msg.drift === null || msg.drift === undefined ? null : Number(msg.drift);
    this.rows.set(String(msg.seed), {
      seed: msg.seed,
      drift: Number.isFinite(drift) ? drift : null,
      locked: Boolean(msg.locked),
      face: msg.face !== false && Number.isFinite(drift),
    });
    return true;
  }

  sorted() {
    return [...this.rows.values()].sort((x, y) => {
      if (x.drift === null && y.drift === null) return compareSeeds(x.seed, y.seed);
      if (x.drift === null) return 1;
      if (y.drift === null) return -1;
      return x.drift - y.drift || compareSeeds(x.seed, y.seed);
    });
  }

  counts() {
    const all = [...this.rows.values()];
    return { total: all.length, locked: all.filter((r) => r.locked).length };
  }
}

function compareSeeds(a, b) {
  const x = BigInt(String(a));
  const y = BigInt(String(b));
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Cells of a results-table row (strings), e.g. ["1187891159", "0.1621", "locked"]. */
export function seedRowCells(row) {
  return [String(row.seed), row.drift === null ? "no face" : row.drift.toFixed(4), row.locked ? "locked" : ""];
}

/** Lines of the MatchedPortrait readout from an `identitylock.portrait` message. */
export function portraitLines(msg) {
  if (!msg || typeof msg !== "object") return [];
  const deg = (v) => (num(v) === null ? "–" : `${num(v).toFixed(1)}°`);
  const lines = [];
  const pair = (label, ref, out) => `${label}: ${ref} → ${out}`;
  const ref = msg.reference || {};
  const res = msg.result || {};
  if (msg.view) lines.push(`view ${msg.view}`);
  if (ref.yaw !== undefined || res.yaw !== undefined) lines.push(pair("yaw", deg(ref.yaw), deg(res.yaw)));
  if (ref.pitch !== undefined || res.pitch !== undefined) lines.push(pair("pitch", deg(ref.pitch), deg(res.pitch)));
  if (ref.light_azimuth !== undefined || res.light_azimuth !== undefined)
    lines.push(pair("light", deg(ref.light_azimuth), deg(res.light_azimuth)));
  if (num(res.face_ratio) !== null) lines.push(`face ${(num(res.face_ratio) * 100).toFixed(0)}% of width`);
  if (msg.drift !== undefined && msg.drift !== null) lines.push(`drift ${fmt(msg.drift, 4)}${msg.locked ? " (locked)" : ""}`);
  if (msg.mirrored) lines.push("⚠ left/right mirrored");
  if (msg.warning) lines.push(`⚠ ${msg.warning}`);
  return lines;
}

/** URL of the report route for a path relative to ComfyUI's output folder (null when unsafe). */
export function reportUrl(path) {
  if (typeof path !== "string" || !path || path.startsWith("/") || path.split(/[\\/]/).includes("..")) return null;
  return `/identitylock/report?path=${encodeURIComponent(path)}`;
}

/**
 * The report path from an executed IdentityMetrics node's UI output: {report: [{html, csv}]}, {report: [path]},
 * {report: path} or an `identitylock.metrics_report` message {html}.
 */
export function reportPathFromOutput(output) {
  if (!output) return null;
  let r = output.report ?? output.report_path ?? output.html;
  if (Array.isArray(r)) r = r.length ? r[0] : null;
  if (r && typeof r === "object") r = r.html ?? null;
  return typeof r === "string" && r ? r : null;
}
