"""Check the web/ extension in headless Chromium against a REAL running ComfyUI and take its screenshots.

A developer script, not a CI test: it needs a ComfyUI server with this pack installed, a checkpoint (any SD1.5
file works, random weights included: the jobs only have to run, not to look good) and Chromium.

What it does, for each of the four panels (training, seed table, report button, portrait readout):
  1. opens the ComfyUI front end in headless Chromium (window 1400x900) through the DevTools protocol,
  2. loads an API-format graph with ``app.loadApiJson`` (derived from the bundled ``workflows/api/*.json``,
     shrunk to tiny sizes / few steps so each job takes CPU minutes, not hours),
  3. queues it from the page (``app.queuePrompt``), so the real nodes on the real server send their real
     ``identitylock.*`` messages to this browser tab,
  4. waits for the job to finish, reads the panel state from the page (chart points, seed rows, report link,
     readout text, whether a panel is too short for its text), clicks the best seed row (its seed must reach the
     clipboard), presses "Open report" (the URL it opens must answer 200; at the end the tab loads it and counts
     the Plotly charts that render) and checks that a ``../`` path is refused,
  5. screenshots the node (clipped) into ``--out`` as ``web_<panel>.png`` (optimised with Pillow),
and finally prints every browser console error / exception seen.  Nothing is synthesised: if a job fails, the
script says so and exits non-zero.

Run (from the repository root; ComfyUI must not run with cwd /tmp, see below)::

    # 1. a ComfyUI 0.8 checkout with the pack symlinked as custom_nodes/identitylock, e.g.
    cd /work && /tmp/cvenv/bin/python /tmp/comfy/main.py --cpu --listen 127.0.0.1 --port 8231 \\
        --base-directory /tmp/ilweb/base --disable-api-nodes --preview-method none
    #    (base directory: custom_nodes/identitylock -> this repo, models/checkpoints/<an SD1.5 file>)
    # 2. then
    .venv/bin/python scripts/web_screenshots.py --server http://127.0.0.1:8231 --out docs/images

Options: ``--only train,seeds,metrics,portrait`` runs a subset; ``--ckpt NAME`` picks the checkpoint (default:
the first one the server lists); ``--faces DIR`` is where the photos come from (uploaded to the server:
lisa_*/london* for everything generative, plus two other people as the "others" group of IdentityMetrics).
Exit status: 0 when every panel received data and no console error was seen, 1 otherwise (the 404s ComfyUI's own
front end causes on a fresh browser profile are listed but not counted). Identical jobs would be served from
ComfyUI's cache without running, so each run varies one seed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from headless_chromium import Browser, find_chromium  # noqa: E402  (shared with tests/test_metrics.py)

FACES = ROOT.parent / "shared" / "data" / "faces"
PANELS = ("train", "seeds", "metrics", "portrait")
# ComfyUI serves a job whose inputs did not change from its cache (no node runs, no messages): vary one input.
NONCE = int(time.time()) % 10_000


# ----------------------------------------------------------------------------------------------------- graphs
def _load(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())


def _rewire(graph: dict[str, Any], old: str, new: str) -> None:
    """Point every link to node ``old`` at node ``new`` (same output slot) and drop ``old``."""
    graph.pop(old, None)
    for node in graph.values():
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and v[0] == old:
                node["inputs"][k] = [new, v[1]]


def _embed_from(graph: dict[str, Any], node_id: str, image: str) -> None:
    """Replace an IdentityLoad (needs a saved file) with IdentityEmbed of an uploaded photo."""
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    graph[node_id] = {
        "class_type": "IdentityEmbed",
        "inputs": {"images": ["20", 0], "backend": "dlib", "missing_face": "error", "save_name": ""},
    }


def train_graph(ckpt: str) -> tuple[dict[str, Any], str]:
    """workflows/api/02 at 64 px: FaceCropPrep of two photos (+ augmentations; validation holds out whole photos),
    4 short fixed-length phases."""
    g = _load("02_train_identity_lora")
    ids = {}
    for k, v in g.items():
        ids.setdefault(v["class_type"], []).append(k)
    g[ids["CheckpointLoaderSimple"][0]]["inputs"]["ckpt_name"] = ckpt
    for k, photo in zip(ids["LoadImage"], ("lisa_1.jpg", "lisa_2.jpg")):
        g[k]["inputs"]["image"] = photo
    g[ids["FaceCropPrep"][0]]["inputs"].update(size=64, background="none", backend="dlib")
    g.pop(ids["IdentityEmbed"][0])  # IdentityEmbed only feeds the identity probe (off here)
    train = ids["LoRATrainAdaptive"][0]
    g[train]["inputs"].pop("identity", None)
    phases = [
        {"name": n, "lr": lr, "alpha": 4, "loss": "mse", "optimizer": "adamw", "min_steps": s, "max_steps": s}
        for n, lr, s in (
            ("COARSE", 1e-4, 6),
            ("MID", 5e-5, 4),
            ("MID_FINE", 2e-5, 4),
            ("FINAL_FINE", 1e-5, 4),
        )
    ]
    g[train]["inputs"].update(
        lora_name="il_web_demo",
        seed=NONCE,
        preset="TINY_TEST",
        phases_json=json.dumps(phases),
        window=3,
        patience=1,
        significance=1.0,  # never skip the lower-lr phases (random weights rarely "improve"): all 4 show
        checkpoint_every=1000,
    )
    return g, train


def seeds_graph(ckpt: str) -> tuple[dict[str, Any], str]:
    """workflows/api/08 without the LoRA, identity embedded from a photo, 6 seeds x 1 step at 64 px."""
    g = _load("08_seed_discovery")
    g["1"]["inputs"]["ckpt_name"] = ckpt
    _rewire(g, "2", "1")  # no LoRA: LoraLoader's MODEL/CLIP outputs come from the checkpoint
    _embed_from(g, "5", "lisa_1.jpg")
    g["6"]["inputs"].update(
        seed_start=1187891159 + NONCE,
        seed_count=6,
        steps=1,
        width=64,
        height=64,
        sampler_name="euler",
        scheduler="normal",
        stop_after=0,
        top_k=4,
        seeds_per_batch=3,
        save="none",
    )
    return g, "6"


def metrics_graph(_ckpt: str) -> tuple[dict[str, Any], str]:
    """IdentityMetrics on photos (workflows/api/14 feeds it renders; renders of random weights have no faces)."""
    g: dict[str, Any] = {}
    names = ["lisa_1", "lisa_2", "lisa_3", "lisa_4", "london001_1", "obama_1"]
    for i, n in enumerate(names, start=1):
        g[str(i)] = {"class_type": "LoadImage", "inputs": {"image": f"{n}.jpg"}}

    def batch(a: str, b: str) -> dict[str, Any]:
        return {"class_type": "ImageBatch", "inputs": {"image1": [a, 0], "image2": [b, 0]}}

    g["7"] = batch("1", "2")  # reference photos
    g["8"] = batch("3", "4")  # same person, other photos
    g["9"] = batch("5", "6")  # other people
    g["10"] = {
        "class_type": "IdentityMetrics",
        "inputs": {
            "candidates_1": ["8", 0],
            "candidates_2": ["9", 0],
            "reference_images": ["7", 0],
            "labels": "lisa (held out), others",
            "backend": "dlib",
            "report_name": f"web_check_{NONCE}",
        },
    }
    g["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 1]}}
    return g, "10"


def portrait_graph(ckpt: str) -> tuple[dict[str, Any], str]:
    """workflows/api/11 without the LoRA: one 2-step attempt at the smallest work size (256)."""
    g = _load("11_matched_portrait")
    g["1"]["inputs"]["ckpt_name"] = ckpt
    _rewire(g, "2", "1")
    _embed_from(g, "5", "lisa_1.jpg")
    g["6"]["inputs"]["image"] = "london001_1.jpg"
    g["7"]["inputs"].update(
        seed=1187891159 + NONCE,
        attempts=1,
        steps=2,
        work_size=256,
        denoise=0.6,
        sampler_name="euler",
        scheduler="normal",
    )
    return g, "7"


SHOOT = {"metrics": ["10", "11"]}  # the metrics node with the preview of its similarity plot
# Before the screenshot: widen the nodes a little (as a user would) so the panels read well.
RESIZE = {"train": {"5": 460}, "seeds": {"6": 420}, "portrait": {"7": 420}, "metrics": {"11": [520, 330]}}
GRAPHS = {"train": train_graph, "seeds": seeds_graph, "metrics": metrics_graph, "portrait": portrait_graph}
UPLOADS = ["lisa_1", "lisa_2", "lisa_3", "lisa_4", "london001_1", "obama_1"]

# What each panel shows, read from the page (the extension keeps its state on the LiteGraph node).
PROBES = {
    "train": """(() => { const n = G().getNodeById(ID); const s = n.__ilTrain; if (!s) return null;
        const h = s.history; return {points: h.points.length, boundaries: h.boundaries.map(b => b.phase + '@' + b.step),
        val_points: h.points.filter(p => p.val_loss !== undefined).length, done: h.done,
        first: h.points[0] || null, last: h.points[h.points.length - 1] || null, text: s.text.textContent,
        box: [s.text.parentElement.clientHeight, s.text.parentElement.scrollHeight],
        canvas: [s.canvas.width, s.canvas.height]}; })()""",
    "seeds": """(() => { const n = G().getNodeById(ID); const s = n.__ilSeeds; if (!s) return null;
        const rows = [...s.el.querySelectorAll('tr')].slice(1).map(r => [...r.cells].map(c => c.textContent));
        return {counts: s.table.counts(), head: s.head.textContent, rows}; })()""",
    "metrics": """(() => { const n = G().getNodeById(ID); if (!('__ilReport' in n)) return null;
        return {report: n.__ilReport, button: (n.widgets || []).some(w => w.type === 'button' && w.name === 'Open report')}; })()""",
    "portrait": """(() => { const n = G().getNodeById(ID); if (!n.__ilPortrait) return null;
        const box = n.__ilPortrait.parentElement;
        return {text: n.__ilPortrait.textContent, box: [box.clientHeight, box.scrollHeight]}; })()""",
}


# The page helpers: G() = the root graph; a log of every api event this tab receives.
PAGE_SETUP = """(() => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  const api = app.api ?? window.comfyAPI?.api?.api;
  window.G = () => app.rootGraph ?? app.graph;
  window.__il = {log: [], counts: {}};
  const types = ['execution_start', 'execution_success', 'execution_error', 'execution_interrupted', 'executed',
                 'identitylock.train', 'identitylock.train_done', 'identitylock.seed', 'identitylock.portrait',
                 'identitylock.metrics_report'];
  for (const t of types) api.addEventListener(t, ({detail}) => {
    window.__il.counts[t] = (window.__il.counts[t] || 0) + 1;
    if (!t.startsWith('identitylock.train') || window.__il.counts[t] < 3)
      window.__il.log.push([t, JSON.stringify(detail).slice(0, 600)]);
  });
  return true;
})()"""


# What ComfyUI's own front end requests on a fresh profile and gets a 404 for (not caused by this extension).
NOISE = ("/api/userdata/user.css", "/user.css", "/favicon.ico", "/api/userdata?dir=workflows",
         "/api/userdata?dir=subgraphs", "/api/userdata/comfy.templates.json")  # fmt: skip


def _front_end_noise(error: str) -> bool:
    if error.startswith(
        "log: Blocked attempt to show a 'beforeunload'"
    ):  # the app, when we navigate to the report
        return True
    return (
        error.startswith("log: Failed to load resource") and "404" in error and any(n in error for n in NOISE)
    )


def _close_dialogs(b: Browser) -> None:
    for _ in range(3):
        b.call(
            "Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27
        )
        b.call("Input.dispatchKeyEvent", type="keyUp", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        time.sleep(0.3)
    b.js(
        "document.querySelectorAll('.p-dialog-close-button, [aria-label=Close]').forEach(x => x.click()); true"
    )
    time.sleep(0.5)


def _optimise_png(raw: bytes, path: Path, max_kb: int = 150) -> int:
    """Save as a palette PNG (the UI is flat colors); fall back to RGB when the palette looks worse."""
    from PIL import Image

    img = Image.open(io.BytesIO(raw)).convert("RGB")
    for colors in (256, 128, 64):
        buf = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, "PNG", optimize=True
        )
        if buf.tell() <= max_kb * 1024:
            break
    path.write_bytes(buf.getvalue())
    return buf.tell()


# ------------------------------------------------------------------------------------------------------ run
def run_panel(b: Browser, server: str, panel: str, ckpt: str, out: Path, timeout: float) -> dict[str, Any]:
    graph, node_id = GRAPHS[panel](ckpt)
    b.js("window.__il.log = []; window.__il.counts = {}; true")
    b.js(
        f"(window.app ?? window.comfyAPI.app.app).loadApiJson({json.dumps(graph)}, 'identitylock_web_{panel}')"
    )
    if not b.wait(f"!!G().getNodeById({node_id})", 20):
        raise RuntimeError(f"{panel}: graph did not load")
    t0 = time.time()
    b.js("(window.app ?? window.comfyAPI.app.app).queuePrompt(0, 1).then(() => true)", await_promise=True)
    done = b.wait(
        "(() => { const c = window.__il.counts; return (c.execution_success || c.execution_error ||"
        " c.execution_interrupted) ? c : null; })()",
        timeout,
        every=1.0,
    )
    seconds = round(time.time() - t0, 1)
    log = b.js("window.__il.log")
    result: dict[str, Any] = {"panel": panel, "node": node_id, "seconds": seconds, "events": done}
    if not done or done.get("execution_error") or done.get("execution_interrupted"):
        result["error"] = [
            e for e in log if e[0] in ("execution_error", "execution_interrupted")
        ] or "timeout"
        return result
    time.sleep(1.0)  # let the last draw land
    result["state"] = b.js(PROBES[panel].replace("ID", node_id))
    result["messages"] = [e for e in log if e[0].startswith("identitylock.")][:6]
    if panel == "seeds" and result["state"] and result["state"]["rows"]:
        result["click_copy"] = _check_copy(b, server, node_id)
    if panel == "metrics" and result["state"] and result["state"].get("report"):
        result["report_check"] = _check_report(b, server, node_id)
    for nid, size in RESIZE.get(panel, {}).items():
        b.js(
            f"(() => {{ const n = G().getNodeById({nid}); const s = {json.dumps(size)};"
            " n.setSize(Array.isArray(s) ? s : [s, n.size[1]]); return 1; })()"
        )
    result["shot"] = _shoot(b, SHOOT.get(panel, [node_id]), out / f"web_{panel}.png")
    return result


def _check_copy(b: Browser, server: str, node_id: str) -> dict[str, Any]:
    """Click the first (best) row of the seed table: its seed must land on the clipboard."""
    origin = server.rstrip("/")
    b.call(
        "Browser.grantPermissions",
        origin=origin,
        permissions=["clipboardReadWrite", "clipboardSanitizedWrite"],
    )
    b.call("Emulation.setFocusEmulationEnabled", enabled=True)
    b.js(f"G().getNodeById({node_id}).__ilSeeds.el.querySelectorAll('tr')[1].click(); true")
    time.sleep(0.5)
    head = b.js(f"G().getNodeById({node_id}).__ilSeeds.head.textContent")
    clip = b.js("navigator.clipboard.readText().catch(e => 'clipboard: ' + e)", await_promise=True)
    first = b.js(f"G().getNodeById({node_id}).__ilSeeds.el.querySelectorAll('tr')[1].cells[0].textContent")
    return {"first_row_seed": first, "head_after_click": head, "clipboard": clip, "ok": clip == first}


def _check_report(b: Browser, server: str, node_id: str) -> dict[str, Any]:
    """Press the node's Open report button (it calls window.open) and fetch the URL the page opened."""
    b.js(
        "window.__ilOpened = []; window.open = (u, ...r) => { window.__ilOpened.push(String(u)); return null; }; true"
    )
    b.js(f"G().getNodeById({node_id}).widgets.find(w => w.name === 'Open report').callback(); true")
    opened = b.js("window.__ilOpened") or []
    check: dict[str, Any] = {"opened": opened}
    if opened:
        url = opened[0] if "://" in opened[0] else server.rstrip("/") + opened[0]
        check["url"] = url
        with urllib.request.urlopen(url, timeout=30) as r:
            body = r.read()
            check.update(status=r.status, type=r.headers.get("Content-Type"), bytes=len(body),
                         csp=r.headers.get("Content-Security-Policy", "")[:40])  # fmt: skip
        bad = server.rstrip("/") + "/identitylock/report?path=..%2Fuser%2Fcomfy.settings.json"
        try:
            with urllib.request.urlopen(bad, timeout=10) as r:
                check["traversal_status"] = r.status
        except urllib.error.HTTPError as exc:
            check["traversal_status"] = exc.code
    return check


