"""The SD1.5 templates (01-14): LoRA + IPAdapter, seed discovery, 3-pass / 2-pass renders, matched portrait, views,
curation and metrics on an SD1.5 checkpoint. 01 (prep & embed) and 13/14 work with any family's renders."""

from __future__ import annotations

from collections.abc import Callable

from workflow_graph import (
    IDENTITY,
    LORA,
    NEGATIVE,
    PORTRAIT_PROMPT,
    REFERENCE,
    TRIGGER,
    Graph,
    Node,
    Out,
    prompts,
)

CKPT = "realisticVisionV60B1_v51HyperVAE.safetensors"
REALISM_CKPT = "epicrealism_naturalSinRC1VAE.safetensors"
SCENE = "scene.png"


def lora_loader(g: Graph, title: str, ckpt: Node, strength: float) -> Node:
    """The identity LoRA on a checkpoint's model and clip, one strength for both."""
    return g.add(
        "LoraLoader",
        title,
        model=ckpt[0],
        clip=ckpt[1],
        lora_name=LORA,
        strength_model=strength,
        strength_clip=strength,
    )


def base_model(g: Graph, lora_strength: float = 0.7, ckpt: str = CKPT):
    ckpt_n = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=ckpt)
    return ckpt_n, lora_loader(g, "Identity LoRA", ckpt_n, lora_strength)


def sampler(
    g: Graph,
    title: str,
    model,
    pos,
    neg,
    latent,
    *,
    seed: int,
    steps: int,
    cfg: float,
    denoise: float = 1.0,
    sampler_name: str = "dpmpp_2m",
    scheduler: str = "karras",
) -> Node:
    return g.add(
        "KSampler",
        title,
        model=model,
        positive=pos,
        negative=neg,
        latent_image=latent,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler_name,
        scheduler=scheduler,
        denoise=denoise,
    )


def prep_and_embed() -> Graph:
    g = Graph(
        "01_prep_and_embed",
        (
            "IdentityLock — prep & embed\n\nLoad one or more photos of the person (Reference). FaceCropPrep removes "
            "the background, centres the face at 768x768 and adds the rotation / scaled centre-crop augmentations; "
            "IdentityEmbed turns the prepped faces into the identity reference (512-D vectors + centroid) and saves it "
            "under models/identitylock/<save_name>.safetensors for the other workflows (load it with IdentityLoad).\n\n"
            f"Upload your photo into the Reference node (the template expects {REFERENCE})."
        ),
    )
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    prep = g.add("FaceCropPrep", "FaceCropPrep", images=ref[0])
    emb = g.add("IdentityEmbed", "IdentityEmbed", images=prep[0], save_name="person")
    g.add("PreviewImage", "Prepped faces", images=prep[0])
    g.add("PreviewAny", "Identity summary", source=emb[1])
    return g


def lora_ipadapter(
    name: str, title: str, prompt: str, extra: str, batch: int = 1, seed: int = 1187891159
) -> Graph:
    g = Graph(
        name,
        (
            f"IdentityLock — {title}\n\nLoRA + IPAdapter character consistency: identity LoRA at 0.7 (model and clip), "
            "IPAdapter (ComfyUI_IPAdapter_plus, PLUS FACE preset) at 0.6 from the reference photo, cfg 7, 25 steps, "
            f"dpmpp_2m / karras. The positive prompt starts with the LoRA trigger word ({TRIGGER}); change it to the "
            "one you trained with. Balanced strengths: LoRA 0.6–0.8, IPAdapter 0.5–0.7. Without a LoRA set the LoRA "
            "strength to 0 and raise IPAdapter to 0.8 (cfg 8, 30 steps); without a reference, bypass the IPAdapter "
            f"nodes and use LoRA 0.8 (cfg 7.5, 30 steps).\n\n{extra}"
        ),
    )
    return ipadapter_render(g, prompt, prefix=name[3:], batch=batch, seed=seed)


