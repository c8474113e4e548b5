"""Run IdentityLock's nodes on a tiny random-weight model of every family in a REAL ComfyUI (issues 13 and 14).

    /tmp/cvenv/bin/python scripts/check_families.py --comfyui /work/comfy [--pack /work/main]
        [--families sd15 flux1 ... wan21] [--only train|render] [--adapters lora lokr] [--base DIR]

Proof harness, never run in CI (CI cannot fetch ComfyUI). The toys come from scripts/comfy_toys.py (ComfyUI's own
config -> model_base -> ModelPatcher classes, VAEs detected by comfy.sd.VAE, real SD1.5 CLIP, labelled stand-in
text encoders elsewhere). Prints one row per family and check; exits 1 when any row fails. A row passes only on
its real checks:

- render/seeds: DriftSeedSearch ran (width/height path and LATENT path), its noise for the seed equals KSampler's
  (comfy.sample.prepare_noise on the family template's empty latent, max abs difference 0), its sampled latent
  equals ComfyUI's common_ksampler for that seed, and its PNGs were written;
- render/portrait: MatchedPortrait ran on a real photo as the scene, its sampler got KSampler's noise for its
  latent, and it returned the composited image;
- train: LoRATrainAdaptive trained a few steps on real face crops (FaceCropPrep of lisa_*), saved the file;
  ComfyUI's LoraLoaderModelOnly reloaded it with 0 "lora key not loaded" log lines; the model's denoised output
  changed (and the input MODEL did not); the backend's loss on its first batch equals the family's objective
  computed by hand from the raw diffusion_model output (velocity n - x0 for flow models, eps for eps models;
  the x0 form, sigma^2-weighted, is named when that is what matches); one row per --adapters type; a probe row
  trains with the IDENTITY connected (probe every step: the family's own sampling, latent and guidance);
- refusal (wan21, a Wan 2.1 video toy, no family of the table): every node stops with one IdentityLockError
  sentence naming the supported families, before sampling.

The scene (london001_1) and the crops (lisa_1..4) are real photos: random weights render noise, so MatchedPortrait
reports "not passed" — the row checks that it ran, not that it passed. Run time on 2 shared CPU cores: ~7-14 min
for every family and check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from family_harness import (
    CONTEXT,
    HERE,
    RENDER_SIZE,
    Inputs,
    Row,
    guided,
    import_pack,
    ksampler_noise,
    max_diff,
    record_sampling,
    toys,
    where,
)  # fmt: skip
from family_train import probe_row, train_kwargs, train_row


# -- render rows (issue 14) ------------------------------------------------------------------------------------
def render_seeds(toy, fam, inputs, seeds_mod, out_dir: Path) -> Row:
    row = Row(toy.family, "seeds")
    pos = guided(toy, fam, toys.encode(toy.clip, "a photo of lsaperson"))
    neg = guided(toy, fam, toys.encode(toy.clip, ""))
    steps = 2
    template = toys.empty_latent(toy.family, RENDER_SIZE, RENDER_SIZE)
    common = dict(seed_count=1, steps=steps, cfg=fam.cfg, sampler_name=fam.sampler, scheduler=fam.scheduler,
                  denoise=1.0, width=RENDER_SIZE, height=RENDER_SIZE, threshold=0.0, stop_after=0, top_k=1,
                  seeds_per_batch=1)  # fmt: skip
    problems = []
    # the width/height path, then the LATENT path (the template's empty latent), each with its own seed
    for label, seed, extra in (("wh", 5, {}), ("latent", 6, {"latent": template})):
        ref_noise = ksampler_noise(toy, template, seed)
        ref = toys.ksampler(toy, pos, neg, template, seed, steps, fam.cfg, fam.sampler, fam.scheduler)[
            "samples"
        ]
        row.cols["latent"] = "x".join(map(str, ref.shape[1:]))
        seeds_dir = out_dir / "identitylock" / "seeds"
        t_before = time.time() - 1
        with record_sampling() as calls:
            try:
                res = seeds_mod.DriftSeedSearch().search(toy.model, pos, neg, toy.vae, inputs.identity,
                                                         seed_start=seed, save="all", **common, **extra)["result"]  # fmt: skip
            except Exception as exc:
                res = None
                problems.append(f"{label}: {where(exc)}")
        noise = max_diff(calls[0]["noise"], ref_noise) if calls else "not sampled"
        row.cols[f"noiseΔ {label}"] = noise if isinstance(noise, str) else f"{noise:.1e}"
        if noise != 0.0:
            problems.append(f"{label}: noise differs from KSampler ({noise})")
        if res is not None:
            d = max_diff(res[2]["samples"], ref)
            row.cols[f"ksamplerΔ {label}"] = d if isinstance(d, str) else f"{d:.1e}"
            if isinstance(d, str) or d > 1e-4:
                problems.append(f"{label}: sampled latent differs from KSampler's ({d})")
            written = [
                p for p in seeds_dir.glob(f"verify_seed_{seed}_*.png") if p.stat().st_mtime >= t_before
            ]
            row.cols[f"pngs {label}"] = len(written)
            if not written:
                problems.append(f"{label}: no PNG written")
    row.ok = not problems
    row.error = "; ".join(problems)
    return row


def render_portrait(toy, fam, inputs, portrait_mod) -> Row:
    import comfy.sample

    row = Row(toy.family, "portrait")
    pos = guided(toy, fam, toys.encode(toy.clip, "a photo of lsaperson"))
    neg = guided(toy, fam, toys.encode(toy.clip, ""))
    with record_sampling() as calls:
        try:
            res = portrait_mod.MatchedPortrait().run(
                inputs.scene, toy.model, pos, neg, toy.vae, inputs.identity, seed=3, attempts=1, denoise=0.75,
                steps=2, cfg=fam.cfg, sampler_name=fam.sampler, scheduler=fam.scheduler, mask_feather=0.06,
                work_size=256, clip=toy.clip, extra_prompt="studio light",
            )["result"]  # fmt: skip
        except Exception as exc:
            res = None
            row.error = where(exc)
    if calls:
        c = calls[0]
        row.cols["latent"] = "x".join(map(str, c["latent"].shape[1:]))
        fixed = comfy.sample.fix_empty_latent_channels(toy.model, c["latent"])
        d = max_diff(c["noise"], comfy.sample.prepare_noise(fixed, int(c["seed"])))
        row.cols["noiseΔ"] = d if isinstance(d, str) else f"{d:.1e}"
        if d != 0.0:
            row.error = (row.error + "; " if row.error else "") + f"noise differs from KSampler's ({d})"
    if res is not None:
        row.cols["image"] = "x".join(map(str, res[0].shape[1:]))
        report = json.loads(res[3])
        row.cols["passed"] = report.get("passed")
    row.ok = res is not None and not row.error
    return row


# -- refusal (issues 13 and 14: "a MODEL they can't handle gets a clear sentence") --------------------------------
def refusal_row(il, toy, inputs, seeds_mod, portrait_mod, train_mod, only: str | None = None) -> Row:
    """Each node, given a MODEL of no family in the table, must stop with one IdentityLockError sentence that
    names the supported families (before any sampling or training)."""
    import importlib

    errors = importlib.import_module(f"{il.__name__}.core.errors")
    row = Row(toy.family, "refusal")
    pos, neg = toys.encode(toy.clip, "a photo of lsaperson"), toys.encode(toy.clip, "")
    runs = {
        "DriftSeedSearch": lambda: seeds_mod.DriftSeedSearch().search(
            toy.model, pos, neg, toy.vae, inputs.identity, seed_start=0, seed_count=1, steps=1, cfg=1.0,
            sampler_name="euler", scheduler="simple", denoise=1.0, width=RENDER_SIZE, height=RENDER_SIZE,
            threshold=0.0, stop_after=0, top_k=1, seeds_per_batch=1, save="none"),
        "MatchedPortrait": lambda: portrait_mod.MatchedPortrait().run(
            inputs.scene, toy.model, pos, neg, toy.vae, inputs.identity, seed=0, attempts=1, denoise=0.75,
            steps=1, cfg=1.0, sampler_name="euler", scheduler="simple", mask_feather=0.06, work_size=256),
        "LoRATrainAdaptive": lambda: train_mod.LoRATrainAdaptive().train(**train_kwargs(toy, inputs, "toy_refused")),
    }  # fmt: skip
    if only:
        runs = {k: v for k, v in runs.items() if (k == "LoRATrainAdaptive") == (only == "train")}
    problems = []
    for node, run in runs.items():
        with record_sampling() as calls:
            try:
                run()
                problems.append(f"{node}: ran without refusing")
                row.cols[node] = "ran"
                continue
            except errors.IdentityLockError as exc:
                msg = str(exc)
            except Exception as exc:
                problems.append(f"{node}: {where(exc)}")
                row.cols[node] = "crash"
                continue
        named = all(label in msg for label in ("SD1.x", "SDXL", "FLUX.1", "Qwen-Image"))
        clear = named and "\n" not in msg.strip() and not calls
        row.cols[node] = "refused" if clear else "unclear"
        if not clear:
            problems.append(
                f"{node}: {msg[:200]!r} (names the families: {named}; sampled first: {bool(calls)})"
            )
    row.ok = not problems
    row.error = "; ".join(problems)
    return row


# -- main ------------------------------------------------------------------------------------------------------
def print_rows(rows: list[Row]) -> None:
    for check in ("seeds", "portrait", "train", "train-lokr", "probe", "refusal"):
        sel = [r for r in rows if r.check == check]
        if not sel:
            continue
        keys = []
        for r in sel:
            keys += [k for k in r.cols if k not in keys]
        print(f"\n## {check}")
        print(" | ".join(["family", "ok", "s"] + keys + ["error"]))
        for r in sel:
            vals = [r.family, "PASS" if r.ok else "FAIL", f"{r.seconds:.1f}"] + [
                str(r.cols.get(k, "")) for k in keys
            ]
            print(" | ".join(vals + [r.error]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (0.8)")
    ap.add_argument(
        "--pack", default=str(HERE.parent), help="IdentityLock folder to test (default: this one)"
    )
    keys = toys.FAMILY_KEYS + toys.UNSUPPORTED_KEYS
    ap.add_argument(
        "--families",
        nargs="*",
        default=list(keys),
        choices=keys,
        help="families to check; wan21 (a video model) checks that every node refuses it",
    )
    ap.add_argument("--only", choices=("train", "render"))
    ap.add_argument(
        "--adapters",
        nargs="*",
        default=["lora"],
        choices=("lora", "lokr"),
        help="adapter types the train rows use (lokr needs a node with the adapter input)",
    )
    ap.add_argument("--base", default=None, help="ComfyUI base directory (models/output); default a temp dir")
    args = ap.parse_args(argv)
    pack = CONTEXT["pack"] = Path(args.pack).resolve()
    base = Path(args.base or tempfile.mkdtemp(prefix="il_families_"))
    t_start = time.time()
    toys.setup_comfy(args.comfyui, str(base))
    il = import_pack(pack)
    import importlib

    seeds_mod = importlib.import_module(f"{il.__name__}.nodes.seeds")
    portrait_mod = importlib.import_module(f"{il.__name__}.nodes.portrait")
    train_mod = importlib.import_module(f"{il.__name__}.nodes.train")
    fam_mod = importlib.import_module(f"{il.__name__}.core.families")
    import folder_paths

    inputs = Inputs(il, HERE.parent / "tests" / "fixtures" / "faces")
    rows: list[Row] = []
    for key in args.families:
        fam = None if key in toys.UNSUPPORTED_KEYS else fam_mod.get_family(key)
        t0 = time.time()
        try:
            toy = toys.build(key)
        except Exception as exc:
            rows.append(Row(key, "build", error=where(exc)))
            continue
        if key in toys.UNSUPPORTED_KEYS:
            print(f"# {toy.describe()} -> not in the family table", flush=True)
            t1 = time.time()
            try:
                row = refusal_row(il, toy, inputs, seeds_mod, portrait_mod, train_mod, args.only)
            except Exception as exc:
                row = Row(key, "refusal", error="harness: " + where(exc))
            row.seconds = time.time() - t1
            rows.append(row)
            print(
                f"  refusal: {'PASS' if row.ok else 'FAIL'} {row.seconds:.1f}s {row.cols} {row.error}",
                flush=True,
            )
            continue
        matched = fam_mod.family_of_comfy_model(toy.model).key
        print(f"# {toy.describe()} -> family table: {matched}  ({time.time() - t0:.1f}s)", flush=True)
        out_dir = Path(folder_paths.get_output_directory())
        loras_dir = Path(folder_paths.get_folder_paths("loras")[0])
        checks = []
        if args.only != "train":
            checks += [("seeds", partial(render_seeds, toy, fam, inputs, seeds_mod, out_dir)),
                       ("portrait", partial(render_portrait, toy, fam, inputs, portrait_mod))]  # fmt: skip
        if args.only != "render":
            for adapter in args.adapters:
                name = "train" if adapter == "lora" else f"train-{adapter}"
                checks.append((name, partial(train_row, il, toy, fam, inputs, train_mod, loras_dir, adapter)))
            checks.append(("probe", partial(probe_row, il, toy, fam, inputs, train_mod)))
        for check_name, check in checks:
            t1 = time.time()
            try:
                row = check()
            except Exception as exc:  # a harness-side failure is a failed row too, never hidden
                row = Row(key, check_name, error="harness: " + where(exc))
            row.seconds = time.time() - t1
            if matched != key:
                row.ok, row.error = False, f"family table matched {matched!r}; " + row.error
            rows.append(row)
            print(
                f"  {row.check}: {'PASS' if row.ok else 'FAIL'} {row.seconds:.1f}s {row.cols} {row.error}",
                flush=True,
            )
    print_rows(rows)
    print(
        f"\n{sum(r.ok for r in rows)}/{len(rows)} rows passed in {time.time() - t_start:.0f}s (pack {pack})"
    )
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
