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
SCORE_BIAS = -6.0  # random-weight detector: how few anchors pass the score threshold


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


# -- input-dependent stand-ins: a real function of the pixels, so decoding, NMS and alignment are all exercised --
def _save(graph, path: Path) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _scrfd_random(path: Path, seed: int = 1) -> None:
    """det_10g's contract with random weights: dynamic [1, 3, ?, ?] input; per stride 8/16/32 a pooled
    1x1 convolution gives 2 anchors' scores (sigmoid), box distances and 5 keypoints, flattened like the real
    model ([H*W*2, 1], [H*W*2, 4], [H*W*2, 10]). Biased so a few hundred anchors pass 0.5 on a photo."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    nodes, inits, outs = [], [], {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        pooled = f"pool_{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[stride] * 2, strides=[stride] * 2
            )
        )
        for kind, ch in (("score", 2), ("bbox", 8), ("kps", 20)):
            w = rng.standard_normal((ch, 3, 1, 1)).astype(np.float32) * (4.0 if kind == "score" else 1.0)
            b = np.full(ch, SCORE_BIAS if kind == "score" else 0.0, np.float32)
            inits += [
                numpy_helper.from_array(w, f"w_{kind}_{stride}"),
                numpy_helper.from_array(b, f"b_{kind}_{stride}"),
            ]
            conv = f"conv_{kind}_{stride}"
            nodes.append(
                helper.make_node("Conv", [pooled, f"w_{kind}_{stride}", f"b_{kind}_{stride}"], [conv])
            )
            act = f"act_{kind}_{stride}"
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [act]))
            elif kind == "bbox":  # distances 1..5 strides
                nodes.append(helper.make_node("Sigmoid", [conv], [f"{act}_s"]))
                inits.append(numpy_helper.from_array(np.array(4.0, np.float32), f"k4_{stride}"))
                inits.append(numpy_helper.from_array(np.array(1.0, np.float32), f"k1_{stride}"))
                nodes.append(helper.make_node("Mul", [f"{act}_s", f"k4_{stride}"], [f"{act}_m"]))
                nodes.append(helper.make_node("Add", [f"{act}_m", f"k1_{stride}"], [act]))
            else:  # keypoint offsets within +-2 strides
                nodes.append(helper.make_node("Tanh", [conv], [f"{act}_t"]))
                inits.append(numpy_helper.from_array(np.array(2.0, np.float32), f"k2_{stride}"))
                nodes.append(helper.make_node("Mul", [f"{act}_t", f"k2_{stride}"], [act]))
            nodes.append(helper.make_node("Transpose", [act], [f"{act}_t2"], perm=[0, 2, 3, 1]))
            width = {"score": 1, "bbox": 4, "kps": 10}[kind]
            inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), f"shape_{kind}_{stride}"))
            out = f"{kind}_{stride}"
            nodes.append(helper.make_node("Reshape", [f"{act}_t2", f"shape_{kind}_{stride}"], [out]))
            outs[kind].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", width]))
    outputs = outs["score"] + outs["bbox"] + outs["kps"]
    _save(helper.make_graph(nodes, "scrfd_random", [inp], outputs, initializer=inits), path)


def _arcface_graph_normalised(path: Path, dim: int = 512, seed: int = 2) -> None:
    """An mxnet-style ArcFace export: the graph subtracts 127.5 and scales itself (nodes named _minusscalar0 /
    _mulscalar0), so the runtime must feed raw pixels; batch size dynamic, like glintr100."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 112, 112])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", dim])
    inits = [
        numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
        numpy_helper.from_array(np.array(0.0078125, np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal((48, dim)).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Sub", ["data", "mean"], ["centred"], name="_minusscalar0"),
        helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mulscalar0"),
        helper.make_node("AveragePool", ["scaled"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["fc1"]),
    ]
    _save(helper.make_graph(nodes, "arcface_mxnet_standin", [inp], [out], initializer=inits), path)


def _crop_model(path: Path, side: int, n_out: int, seed: int) -> None:
    """1k3d68 (192 px -> 3309 = 68 x 3 values in [-1, 1]) or genderage (96 px -> 3) signature."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, side, side])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, n_out])
    k = side // 4
    inits = [numpy_helper.from_array(rng.standard_normal((48, n_out)).astype(np.float32) * 0.5, "proj")]
    nodes = [
        helper.make_node("AveragePool", ["data"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["lin"]),
        helper.make_node("Tanh" if n_out > 3 else "Sigmoid", ["lin"], ["fc1"]),
    ]
    _save(helper.make_graph(nodes, f"crop_{side}_standin", [inp], [out], initializer=inits), path)


def make_random_pack(folder: Path, full: bool = True, graph_normalised: bool = False) -> Path:
    """A buffalo_l-like pack whose detector really depends on the pixels; ``full`` adds 1k3d68 + genderage,
    ``graph_normalised`` makes the recognition model an mxnet-style export (raw-pixel input)."""
    folder.mkdir(parents=True, exist_ok=True)
    _scrfd_random(folder / "det_10g.onnx")
    if graph_normalised:
        _arcface_graph_normalised(folder / "w600k_r50.onnx")
    else:
        _arcface(folder / "w600k_r50.onnx")
    if full:
        _crop_model(folder / "1k3d68.onnx", 192, 3309, seed=3)
        _crop_model(folder / "genderage.onnx", 96, 3, seed=4)
    return folder
