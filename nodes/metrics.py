"""IdentityMetrics node: identity-consistency report for generated batches, inside a ComfyUI graph."""

from __future__ import annotations

import os
import time

from ._comfy import (
    CATEGORY,
    Progress,
    check_interrupted,
    image_to_numpy,
    model_folder_paths,
    numpy_to_image,
    output_directory,
    send_status,
)

MAX_GROUPS = 4


class IdentityMetrics:
    DESCRIPTION = (
        "Measure how consistently generated images keep the person's identity: similarity to the reference "
        "centroid with bootstrap confidence intervals, a significance test between candidate batches (which "
        "LoRA is really better), pose / flexibility, an overtraining warning, and a copycat report (nearest "
        "reference per image, black-hole ranking). Writes an offline HTML dashboard, a CSV and a JSON into "
        "ComfyUI's output folder (identitylock_metrics/)."
    )
    CATEGORY = f"{CATEGORY}/metrics"
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("summary", "preview")
    OUTPUT_TOOLTIPS = (
        "plain-text summary: per-group median similarity [95% CI], lock rate, significance verdicts, warnings",
        "a rendered plot of similarity per group (bands, lock line, median and CI)",
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {
            "reference_images": (
                "IMAGE",
                {"tooltip": "real photos of the person (or connect an IDENTITY instead); one face each"},
            ),
            "identity": (
                "IDENTITY",
                {"tooltip": "an identity reference from IdentityEmbed; used instead of reference_images"},
            ),
        }
        for i in range(2, MAX_GROUPS + 1):
            optional[f"candidates_{i}"] = (
                "IMAGE",
                {"tooltip": f"candidate batch {i} (e.g. another LoRA or strength), compared with the others"},
            )
        return {
            "required": {
                "candidates_1": ("IMAGE", {"tooltip": "generated images to score (one candidate group)"}),
                "labels": (
                    "STRING",
                    {
                        "default": "A, B, C, D",
                        "tooltip": "comma-separated names of the candidate groups, in order "
                        "(candidates_1, candidates_2, ...)",
                    },
                ),
                "backend": (
                    ["dlib", "insightface", "auto"],
                    {
                        "default": "dlib",
                        "tooltip": "face backend; with an IDENTITY input its own backend is used. "
                        "Copycat bands differ per backend (see docs/metrics.md)",
                    },
                ),
                "report_name": (
                    "STRING",
                    {"default": "identity_metrics", "tooltip": "prefix of the report folder and files"},
                ),
            },
            "optional": optional,
        }

    def run(
        self,
        candidates_1,
        labels: str = "A, B, C, D",
        backend: str = "dlib",
        report_name: str = "identity_metrics",
        reference_images=None,
        identity=None,
        **more,
    ):
        from ..core.errors import IdentityLockError
        from ..core.fileio import check_output_dir, confined_name
        from ..core.identity import IdentityReference
        from ..core.metrics import analyze_items, build_metrics
        from ..core.metrics.preview import render_preview
        from ..core.metrics.report import write_report

        if identity is not None and not isinstance(identity, IdentityReference):
            raise IdentityLockError("identity: connect an IDENTITY output (IdentityEmbed or IdentityLoad)")
        if reference_images is None and identity is None:
            raise IdentityLockError(
                "IdentityMetrics needs a reference: connect reference_images (photos of the person) or an "
                "IDENTITY from IdentityEmbed"
            )
        safe = confined_name(report_name or "identity_metrics", "report_name")  # checked before the work
        parent = check_output_dir(os.path.join(output_directory(), "identitylock_metrics"), "metrics folder")
        folder = parent / f"{safe}_{time.strftime('%Y%m%d-%H%M%S')}"
        names = [s.strip() for s in labels.split(",") if s.strip()]
        batches = [("candidates_1", candidates_1)] + [
            (f"candidates_{i}", more.get(f"candidates_{i}"))
            for i in range(2, MAX_GROUPS + 1)
            if more.get(f"candidates_{i}") is not None
        ]
        groups_np = {}
        for k, (socket, batch) in enumerate(batches):
            label = names[k] if k < len(names) else socket
            while label in groups_np or label == "reference":
                label += "_"
            groups_np[label] = image_to_numpy(batch, socket)
        if identity is not None:
            backend = identity.backend
        engine_kwargs = {"model_dirs": model_folder_paths("insightface")} if backend != "dlib" else {}
        ref_np = image_to_numpy(reference_images, "reference_images") if identity is None else []
        total = len(ref_np) + sum(len(v) for v in groups_np.values())
        bar = Progress(total + 1)
        done = [0]

        def progress(n: int, _total: int) -> None:
            bar(done[0] + n, total + 1)

        def analyze(arrays, prefix):
            out = analyze_items(
                arrays,
                [f"{prefix}#{i}" for i in range(len(arrays))],
                backend=backend,
                engine_kwargs=engine_kwargs,
                workers=1,
                progress=progress,
                keep_pixels=True,
            )
            done[0] += len(arrays)
            return out

        reference = identity if identity is not None else analyze(ref_np, "reference")
        analyzed = {}
        for label, arrays in groups_np.items():
            check_interrupted()
            analyzed[label] = analyze(arrays, label)
        result = build_metrics(reference, analyzed)
        paths = write_report(result, folder, prefix=safe)
        bar(total + 1, total + 1)
        summary = result.summary_text() + "\n" + "\n".join(f"{k}: {p}" for k, p in paths.items())
        rel = os.path.relpath(paths["html"], output_directory())
        send_status("metrics_report", {"html": rel, "summary": summary})
        preview = numpy_to_image([render_preview(result)])
        return {
            "ui": {
                "text": [summary],
                "report": [{"html": rel, "csv": os.path.relpath(paths["csv"], output_directory())}],
            },
            "result": (summary, preview),
        }


NODE_CLASS_MAPPINGS = {"IdentityMetrics": IdentityMetrics}
NODE_DISPLAY_NAME_MAPPINGS = {"IdentityMetrics": "Identity Metrics (IdentityLock)"}
