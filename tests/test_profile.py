"""Consistency profile: the method follows the assets that actually exist."""

from __future__ import annotations

import pytest
from identitylock.core.errors import IdentityLockError
from identitylock.core.profile import consistency_profile, variation_prompt


@pytest.fixture()
def assets(tmp_path):
    paths = {}
    for name in (
        "lisa.safetensors",
        "lisa_identity.safetensors",
        "lisa.png",
        "ip-adapter-plus_sd15.safetensors",
    ):
        (tmp_path / name).write_bytes(b"x")
        paths[name.split(".")[0]] = tmp_path / name
    return paths


def test_methods_follow_assets(assets, tmp_path):
    lora, ident, img, ipa = (assets[k] for k in ("lisa", "lisa_identity", "lisa", "ip-adapter-plus_sd15"))
    img = tmp_path / "lisa.png"
    p = consistency_profile(lora=lora, identity=ident, reference_image=img, ipadapter=ipa)
    assert (
        p.method == "lora_ipadapter"
        and p.params["lora_strength"] == 0.7
        and p.params["ipadapter_strength"] == 0.6
    )
    assert p.verify
    assert consistency_profile(lora=lora).method == "lora_only"
    assert consistency_profile(lora=lora).params == {"lora_strength": 0.8, "cfg": 7.5, "steps": 30}
    assert consistency_profile(reference_image=img, ipadapter=ipa).method == "ipadapter_only"
    # IPAdapter without a picture cannot work -> fallback, with a note
    p = consistency_profile(ipadapter=ipa)
    assert p.method == "img2img" and any("reference image" in n for n in p.notes)
    p = consistency_profile(reference_image=img)
    assert p.method == "img2img" and p.params["denoise"] == 0.4 and p.params["init_image"] == str(img)
    assert not p.verify


def test_missing_files_are_ignored_with_a_note(tmp_path):
    p = consistency_profile(lora=tmp_path / "nope.safetensors")
    assert p.method == "img2img" and any("does not exist" in n for n in p.notes)
    assert consistency_profile(lora="lisa.safetensors", check_files=False).method == "lora_only"


def test_overrides_and_templates(assets):
    p = consistency_profile(lora=assets["lisa"], overrides={"lora_strength": 0.65})
    assert p.params["lora_strength"] == 0.65
    with pytest.raises(IdentityLockError):
        consistency_profile(lora=assets["lisa"], overrides={"lora_strenght": 0.65})
    assert (
        variation_prompt("outfit", "a red coat", "lisachar")
        == "lisachar, wearing a red coat, white background, full body"
    )
    assert variation_prompt("pose", "sitting") == "sitting, same outfit, same appearance"
    with pytest.raises(IdentityLockError):
        variation_prompt("hair", "x")
