"""Run IdentityLock's nodes on a tiny random-weight model of every family in a REAL ComfyUI (issues 13 and 14).

    /tmp/cvenv/bin/python scripts/check_families.py --comfyui /work/comfy [--pack /work/main]
        [--families sd15 flux1 ...] [--only train|render] [--base DIR]

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
  the x0 form, sigma^2-weighted, is named when that is what matches).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_toys as toys  # noqa: E402

PHOTOS = ("lisa_1.jpg", "lisa_2.jpg", "lisa_3.jpg", "lisa_4.jpg")  # generative use: lisa_*/london* only
SCENE = "london001_1.jpg"
PHASES = json.dumps(
    [{"name": "COARSE", "lr": 1e-2, "alpha": 4, "loss": "mse", "min_steps": 3, "max_steps": 3}]
)
RENDER_SIZE = 64


@dataclass
class Row:
    family: str
    check: str
    ok: bool = False
    seconds: float = 0.0
    cols: dict = field(default_factory=dict)
    error: str = ""


# -- plumbing --------------------------------------------------------------------------------------------------
def import_pack(pack: Path):
    """The pack as the package ``identitylock`` (a symlink in a temp folder: the code under test is ``pack``)."""
    tmp = Path(tempfile.mkdtemp(prefix="il_pack_"))
    (tmp / "identitylock").symlink_to(pack.resolve(), target_is_directory=True)
    sys.path.insert(0, str(tmp))
    import importlib

    return importlib.import_module("identitylock")


def where(exc: BaseException, pack: Path) -> str:
    """``Type: message @ pack file:line [-> innermost file:line]``: the innermost frame in the pack's code (not
    this harness), and the innermost frame of all when that is elsewhere (ComfyUI, torch)."""
    frames = traceback.extract_tb(exc.__traceback__)
    root = str(pack.resolve())
    harness = str(HERE)

    def short(f) -> str:
        fn = os.path.realpath(f.filename)
        return f"{os.path.relpath(fn, root) if fn.startswith(root + os.sep) else fn}:{f.lineno}"

    inside = [f for f in frames if os.path.realpath(f.filename).startswith(root + os.sep)
              and not os.path.realpath(f.filename).startswith(harness + os.sep)]  # fmt: skip
    locs = []
    if inside:
        locs.append(short(inside[-1]))
    if frames and (not inside or frames[-1] is not inside[-1]):
        locs.append(short(frames[-1]))
    msg = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {msg}" + (f" @ {' -> '.join(locs)}" if locs else "")


class LogCount(logging.Handler):
    def __init__(self, needle: str):
        super().__init__(logging.DEBUG)
        self.needle, self.lines = needle, []

    def emit(self, record):
        msg = record.getMessage()
        if self.needle in msg:
            self.lines.append(msg)


@contextmanager
def record_sampling():
    """Record every (noise, latent_image, seed) that reaches comfy.sample.sample, then call through."""
    import comfy.sample

    calls = []
    original = comfy.sample.sample

    def wrapper(model, noise, *args, **kwargs):
        latent = args[6] if len(args) > 6 else kwargs.get("latent_image")
        calls.append(
            {"noise": noise.detach().clone(), "latent": latent.detach().clone(), "seed": kwargs.get("seed")}
        )
        return original(model, noise, *args, **kwargs)

    comfy.sample.sample = wrapper
    try:
        yield calls
    finally:
        comfy.sample.sample = original


def ksampler_noise(toy, latent: dict, seed: int):
    """The noise nodes.common_ksampler draws for ``seed`` on ``latent`` (its own two lines)."""
    import comfy.sample

    img = comfy.sample.fix_empty_latent_channels(toy.model, latent["samples"])
    return comfy.sample.prepare_noise(img, seed, latent.get("batch_index"))


def max_diff(a, b) -> str | float:
    if tuple(a.shape) != tuple(b.shape):
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    return float((a.float() - b.float()).abs().max())


def load_photo(path: Path, square: int | None = None):
    """An IMAGE tensor [1,H,W,3]; ``square`` pads to a square (edge colour) and resizes, to batch photos."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    if square:
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), img.getpixel((0, 0)))
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        img = canvas.resize((square, square), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


# -- shared inputs ---------------------------------------------------------------------------------------------
class Inputs:
    """Face crops, identity and scene, made once with the pack's own nodes."""

    def __init__(self, il, faces: Path):
        import importlib

        import torch

        IdentityEmbed = importlib.import_module(f"{il.__name__}.nodes.identity").IdentityEmbed
        FaceCropPrep = importlib.import_module(f"{il.__name__}.nodes.prep").FaceCropPrep

        photos = torch.cat([load_photo(faces / p, square=512) for p in PHOTOS])
        self.crops, _, self.meta = FaceCropPrep().prepare(
            photos, 64, 0.4, "none", "#FFFFFF", "largest", "main only", "", "", "auto"
        )
        self.identity = IdentityEmbed().embed(photos, "auto", "skip")["result"][0]
        self.scene = load_photo(faces / SCENE, square=384)


def guided(toy, fam, cond):
    return toys.with_guidance(cond, fam.guidance)


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
                problems.append(f"{label}: {where(exc, PACK)}")
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
            row.error = where(exc, PACK)
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


# -- train rows (issue 13) -------------------------------------------------------------------------------------
def denoised_once(toy, fam, seed: int = 11):
    """The model's x0 prediction at the first sigma: one Euler step of ComfyUI's KSampler from pure noise."""
    pos = guided(toy, fam, toys.encode(toy.clip, "a photo of lsaperson"))
    latent = toys.empty_latent(toy.family, RENDER_SIZE, RENDER_SIZE)
    return toys.ksampler(toy, pos, pos, latent, seed, steps=1, cfg=1.0, sampler="euler", scheduler="simple")[
        "samples"
    ]


@contextmanager
def capture_first_prediction(il, mp_holder: dict):
    """Record the trainer backend's first predict() call: its inputs, (pred, target), and the raw
    diffusion_model forward (input, timestep, output) made inside it."""
    import importlib

    trainer_mod = importlib.import_module(f"{il.__name__}.core.training.trainer")
    original_init = trainer_mod.Trainer.__init__
    record: dict = {}

    def init(self, network, backend, *args, **kwargs):
        original_init(self, network, backend, *args, **kwargs)
        predict = backend.predict

        def wrapped(latents, cond, noise, u):
            if record:
                return predict(latents, cond, noise, u)
            dm = mp_holder["model"].model.diffusion_model
            seen = {}

            def hook(module, args, kwargs, output):
                if "x" not in seen:
                    x = args[0] if args else kwargs.get("x")
                    t = args[1] if len(args) > 1 else kwargs.get("timesteps", kwargs.get("timestep"))
                    seen.update(x=x.detach().float().clone(), t=t.detach().float().clone(),
                                out=output.detach().float().clone())  # fmt: skip

            base = mp_holder["model"].model
            apply_model = base.apply_model

            def apply_spy(x, t, *a, **kw):  # ComfyUI's apply_model(x_t, sigma, ...): the exact sigma
                seen.setdefault("sigma", t.detach().float().clone())
                return apply_model(x, t, *a, **kw)

            h = dm.register_forward_hook(hook, with_kwargs=True)
            base.apply_model = apply_spy
            try:
                pred, target = predict(latents, cond, noise, u)
            finally:
                h.remove()
                del base.apply_model
            record.update(latents=latents.detach().float().clone(), noise=noise.detach().float().clone(),
                          u=u.detach().float().clone(), pred=pred.detach().float().clone(),
                          target=target.detach().float().clone(), **seen)  # fmt: skip
            return pred, target

        backend.predict = wrapped

    trainer_mod.Trainer.__init__ = init
    try:
        yield record
    finally:
        trainer_mod.Trainer.__init__ = original_init


def loss_by_hand(toy, rec: dict) -> tuple[bool, str]:
    """The family's objective from the raw diffusion_model output vs the backend's MSE(pred, target)."""
    import torch

    ms = toy.model.get_model_object("model_sampling")
    flow = type(ms).__name__ in ("ModelSamplingDiscreteFlow", "ModelSamplingFlux") or "CONST" in [
        c.__name__ for c in type(ms).__mro__
    ]
    backend = float(torch.nn.functional.mse_loss(rec["pred"], rec["target"]))
    x0, n, raw, x_in = rec["latents"], rec["noise"], rec["out"], rec["x"]
    b = x0.shape[0]
    # the sigma the backend gave ComfyUI's apply_model (exact); a backend that calls the diffusion model itself:
    # from the raw timestep (flow: t = sigma * multiplier; eps: ComfyUI's table lookup, approximate)
    if "sigma" in rec:
        sigma, how = rec["sigma"].reshape(-1)[:b], ""
    elif flow:
        sigma, how = rec["t"].reshape(-1)[:b] / float(getattr(ms, "multiplier", 1.0)), " from timestep"
    else:
        sigma, how = ms.sigma(rec["t"].reshape(-1)[:b]).float(), " from timestep, approx."
    shape = (b,) + (1,) * (x0.ndim - 1)
    s = sigma.reshape(shape)
    if flow:
        x_t = s * n + (1 - s) * x0
        x_in_hand, target, name = x_t, n - x0, "v"
    else:
        x_t = x0 + s * n
        x_in_hand, target, name = x_t / torch.sqrt(s**2 + 1), n, "eps"
    raw = raw.reshape(x0.shape)
    hand = float(((raw - target) ** 2).mean())
    x0_pred = x_t - s * raw
    hand_x0 = float(((x0_pred - x0) ** 2).mean())
    dx = float((x_in.reshape(x0.shape) - x_in_hand).abs().max())
    tol = lambda a, c: abs(a - c) <= 1e-4 * max(1.0, abs(c))  # noqa: E731
    sig = ",".join(f"{float(v):.3g}" for v in sigma) + how
    if dx > 1e-3 * max(1.0, float(x_in_hand.abs().max())):
        return False, f"x_t by hand differs from the model input by {dx:.2e} (sigma {sig})"
    if tol(backend, hand):
        return True, f"{name} {hand:.4g}=backend (σ {sig})"
    if tol(backend, hand_x0):
        return True, f"x0 {hand_x0:.4g}=backend; {name} {hand:.4g} (σ {sig})"
    return False, f"backend {backend:.4g} ≠ {name} {hand:.4g} / x0 {hand_x0:.4g} (σ {sig})"


def train_kwargs(toy, inputs, name: str) -> dict:
    """The node's widgets by name (new inputs the backend gains keep their defaults): 3 steps of one phase."""
    return dict(model=toy.model, clip=toy.clip, vae=toy.vae, images=inputs.crops, trigger_word="lsaperson",
                lora_name=name, preset="TINY_TEST", schedule="fixed", seed=0, prep_metadata=inputs.meta,
                phases_json=PHASES, checkpoint_every=0, overwrite=True, significance=1.0)  # fmt: skip


def train_row(il, toy, fam, inputs, train_mod, loras_dir: Path) -> Row:
    import comfy.sd  # noqa: F401
    import torch

    row = Row(toy.family, "train")
    name = f"toy_{toy.family}.safetensors"
    before = denoised_once(toy, fam)
    holder = {"model": toy.model}
    with capture_first_prediction(il, holder) as rec:
        try:
            with torch.inference_mode():  # as ComfyUI executes nodes
                out = train_mod.LoRATrainAdaptive().train(**train_kwargs(toy, inputs, name))
        except Exception as exc:
            row.error = where(exc, PACK)
            return row
    problems = []
    path = loras_dir / out[1]
    row.cols["file"] = f"{path.name} {path.stat().st_size // 1024} KiB" if path.exists() else "missing"
    if not path.exists():
        problems.append("LoRA file not written")
    untouched = max_diff(denoised_once(toy, fam), before)
    if untouched != 0.0:
        problems.append(f"the input MODEL changed after training ({untouched})")
    counter = LogCount("lora key not loaded")
    logging.getLogger().addHandler(counter)
    try:
        loader = toys.comfy_node("LoraLoaderModelOnly")()
        lora_model = loader.load_lora_model_only(toy.model, out[1], 1.0)[0]
    finally:
        logging.getLogger().removeHandler(counter)
    row.cols["not loaded"] = len(counter.lines)
    row.cols["patched"] = len(lora_model.patches)
    if counter.lines:
        problems.append(f"{len(counter.lines)} 'lora key not loaded' lines, e.g. {counter.lines[0]}")
    if not lora_model.patches:
        problems.append("LoraLoaderModelOnly patched no weight")
    after_toy = toys.Toy(toy.family, lora_model, toy.clip, toy.vae, toy.clip_is_comfy)
    change = max_diff(denoised_once(after_toy, fam), before)
    row.cols["outΔ"] = change if isinstance(change, str) else f"{change:.2e}"
    if isinstance(change, str) or change == 0.0:
        problems.append(f"the LoRA did not change the model output ({change})")
    if rec and "out" in rec:
        ok, text = loss_by_hand(toy, rec)
        row.cols["loss by hand"] = text
        if not ok:
            problems.append(f"loss by hand: {text}")
    else:
        problems.append("the backend's first prediction was not captured")
    row.ok = not problems
    row.error = "; ".join(problems)
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
                problems.append(f"{node}: {where(exc, PACK)}")
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
PACK = HERE.parent


def print_rows(rows: list[Row]) -> None:
    for check in ("seeds", "portrait", "train", "refusal"):
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
    global PACK
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
    ap.add_argument("--base", default=None, help="ComfyUI base directory (models/output); default a temp dir")
    args = ap.parse_args(argv)
    PACK = Path(args.pack).resolve()
    base = Path(args.base or tempfile.mkdtemp(prefix="il_families_"))
    t_start = time.time()
    toys.setup_comfy(args.comfyui, str(base))
    il = import_pack(PACK)
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
            rows.append(Row(key, "build", error=where(exc, PACK)))
            continue
        if key in toys.UNSUPPORTED_KEYS:
            print(f"# {toy.describe()} -> not in the family table", flush=True)
            t1 = time.time()
            try:
                row = refusal_row(il, toy, inputs, seeds_mod, portrait_mod, train_mod, args.only)
            except Exception as exc:
                row = Row(key, "refusal", error="harness: " + where(exc, PACK))
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
            checks.append(("train", partial(train_row, il, toy, fam, inputs, train_mod, loras_dir)))
        for check_name, check in checks:
            t1 = time.time()
            try:
                row = check()
            except Exception as exc:  # a harness-side failure is a failed row too, never hidden
                row = Row(key, check_name, error="harness: " + where(exc, PACK))
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
        f"\n{sum(r.ok for r in rows)}/{len(rows)} rows passed in {time.time() - t_start:.0f}s (pack {PACK})"
    )
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
