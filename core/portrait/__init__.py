"""Matched portrait: put the person into a scene, matched in pose, light and framing, never mirrored.

- ``scene``: analyze the scene face (pose with fused yaw, face fraction, key light, color temperature,
  expression) and phrase it as prompt fragments by frame edges;
- ``views``: the five standard character views and a view checker with documented yaw bins;
- ``geometry``: head-and-shoulders crop / uncrop and the landmark face mask;
- ``composite``: LAB color match and compositing that leaves outside-mask pixels untouched;
- ``pipeline``: the render -> check -> retry -> composite loop around an injectable ``inpaint`` callable;
- ``inpaint``: that callable over diffusers, for the standalone CLI (ComfyUI uses the user's own sampler).

Submodules import OpenCV / dlib lazily; importing this package is cheap.
"""

from __future__ import annotations

__all__ = ["composite", "geometry", "inpaint", "pipeline", "scene", "views"]
