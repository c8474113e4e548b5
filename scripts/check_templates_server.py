#!/usr/bin/env python
"""Submit every bundled API template to a running ComfyUI and report whether ComfyUI's own prompt validation
accepts it — the check ``identitylock validate-workflow --server`` cannot make, because that one skips model-file
lists (they depend on what is installed).

For that, the model files a template names must exist on the server. Against a SCRATCH ComfyUI (started with
``--base-directory SCRATCH``, never your real one) this script creates each missing file as an empty placeholder under
SCRATCH/models/<folder>/ and uploads real photos under the template's image names. Prompts that pass validation get
queued; the script then clears the queue and interrupts, so nothing runs to completion (the placeholders would not
load anyway). Exit 0 when ComfyUI accepted every template.

    python scripts/check_templates_server.py --server http://127.0.0.1:8188 --scratch-base /tmp/comfy_scratch \\
        --photo tests/fixtures/faces/lisa_1.jpg --photo tests/fixtures/faces/lisa_2.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {  # input name -> ComfyUI models/ folder
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "identity_file": "identitylock",
}


def _post(server: str, path: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(server + path, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode() or "{}"
            return r.status, json.loads(text) if text.strip().startswith("{") else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "{}")


def _upload(server: str, photo: Path, name: str) -> None:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + photo.read_bytes()
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n--{boundary}--\r\n'.encode()
    status, _ = _post(server, "/upload/image", body, f"multipart/form-data; boundary={boundary}")
    if status != 200:
        raise SystemExit(f"upload of {name} failed (HTTP {status})")


def _problems(resp: dict) -> list[str]:
    out = []
    err = resp.get("error")
    if isinstance(err, dict) and err.get("type") != "prompt_outputs_failed_validation":
        out.append(f"{err.get('type')}: {err.get('message')}")
    for nid, node in (resp.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            out.append(f"node {nid} ({node.get('class_type')}): {e.get('message')} — {e.get('details')}")
    return out or [json.dumps(resp)[:300]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--scratch-base", required=True, help="the --base-directory the scratch server runs with")
    ap.add_argument(
        "--photo", action="append", required=True, help="a face photo (repeat: one per image name)"
    )
    ap.add_argument("--workflows", default=str(REPO / "workflows" / "api"))
    args = ap.parse_args(argv)
    server = args.server.rstrip("/")
    base = Path(args.scratch_base)
    if not (base / "custom_nodes").is_dir():
        raise SystemExit(f"{base} is not a ComfyUI base directory (no custom_nodes/); use a scratch one")
    files = sorted(Path(args.workflows).glob("*.json"))
    prompts = {p.stem: json.loads(p.read_text()) for p in files}
    placeholders, images = set(), []
    for prompt in prompts.values():
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if name in FOLDERS and isinstance(value, str):
                    placeholders.add((FOLDERS[name], value))
                elif name == "image" and isinstance(value, str) and value not in images:
                    images.append(value)
    created = 0
    for folder, name in sorted(placeholders):
        target = base / "models" / folder / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
            created += 1
    photos = [Path(p) for p in args.photo]
    for i, name in enumerate(images):
        _upload(server, photos[i % len(photos)], name)
    print(
        f"{len(placeholders)} model files named ({created} empty placeholders created), {len(images)} images uploaded"
    )
    bad = 0
    for stem, prompt in prompts.items():
        status, resp = _post(server, "/prompt", json.dumps({"prompt": prompt}).encode())
        if status == 200 and resp.get("prompt_id"):
            print(f"{stem}: accepted by ComfyUI ({len(prompt)} nodes)")
        else:
            bad += 1
            print(f"{stem}: REJECTED (HTTP {status})")
            for p in _problems(resp):
                print(f"  - {p}")
    for _ in range(20):  # nothing should run to completion: clear what is queued, stop what runs
        _post(server, "/queue", json.dumps({"clear": True}).encode())
        _post(server, "/interrupt", b"{}")
        with urllib.request.urlopen(server + "/queue", timeout=30) as r:
            q = json.loads(r.read())
        if not q.get("queue_running") and not q.get("queue_pending"):
            break
        time.sleep(1)
    print(f"{len(prompts) - bad}/{len(prompts)} templates accepted by ComfyUI's prompt validation")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
