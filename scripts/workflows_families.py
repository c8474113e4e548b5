"""Templates per model family (SDXL, FLUX.1, Flux.2, Z-Image, Qwen-Image): train an identity LoRA, render it with
DriftSeedSearch keeping only the seeds that hold the face, and (SDXL) LoRA + IPAdapter gated the same way.

A family's model files and loaders follow its official ComfyUI template (comfyui_workflow_templates 0.7.67, the
version ComfyUI 0.8 ships); its sampling defaults (steps, cfg, sampler, scheduler, FluxGuidance) come from the one
family table, ``identitylock.core.families``. Template numbers group the families in the template browser
(ComfyUI lists a pack's ``workflows/*.json`` by file name): 2x SDXL, 3x FLUX.1, 4x Flux.2, 5x Z-Image, 6x Qwen-Image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from identitylock.core.families import Family, get_family
from workflow_graph import IDENTITY, NEGATIVE, REFERENCE, REFERENCE_2, TRIGGER, Graph, IfDefined, Node, Out
from workflows_sd15 import CKPT, ipadapter

SEED = 1187891159


@dataclass(frozen=True)
class Spec:
    """How one family's files are loaded and rendered, as its official ComfyUI template does."""

    key: str  # row of identitylock.core.families
    number: int  # first template number (browser order)
    slug: str  # family part of the template names
    official: str  # the official ComfyUI template the loaders follow
    ckpt: str | None = None  # models/checkpoints (SD-style families)
    unet: str | None = None  # models/diffusion_models
    text_encoders: tuple[str, ...] = ()  # models/text_encoders
    clip_type: str = ""  # CLIPLoader / DualCLIPLoader type
    vae: str | None = None  # models/vae
    latent: str = "EmptySD3LatentImage"  # the family's empty-latent node
    shift: float | None = None  # ModelSamplingAuraFlow shift of the official template
    size: tuple[int, int] = (896, 1152)  # portrait render size (width, height)
    remark: str = ""
    guidance: float | None = None  # FluxGuidance when the template's value differs from the family default
    train_tip: str = ""  # one more sentence for the family's train template

    @property
    def flux_guidance(self) -> float | None:
        return self.guidance if self.guidance is not None else self.family.guidance

    @property
    def family(self) -> Family:
        return get_family(self.key)

    @property
    def lora(self) -> str:
        return f"identitylock_person_{self.key}"


SPECS: dict[str, Spec] = {
    s.key: s
    for s in (
        Spec(
            "sdxl",
            20,
            "sdxl",
            "sdxl_simple_example",
            ckpt="sd_xl_base_1.0.safetensors",
            latent="EmptyLatentImage",
            remark="Any SDXL checkpoint works (Juggernaut, RealVisXL ...); pick yours in the Checkpoint node.",
        ),
        Spec(
            "flux1",
            30,
            "flux1",
            "flux_dev_full_text_to_image",
            unet="flux1-dev.safetensors",
            text_encoders=("clip_l.safetensors", "t5xxl_fp16.safetensors"),
            clip_type="flux",
            vae="ae.safetensors",
            train_tip="The Diffusion model node loads the dev base in fp8 (weight_dtype fp8_e4m3fn; ComfyUI computes "
            "in bf16), which a 24 GB card needs for training.",
            remark="FLUX.1 schnell: load flux1-schnell.safetensors and use 4 steps (it ignores FluxGuidance). On a "
            "small card t5xxl_fp8_e4m3fn_scaled.safetensors saves memory.",
        ),
        Spec(
            "flux2",
            40,
            "flux2",
            "image_flux2_text_to_image",
            unet="flux2_dev_fp8mixed.safetensors",
            text_encoders=("mistral_3_small_flux2_bf16.safetensors",),
            clip_type="flux2",
            vae="flux2-vae.safetensors",
            latent="EmptyFlux2LatentImage",
            train_tip="Flux.2 Dev does not fit a 24 GB card for training even in fp8 (about 40 GB at rank 16 by "
            "docs/training.md's arithmetic: a 48 GB card). Users report LoKr working better than LoRA on Flux.2 "
            "Klein: set adapter to lokr to try it.",
            remark="In ComfyUI 0.8 the CLIPLoader type flux2 reads the Mistral text encoder of Flux.2 Dev (32 B "
            "parameters); it has no path for the Qwen3 text encoder of the Klein 4B / 9B models, which "
            "need a newer ComfyUI — swap the files there, the graph stays the same. As the official template, "
            "the search samples with Flux2Scheduler's resolution-dependent sigmas (DriftSeedSearch's sigmas "
            "input; the same noise per seed as KSampler).",
        ),
        Spec(
            "zimage",
            50,
            "zimage",
            "image_z_image_turbo",
            unet="z_image_turbo_bf16.safetensors",
            text_encoders=("qwen_3_4b.safetensors",),
            clip_type="lumina2",
            train_tip="Users report LoKr working better than LoRA on Z-Image: set adapter to lokr to try it.",
            vae="ae.safetensors",
            shift=3.0,
            remark="Z-Image Turbo is step-distilled (8 steps, cfg 1). Trainers such as ai-toolkit train it through "
            "a de-distillation adapter; IdentityLock trains the file you load — if you have the Z-Image "
            "base (non-distilled) file, train on it and render with Turbo.",
        ),
        Spec(
            "qwen_image",
            60,
            "qwen_image",
            "image_qwen_image",
            unet="qwen_image_fp8_e4m3fn.safetensors",
            text_encoders=("qwen_2.5_vl_7b_fp8_scaled.safetensors",),
            clip_type="qwen_image",
            vae="qwen_image_vae.safetensors",
            shift=3.1,
            size=(1104, 1472),
            train_tip="Qwen-Image (20 B) does not fit a 24 GB card for training even with the fp8 file (about 26 GB "
            "at rank 16 by docs/training.md's arithmetic: a 32 GB card).",
            remark="With the Qwen-Image-Lightning LoRA use 8 steps at cfg 1.",
        ),
    )  # fmt: skip
}


