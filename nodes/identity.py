"""IdentityEmbed / IdentityLoad nodes: thin adapters over core.identity.

The ``IDENTITY`` socket carries a core.identity.IdentityReference (vectors + backend/model + centroid).
"""

from __future__ import annotations

import os
import re

from ._comfy import CATEGORY, Progress, image_to_numpy, model_folder_paths
from .prep import BACKEND_CHOICES, face_engine

IDENTITY_FOLDER = "identitylock"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._ -]+$")


def identity_save_path(name: str) -> str:
    """Where a named identity is saved inside ComfyUI (first registered 'identitylock' folder)."""
    name = name.strip()
    if not name or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"save_name {name!r}: use letters, digits, spaces, '.', '_' or '-' (no folders)")
    folders = model_folder_paths(IDENTITY_FOLDER)
    if folders:
        base = folders[0]
    else:
        from ._comfy import output_directory

        base = os.path.join(os.path.dirname(output_directory()), "models", IDENTITY_FOLDER)
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    return os.path.join(base, name)


def list_identity_files() -> list[str]:
    names = set()
    for folder in model_folder_paths(IDENTITY_FOLDER):
        if os.path.isdir(folder):
            names.update(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    return sorted(names)


class IdentityEmbed:
    DESCRIPTION = (
        "Turn photos of one person into an IDENTITY: per-image face vectors, their normalised centroid, "
        "leave-one-out consistency and outlier flags. Optionally saves it as .safetensors."
    )
    CATEGORY = f"{CATEGORY}/identity"
    FUNCTION = "embed"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IDENTITY", "STRING")
    RETURN_NAMES = ("identity", "summary")
    OUTPUT_TOOLTIPS = (
        "Identity reference for DriftSeedSearch, MatchedPortrait, IdentityMetrics, the trainer probe.",
        "Readable summary.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Photos (or FaceCropPrep output) of ONE person."}),
                "backend": (
                    BACKEND_CHOICES,
                    {"default": "auto", "tooltip": "Face backend; vectors of different backends never mix."},
                ),
                "missing_face": (
                    ["error", "skip"],
                    {
                        "default": "error",
                        "tooltip": "A photo without exactly one usable face (no face, or several without "
                        "largest_face): stop with an error naming it, or skip it.",
                    },
                ),
            },
            "optional": {
                "largest_face": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Use the largest face of a photo with several people. Off: such a photo "
                        "counts as unusable (see missing_face), so nobody else is embedded by mistake.",
                    },
                ),
                "save_name": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "If set, save to models/identitylock/<name>.safetensors for IdentityLoad and the CLI.",
                    },
                ),
            },
        }

    def embed(self, images, backend, missing_face, save_name="", largest_face=False):
        from ..core.errors import MultipleFacesError, NoFaceError
        from ..core.faces import analyze, select_face
        from ..core.fileio import check_output_file
        from ..core.identity import reference_from_analyses

        photos = image_to_numpy(images, "images")
        save_path = identity_save_path(save_name) if save_name and save_name.strip() else None
        if save_path:  # before the work: a read-only models folder fails now, not after the analysis
            check_output_file(save_path, overwrite=True, what="identity file")
        engine = face_engine(backend)
        progress = Progress(len(photos))
        analyses, sources, skipped = [], [], []
        for i, photo in enumerate(photos):
            res = analyze(photo, engine, max_faces=1)
            progress(i + 1, len(photos))
            face, reason = select_face(res, largest=bool(largest_face))
            if face is None:
                if missing_face == "error":
                    if res.found:
                        raise MultipleFacesError(
                            f"image {i} of the batch: {reason}; crop it to one person, set largest_face, "
                            "or set missing_face=skip"
                        )
                    raise NoFaceError(
                        f"image {i} of the batch: {reason}; remove it or set missing_face=skip",
                        index=i,
                        tried=res.tried,
                    )
                skipped.append((i, res.found))
                continue
            analyses.append(res)
            sources.append(f"image {i}" + (f" (found by {res.rescue})" if res.rescue != "direct" else ""))
        ref = reference_from_analyses(analyses, sources)
        summary = ref.summary()
        for label, several in (("no face", False), ("several faces", True)):
            indices = [i for i, found in skipped if found == several]
            if indices:
                summary += f"\nSkipped ({label}): batch indices {indices}"
        if save_path:
            replaced = os.path.exists(save_path)
            path = ref.save(save_path)
            summary += f"\nSaved: {path}" + (" (replaced the previous file of that name)" if replaced else "")
        return {"ui": {"text": [summary]}, "result": (ref, summary)}


class IdentityLoad:
    DESCRIPTION = (
        "Load an IDENTITY saved by IdentityEmbed or `identitylock embed` (models/identitylock/*.safetensors)."
    )
    CATEGORY = f"{CATEGORY}/identity"
    FUNCTION = "load"
    RETURN_TYPES = ("IDENTITY", "STRING")
    RETURN_NAMES = ("identity", "summary")

    @classmethod
    def INPUT_TYPES(cls):
        files = list_identity_files() or ["(no identity files yet)"]
        return {
            "required": {
                "identity_file": (files, {"tooltip": "A .safetensors identity in models/identitylock/."})
            }
        }

    def load(self, identity_file):
        from ..core.errors import ModelNotFoundError
        from ..core.identity import IdentityReference

        if os.path.basename(identity_file) != identity_file or identity_file in ("", ".", ".."):
            raise ModelNotFoundError(
                f"{identity_file!r}: give a file name in models/identitylock/, not a path"
            )
        for folder in model_folder_paths(IDENTITY_FOLDER):
            path = os.path.join(folder, identity_file)
            if os.path.isfile(path):
                ref = IdentityReference.load(path)
                return (ref, ref.summary())
        raise ModelNotFoundError(
            f"{identity_file} not found in models/identitylock/; save one with IdentityEmbed first"
        )


NODE_CLASS_MAPPINGS = {"IdentityEmbed": IdentityEmbed, "IdentityLoad": IdentityLoad}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IdentityEmbed": "Identity Embed (IdentityLock)",
    "IdentityLoad": "Identity Load (IdentityLock)",
}