def ipadapter(g: Graph, model: Out, faceid: bool = False, weight: float = 0.6) -> tuple[Node, Node]:
    """IPAdapter (ComfyUI_IPAdapter_plus) from the reference photo on ``model``: PLUS FACE, or FaceID Plus V2
    (insightface). Returns (IPAdapter node, Reference LoadImage)."""
    if faceid:
        ip_loader = g.add(
            "IPAdapterUnifiedLoaderFaceID",
            "IPAdapter FaceID loader",
            model=model,
            preset="FACEID PLUS V2",
            lora_strength=0.6,
            provider="CPU",
        )
    else:
        ip_loader = g.add(
            "IPAdapterUnifiedLoader", "IPAdapter loader", model=model, preset="PLUS FACE (portraits)"
        )
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    ip = g.add(
        "IPAdapterFaceID" if faceid else "IPAdapterAdvanced",
        "IPAdapter FaceID" if faceid else "IPAdapter",
        model=ip_loader[0],
        ipadapter=ip_loader[1],
        image=ref[0],
        weight=weight,
        **({"weight_faceidv2": 1.0} if faceid else {}),
        weight_type="linear",
        combine_embeds="concat",
        start_at=0.0,
        end_at=1.0,
        embeds_scaling="V only",
    )
    return ip, ref


def ipadapter_render(
    g: Graph, prompt: str, *, prefix: str, faceid: bool = False, batch: int = 1, seed: int = 1187891159
) -> Graph:
    """Identity LoRA 0.7 + IPAdapter 0.6 (PLUS FACE, or FaceID Plus V2) from the reference, cfg 7, 25 steps."""
    ckpt, lora = base_model(g, 0.7)
    ip, _ = ipadapter(g, lora[0], faceid)
    pos, neg = prompts(g, lora[1], prompt)
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=768, batch_size=batch)
    ks = sampler(g, "Sampler", ip[0], pos[0], neg[0], lat[0], seed=seed, steps=25, cfg=7.0)
    dec = g.add("VAEDecode", "Decode", samples=ks[0], vae=ckpt[2])
    g.add("SaveImage", "Save", images=dec[0], filename_prefix=f"identitylock/{prefix}")
    return g


def lora_ipadapter_faceid() -> Graph:
    g = Graph(
        "04_lora_ipadapter_faceid",
        (
            "IdentityLock — LoRA + IPAdapter FaceID\n\nThe FaceID variant of the base workflow: IPAdapter FaceID Plus V2 "
            "reads the face with insightface (buffalo_l — the same models IdentityLock's insightface backend uses, "
            "in models/insightface) instead of CLIP vision alone. LoRA 0.7, FaceID weight 0.6 (faceidv2 1.0), "
            "FaceID LoRA 0.6, cfg 7, 25 steps, dpmpp_2m / karras. Needs the FaceID model files of "
            "ComfyUI_IPAdapter_plus; set the provider to CUDA on a GPU."
        ),
    )
    return ipadapter_render(g, PORTRAIT_PROMPT, prefix="faceid", faceid=True)


def stylized_3pass() -> Graph:
    g = Graph(
        "09_stylized_3pass",
        (
            "IdentityLock — 3-pass stylized render\n\n"
            "| pass | LoRA α | cfg | denoise | role |\n|---|---|---|---|---|\n"
            "| 1 | 1.0 | 5.8 | 1.0 | identity lock |\n| 2 | 0.85 | 6.3 | 0.55 | scene composition |\n"
            "| 3 | 0.90 | 6.8 | 0.35 | realism |\n\n"
            "Then a 30 % rescue blend of the pass-1 (identity-locked) image back into the pass-3 result. Use a seed "
            "that DriftSeedSearch marked locked (08_seed_discovery). Passes 2 and 3 are img2img on the previous pass's "
            "latent; the denoise values are IdentityLock's defaults (the pass table fixes α and cfg only). Check each "
            "pass's drift with 14_identity_metrics if the face changes."
        ),
    )
    ckpt = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=CKPT)
    passes = [
        lora_loader(g, f"Pass {i} LoRA α{alpha}", ckpt, alpha)
        for i, alpha in enumerate((1.0, 0.85, 0.90), start=1)
    ]
    p1_text = f"{TRIGGER}, portrait photo of a person, neutral background, soft light"
    scene = f"{TRIGGER}, spa garden at dusk, candle-lit, 85mm, f/2.8"
    real = f"{TRIGGER}, spa garden at dusk, candle-lit, photorealistic, detailed skin texture, 85mm, f/2.8"
    texts = (p1_text, scene, real)
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=768, batch_size=1)
    prev = lat[0]
    decoded = []
    for i, (lora, cfg, denoise, text) in enumerate(
        zip(passes, (5.8, 6.3, 6.8), (1.0, 0.55, 0.35), texts), start=1
    ):
        pos, neg = prompts(g, lora[1], text, (f"Pass {i} prompt", f"Pass {i} negative"))
        ks = sampler(
            g,
            f"Pass {i} sampler",
            lora[0],
            pos[0],
            neg[0],
            prev,
            seed=1187891159,
            steps=25,
            cfg=cfg,
            denoise=denoise,
        )
        prev = ks[0]
        decoded.append(g.add("VAEDecode", f"Pass {i} decode", samples=ks[0], vae=ckpt[2]))
    g.add("PreviewImage", "Pass 1 (identity lock)", images=decoded[0][0])
    blend = g.add(
        "ImageBlend",
        "Rescue blend 30 %",
        image1=decoded[2][0],
        image2=decoded[0][0],
        blend_factor=0.3,
        blend_mode="normal",
    )
    g.add("SaveImage", "Save", images=blend[0], filename_prefix="identitylock/stylized_3pass")
    return g


