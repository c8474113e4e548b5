// node --test web/   (node >= 20)
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  SeedTable,
  TrainHistory,
  chartGeometry,
  downsample,
  formatEta,
  num,
  portraitLines,
  reportPathFromOutput,
  reportUrl,
  seedRowCells,
} from "../lib/logic.js";

test("formatEta", () => {
  assert.equal(formatEta(5), "5s");
  assert.equal(formatEta(185), "3m 05s");
  assert.equal(formatEta(3720), "1h 02m");
  assert.equal(formatEta(null), "–");
  assert.equal(formatEta(-1), "–");
});

test("training history records phase boundaries and resets on a new run", () => {
  const h = new TrainHistory();
  const phases = ["COARSE", "COARSE", "MID", "MID", "MID_FINE", "FINAL_FINE"];
  phases.forEach((phase, i) => h.push({ step: i * 10, loss: 1 / (i + 1), phase, slope: -0.01, p_value: 0.2, eta_s: 60 - i }));
  assert.equal(h.points.length, 6);
  assert.deepEqual(h.boundaries.map((b) => [b.step, b.phase]), [[0, "COARSE"], [20, "MID"], [40, "MID_FINE"], [50, "FINAL_FINE"]]);
  const s = h.summary();
  assert.match(s[0], /FINAL_FINE/);
  assert.match(s[1], /step 50/);
  assert.match(s[3], /ETA 55s/);
  h.push({ step: 60, loss: 0.1, phase: "FINAL_FINE", event: "done", reason: "plateau p=0.41" });
  assert.match(h.summary()[0], /done/);
  assert.match(h.summary()[3], /ETA 0s/);
  // nodes/train.py's field names: eta_seconds, max_steps
  const t = new TrainHistory();
  t.push({ step: 3, loss: 0.5, phase: "COARSE", eta_seconds: 125, max_steps: 900 });
  assert.match(t.summary()[1], /step 3\/900/);
  assert.match(t.summary()[3], /ETA 2m 05s/);
  h.push({ step: 1, loss: 2, phase: "COARSE" }); // step went backwards: new run
  assert.equal(h.points.length, 1);
  assert.equal(h.boundaries.length, 1);
});

test("chart geometry maps into the box, log scale for wide ranges, boundaries inside", () => {
  const pts = [{ step: 0, loss: 1 }, { step: 50, loss: 0.5 }, { step: 100, loss: 0.001, val_loss: 0.002 }];
  const g = chartGeometry(pts, [{ step: 0, phase: "COARSE" }, { step: 50, phase: "MID" }], 200, 100, 10);
  assert.equal(g.log, true);
  assert.deepEqual(g.line[0], [10, 10]); // highest loss at the top-left
  assert.equal(g.line[2][0], 190);
  for (const [x, y] of g.line) {
    assert.ok(x >= 10 && x <= 190 && y >= 10 && y <= 90);
  }
  assert.equal(g.bounds.length, 1); // the boundary at the first step is not drawn
  assert.equal(g.bounds[0].x, 100);
  assert.equal(g.val.length, 1);
  const flat = chartGeometry([{ step: 3, loss: 0.2 }], [], 100, 50);
  assert.ok(Number.isFinite(flat.line[0][0]) && Number.isFinite(flat.line[0][1]));
  assert.deepEqual(chartGeometry([], [], 10, 10).line, []);
});

test("downsample keeps the last point", () => {
  const pts = Array.from({ length: 1001 }, (_, i) => ({ step: i, loss: 1 }));
  const d = downsample(pts, 100);
  assert.ok(d.length <= 102);
  assert.equal(d[d.length - 1].step, 1000);
});

