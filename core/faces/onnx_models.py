"""insightface-layout ONNX models on onnxruntime + numpy/OpenCV alone (no insightface package).

Same contract as insightface's model_zoo, re-implemented so the ``insightface`` package (build failures,
numpy ABI breaks, the opencv-python GUI build beside the headless one) is never needed:
- routing by signature: >= 5 outputs -> SCRFD detector; 192x192 input -> landmarks (3309 outputs = 68 3-D
  points); 96x96 -> gender/age; square input >= 112 px and a multiple of 16 -> ArcFace recognition;
- SCRFD: letterbox to the detector size, anchor centres per stride, distance -> box / keypoints, NMS;
- ArcFace: the standard 5-point similarity alignment (``ARCFACE_DST``, Umeyama) to the model's input size;
- input normalisation read from the model itself: its input shape gives the size, and a graph that starts with
  its own Sub/Mul nodes (mxnet exports) takes raw pixels, otherwise (x - 127.5) / 127.5 (128 for SCRFD and the
  crop models), exactly insightface's rule.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelNotFoundError

# Where the five keypoints go in a 112x112 ArcFace crop (insightface's arcface_dst).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
# SCRFD head layout by output count: (feature maps, strides, anchors per cell, has keypoints).
_SCRFD_LAYOUTS = {
    6: (3, (8, 16, 32), 2, False),
    9: (3, (8, 16, 32), 2, True),
    10: (5, (8, 16, 32, 64, 128), 1, False),
    15: (5, (8, 16, 32, 64, 128), 1, True),
}


# -- reading the first graph nodes of an .onnx file without the onnx package -------------------------------
def _varint(buf: Any, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: Any, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of a protobuf message; others skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield field, pos, pos + length
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def first_node_names(path: str | Path, count: int = 8) -> list[str]:
    """Names of the first ``count`` nodes of the model's graph (ModelProto.graph = 7, GraphProto.node = 1,
    NodeProto.name = 3), read lazily through mmap: a 170 MB model costs a few pages, not a full parse."""
    names: list[str] = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for field, g0, g1 in _fields(buf, 0, len(buf)):
            if field != 7:
                continue
            for nfield, n0, n1 in _fields(buf, g0, g1):
                if nfield != 1:
                    continue
                name = next((bytes(buf[a:b]) for f, a, b in _fields(buf, n0, n1) if f == 3), b"")
                names.append(name.decode("utf-8", "replace"))
                if len(names) >= count:
                    return names
            break
    return names


def graph_normalises_input(path: str | Path, bn_data: bool = False) -> bool:
    """insightface's rule: Sub and Mul among the first 8 nodes (or ``bn_data`` first, for the crop models)
    mean the graph normalises its own input, so it takes raw pixels."""
    names = first_node_names(path)
    sub = any(n.startswith(("Sub", "_minus")) for n in names)
    mul = any(n.startswith(("Mul", "_mul")) for n in names)
    if bn_data and "bn_data" in names[:3]:
        sub = mul = True
    return sub and mul


def _spatial(shape: list) -> tuple[int, int] | None:
    """(width, height) of an NCHW input when both are fixed numbers, else None (dynamic)."""
    if len(shape) < 4:
        return None
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return int(w), int(h)
    return None


def _blob(images: list[np.ndarray], mean: float, std: float, size: tuple[int, int]) -> np.ndarray:
    """NCHW float32 (x - mean) / std. Images are RGB already (insightface swaps BGR -> RGB here)."""
    import cv2

    blob = cv2.dnn.blobFromImages(images, 1.0 / std, size, (mean, mean, mean), swapRB=False)
    return np.ascontiguousarray(blob, dtype=np.float32)


class OnnxModel:
    """One onnxruntime session plus its input/output contract."""

    def __init__(self, path: Path, session: Any):
        self.path = path
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})


class Scrfd(OnnxModel):
    """SCRFD face detector: boxes [K, 5] (x0, y0, x1, y1, score) and keypoints [K, 5, 2], best first."""

    taskname = "detection"
    nms_thresh = 0.4

    def __init__(self, path: Path, session: Any):
        super().__init__(path, session)
        outputs = session.get_outputs()
        if len(outputs) not in _SCRFD_LAYOUTS:
            raise ModelNotFoundError(f"{path}: {len(outputs)} outputs is not an SCRFD detector layout")
        self.fmc, self.strides, self.anchors, self.use_kps = _SCRFD_LAYOUTS[len(outputs)]
        self.batched = len(outputs[0].shape) == 3
        self.fixed_size = _spatial(self.input_shape)
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        centers = self._centers.get(key)
        if centers is None:
            centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centers = (centers * stride).reshape((-1, 2))
            if self.anchors > 1:
                centers = np.stack([centers] * self.anchors, axis=1).reshape((-1, 2))
            if len(self._centers) < 100:
                self._centers[key] = centers
        return centers

    def _forward(self, img: np.ndarray, threshold: float):
        size = (img.shape[1], img.shape[0])
        blob = _blob([img], 127.5, 128.0, size)
        outs = self.run(blob)
        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(self.strides):
            pick = (lambda o: o[0]) if self.batched else (lambda o: o)
            scores = pick(outs[idx])
            centers = self._anchor_centers(blob.shape[2] // stride, blob.shape[3] // stride, stride)
            pos = np.where(scores >= threshold)[0]
            c = centers[pos]
            d = pick(outs[idx + self.fmc])[pos] * stride
            boxes_l.append(
                np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1)
            )
            scores_l.append(scores[pos])
            if self.use_kps:
                k = pick(outs[idx + 2 * self.fmc])[pos] * stride
                pts = np.stack([c[:, j % 2] + k[:, j] for j in range(k.shape[1])], axis=-1)
                kps_l.append(pts.reshape((pts.shape[0], k.shape[1] // 2, 2)))
        return scores_l, boxes_l, kps_l

    def detect(self, img: np.ndarray, size: int, threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Detect on an RGB uint8 image, letterboxed into the detector's input (its own size when fixed)."""
        import cv2

        in_w, in_h = self.fixed_size or (size, size)
        im_ratio = float(img.shape[0]) / img.shape[1]
        if im_ratio > float(in_h) / in_w:
            new_h = in_h
            new_w = int(new_h / im_ratio)
        else:
            new_w = in_w
            new_h = int(new_w * im_ratio)
        det_scale = float(new_h) / img.shape[0]
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w, :] = cv2.resize(img, (new_w, new_h))
        scores_l, boxes_l, kps_l = self._forward(canvas, threshold)
        scores = np.vstack(scores_l)
        if scores.size == 0:
            return np.empty((0, 5), np.float32), (np.empty((0, 5, 2), np.float32) if self.use_kps else None)
        order = np.argsort(-scores.ravel(), kind="stable")
        det = np.hstack((np.vstack(boxes_l) / det_scale, scores)).astype(np.float32, copy=False)[order]
        kpss = (np.vstack(kps_l) / det_scale)[order] if self.use_kps else None
        keep = self.nms(det)
        return det[keep], (kpss[keep] if kpss is not None else None)

    def nms(self, dets: np.ndarray) -> list[int]:
        """Greedy NMS at IoU 0.4 (pixel-inclusive areas, as SCRFD was trained and evaluated)."""
        x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = np.argsort(-scores, kind="stable")
        keep = []
        while order.size > 0:
            i = order[0]
            keep.append(int(i))
            rest = order[1:]
            w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
            h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
            inter = w * h
            ovr = inter / (areas[i] + areas[rest] - inter)
            order = rest[np.where(ovr <= self.nms_thresh)[0]]
        return keep


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) mapping src onto dst (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / src.shape[0]
    d = np.ones(2)
    if np.linalg.det(a) < 0:
        d[1] = -1
    u, s, v = np.linalg.svd(a)
    rank = np.count_nonzero(s > s.max() * 2 * np.finfo(float).eps)
    if rank == 0:
        return np.full((2, 3), np.nan)  # all keypoints on one spot: no alignment exists
    if rank == 1:  # collinear keypoints (skimage's branch, kept for identical results)
        rot = u @ v if np.linalg.det(u) * np.linalg.det(v) > 0 else u @ np.diag([d[0], -1.0]) @ v
    else:
        rot = u @ np.diag(d) @ v
    scale = (s @ d) / src_d.var(axis=0).sum()
    m = np.empty((2, 3))
    m[:, :2] = rot * scale
    m[:, 2] = dst_mean - scale * (rot @ src_mean)
    return m


def arcface_matrix(kps: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The alignment matrix for a crop of ``image_size`` (a multiple of 112, or of 128 with an 8 px margin)."""
    if image_size % 112 == 0:
        ratio, diff_x = image_size / 112.0, 0.0
    elif image_size % 128 == 0:
        ratio = image_size / 128.0
        diff_x = 8.0 * ratio
    else:
        raise ModelNotFoundError(
            f"recognition input of {image_size} px is neither a multiple of 112 nor of 128"
        )
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    return similarity_transform(np.asarray(kps, dtype=np.float32).reshape(5, 2), dst)


def align_face(img: np.ndarray, kps: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The standard ArcFace crop: 5 keypoints warped onto ARCFACE_DST, black outside the image."""
    import cv2

    return cv2.warpAffine(img, arcface_matrix(kps, image_size), (image_size, image_size), borderValue=0.0)


class ArcFace(OnnxModel):
    """Recognition: aligned crop -> identity vector (raw, not normalised)."""

    taskname = "recognition"

    def __init__(self, path: Path, session: Any):
        super().__init__(path, session)
        if len(self.output_names) != 1:
            raise ModelNotFoundError(f"{path}: a recognition model has one output, this one has several")
        raw = graph_normalises_input(path)
        self.input_mean, self.input_std = (0.0, 1.0) if raw else (127.5, 127.5)
        self.input_size = int(self.input_shape[2])
        self.dim = int(session.get_outputs()[0].shape[1])
        self.batch = not isinstance(self.input_shape[0], int) or self.input_shape[0] != 1

    def embed(self, img: np.ndarray, kpss: list[np.ndarray]) -> np.ndarray:
        """[len(kpss), dim] vectors, one per face (one batch when the model's batch size is dynamic)."""
        crops = [align_face(img, k, self.input_size) for k in kpss]
        size = (self.input_size, self.input_size)
        groups = [crops] if self.batch else [[c] for c in crops]
        return np.vstack([self.run(_blob(g, self.input_mean, self.input_std, size))[0] for g in groups])


class CropModel(OnnxModel):
    """Landmark (192 px) and gender/age (96 px) models: a square crop 1.5x the box around its centre."""

    def __init__(self, path: Path, session: Any):
        super().__init__(path, session)
        raw = graph_normalises_input(path, bn_data=True)
        self.input_mean, self.input_std = (0.0, 1.0) if raw else (127.5, 128.0)
        self.input_size = int(self.input_shape[2])
        out = int(session.get_outputs()[0].shape[1])
        if self.input_size == 96:
            self.taskname = "genderage" if out == 3 else f"attribute_{out}"
        else:
            self.lmk_dim, self.lmk_num = (3, 68) if out == 3309 else (2, out // 2)
            self.taskname = f"landmark_{self.lmk_dim}d_{self.lmk_num}"

    def _crop(self, img: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
        cx, cy = (bbox[2] + bbox[0]) / 2, (bbox[3] + bbox[1]) / 2
        s = self.input_size / (max(w, h) * 1.5)
        half = self.input_size / 2
        # insightface's order of rounding: centre and scale in the box's float32, the shift in float64
        m = np.array([[s, 0.0, half - float(cx * s)], [0.0, s, half - float(cy * s)]], dtype=np.float64)
        crop = cv2.warpAffine(img, m, (self.input_size, self.input_size), borderValue=0.0)
        size = (self.input_size, self.input_size)
        return self.run(_blob([crop], self.input_mean, self.input_std, size))[0][0], m

    def landmarks(self, img: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """[lmk_num, lmk_dim] points in image pixels."""
        import cv2

        pred, m = self._crop(img, bbox)
        pred = pred.reshape((-1, 3) if pred.shape[0] >= 3000 else (-1, 2))
        if self.lmk_num < pred.shape[0]:
            pred = pred[-self.lmk_num :, :]
        pred[:, 0:2] += 1
        pred[:, 0:2] *= self.input_size // 2
        if pred.shape[1] == 3:
            pred[:, 2] *= self.input_size // 2
        im = cv2.invertAffineTransform(m)
        out = np.empty(pred.shape, dtype=np.float32)
        homog = np.hstack([pred[:, :2], np.ones((len(pred), 1), np.float32)])
        out[:, :2] = homog @ im.T
        if pred.shape[1] == 3:
            out[:, 2] = pred[:, 2] * np.sqrt(im[0, 0] ** 2 + im[0, 1] ** 2)
        return out

    def gender_age(self, img: np.ndarray, bbox: np.ndarray) -> tuple[int, int]:
        """(gender: 1 = male, 0 = female; age in years), as insightface's genderage model defines them."""
        pred, _ = self._crop(img, bbox)
        return int(np.argmax(pred[:2])), int(np.round(pred[2] * 100))


def route(path: Path, session: Any) -> OnnxModel | None:
    """The model wrapper for a session, by its signature (insightface's routing rules); None if unknown."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = list(inputs[0].shape)
    if len(outputs) >= 5:
        return Scrfd(path, session)
    if len(shape) < 4:
        return None
    h, w = shape[2], shape[3]
    if (h, w) in ((192, 192), (96, 96)):
        return CropModel(path, session)
    if len(inputs) == 2 and (h, w) == (128, 128):
        return None  # a face swapper (inswapper): not ours
    if isinstance(h, int) and h == w and h >= 112 and h % 16 == 0:
        return ArcFace(path, session)
    return None