def export_2pass() -> Graph:
    g = Graph(
        "10_export_2pass",
        (
            "IdentityLock — 2-pass export stylizer\n\nFast portrait export: pass 1 is the LoRA anchor (identity LoRA "
            "1.0, cfg 5.8, 25 steps) on your usual checkpoint; pass 2 re-renders it img2img (denoise 0.35, cfg 6.5) "
            "with a high-fidelity realism checkpoint and no LoRA, so skin and light come from the realism base while "
            "the face comes from pass 1. Every prompt and parameter is stored in the PNG metadata by SaveImage."
        ),
    )
    ckpt, lora = base_model(g, 1.0)
    pos, neg = prompts(
        g,
        lora[1],
        f"{TRIGGER}, portrait photo of a person, urban rooftop, natural light, shallow depth of field",
        ("Anchor prompt", "Anchor negative"),
    )
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=768, batch_size=1)
    ks1 = sampler(g, "Anchor sampler", lora[0], pos[0], neg[0], lat[0], seed=1187891159, steps=25, cfg=5.8)
    real = g.add("CheckpointLoaderSimple", "Realism base", ckpt_name=REALISM_CKPT)
    dec1 = g.add("VAEDecode", "Anchor decode", samples=ks1[0], vae=ckpt[2])
    enc = g.add("VAEEncode", "Encode for realism pass", pixels=dec1[0], vae=real[2])
    pos2, neg2 = prompts(
        g,
        real[1],
        "portrait photo of a person, urban rooftop, natural light, photorealistic, detailed skin",
        ("Realism prompt", "Realism negative"),
    )
    ks2 = sampler(
        g,
        "Realism sampler",
        real[0],
        pos2[0],
        neg2[0],
        enc[0],
        seed=1187891159,
        steps=25,
        cfg=6.5,
        denoise=0.35,
    )
    dec2 = g.add("VAEDecode", "Realism decode", samples=ks2[0], vae=real[2])
    g.add("PreviewImage", "Anchor", images=dec1[0])
    g.add("SaveImage", "Save", images=dec2[0], filename_prefix="identitylock/export_2pass")
    return g


def identity_model(g: Graph, strength: float):
    ckpt, lora = base_model(g, strength)
    pos, neg = prompts(g, lora[1], PORTRAIT_PROMPT)
    ident = g.add("IdentityLoad", "Identity", identity_file=IDENTITY)
    return ckpt, lora, pos, neg, ident


def seed_discovery() -> Graph:
    g = Graph(
        "08_seed_discovery",
        (
            "IdentityLock — seed discovery\n\nDriftSeedSearch renders the prompt over a range of seeds with your "
            "LoRA (α 1.0, cfg 5.8 — the identity-lock pass), measures each render's drift from the identity "
            "(drift = 1 − cosine similarity; locked at ≤ 0.18 on the ArcFace scale, the dlib backend has its own "
            "calibrated threshold — leave threshold at 0 for the backend default) and keeps the best. It stops after "
            "4 locked seeds; renders without a face rank last. The node panel lists seed / drift / locked (click to "
            "copy a seed); save='locked' writes verify_seed_<seed>_drift_<d>.png. Only locked renders (exactly one face, "
            "drift at or below the threshold) reach the Save node; when none locked, nothing is saved and ComfyUI "
            "says why. Use the best locked seed in 09/10. To "
            "search thousands of seeds over several ComfyUI servers, see `identitylock queue --seeds` in the README."
        ),
    )
    ckpt, lora, pos, neg, ident = identity_model(g, 1.0)
    search = g.add(
        "DriftSeedSearch",
        "DriftSeedSearch",
        model=lora[0],
        positive=pos[0],
        negative=neg[0],
        vae=ckpt[2],
        identity=ident[0],
        seed_start=1187891159,
        seed_count=32,
        steps=25,
        cfg=5.8,
        sampler_name="dpmpp_2m",
        scheduler="karras",
        width=512,
        height=768,
        stop_after=4,
        top_k=8,
        save="locked",
    )
    g.add("SaveImage", "Locked renders", images=search[5], filename_prefix="identitylock/locked_seed")
    g.add("PreviewImage", "Candidates (best first)", images=search[3])
    g.add("PreviewAny", "Seed report", source=search[4])
    return g


