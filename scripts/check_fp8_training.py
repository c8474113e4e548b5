"""LoRATrainAdaptive on toy models whose weights are STORED in fp8 (ComfyUI computes in bf16 through its
manual-cast ops), as a UNETLoader with weight_dtype fp8_e4m3fn gives on a 24 GB card. Proof harness for a real
ComfyUI 0.8 (never run in CI):

    /path/to/comfy-python scripts/check_fp8_training.py --comfyui /path/to/ComfyUI [--families sd15 flux1 ...]

Each row: the toy's stored dtype and compute dtype, then a 3-step training run through the node; the row passes
when the node finishes and writes its LoRA (the trainer feeds inputs at the compute dtype, never at fp8).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--families", nargs="*", default=["sd15", "sdxl", "flux1", "zimage", "qwen_image"])
    args = ap.parse_args(argv)
    import comfy_toys as toys
    from family_harness import Inputs, import_pack
    from family_train import train_kwargs

    toys.setup_comfy(args.comfyui, tempfile.mkdtemp(prefix="il_fp8_"))
    import comfy.model_management as mm  # type: ignore[import-not-found]
    import comfy.model_patcher  # type: ignore[import-not-found]
    import comfy.supported_models as sm  # type: ignore[import-not-found]
    import torch

    il = import_pack(HERE.parent)
    train_mod = importlib.import_module(f"{il.__name__}.nodes.train")
    inputs = Inputs(il, HERE.parent / "tests" / "fixtures" / "faces")
    failed = 0
    for family in args.families:
        class_name, unet_config = toys._unet_configs()[family]
        config = getattr(sm, class_name)(dict(unet_config))
        config.set_inference_dtype(torch.float8_e4m3fn, torch.bfloat16)  # stored fp8, computed in bf16
        base = config.get_model({})
        toys.random_init(base.diffusion_model, 0)
        mp = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                              offload_device=mm.unet_offload_device())  # fmt: skip
        stored = sorted({str(p.dtype).removeprefix("torch.") for p in base.diffusion_model.parameters()})
        toy = toys.Toy(family, mp, toys.build_clip(family, mp), toys.build_vae(family), family == "sd15")
        t0 = time.time()
        try:
            with torch.inference_mode():
                out = train_mod.LoRATrainAdaptive().train(**train_kwargs(toy, inputs, f"fp8_{family}"))
            loss = next((line for line in out[3].splitlines() if "final validation" in line), "")
            print(
                f"{family}: PASS stored {stored}, compute {base.manual_cast_dtype}, {time.time() - t0:.1f}s; {loss}"
            )
        except Exception as exc:  # a failed row, never hidden
            failed += 1
            print(f"{family}: FAIL stored {stored}: {type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
