"""Small ONNX stand-ins with the real input/output signatures of insightface's buffalo_l models.

They exercise our loading path (pack discovery, insightface's shape-based model routing, onnxruntime sessions
and providers, SCRFD decoding, norm_crop alignment, ArcFace embedding) without downloading anything:
- ``det_10g.onnx``: SCRFD signature (input [1,3,640,640]; 9 outputs: scores/boxes/keypoints at strides 8/16/32),
  reporting one face at a fixed place (its outputs are tied to the input so the graph is a real function);
- ``w600k_r50.onnx``: ArcFace signature (input [1,3,112,112] -> [1,512]); a fixed random projection of the
  aligned crop's pooled colors, so different crops give different vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_CENTER = (320.0, 256.0)  # in the 640x640 detector frame
FACE_HALF = 100.0


def _scrfd(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])
    nodes, inits, outputs = [], [], []
    # zero = 0 * mean(input): ties every output to the input.
    nodes.append(helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0))
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero_scale"))
    nodes.append(helper.make_node("Mul", ["mean", "zero_scale"], ["zero"]))
    kps_offsets = np.array([[-35, -25], [35, -25], [0, 10], [-28, 45], [28, 45]], np.float32)
    names = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        n = (640 // stride) ** 2 * 2
        score = np.zeros((n, 1), np.float32)
        bbox = np.zeros((n, 4), np.float32)
        kps = np.zeros((n, 10), np.float32)
        if stride == 32:
            gx, gy = int(FACE_CENTER[0] // 32), int(FACE_CENTER[1] // 32)
            idx = (gy * (640 // 32) + gx) * 2
            score[idx] = 0.95
            bbox[idx] = FACE_HALF / stride
            kps[idx] = (kps_offsets / stride).reshape(-1)
        for kind, arr in (("score", score), ("bbox", bbox), ("kps", kps)):
            const = f"{kind}_{stride}_const"
            out = f"{kind}_{stride}"
            inits.append(numpy_helper.from_array(arr, const))
            nodes.append(helper.make_node("Add", [const, "zero"], [out]))
            names[kind].append((out, arr.shape))
    for kind in ("score", "bbox", "kps"):
        for out, shape in names[kind]:
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape)))
    graph = helper.make_graph(nodes, "scrfd_standin", [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _arcface(path: Path, dim: int = 512) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, dim])
    pool = helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28])
    flat = helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)  # [1, 3*4*4]
    w = numpy_helper.from_array(rng.standard_normal((48, dim)).astype(np.float32), "proj")
    mm = helper.make_node("MatMul", ["flat", "proj"], ["683"])
    graph = helper.make_graph([pool, flat, mm], "arcface_standin", [inp], [out], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_pack(folder: Path) -> Path:
    """Write a buffalo_l-like pack (detector + recognition) into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    _scrfd(folder / "det_10g.onnx")
    _arcface(folder / "w600k_r50.onnx")
    return folder