def _shoot(b: Browser, node_ids: list[str], path: Path, margin: int = 12) -> dict[str, Any]:
    """Scroll (and if needed zoom out) the canvas so the nodes sit at (120, 110) and capture just them."""
    rect = b.js(
        f"""(() => {{
        const app = window.app ?? window.comfyAPI.app.app; const c = app.canvas;
        const th = (window.LiteGraph?.NODE_TITLE_HEIGHT) ?? 30;
        const ns = {json.dumps(node_ids)}.map(i => G().getNodeById(Number(i)));
        const x0 = Math.min(...ns.map(n => n.pos[0])), y0 = Math.min(...ns.map(n => n.pos[1] - th));
        const x1 = Math.max(...ns.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...ns.map(n => n.pos[1] + n.size[1]));
        const s = Math.min(1, 1240 / (x1 - x0), 760 / (y1 - y0));
        c.deselectAll?.(); c.ds.scale = s; c.ds.offset[0] = 120 / s - x0; c.ds.offset[1] = 110 / s - y0;
        c.setDirty(true, true); c.draw?.(true, true);
        const r = c.canvas.getBoundingClientRect();
        return {{x: r.left + 120, y: r.top + 110, w: (x1 - x0) * s, h: (y1 - y0) * s, scale: s}}; }})()"""
    )
    time.sleep(1.0)  # DOM widgets follow the canvas on the next frames
    b.js(
        "(() => { const c = (window.app ?? window.comfyAPI.app.app).canvas;"
        " c.setDirty(true, true); c.draw?.(true, true); return 1; })()"
    )
    time.sleep(0.5)
    top = margin + 16  # the node-source badge ("identitylock") sits above the title
    clip = {"x": rect["x"] - margin, "y": rect["y"] - top, "width": rect["w"] + 2 * margin,
            "height": min(890 - rect["y"] + top, rect["h"] + margin + top)}  # fmt: skip
    size = _optimise_png(b.screenshot(clip), path)
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    return {
        "file": shown,
        "bytes": size,
        "scale": round(rect["scale"], 3),
        "clip": [round(v) for v in clip.values()],
    }


