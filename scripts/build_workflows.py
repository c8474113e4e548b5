#!/usr/bin/env python
"""Build the bundled workflow templates: workflows/<name>.json (UI format) and workflows/api/<name>.json
(API format) from ONE graph description each, so the two versions cannot diverge.

Node schemas come from ComfyUI's /object_info (``--object-info``, default the capture of a real ComfyUI 0.8 +
ComfyUI_IPAdapter_plus in tests/fixtures/comfyui/object_info.json, re-captured with scripts/capture_object_info.py)
merged with IdentityLock's own nodes as the code declares them now. Widgets a template does not set take the
schema's default, so a node that gains inputs or widgets is picked up by running this again. Templates whose nodes
are not in the schemas are skipped with a warning. Also writes the schemas ``identitylock validate-workflow`` uses
offline: core/data/identitylock_object_info.json (our nodes' INPUT_TYPES as /object_info entries, so core never
imports nodes/) and core/data/object_info_subset.json (the ComfyUI core / IPAdapter_plus classes the templates use).

    python scripts/build_workflows.py                  # rebuild everything
    python scripts/build_workflows.py --schemas-only   # only our node schemas (no ComfyUI capture needed)

The graphs live in workflows_sd15.py (01, 03-14), workflows_families.py (02 and the SDXL / FLUX.1 / Flux.2 /
Z-Image / Qwen-Image templates) and workflows_reference.py (Kontext, Qwen-Image-Edit, Flux.2 multi-reference);
workflow_graph.py writes both formats.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(
    0, str(Path(__file__).resolve().parent)
)  # the sibling modules, also when imported by the tests

from identitylock.nodes._object_info import SCHEMA_PATH, build_object_info, render  # noqa: E402
from workflow_graph import Graph  # noqa: E402
from workflows_families import FAMILY_TEMPLATES  # noqa: E402
from workflows_reference import REFERENCE_TEMPLATES  # noqa: E402
from workflows_sd15 import SD15_TEMPLATES  # noqa: E402

CAPTURED = REPO / "tests" / "fixtures" / "comfyui" / "object_info.json"
EXTRA_SUBSET_CLASSES = ("PreviewImage", "LoadImage", "SaveImage", "VAEEncode", "VAEDecode", "KSampler")
TEMPLATES: list[Callable[[], Graph]] = [*SD15_TEMPLATES, *FAMILY_TEMPLATES, *REFERENCE_TEMPLATES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--object-info", default=str(CAPTURED))
    ap.add_argument("--out", default=str(REPO / "workflows"))
    ap.add_argument("--no-data", action="store_true", help="do not rewrite the schema files in core/data/")
    ap.add_argument("--schemas-only", action="store_true", help=f"only rewrite {SCHEMA_PATH}")
    args = ap.parse_args(argv)
    ours = build_object_info()
    if not args.no_data:
        (REPO / SCHEMA_PATH).write_text(render(ours), encoding="utf-8")
        print(f"wrote {SCHEMA_PATH} ({len(ours)} classes)")
    if args.schemas_only:
        return 0
    full = json.loads(Path(args.object_info).read_text())
    schemas = {**full, **ours}
    out = Path(args.out)
    (out / "api").mkdir(parents=True, exist_ok=True)
    used: set[str] = set(EXTRA_SUBSET_CLASSES)
    names: list[str] = []
    for build in TEMPLATES:
        g = build()
        if g.name in names:
            raise SystemExit(f"two templates are named {g.name}")
        names.append(g.name)
        missing = [n.cls for n in g.nodes if n.cls not in schemas]
        if missing:
            print(f"skip {g.name}: nodes not available yet: {sorted(set(missing))}")
            continue
        api = g.api(schemas)
        ui = g.ui(schemas)
        (out / f"{g.name}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
        (out / "api" / f"{g.name}.json").write_text(json.dumps(api, indent=1, ensure_ascii=False) + "\n")
        used.update(n.cls for n in g.nodes if n.cls not in ours)
        print(f"wrote {g.name}: {len(g.nodes)} nodes")
    if args.no_data:
        return 0
    subset = {k: full[k] for k in sorted(used) if k in full}
    dest = REPO / "core" / "data" / "object_info_subset.json"
    dest.write_text(json.dumps(subset, indent=0, sort_keys=True) + "\n")
    print(f"wrote {dest.relative_to(REPO)} ({len(subset)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
