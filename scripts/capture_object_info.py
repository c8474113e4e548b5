#!/usr/bin/env python
"""Capture the node schemas of a running ComfyUI (``GET /object_info``) as the test fixture the templates are built
and validated against (tests/fixtures/comfyui/object_info.json).

IdentityLock's own classes are left out: their schemas come from the code (core/data/identitylock_object_info.json,
written by scripts/build_workflows.py), so the capture never goes stale when one of our nodes changes.

    python scripts/capture_object_info.py --server http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "comfyui" / "object_info.json"


def without_ours(info: dict) -> dict:
    """The capture minus the classes a custom-node folder named like IdentityLock registered."""
    return {k: v for k, v in info.items() if "identitylock" not in str(v.get("python_module", "")).lower()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="e.g. http://127.0.0.1:8188")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as r:
        info = json.loads(r.read())
    kept = without_ours(info)
    Path(args.out).write_text(json.dumps(kept, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {args.out}: {len(kept)} classes ({len(info) - len(kept)} IdentityLock classes left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
