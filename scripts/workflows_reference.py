"""Reference-image (zero-shot) identity templates: the person's photo goes through a model's built-in reference
mechanism — FLUX.1 Kontext (ReferenceLatent), Qwen-Image-Edit 2509 (TextEncodeQwenImageEditPlus), Flux.2
multi-reference (chained ReferenceLatent) — with no LoRA. DriftSeedSearch renders N seeds on that conditioning and
keeps only the ones within the lock threshold; IdentityMetrics reports the candidates against the photo (including
the copycat check: a reference model can hand the photo back nearly unchanged).

The graphs follow ComfyUI's official templates (flux_kontext_dev_basic, image_qwen_image_edit_2509, image_flux2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from workflow_graph import REFERENCE, REFERENCE_2, Graph, Out
from workflows_families import (
    SPECS,
    Spec,
    conditioning,
    files_note,
    load,
    sampling_line,
    sampling_model,
    seed_gate,
)

GATED = (
    "DriftSeedSearch renders 32 seeds on the reference conditioning, measures each render's drift from the identity "
    "embedded from the same photo(s) (FaceCropPrep → IdentityEmbed, nothing saved) and stops after 4 locked seeds; "
    "only locked renders reach the Save node (none locked: nothing saved, ComfyUI says why). IdentityMetrics then "
    "reports the candidates against the reference photo — similarity, pose, and the copycat bands (> 0.85 means "
    "the render is close to a copy of the photo)."
)
KEEP = "while keeping the same person with the exact same facial features, hairstyle and expression"

KONTEXT = replace(
    SPECS["flux1"],
    official="flux_kontext_dev_basic",
    unet="flux1-dev-kontext_fp8_scaled.safetensors",
    text_encoders=("clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors"),
    guidance=2.5,
    remark="",
)
QWEN_EDIT = replace(
    SPECS["qwen_image"],
    official="image_qwen_image_edit_2509",
    unet="qwen_image_edit_2509_fp8_e4m3fn.safetensors",
    shift=3.0,
    remark="Qwen-Image-Edit 2511 uses the same graph with its own file. With the Lightning 4-step LoRA (a "
    "LoraLoaderModelOnly after the loader) use 4 steps at cfg 1; the official template's table: Qwen team 50 steps "
    "cfg 4.0, Comfy 20 steps cfg 2.5.",
)
FLUX2 = replace(SPECS["flux2"], official="image_flux2", remark="")


def _identity(g: Graph, photos: Out) -> Out:
    prep = g.add("FaceCropPrep", "FaceCropPrep", images=photos)
    return g.add("IdentityEmbed", "IdentityEmbed", images=prep["images"], save_name="")["identity"]


def _graph(name: str, title: str, spec: Spec, how: str) -> Graph:
    return Graph(
        name,
        f"IdentityLock — {title}\n\n{how} {GATED}\n\nSampling: {sampling_line(spec)}.\n\n"
        + files_note(spec)
        + (f"\n\n{spec.remark}" if spec.remark else ""),
    )


def flux1_kontext() -> Graph:
    spec = KONTEXT
    g = _graph(
        "32_flux1_kontext_reference",
        "FLUX.1 Kontext: the person from a reference photo, gated by seed search",
        spec,
        "FLUX.1 Kontext dev edits the reference photo by instruction: FluxKontextImageScale → VAEEncode → "
        "ReferenceLatent on the prompt, then FluxGuidance 2.5 (the official template's value); the encoded photo is "
        "the start latent. Describe the change and say what to keep. Upload the person's photo into the Reference "
        "node.",
    )
    model, clip, vae = load(g, spec)
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    scaled = g.add("FluxKontextImageScale", "Kontext scale", image=ref[0])
    enc = g.add("VAEEncode", "Encode reference", pixels=scaled[0], vae=vae)
    pos, neg = conditioning(
        g,
        spec,
        clip,
        f"Change the background to a sunlit café terrace and the clothes to a navy wool coat, {KEEP}; portrait "
        "photo, natural light",
        ref=lambda c: g.add("ReferenceLatent", "Reference latent", conditioning=c, latent=enc[0])[0],
    )
    seed_gate(g, spec, model, pos, neg, vae, enc[0], _identity(g, ref[0]), prefix="flux1_kontext_locked_seed",
              reference=ref[0])  # fmt: skip
    return g


def qwen_image_edit() -> Graph:
    spec = QWEN_EDIT
    g = _graph(
        "62_qwen_image_edit_reference",
        "Qwen-Image-Edit 2509: the person from a reference photo, gated by seed search",
        spec,
        "Qwen-Image-Edit reads the reference photo in its text encoder: FluxKontextImageScale → "
        "TextEncodeQwenImageEditPlus (image1, with the VAE) for the prompt and, with an empty prompt, for the "
        "negative; ModelSamplingAuraFlow 3 and CFGNorm on the model; the encoded photo is the start latent. A second "
        "photo of the person can go into image2 of both encoders. Upload the person's photo into the Reference node.",
    )
    model, clip, vae = load(g, spec)
    model = g.add("CFGNorm", "CFGNorm", model=sampling_model(g, spec, model), strength=1.0)[0]
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    scaled = g.add("FluxKontextImageScale", "Scale reference", image=ref[0])
    enc = g.add("VAEEncode", "Encode reference", pixels=scaled[0], vae=vae)
    text = f"Place this person in a sunlit café terrace wearing a navy wool coat, {KEEP}; portrait photo"
    pos = g.add("TextEncodeQwenImageEditPlus", "Positive", clip=clip, prompt=text, vae=vae, image1=scaled[0])
    neg = g.add("TextEncodeQwenImageEditPlus", "Negative", clip=clip, prompt="", vae=vae, image1=scaled[0])
    seed_gate(g, spec, model, pos[0], neg[0], vae, enc[0], _identity(g, ref[0]),
              prefix="qwen_image_edit_locked_seed", reference=ref[0])  # fmt: skip
    return g


def flux2_multi_reference() -> Graph:
    spec = FLUX2
    g = _graph(
        "42_flux2_multi_reference",
        "Flux.2: the person from two reference photos, gated by seed search",
        spec,
        "Flux.2 takes several reference images: each photo is scaled to 1 megapixel (ImageScaleToTotalPixels), "
        "encoded, and chained as ReferenceLatent after FluxGuidance 4 (the official template's order); the render "
        f"starts from an empty latent ({spec.latent}). Add more references by chaining another ReferenceLatent. Upload two "
        "different photos of the person into Reference and Reference 2.",
    )
    model, clip, vae = load(g, spec)
    refs, encs = [], []
    for i, image in enumerate((REFERENCE, REFERENCE_2), start=1):
        suffix = "" if i == 1 else f" {i}"
        ref = g.add("LoadImage", f"Reference{suffix}", image=image)
        scaled = g.add("ImageScaleToTotalPixels", f"Scale reference{suffix}", image=ref[0], upscale_method="lanczos",
                       megapixels=1.0)  # fmt: skip
        refs.append(ref)
        encs.append(g.add("VAEEncode", f"Encode reference{suffix}", pixels=scaled[0], vae=vae))

    def with_references(c: Out) -> Out:
        for i, enc in enumerate(encs, start=1):
            c = g.add("ReferenceLatent", f"Reference latent {i}", conditioning=c, latent=enc[0])[0]
        return c

    pos, neg = conditioning(
        g,
        spec,
        clip,
        f"Portrait photo of the person from the reference images in a sunlit café terrace, wearing a navy wool "
        f"coat, {KEEP}, natural light, 85mm",
        ref=with_references,
    )
    photos = g.add("ImageBatch", "Photos", image1=refs[0][0], image2=refs[1][0])
    w, h = spec.size
    lat = g.add(spec.latent, "Latent", width=w, height=h, batch_size=1)
    seed_gate(g, spec, model, pos, neg, vae, lat[0], _identity(g, photos[0]), prefix="flux2_reference_locked_seed",
              reference=photos[0])  # fmt: skip
    return g


REFERENCE_TEMPLATES: list[Callable[[], Graph]] = [flux1_kontext, flux2_multi_reference, qwen_image_edit]