def matched_portrait() -> Graph:
    g = Graph(
        "11_matched_portrait",
        (
            "IdentityLock — matched portrait\n\nPut the person into an existing scene photo: MatchedPortrait finds the "
            "face in the scene, measures its head angle, light direction and size, inpaints the person's face there "
            "with your LoRA (matching pose, light and framing), checks the result (drift against the identity, yaw "
            "within tolerance, no left/right mirroring) and retries other seeds up to `attempts`, then composites "
            "it back. Only a portrait that passed every check is saved; when no attempt passed, nothing is saved, "
            "ComfyUI says why and the best attempt is in the preview. The node panel shows the pose / light "
            "readout. Upload the scene into the Scene node."
        ),
    )
    ckpt, lora, pos, neg, ident = identity_model(g, 0.8)
    scene = g.add("LoadImage", "Scene", image=SCENE)
    mp = g.add(
        "MatchedPortrait",
        "MatchedPortrait",
        scene=scene[0],
        model=lora[0],
        positive=pos[0],
        negative=neg[0],
        vae=ckpt[2],
        identity=ident[0],
        clip=lora[1],
        seed=1187891159,
        sampler_name="dpmpp_2m",
        scheduler="karras",
    )
    g.add("SaveImage", "Save (passed only)", images=mp[4], filename_prefix="identitylock/matched_portrait")
    g.add("PreviewImage", "Best attempt", images=mp[0])
    g.add("PreviewImage", "Portrait crop", images=mp[1])
    g.add("PreviewAny", "Portrait report", source=mp[3])
    return g


def character_views() -> Graph:
    from identitylock.core.portrait.views import VIEW_NAMES, VIEWS

    g = Graph(
        "12_character_views",
        (
            "IdentityLock — the five character views\n\nFront, three-quarter left/right and profile left/right, each "
            'described by what the final image shows ("the nose points toward the LEFT edge of the frame"; left/right '
            "are frame edges, never the subject's own left). Each view is saved as identitylock/views/person_<view>_*.png "
            "so the view can be checked afterwards: `identitylock views <output>/identitylock/views --strict` measures "
            "each image's yaw and flags wrong or mirrored views. IdentityMetrics scores all five against the identity "
            "(drift, pose per image, report with an Open report button)."
        ),
    )
    ckpt, lora = base_model(g, 0.8)
    ident = g.add("IdentityLoad", "Identity", identity_file=IDENTITY)
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=512, batch_size=1)
    decoded = []
    for view in VIEW_NAMES:
        spec = VIEWS[view]
        pos, neg = prompts(
            g,
            lora[1],
            f"{TRIGGER}, {spec.prompt}",
            (f"{view} prompt", f"{view} negative"),
            negative=f"{spec.negative}, {NEGATIVE}",
        )
        ks = sampler(
            g, f"{view} sampler", lora[0], pos[0], neg[0], lat[0], seed=1187891159, steps=25, cfg=7.0
        )
        dec = g.add("VAEDecode", f"{view} decode", samples=ks[0], vae=ckpt[2])
        g.add("SaveImage", f"Save {view}", images=dec[0], filename_prefix=f"identitylock/views/person_{view}")
        decoded.append(dec)
    batch = decoded[0][0]
    for i, dec in enumerate(decoded[1:], start=2):
        batch = g.add("ImageBatch", f"Views batch {i}", image1=batch, image2=dec[0])[0]
    g.add(
        "IdentityMetrics",
        "IdentityMetrics",
        candidates_1=batch,
        identity=ident[0],
        labels="views",
        report_name="character_views",
    )
    return g