test("seed table sorts by drift, misses last, dedupes, resets", () => {
  const t = new SeedTable();
  t.push({ seed: 5, drift: 0.3, locked: false });
  t.push({ seed: 7, drift: null, locked: false, face: false });
  t.push({ seed: 1187891159, drift: 0.1621, locked: true });
  t.push({ seed: 9, drift: 0.12, locked: true });
  t.push({ seed: 5, drift: 0.25, locked: false }); // updated
  assert.deepEqual(t.sorted().map((r) => r.seed), [9, 1187891159, 5, 7]);
  assert.deepEqual(t.counts(), { total: 4, locked: 2 });
  assert.deepEqual(seedRowCells(t.sorted()[1]), ["1187891159", "0.1621", "locked"]);
  assert.deepEqual(seedRowCells(t.sorted()[3]), ["7", "no face", ""]);
  t.push({ event: "start" });
  assert.equal(t.counts().total, 0);
  t.push({ seed: "18446744073709551615", drift: 0.5 });
  t.push({ seed: "18446744073709551614", drift: 0.5 });
  assert.equal(t.sorted()[0].seed, "18446744073709551614"); // ties by seed, as big integers
});

test("portrait readout", () => {
  const lines = portraitLines({
    view: "profile_left",
    reference: { yaw: -80, pitch: 2, light_azimuth: 30 },
    result: { yaw: -76.5, pitch: 4, light_azimuth: 35, face_ratio: 0.2 },
    drift: 0.15,
    locked: true,
    mirrored: true,
  });
  assert.equal(lines[0], "view profile_left");
  assert.equal(lines[1], "yaw: -80.0° → -76.5°");
  assert.ok(lines.includes("face 20% of width"));
  assert.ok(lines.includes("drift 0.1500 (locked)"));
  assert.ok(lines.some((l) => l.includes("mirrored")));
  assert.deepEqual(portraitLines(null), []);
});

test("null means not measured, never 0 (what the real nodes send; seen in ComfyUI 0.8)", () => {
  assert.equal(num(null), null);
  assert.equal(num(undefined), null);
  assert.equal(num(""), null);
  assert.equal(num("0.5"), 0.5);
  assert.equal(num(0), 0);
  // MatchedPortrait when the render has no face (captured from a real run)
  const lines = portraitLines({
    view: "front · key light front",
    reference: { yaw: -6.3, pitch: 13.5 },
    result: { yaw: null, pitch: null, face_ratio: 0.362 },
    drift: null,
    locked: false,
    mirrored: false,
    warning: "no face in the render",
  });
  assert.deepEqual(lines, [
    "view front · key light front",
    "yaw: -6.3° → –",
    "pitch: 13.5° → –",
    "face 36% of width",
    "⚠ no face in the render",
  ]);
  assert.ok(!portraitLines({ result: { face_ratio: null } }).some((l) => l.startsWith("face")));
  // LoRATrainAdaptive sends "val_loss": null on steps without a validation pass
  const h = new TrainHistory();
  h.push({ step: 1, loss: 0.9, val_loss: null, phase: "COARSE" });
  h.push({ step: 2, loss: 0.004, val_loss: null, phase: "COARSE" });
  h.push({ step: 3, loss: 0.003, val_loss: 0.005, phase: "COARSE" });
  assert.equal(h.points.filter((p) => p.val_loss !== undefined).length, 1);
  const g = chartGeometry(h.points, h.boundaries, 200, 100);
  assert.equal(g.val.length, 1);
  assert.equal(g.ymin, 0.003); // a null val_loss read as 0 would pin the axis at 0 and turn off the log scale
  assert.equal(g.log, true);
  h.push({ step: null, loss: 0.5 }); // no step: ignored, does not restart the chart
  assert.equal(h.points.length, 3);
});

test("report urls never escape the output folder", () => {
  assert.equal(reportUrl("identitylock/metrics_001/report.html"), "/identitylock/report?path=identitylock%2Fmetrics_001%2Freport.html");
  assert.equal(reportUrl("../secret"), null);
  assert.equal(reportUrl("/etc/passwd"), null);
  assert.equal(reportUrl("a\\..\\b"), null);
  assert.equal(reportPathFromOutput({ report: ["x/report.html"] }), "x/report.html");
  assert.equal(reportPathFromOutput({ report_path: "y.html" }), "y.html");
  assert.equal(reportPathFromOutput({}), null);
  // what nodes/metrics.py sends: ui {report: [{html, csv}]} and the metrics_report message {html}
  assert.equal(reportPathFromOutput({ report: [{ html: "identitylock_metrics/a/r.html", csv: "x.csv" }] }), "identitylock_metrics/a/r.html");
  assert.equal(reportPathFromOutput({ html: "m/r.html", summary: "..." }), "m/r.html");
});
