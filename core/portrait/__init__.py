"""Matched portrait: put the person into a scene, matched in pose, light and framing, never mirrored.

- ``scene``: analyse the scene face (pose with fused yaw, face fraction, key light, colour temperature,
  expression) and phrase it as prompt fragments by frame edges;
- ``views``: the five standard character views and a view checker with documented yaw bins;
- ``geometry``: head-and-shoulders crop / uncrop and the landmark face mask;
- ``composite``: LAB colour match and compositing that leaves outside-mask pixels untouched;
- ``pipeline``: the render -> check -> retry -> composite loop around an injectable ``inpaint`` callable.

Submodules import OpenCV / dlib lazily; importing this package is cheap.
"""

from __future__ import annotations

__all__ = ["composite", "geometry", "pipeline", "scene", "views"]
