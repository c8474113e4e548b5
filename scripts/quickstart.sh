#!/usr/bin/env bash
# Fresh machine -> working IdentityLock: install everything into .venv, then run the main job on the
# embedded default backend (dlib, no download): prepare two sample photos, build an identity reference,
# and measure the drift of a third photo against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
IL=.venv/bin/identitylock
SAMPLES=tests/fixtures/samples   # CC0 photos of Lisa DeBruine (see tests/fixtures/ATTRIBUTION.md)
$IL doctor
$IL prep "$SAMPLES/lisa_1.jpg" "$SAMPLES/lisa_2.jpg" --out out/prepared
$IL embed out/prepared --out out/lisa.safetensors --overwrite   # a re-run replaces the demo reference
$IL drift out/lisa.safetensors "$SAMPLES/lisa_4.jpg"
echo "Done: prepared images in out/prepared/, identity in out/lisa.safetensors"