def files_note(spec: Spec, lora: bool = False, extra: tuple[str, ...] = ()) -> str:
    """Which model files the template expects and where they go (ComfyUI/models/...)."""
    rows = []
    if spec.ckpt:
        rows.append(f"models/checkpoints/{spec.ckpt}")
    if spec.unet:
        rows.append(f"models/diffusion_models/{spec.unet}")
    rows += [f"models/text_encoders/{t}" for t in spec.text_encoders]
    if spec.vae:
        rows.append(f"models/vae/{spec.vae}")
    if lora:
        rows.append(
            f"models/loras/{spec.lora}.safetensors (written by {spec.number}_{spec.slug}_train_identity_lora)"
        )
    rows += list(extra)
    return (
        f"Model files (as in ComfyUI's official {spec.official} template; the names are placeholders, pick "
        "yours in the loader nodes):\n" + "\n".join(f"- {r}" for r in rows)
    )


def load(g: Graph, spec: Spec, training: bool = False) -> tuple[Out, Out, Out]:
    """(MODEL, CLIP, VAE) with the family's loaders: a checkpoint, or UNETLoader + (Dual)CLIPLoader + VAELoader.
    For training, a base that a 24 GB card only holds in fp8 and whose file is not fp8 already is loaded as fp8."""
    if spec.ckpt:
        ck = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=spec.ckpt)
        return ck[0], ck[1], ck[2]
    fp8 = training and spec.family.fp8_base_on_24gb and "fp8" not in str(spec.unet)
    unet = g.add(
        "UNETLoader",
        "Diffusion model",
        unet_name=spec.unet,
        **({"weight_dtype": "fp8_e4m3fn"} if fp8 else {}),
    )
    if len(spec.text_encoders) == 2:
        clip = g.add(
            "DualCLIPLoader",
            "Text encoders",
            clip_name1=spec.text_encoders[0],
            clip_name2=spec.text_encoders[1],
            type=spec.clip_type,
        )
    else:
        clip = g.add("CLIPLoader", "Text encoder", clip_name=spec.text_encoders[0], type=spec.clip_type)
    vae = g.add("VAELoader", "VAE", vae_name=spec.vae)
    return unet[0], clip[0], vae[0]


def sampling_model(g: Graph, spec: Spec, model: Out) -> Out:
    """The model as the family's official template samples it (ModelSamplingAuraFlow shift where it sets one)."""
    if spec.shift is None:
        return model
    return g.add("ModelSamplingAuraFlow", "Model sampling (shift)", model=model, shift=spec.shift)[0]


