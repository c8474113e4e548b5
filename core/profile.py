"""Consistency profile: pick how to keep a character's face, from which assets exist for that character.

Methods and parameters (from the LoRA + IPAdapter character-consistency design):

| method           | needs                                   | parameters                                       |
|------------------|-----------------------------------------|--------------------------------------------------|
| lora_ipadapter   | LoRA file + reference image + IPAdapter | LoRA 0.7, IPAdapter 0.6, cfg 7.0, 25 steps       |
| lora_only        | LoRA file                               | LoRA 0.8, cfg 7.5, 30 steps                      |
| ipadapter_only   | reference image + IPAdapter model       | IPAdapter 0.8, cfg 8.0, 30 steps                 |
| img2img          | a reference image (or nothing)          | denoise 0.4, cfg 7.5, 30 steps                   |

An IPAdapter conditions on a *picture*, so it needs a reference image as well as the model file; an IDENTITY
reference (vectors only) cannot drive it, but it enables drift scoring / seed search in every method, which the
profile records as ``verify``. Balanced strengths stay inside LoRA 0.6-0.8 and IPAdapter 0.5-0.7.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import IdentityLockError

METHODS = ("lora_ipadapter", "lora_only", "ipadapter_only", "img2img")

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "lora_ipadapter": {"lora_strength": 0.7, "ipadapter_strength": 0.6, "cfg": 7.0, "steps": 25},
    "lora_only": {"lora_strength": 0.8, "cfg": 7.5, "steps": 30},
    "ipadapter_only": {"ipadapter_strength": 0.8, "cfg": 8.0, "steps": 30},
    "img2img": {"denoise": 0.4, "cfg": 7.5, "steps": 30},
}
EXPECTED_CONSISTENCY = {
    "lora_ipadapter": "high",
    "lora_only": "medium",
    "ipadapter_only": "medium",
    "img2img": "low",
}

# Variation templates (outfit / background / pose) wrap the user's text around the trigger word.
VARIATION_TEMPLATES = {
    "outfit": "{trigger}, wearing {text}, white background, full body",
    "background": "{trigger}, standing in {text}, same outfit",
    "pose": "{trigger}, {text}, same outfit, same appearance",
    "free": "{trigger}, {text}",
}
NEGATIVE_PROMPT = "multiple people, different person, inconsistent face, deformed"


@dataclass
class ConsistencyProfile:
    method: str
    params: dict[str, Any]
    assets: dict[str, str | None]
    verify: bool  # an IDENTITY reference exists: drift can be measured (seed search, per-pass drift)
    expected_consistency: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _existing(path: str | os.PathLike | None, what: str, notes: list[str]) -> str | None:
    if path is None or str(path) == "":
        return None
    p = Path(path)
    if not p.exists():
        notes.append(f"{what} {p} does not exist; ignored")
        return None
    return str(p)


def consistency_profile(
    *,
    lora: str | os.PathLike | None = None,
    identity: str | os.PathLike | None = None,
    reference_image: str | os.PathLike | None = None,
    ipadapter: str | os.PathLike | None = None,
    check_files: bool = True,
    overrides: dict[str, Any] | None = None,
) -> ConsistencyProfile:
    """Choose lora_ipadapter / lora_only / ipadapter_only / img2img from the assets that exist, with parameters.

    Paths that do not exist are ignored with a note (``check_files=False`` trusts them, e.g. ComfyUI names).
    ``overrides`` replace parameters of the chosen method (unknown keys are an error: likely a typo).
    """
    notes: list[str] = []
    if check_files:
        lora_p = _existing(lora, "LoRA", notes)
        ident_p = _existing(identity, "identity reference", notes)
        image_p = _existing(reference_image, "reference image", notes)
        ipa_p = _existing(ipadapter, "IPAdapter model", notes)
    else:
        lora_p, ident_p, image_p, ipa_p = (
            str(x) if x else None for x in (lora, identity, reference_image, ipadapter)
        )
    can_ipadapter = bool(ipa_p and image_p)
    if ipa_p and not image_p:
        notes.append("an IPAdapter model without a reference image cannot be used: add the character's photo")
    if lora_p and can_ipadapter:
        method = "lora_ipadapter"
    elif lora_p:
        method = "lora_only"
    elif can_ipadapter:
        method = "ipadapter_only"
    else:
        method = "img2img"
        if not image_p:
            notes.append("no LoRA, IPAdapter or reference image: only prompting can keep the face (weak)")
    params = dict(DEFAULT_PARAMS[method])
    if method == "img2img" and image_p:
        params["init_image"] = image_p
    for key, value in (overrides or {}).items():
        if key not in params:
            raise IdentityLockError(f"{method} has no parameter {key!r}; known: {', '.join(sorted(params))}")
        params[key] = value
    if not ident_p:
        notes.append("no IDENTITY reference: drift cannot be measured, so seeds cannot be verified")
    return ConsistencyProfile(
        method=method,
        params=params,
        assets={"lora": lora_p, "identity": ident_p, "reference_image": image_p, "ipadapter": ipa_p},
        verify=bool(ident_p),
        expected_consistency=EXPECTED_CONSISTENCY[method],
        notes=notes,
    )


def variation_prompt(kind: str, text: str, trigger: str = "") -> str:
    """Outfit / background / pose / free prompt around the LoRA trigger word."""
    if kind not in VARIATION_TEMPLATES:
        raise IdentityLockError(f"variation must be one of {', '.join(VARIATION_TEMPLATES)}, got {kind!r}")
    return VARIATION_TEMPLATES[kind].format(trigger=trigger.strip(), text=text.strip()).lstrip(", ").strip()