def portfolio_curation() -> Graph:
    g = Graph(
        "13_portfolio_curation",
        (
            "IdentityLock — portfolio curation\n\nGenerate a batch, score it, keep a small sharp diverse set: "
            "QualityScore (0.5 sharpness + 0.3 contrast + 0.2 face confidence, exactly one face required; strategies "
            "A/B/C) → ClusterSelect (near-duplicate removal, image embeddings — connect a CLIP vision model to "
            "clip_vision for CLIP, otherwise the built-in fallback — K-Means, per-cluster top picks with seed "
            "diversity). For hundreds of images from `identitylock generate`, curate the folder with "
            "`identitylock curate DIR --out PORTFOLIO --target 70` instead; this graph shows the same steps in-graph."
        ),
    )
    ckpt, lora = base_model(g, 0.7)
    pos, neg = prompts(g, lora[1], f"{TRIGGER}, portrait photo of a person, natural light, detailed skin")
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=512, batch_size=16)
    ks = sampler(g, "Sampler", lora[0], pos[0], neg[0], lat[0], seed=966983, steps=25, cfg=7.0)
    dec = g.add("VAEDecode", "Decode", samples=ks[0], vae=ckpt[2])
    qs = g.add("QualityScore", "QualityScore", images=dec[0])
    cs = g.add("ClusterSelect", "ClusterSelect", images=qs[0], target=8, k=4)
    g.add("SaveImage", "Selected", images=cs[0], filename_prefix="identitylock/curated")
    g.add("PreviewImage", "Rejected", images=qs[1])
    g.add("PreviewAny", "Selection summary", source=cs[2])
    return g


def identity_metrics() -> Graph:
    g = Graph(
        "14_identity_metrics",
        (
            "IdentityLock — identity metrics\n\nCompare how well two settings keep the person: the same prompt and "
            "seed rendered with the LoRA at 0.7 and at 1.0 (8 images each) are measured against the reference photo — "
            "similarity to the reference centroid with confidence intervals and a significance test, pose, face size, "
            "copycat report (each image beside its nearest reference; bands < 0.50 low, 0.50–0.70 ok, 0.70–0.85 watch, "
            "> 0.85 danger). The HTML dashboard and CSV go to output/identitylock_metrics/; the node's Open report "
            "button opens it. Use `identitylock metrics` for folders."
        ),
    )
    ckpt = g.add("CheckpointLoaderSimple", "Checkpoint", ckpt_name=CKPT)
    ref = g.add("LoadImage", "Reference", image=REFERENCE)
    lat = g.add("EmptyLatentImage", "Latent", width=512, height=512, batch_size=8)
    groups = []
    for strength in (0.7, 1.0):
        lora = lora_loader(g, f"LoRA {strength}", ckpt, strength)
        pos, neg = prompts(
            g,
            lora[1],
            f"{TRIGGER}, portrait photo of a person, natural light",
            (f"Positive {strength}", f"Negative {strength}"),
        )
        ks = sampler(
            g, f"Sampler {strength}", lora[0], pos[0], neg[0], lat[0], seed=966983, steps=25, cfg=7.0
        )
        groups.append(g.add("VAEDecode", f"Decode {strength}", samples=ks[0], vae=ckpt[2]))
    m = g.add(
        "IdentityMetrics",
        "IdentityMetrics",
        candidates_1=groups[0][0],
        candidates_2=groups[1][0],
        reference_images=ref[0],
        labels="LoRA 0.7, LoRA 1.0",
        report_name="lora_strength",
    )
    g.add("PreviewImage", "Metrics preview", images=m[1])
    g.add("PreviewAny", "Metrics summary", source=m[0])
    return g


SD15_TEMPLATES: list[Callable[[], Graph]] = [
    prep_and_embed,
    lambda: lora_ipadapter(
        "03_lora_ipadapter_base",
        "LoRA + IPAdapter base",
        PORTRAIT_PROMPT,
        "The base template: outfit, background and pose variations (05–07) are this graph with another prompt.",
    ),
    lora_ipadapter_faceid,
    lambda: lora_ipadapter(
        "05_outfit_variation",
        "outfit variation",
        f"{TRIGGER}, wearing a navy wool coat and red scarf, white background, full body",
        "Outfit variation: describe the outfit after 'wearing', keep the white background and full body framing "
        "so only the clothes change. Batch of 4 on one seed.",
        batch=4,
    ),
    lambda: lora_ipadapter(
        "06_background_variation",
        "background variation",
        f"{TRIGGER}, standing in a rainy Tokyo street at night, neon reflections, same outfit",
        "Background variation: describe the place after 'standing in' and keep 'same outfit'. Batch of 4.",
        batch=4,
    ),
    lambda: lora_ipadapter(
        "07_pose_variation",
        "pose variation",
        f"{TRIGGER}, sitting on stone steps looking over the shoulder, same outfit, same appearance",
        "Pose variation: describe the pose first and keep 'same outfit, same appearance'. Batch of 4.",
        batch=4,
    ),
    seed_discovery,
    stylized_3pass,
    export_2pass,
    matched_portrait,
    character_views,
    portfolio_curation,
    identity_metrics,
]