def conditioning(g: Graph, spec: Spec, clip: Out, text: str, ref: Callable[[Out], Out] | None = None):
    """(positive, negative) as the family's template builds them: FluxGuidance on guidance-distilled models; a zeroed
    negative where cfg is 1 (it is not used), a negative prompt otherwise. ``ref`` adds reference latents."""
    fam = spec.family
    pos = g.add("CLIPTextEncode", "Positive", clip=clip, text=text)[0]
    if ref is not None and spec.key != "flux2":
        pos = ref(pos)  # FLUX.1 Kontext: ReferenceLatent before FluxGuidance (official order)
    if spec.flux_guidance is not None:
        pos = g.add("FluxGuidance", "Guidance", conditioning=pos, guidance=spec.flux_guidance)[0]
    if ref is not None and spec.key == "flux2":
        pos = ref(pos)  # Flux.2: FluxGuidance, then the reference latents
    if fam.cfg <= 1.0:
        neg = g.add("ConditioningZeroOut", "Negative (unused at cfg 1)", conditioning=pos)[0]
    else:
        neg = g.add("CLIPTextEncode", "Negative", clip=clip, text=NEGATIVE)[0]
    return pos, neg


def empty_latent(g: Graph, spec: Spec) -> Node:
    w, h = spec.size
    return g.add(spec.latent, "Latent", width=w, height=h, batch_size=1)


def seed_gate(
    g: Graph,
    spec: Spec,
    model: Out,
    pos: Out,
    neg: Out,
    vae: Out,
    latent: Out,
    identity: Out,
    *,
    prefix: str,
    reference: Out | None = None,
    seed_count: int = 32,
) -> Node:
    """DriftSeedSearch over ``seed_count`` seeds with the family's sampling: only locked renders reach SaveImage;
    with ``reference``, IdentityMetrics reports the candidates against the reference photo at the end."""
    fam = spec.family
    w, h = spec.size
    custom = {}
    if (
        spec.key == "flux2"
    ):  # the official Flux.2 template's resolution-dependent schedule, as SamplerCustom uses it
        custom["sigmas"] = g.add("Flux2Scheduler", "Flux2Scheduler", steps=fam.steps, width=w, height=h)[
            "SIGMAS"
        ]
    search = g.add(
        "DriftSeedSearch",
        "DriftSeedSearch",
        model=model,
        positive=pos,
        negative=neg,
        vae=vae,
        identity=identity,
        latent=latent,
        seed_start=SEED,
        seed_count=seed_count,
        steps=fam.steps,
        cfg=fam.cfg,
        sampler_name=fam.sampler,
        scheduler=fam.scheduler,
        width=w,
        height=h,
        stop_after=4,
        top_k=8,
        save="locked",
        results_name=IfDefined(prefix.replace("_locked_seed", "")),  # one results file per template (resume)
        **custom,
    )
    g.add(
        "SaveImage",
        "Locked renders",
        images=search["locked_images"],
        filename_prefix=f"identitylock/{prefix}",
    )
    g.add("PreviewImage", "Candidates (best first)", images=search["candidates"])
    g.add("PreviewAny", "Seed report", source=search["report"])
    if reference is not None:
        m = g.add(
            "IdentityMetrics",
            "IdentityMetrics",
            candidates_1=search["candidates"],
            reference_images=reference,  # not the identity: the copycat check compares with the photo itself
            labels="candidates",
            report_name=prefix.replace("_locked_seed", ""),
            backend="auto",  # the backend IdentityEmbed picks by default
        )
        g.add("PreviewAny", "Metrics summary", source=m["summary"])
    return search


def sampling_line(spec: Spec) -> str:
    fam = spec.family
    guidance = f", FluxGuidance {spec.flux_guidance}" if spec.flux_guidance is not None else ""
    shift = f", ModelSamplingAuraFlow shift {spec.shift}" if spec.shift is not None else ""
    return f"{fam.steps} steps, cfg {fam.cfg}, {fam.sampler} / {fam.scheduler}{guidance}{shift}"


GATE_TEXT = (
    "DriftSeedSearch renders the prompt over 32 seeds, measures each render's drift from the identity (1 − cosine "
    "similarity; leave threshold at 0 for the backend default) and stops after 4 locked seeds. Only locked renders "
    "(exactly one face, drift at or below the threshold) reach the Save node; when none locked, nothing is saved "
    "and ComfyUI says why. The node panel lists seed / drift / locked."
)


