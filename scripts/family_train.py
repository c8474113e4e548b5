"""The train row of scripts/check_families.py (issue 13), proof harness in a real ComfyUI, never run in CI:
LoRATrainAdaptive on a toy, reload through LoraLoaderModelOnly, unloaded keys, output change, loss by hand."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from family_harness import PHASES, RENDER_SIZE, LogCount, Row, guided, max_diff, toys, where


# -- -------------------------------------------------------------------------------------
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


def train_kwargs(toy, inputs, name: str, adapter: str = "lora") -> dict:
    """The node's widgets by name (new inputs the backend gains keep their defaults): 3 steps of one phase;
    ``adapter`` is passed only when it is not the default LoRA (older nodes have no such input)."""
    kw = dict(model=toy.model, clip=toy.clip, vae=toy.vae, images=inputs.crops, trigger_word="lsaperson",
              lora_name=name, preset="TINY_TEST", schedule="fixed", seed=0, prep_metadata=inputs.meta,
              phases_json=PHASES, checkpoint_every=0, overwrite=True, significance=1.0)  # fmt: skip
    if adapter != "lora":
        kw["adapter"] = adapter
    return kw


def train_row(il, toy, fam, inputs, train_mod, loras_dir: Path, adapter: str = "lora") -> Row:
    import comfy.sd  # noqa: F401
    import torch

    row = Row(toy.family, "train" if adapter == "lora" else f"train-{adapter}")
    name = f"toy_{toy.family}_{adapter}.safetensors"
    before = denoised_once(toy, fam)
    holder = {"model": toy.model}
    with capture_first_prediction(il, holder) as rec:
        try:
            with torch.inference_mode():  # as ComfyUI executes nodes
                out = train_mod.LoRATrainAdaptive().train(**train_kwargs(toy, inputs, name, adapter))
        except Exception as exc:
            row.error = where(exc)
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


def probe_row(il, toy, fam, inputs, train_mod) -> Row:
    """LoRATrainAdaptive with the IDENTITY connected and a probe every step: the probe renders with the family's
    own sampling defaults, latent shape and guidance (core/families.py) and scores each render. Random weights
    render noise, so every probe sample finds no face and counts as drift 1.0; the row checks that the probe ran
    on the family and recorded its samples, not a likeness."""
    import torch

    row = Row(toy.family, "probe")
    kw = train_kwargs(toy, inputs, f"probe_{toy.family}")
    kw.update(identity=inputs.identity, probe_every=1, probe_samples=1)
    try:
        with torch.inference_mode():
            out = train_mod.LoRATrainAdaptive().train(**kw)
    except Exception as exc:
        row.error = where(exc)
        return row
    lines = out[3].splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("identity probes")), None)
    probes = (
        [line for line in lines[start + 1 :] if line.strip() and line[:1] == " "] if start is not None else []
    )
    row.cols["probes"] = len(probes)
    row.cols["sampling"] = (
        f"{fam.steps} steps, cfg {fam.cfg}, {fam.sampler}/{fam.scheduler}, guidance {fam.guidance}"
    )
    row.ok = len(probes) >= 1
    row.error = "" if row.ok else "no probe recorded in the report"
    return row