def _render_report(b: Browser, url: str) -> dict[str, Any]:
    """Open the report in the tab (last step: leaves the app) and count the Plotly charts that rendered."""
    before = len(b.errors())
    b.call("Page.navigate", url=url)
    plots = b.wait("document.querySelectorAll('.js-plotly-plot .main-svg').length", 60) or 0
    time.sleep(1.0)
    return {
        "plots_rendered": plots,
        "errors_on_report_page": [e for e in b.errors()[before:] if not _front_end_noise(e)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", default="http://127.0.0.1:8231")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--only", default=",".join(PANELS))
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--faces", default=str(FACES))
    ap.add_argument("--chromium", default=find_chromium())
    ap.add_argument("--timeout", type=float, default=900, help="seconds per job")
    ap.add_argument("--full-page", action="store_true", help="also save web_<panel>_page.png (whole window)")
    args = ap.parse_args(argv)
    from identitylock.core.comfy import ComfyServer

    panels = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(panels) - set(PANELS)
    if unknown or not args.chromium:
        print(f"unknown panels {sorted(unknown)}" if unknown else "chromium not found (--chromium PATH)")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    srv = ComfyServer(args.server, timeout=60)
    ckpts = srv.object_info()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    ckpt = args.ckpt or (ckpts[0] if ckpts else None)
    if not ckpt:
        print("the server lists no checkpoint (models/checkpoints)")
        return 2
    for n in UPLOADS:
        srv.upload_image(Path(args.faces) / f"{n}.jpg")
    print(f"server {args.server}, checkpoint {ckpt}, uploaded {len(UPLOADS)} photos")

    b = Browser(args.chromium)
    results = []
    try:
        b.call("Page.navigate", url=args.server)
        ok = b.wait(
            "(() => { const a = window.app ?? window.comfyAPI?.app?.app; return !!(a && a.canvas && (a.rootGraph ?? a.graph)"
            " && (a.extensions || []).some(e => e.name === 'IdentityLock.Panels')); })()",
            90,
        )
        if not ok:
            print("the front end did not load (or the IdentityLock extension is not registered)")
            print("\n".join(b.errors()))
            return 1
        time.sleep(2.0)
        b.js(PAGE_SETUP)
        _close_dialogs(b)  # a fresh profile opens the template browser first
        for panel in panels:
            print(f"\n== {panel}: queueing", flush=True)
            r = run_panel(b, args.server, panel, ckpt, out, args.timeout)
            if args.full_page:
                _optimise_png(b.screenshot(), out / f"web_{panel}_page.png", max_kb=400)
            results.append(r)
            print(json.dumps(r, indent=1, ensure_ascii=False)[:6000], flush=True)
        report = next(
            (r["report_check"] for r in results if r.get("report_check", {}).get("status") == 200), None
        )
        if report:
            rendered = _render_report(b, report["url"])
            report.update(rendered)
            print("report page:", json.dumps(rendered, ensure_ascii=False)[:2000])
    finally:
        errors, warnings = b.errors(), b.warnings()
        b.close()

    print("\n== summary")
    ok = True
    for r in results:
        s = r.get("state") or {}
        if s.get("box") and s["box"][1] > s["box"][0] + 1:  # [clientHeight, scrollHeight] of the panel
            ok = False
            print(
                f"{r['panel']}: the panel is too short for its text (shows {s['box'][0]} of {s['box'][1]} px)"
            )
        if r.get("error") or not s:
            ok = False
            print(f"{r['panel']}: FAILED {r.get('error') or 'panel has no state'}")
        elif r["panel"] == "train":
            ok &= s["points"] > 0
            print(
                f"train: {s['points']} chart points, boundaries {s['boundaries']}, done={s['done']} ({r['seconds']} s)"
            )
        elif r["panel"] == "seeds":
            cc = r.get("click_copy") or {}
            ok &= s["counts"]["total"] > 0 and bool(cc.get("ok"))
            print(f"seeds: {s['counts']['total']} rows, {s['counts']['locked']} locked; click on the first row -> "
                  f"clipboard {cc.get('clipboard')!r}, header {cc.get('head_after_click')!r} ({r['seconds']} s)")  # fmt: skip
        elif r["panel"] == "metrics":
            rc = r.get("report_check") or {}
            ok &= bool(s.get("button")) and rc.get("status") == 200 and rc.get("plots_rendered", 0) > 0
            print(f"metrics: button={s.get('button')} report={s.get('report')} HTTP {rc.get('status')} "
                  f"({rc.get('bytes')} bytes, {rc.get('plots_rendered')} Plotly charts rendered in the tab, "
                  f"{len(rc.get('errors_on_report_page', []))} errors there), traversal -> "
                  f"{rc.get('traversal_status')} ({r['seconds']} s)")  # fmt: skip
        elif r["panel"] == "portrait":
            ok &= bool(s.get("text")) and "waiting" not in s["text"]
            print(f"portrait: {s.get('text')!r} ({r['seconds']} s)")
    noise = [e for e in errors if _front_end_noise(e)]
    errors = [e for e in errors if not _front_end_noise(e)]
    print(
        f"console errors: {len(errors)} (+ {len(noise)} from the ComfyUI front end itself: fresh-profile 404s)"
    )
    for e in errors + [f"(front end) {n}" for n in noise]:
        print("  " + e[:400])
    for w in warnings:
        if "identitylock" in w.lower():
            print("  " + w[:400])
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