def lora_seed_search(spec: Spec) -> Graph:
    fam = spec.family
    name = f"{spec.number + 1}_{spec.slug}_lora_seed_search"
    g = Graph(
        name,
        (
            f"IdentityLock — {fam.label}: identity LoRA + seed search\n\nYour identity LoRA "
            f"({spec.lora}, trained by {spec.number}_{spec.slug}_train_identity_lora) at strength 1.0 on "
            f"{fam.label}, sampled as ComfyUI's official {fam.label} template does ({sampling_line(spec)}, "
            f"{spec.latent} {spec.size[0]}x{spec.size[1]}). {GATE_TEXT} The identity is the one 01_prep_and_embed "
            f"saved ({IDENTITY}). Put the trigger word ({TRIGGER}) first in the prompt.\n\n"
            + files_note(spec, lora=True, extra=(f"models/identitylock/{IDENTITY} (from 01_prep_and_embed)",))
            + (f"\n\n{spec.remark}" if spec.remark else "")
        ),
    )
    model, clip, vae = load(g, spec)
    if spec.ckpt:  # SD-style LoRA: model and text encoder
        lora = g.add(
            "LoraLoader",
            "Identity LoRA",
            model=model,
            clip=clip,
            lora_name=f"{spec.lora}.safetensors",
            strength_model=1.0,
            strength_clip=1.0,
        )
        model, clip = lora[0], lora[1]
    else:  # the DiT families: LoRA on the diffusion model, as the official templates load theirs
        model = g.add(
            "LoraLoaderModelOnly",
            "Identity LoRA",
            model=model,
            lora_name=f"{spec.lora}.safetensors",
            strength_model=1.0,
        )[0]
    model = sampling_model(g, spec, model)
    pos, neg = conditioning(
        g, spec, clip, f"{TRIGGER}, portrait photo of a person, natural window light, 85mm"
    )
    ident = g.add("IdentityLoad", "Identity", identity_file=IDENTITY)
    lat = empty_latent(g, spec)
    seed_gate(g, spec, model, pos, neg, vae, lat[0], ident[0], prefix=f"{spec.slug}_locked_seed")
    return g


def sdxl_lora_ipadapter(faceid: bool) -> Graph:
    spec = SPECS["sdxl"]
    method = "IPAdapter FaceID Plus V2" if faceid else "IPAdapter PLUS FACE"
    name = (
        f"{spec.number + (3 if faceid else 2)}_sdxl_lora_ipadapter_{'faceid_v2' if faceid else 'plus_face'}"
    )
    ip_files = (
        (
            "models/ipadapter/ip-adapter-faceid-plusv2_sdxl.bin",
            "models/loras/ip-adapter-faceid-plusv2_sdxl_lora.safetensors",
            "models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
            "models/insightface/models/buffalo_l/ (insightface; the same models IdentityLock's insightface backend uses)",
        )
        if faceid
        else (
            "models/ipadapter/ip-adapter-plus-face_sdxl_vit-h.safetensors",
            "models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
        )
    )
    g = Graph(
        name,
        (
            f"IdentityLock — SDXL: identity LoRA + {method}, gated by seed search\n\nLoRA + IPAdapter on SDXL: "
            f"the identity LoRA at 0.7 (model and clip) and {method} (ComfyUI_IPAdapter_plus) at 0.6 from the "
            "reference photo"
            + (", FaceID LoRA 0.6, faceidv2 weight 1.0 — set the provider to CUDA on a GPU" if faceid else "")
            + f". {sampling_line(spec)}. {GATE_TEXT} Without a LoRA set its strength to 0 and raise the IPAdapter "
            "weight to 0.8.\n\n"
            + files_note(
                spec, lora=True, extra=(*ip_files, f"models/identitylock/{IDENTITY} (from 01_prep_and_embed)")
            )
        ),
    )
    model, clip, vae = load(g, spec)
    lora = g.add(
        "LoraLoader",
        "Identity LoRA",
        model=model,
        clip=clip,
        lora_name=f"{spec.lora}.safetensors",
        strength_model=0.7,
        strength_clip=0.7,
    )
    ip, _ = ipadapter(g, lora[0], faceid)
    pos, neg = conditioning(
        g, spec, lora[1], f"{TRIGGER}, portrait photo of a person, natural window light, 85mm"
    )
    ident = g.add("IdentityLoad", "Identity", identity_file=IDENTITY)
    lat = empty_latent(g, spec)
    prefix = f"sdxl_{'faceid' if faceid else 'ipadapter'}_locked_seed"
    seed_gate(g, spec, ip[0], pos, neg, vae, lat[0], ident[0], prefix=prefix)
    return g


