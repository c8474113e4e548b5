#!/usr/bin/env python
"""Open every bundled UI template the way ComfyUI's template browser does, in the real front end (headless
Chromium), and check what the front end makes of it: no alert on loading (e.g. its workflow schema check), every
node type is registered, and the front end's own UI -> API conversion (``app.graphToPrompt``) gives exactly workflows/api/<name>.json.

A developer script, not a CI test: it needs a running ComfyUI with this pack (and ComfyUI_IPAdapter_plus) installed
and Chromium; no model files (nothing is queued).

    python scripts/check_templates_frontend.py --server http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from headless_chromium import Browser, find_chromium  # noqa: E402

# what ComfyUI's own front end requests on a fresh browser profile and gets a 404 for (as in web_screenshots.py)
FRESH_PROFILE_404 = ("/api/userdata/user.css", "/user.css", "/favicon.ico", "/api/userdata?dir=workflows",
                     "/api/userdata?dir=subgraphs", "/api/userdata/comfy.templates.json")  # fmt: skip
APP = "(window.app ?? window.comfyAPI.app.app)"
LOAD = """(async () => {
  const app = APP; const name = NAME;
  const wf = await (await fetch('/api/workflow_templates/' + PACK + '/' + name + '.json')).json();
  const alerts = () => [...document.querySelectorAll('.p-toast-message')].map(e => e.innerText.trim());
  const before = alerts().length;
  await app.loadGraphData(wf, true, true, name);
  await new Promise(r => setTimeout(r, 300));
  const raised = alerts().slice(before);
  document.querySelectorAll('.p-toast-message').forEach(e => e.remove());
  const g = app.rootGraph ?? app.graph;
  const nodes = g._nodes.filter(n => n.type !== 'Note');
  const unknown = nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type);
  const p = await app.graphToPrompt();
  return {alerts: raised, nodes: nodes.length, links: Object.keys(g.links ?? {}).length || (g.links?.size ?? 0), unknown,
          output: p.output};
})()"""


def _compare(got: dict, api: dict, schemas: dict, extras: set[str]) -> list[str]:
    """Differences between the front end's prompt and the API file. Inputs the node's schema does not declare
    (widgets a front-end extension adds, e.g. PreviewAny's preview box) are collected in ``extras``, not compared:
    the server ignores them."""
    problems = []
    if set(got) != set(api):
        problems.append(f"node ids differ: front end {sorted(got)} vs file {sorted(api)}")
    for nid, node in api.items():
        fe = got.get(nid)
        if fe is None:
            continue
        if fe.get("class_type") != node["class_type"]:
            problems.append(f"node {nid}: class {fe.get('class_type')} vs {node['class_type']}")
        declared = set(_input_names(schemas.get(node["class_type"], {})))
        for key in set(node["inputs"]) | set(fe.get("inputs", {})):
            if key not in node["inputs"] and key not in declared:
                extras.add(f"{node['class_type']}.{key}")
                continue
            a, b = fe.get("inputs", {}).get(key), node["inputs"].get(key)
            if a != b and not (
                isinstance(a, list) and isinstance(b, list) and [str(x) for x in a] == [str(x) for x in b]
            ):
                problems.append(f"node {nid} ({node['class_type']}).{key}: front end {a!r} vs file {b!r}")
    return problems


def _input_names(schema: dict) -> list[str]:
    spec = schema.get("input", {})
    return [k for section in ("required", "optional") for k in (spec.get(section) or {})]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument(
        "--pack",
        default="",
        help="the pack's folder name under custom_nodes (default: the one listing 01_prep_and_embed)",
    )
    ap.add_argument("--chromium", default=find_chromium())
    args = ap.parse_args(argv)
    server = args.server.rstrip("/")
    with urllib.request.urlopen(server + "/api/workflow_templates", timeout=30) as r:
        listed = json.loads(r.read())
    with urllib.request.urlopen(server + "/object_info", timeout=60) as r:
        schemas = json.loads(r.read())
    extras: set[str] = set()
    pack = args.pack or next(k for k, v in listed.items() if "01_prep_and_embed" in v)
    names = sorted(listed[pack])
    files = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    print(
        f"{pack}: the server lists {len(names)} templates ({'same as' if names == files else 'NOT the same as'} workflows/)"
    )
    b = Browser(args.chromium)
    bad = 0
    try:
        b.call("Page.navigate", url=server)
        if not b.wait(
            "(() => { const a = window.app ?? window.comfyAPI?.app?.app; return !!(a && a.canvas); })()", 90
        ):
            print("the front end did not load")
            return 1
        for name in names:
            js = (
                LOAD.replace("APP", APP)
                .replace("NAME", json.dumps(name))
                .replace("PACK", json.dumps(urllib.parse.quote(pack)))
            )
            res = b.js(js, await_promise=True)
            api = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
            problems = [f"unregistered node types {res['unknown']}"] if res["unknown"] else []
            problems += [f"front end alert: {' '.join(a.split())}" for a in res["alerts"]]
            problems += _compare(res["output"], api, schemas, extras)
            if problems:
                bad += 1
                print(f"{name}: {len(problems)} problem(s)")
                for p in problems[:10]:
                    print(f"  - {p}")
            else:
                print(
                    f"{name}: ok ({res['nodes']} nodes, {res['links']} links; graphToPrompt == api/{name}.json)"
                )
        errors = [e for e in b.errors() if not ("404" in e and any(n in e for n in FRESH_PROFILE_404))]
    finally:
        b.close()
    print(f"{len(names) - bad}/{len(names)} templates load in the front end and convert to their API file")
    if extras:
        print(
            f"front-end-only widgets (not in /object_info, ignored by the server): {', '.join(sorted(extras))}"
        )
    if errors:
        print(f"{len(errors)} browser console error(s) (besides the 404s of a fresh profile):")
        for e in errors[:20]:
            print(f"  {e}")
    return 1 if bad or errors else 0


if __name__ == "__main__":
    sys.exit(main())