# ----------------------------------------------------------------------------------------------------------------
# Training: 02 (SD1.5) and one per family


TRAIN_TEXT = (
    "Reference photo(s) → FaceCropPrep (face crops plus augmentations) → LoRATrainAdaptive, the 4-phase adaptive "
    "trainer (COARSE → MID → MID_FINE → FINAL_FINE) that moves on when the loss plateaus (sliding-window slope + "
    "p-value) instead of after a fixed step count. The identity from IdentityEmbed lets it probe drift during "
    "training and keep the best checkpoint. The LoRA is written to models/loras/<lora_name>.safetensors only when "
    "complete; the node panel shows the live loss curve with phase boundaries, slope, p-value and ETA. Set "
    f"trigger_word to the token you will put first in your prompts ({TRIGGER} in the other templates). For 10–15 "
    "photos batch several LoadImage nodes with ImageBatch, or use `identitylock train` on a folder. Validation holds "
    "out whole photos (FaceCropPrep's metadata_json tells the trainer which variants belong together), so give at "
    f"least 2 different photos (the template expects {REFERENCE} and {REFERENCE_2})."
)


def _train_graph(g: Graph, model: Out, clip: Out, vae: Out, lora_name: str, size: int | None = None) -> None:
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    ref2 = g.add("LoadImage", "Reference 2", image=REFERENCE_2)
    photos = g.add("ImageBatch", "Photos", image1=ref[0], image2=ref2[0])
    prep = g.add("FaceCropPrep", "FaceCropPrep", images=photos[0], **({"size": size} if size else {}))
    emb = g.add("IdentityEmbed", "IdentityEmbed", images=prep[0], save_name="")
    train = g.add(
        "LoRATrainAdaptive",
        "LoRATrainAdaptive",
        model=model,
        clip=clip,
        vae=vae,
        images=prep[0],
        prep_metadata=prep["metadata_json"],
        identity=emb["identity"],
        trigger_word=TRIGGER,
        lora_name=lora_name,
    )
    g.add("PreviewImage", "Loss curve", images=train["loss_curve"])
    g.add("PreviewAny", "Training report", source=train["report"])


def train_identity_lora() -> Graph:
    """02: SD1.5 (the original template)."""
    g = Graph(
        "02_train_identity_lora",
        "IdentityLock — train an identity LoRA\n\n"
        + TRAIN_TEXT.replace("face crops", "768x768 face crops", 1),
    )
    ckpt = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=CKPT)
    _train_graph(g, ckpt[0], ckpt[1], ckpt[2], "identitylock_person")
    return g


def family_train(spec: Spec) -> Graph:
    fam = spec.family
    g = Graph(
        f"{spec.number}_{spec.slug}_train_identity_lora",
        (
            f"IdentityLock — {fam.label}: train an identity LoRA\n\n"
            + TRAIN_TEXT.replace("face crops", f"{fam.resolution}x{fam.resolution} face crops", 1)
            + f"\n\nOn {fam.label} the trainer uses the model's own sampling and latent format "
            f"({fam.timesteps.replace('_', '-')} timesteps, {fam.resolution} px). Leave preset and adapter at their "
            "defaults unless you know better; docs/training.md has the VRAM arithmetic per family. The LoRA goes to "
            f"models/loras/{spec.lora}.safetensors, which {spec.number + 1}_{spec.slug}_lora_seed_search loads."
            + (f" {spec.train_tip}" if spec.train_tip else "")
            + "\n\n"
            + files_note(spec)
            + (f"\n\n{spec.remark}" if spec.remark else "")
        ),
    )
    model, clip, vae = load(g, spec, training=True)
    _train_graph(g, model, clip, vae, spec.lora, size=fam.resolution)
    return g


FAMILY_TEMPLATES: list[Callable[[], Graph]] = [
    train_identity_lora,
    *[
        f
        for spec in SPECS.values()
        for f in (lambda s=spec: family_train(s), lambda s=spec: lora_seed_search(s))
    ],
    lambda: sdxl_lora_ipadapter(False),
    lambda: sdxl_lora_ipadapter(True),
]
