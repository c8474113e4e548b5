"""Check ComfyUI workflows (UI and API format) against node schemas, and convert UI -> API.

Schemas are ComfyUI's ``/object_info`` (a captured copy ships as ``core/data/object_info_subset.json``
covering the classes our templates use; pass a full one from a server for anything else) merged with our own
nodes' schemas (``core/data/identitylock_object_info.json``, generated from their ``INPUT_TYPES`` by
``scripts/build_workflows.py``). Checks: every class exists, every required input is linked or set, linked
types match, numbers are within min/max, combo values are valid (model-file lists excepted: they depend on
what the user has installed), no dangling or inconsistent links, and the UI and API versions are the same
graph.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .workflow_shape import ui_shape_problems, usable_schema

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODEL_FILE_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".gguf", ".sft", ".pkl")
MODEL_FILE_INPUTS = {
    "ckpt_name", "lora_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "unet_name",
    "control_net_name", "ipadapter_file", "model_name", "style_model_name", "upscale_model_name",
    "image", "gligen_name", "hypernetwork_name", "audio", "video", "file", "identity_file",
}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Schemas


def _bundled(name: str) -> dict[str, Any]:
    return json.loads(resources.files("identitylock.core").joinpath(f"data/{name}").read_text("utf-8"))


def load_object_info(path: str | Path | None = None) -> dict[str, Any]:
    """A captured ``/object_info`` file, or the subset bundled with the pack."""
    if path is None:
        return _bundled("object_info_subset.json")
    from .comfy.workflow import WorkflowError, read_json

    info = read_json(path, what="object_info")
    if not isinstance(info, dict):
        raise WorkflowError(f"{path}: not an /object_info file (an object {{class name: schema}})")
    return info


def our_object_info() -> dict[str, Any]:
    """Schemas of IdentityLock's own nodes: ``data/identitylock_object_info.json``, generated from the nodes'
    ``INPUT_TYPES`` by ``scripts/build_workflows.py`` (core never imports nodes/)."""
    return _bundled("identitylock_object_info.json")


def merged_schemas(object_info: dict[str, Any] | None = None, include_ours: bool = True) -> dict[str, Any]:
    info = object_info if object_info is not None else load_object_info()
    schemas = {k: v for k, v in info.items() if usable_schema(v)} if isinstance(info, dict) else {}
    if include_ours:
        schemas.update(our_object_info())
    return schemas


def _spec(schema: dict[str, Any], name: str) -> tuple[list[Any] | None, bool]:
    """(input spec, required?) for input ``name``."""
    for section, req in (("required", True), ("optional", False)):
        spec = (schema.get("input", {}).get(section) or {}).get(name)
        if spec is not None:
            return spec, req
    return None, False


def _input_order(schema: dict[str, Any]) -> list[str]:
    order = schema.get("input_order") or {}
    names = list(order.get("required", [])) + list(order.get("optional", []))
    if not names:
        names = list(schema.get("input", {}).get("required") or {}) + list(
            schema.get("input", {}).get("optional") or {}
        )
    return names


def _kind(spec: list[Any]) -> str:
    t = spec[0]
    if isinstance(t, list):
        return "COMBO"
    return str(t)


def _opts(spec: list[Any]) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _choices(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return _opts(spec).get("options") or []
    return None


def is_widget(spec: list[Any]) -> bool:
    return _kind(spec) in WIDGET_TYPES and not _opts(spec).get("forceInput")


def widget_slots(schema: dict[str, Any]) -> list[str | None]:
    """Order of ``widgets_values`` in the UI format: widget inputs, with ``None`` for frontend-only extras
    (the control_after_generate selector after a seed, the upload button after an image_upload combo)."""
    slots: list[str | None] = []
    for name in _input_order(schema):
        spec, _ = _spec(schema, name)
        if spec is None or not is_widget(spec):
            continue
        slots.append(name)
        opts = _opts(spec)
        control = opts.get("control_after_generate")
        if control is None:
            control = _kind(spec) == "INT" and name in ("seed", "noise_seed")
        if control:
            slots.append(None)
        if opts.get("image_upload"):
            slots.append(None)
    return slots


def is_model_file_list(name: str, spec: list[Any]) -> bool:
    choices = _choices(spec) or []
    if not choices or _opts(spec).get("image_upload"):
        return True
    if any(isinstance(c, str) and c.lower().endswith(MODEL_FILE_EXTS) for c in choices):
        return True
    return name in MODEL_FILE_INPUTS and name not in ("model_name",)


def types_compatible(out_type: Any, in_type: Any) -> bool:
    if isinstance(in_type, list) or in_type == "COMBO":
        return isinstance(out_type, list) or out_type in ("COMBO", "*")
    a = {t.strip() for t in str(out_type).split(",")}
    b = {t.strip() for t in str(in_type).split(",")}
    return "*" in a or "*" in b or bool(a & b)


# --------------------------------------------------------------------------------------------------------------
# Checks


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
    )


def check_value(where: str, name: str, spec: list[Any], value: Any) -> list[str]:
    kind, opts = _kind(spec), _opts(spec)
    problems = []
    if kind == "COMBO":
        choices = _choices(spec)
        if not is_model_file_list(name, spec) and value not in (choices or []):
            problems.append(f"{where}: {name}={value!r} is not one of {choices}")
        elif not isinstance(value, str):
            problems.append(f"{where}: {name}={value!r} should be a string")
        return problems
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{where}: {name}={value!r} should be a number"]
        if kind == "INT" and not isinstance(value, int):
            problems.append(f"{where}: {name}={value!r} should be an integer")
        if "min" in opts and value < opts["min"]:
            problems.append(f"{where}: {name}={value} is below the minimum {opts['min']}")
        if "max" in opts and value > opts["max"]:
            problems.append(f"{where}: {name}={value} is above the maximum {opts['max']}")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        problems.append(f"{where}: {name}={value!r} should be true/false")
    elif kind == "STRING" and not isinstance(value, str):
        problems.append(f"{where}: {name}={value!r} should be a string")
    return problems


def validate_api(prompt: Any, schemas: dict[str, Any]) -> list[str]:
    """Problems in an API-format workflow (empty list = valid)."""
    if not isinstance(prompt, dict) or not prompt:
        return ["not an API-format workflow (expected a non-empty {id: {class_type, inputs}} object)"]
    problems: list[str] = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            problems.append(f"node {nid}: no class_type")
            continue
        cls = node["class_type"]
        where = f"node {nid} ({cls})"
        schema = schemas.get(cls)
        if schema is None:
            problems.append(f"{where}: unknown node class {cls!r} (missing custom node pack?)")
            continue
        inputs = node.get("inputs") or {}
        if not isinstance(inputs, dict):
            problems.append(f"{where}: 'inputs' must be an object {{name: value}}")
            continue
        for name in list(schema.get("input", {}).get("required") or {}):
            if name not in inputs:
                problems.append(f"{where}: required input {name!r} is neither linked nor set")
        for name, value in inputs.items():
            spec, _ = _spec(schema, name)
            if spec is None:
                problems.append(f"{where}: has input {name!r}, which {cls} does not define")
                continue
            if _is_link(value):
                src = str(value[0])
                if src not in prompt:
                    problems.append(f"{where}: input {name!r} is linked to missing node {src}")
                    continue
                src_schema = schemas.get(prompt[src].get("class_type"))
                if src_schema is None:
                    continue
                outs = src_schema.get("output", [])
                if not 0 <= value[1] < len(outs):
                    problems.append(
                        f"{where}: input {name!r} links to output {value[1]} of node {src}, which has {len(outs)}"
                    )
                    continue
                if not types_compatible(outs[value[1]], spec[0]):
                    problems.append(
                        f"{where}: input {name!r} expects {spec[0] if not isinstance(spec[0], list) else 'COMBO'} "
                        f"but node {src} ({prompt[src]['class_type']}) output {value[1]} is {outs[value[1]]}"
                    )
            else:
                problems.extend(check_value(where, name, spec, value))
    problems.extend(_cycles(prompt))
    return problems


def _cycles(prompt: dict[str, Any]) -> list[str]:
    """Links that close a cycle. Iterative: a chain of thousands of nodes must not overflow the stack."""
    state: dict[str, int] = {}
    problems: list[str] = []

    def links(nid: str) -> list[str]:
        inputs = prompt[nid].get("inputs") if isinstance(prompt[nid], dict) else None
        values = inputs.values() if isinstance(inputs, dict) else []
        return [str(v[0]) for v in values if _is_link(v) and str(v[0]) in prompt]

    for root in prompt:
        if root in state or not isinstance(prompt[root], dict):
            continue
        state[root] = 1
        stack = [(root, iter(links(root)))]
        while stack:
            nid, todo = stack[-1]
            for s in todo:
                if state.get(s) == 1:
                    problems.append(f"node {nid}: cycle through node {s}")
                elif s not in state:
                    state[s] = 1
                    stack.append((s, iter(links(s))))
                    break
            else:
                state[nid] = 2
                stack.pop()
    return problems


def _ui_links(ui: dict[str, Any]) -> dict[int, list[Any]]:
    links = {}
    for link in ui.get("links") or []:
        if isinstance(link, dict):  # newer serialisation
            link = [
                link["id"],
                link["origin_id"],
                link["origin_slot"],
                link["target_id"],
                link["target_slot"],
                link.get("type"),
            ]
        links[int(link[0])] = link
    return links


def validate_ui(ui: Any, schemas: dict[str, Any]) -> list[str]:
    """Problems in a UI-format workflow: structure and links here, inputs via its API conversion."""
    if not isinstance(ui, dict) or not isinstance(ui.get("nodes"), list):
        return ["not a UI-format workflow (expected 'nodes' and 'links')"]
    problems = ui_shape_problems(ui)
    if problems:
        return problems
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = _ui_links(ui)
    for lid, (_, src, sslot, dst, dslot, ltype) in links.items():
        if src not in nodes or dst not in nodes:
            problems.append(f"link {lid}: dangling (node {src if src not in nodes else dst} does not exist)")
            continue
        outs = nodes[src].get("outputs") or []
        ins = nodes[dst].get("inputs") or []
        if sslot >= len(outs) or lid not in (outs[sslot].get("links") or []):
            problems.append(f"link {lid}: node {src} output {sslot} does not list it")
        if dslot >= len(ins) or ins[dslot].get("link") != lid:
            problems.append(f"link {lid}: node {dst} input {dslot} does not point back to it")
        elif ltype not in (None, "*") and not types_compatible(ltype, ins[dslot].get("type")):
            problems.append(
                f"link {lid}: type {ltype} into node {dst} input {ins[dslot].get('name')!r} of type {ins[dslot].get('type')}"
            )
    for n in ui["nodes"]:
        for inp in n.get("inputs") or []:
            if inp.get("link") is not None and inp["link"] not in links:
                problems.append(
                    f"node {n['id']} input {inp.get('name')!r}: link {inp['link']} does not exist"
                )
        for o in n.get("outputs") or []:
            for lid in o.get("links") or []:
                if lid not in links:
                    problems.append(f"node {n['id']} output {o.get('name')!r}: link {lid} does not exist")
        if n.get("type") in UI_ONLY_NODES:
            continue
        schema = schemas.get(n.get("type"))
        if schema is None:
            problems.append(f"node {n['id']} ({n.get('type')}): unknown node class")
            continue
        slots = widget_slots(schema)
        values = n.get("widgets_values")
        if isinstance(values, list) and len(values) != len(slots):
            problems.append(
                f"node {n['id']} ({n['type']}): {len(values)} widget values, the schema has {len(slots)} widgets "
                f"({[s for s in slots if s]})"
            )
    if problems:
        return problems
    try:
        api = ui_to_api(ui, schemas)
    except ValueError as exc:
        return [str(exc)]
    return validate_api(api, schemas)


def ui_to_api(ui: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to the API format ComfyUI's ``POST /prompt`` takes (ValueError when it
    cannot be converted)."""
    problems = ui_shape_problems(ui)
    if problems:
        raise ValueError("; ".join(problems[:3]))
    schemas = {k: v for k, v in schemas.items() if usable_schema(v)}
    links = _ui_links(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    api: dict[str, Any] = {}
    for n in sorted(ui["nodes"], key=lambda n: n["id"]):
        if n.get("type") in UI_ONLY_NODES or n.get("mode", 0) in (2, 4):
            continue
        schema = schemas.get(n["type"])
        if schema is None:
            raise ValueError(f"node {n['id']}: unknown node class {n['type']!r}")
        inputs: dict[str, Any] = {}
        values = n.get("widgets_values") or []
        if isinstance(values, dict):
            inputs.update({k: v for k, v in values.items() if _spec(schema, k)[0] is not None})
        else:
            for name, value in zip(widget_slots(schema), values):
                if name is not None:
                    inputs[name] = value
        for inp in n.get("inputs") or []:
            lid = inp.get("link")
            if lid is None:
                continue
            if lid not in links:
                raise ValueError(f"node {n['id']} input {inp.get('name')!r}: link {lid} does not exist")
            _, src, sslot, _, _, _ = links[lid]
            if src not in nodes:
                raise ValueError(
                    f"node {n['id']} input {inp.get('name')!r}: source node {src} does not exist"
                )
            name = (inp.get("widget") or {}).get("name") or inp["name"]
            inputs[name] = [str(src), int(sslot)]
        entry = {"inputs": inputs, "class_type": n["type"]}
        title = n.get("title") or schema.get("display_name") or n["type"]
        entry["_meta"] = {"title": title}
        api[str(n["id"])] = entry
    return api


def compare_ui_api(ui: dict[str, Any], api: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Differences between a UI workflow (converted) and an API workflow meant to be the same graph."""
    conv = ui_to_api(ui, schemas)
    problems = []
    for nid in sorted(set(conv) | set(api), key=lambda k: (len(k), k)):
        if nid not in api:
            problems.append(f"node {nid} ({conv[nid]['class_type']}) is in the UI version only")
            continue
        if nid not in conv:
            problems.append(f"node {nid} ({api[nid]['class_type']}) is in the API version only")
            continue
        a, b = conv[nid], api[nid]
        if a["class_type"] != b["class_type"]:
            problems.append(f"node {nid}: UI has {a['class_type']}, API has {b['class_type']}")
            continue
        for name in sorted(set(a["inputs"]) | set(b["inputs"])):
            va, vb = a["inputs"].get(name), b["inputs"].get(name)
            if va != vb:
                problems.append(f"node {nid} ({a['class_type']}) input {name!r}: UI {va!r} != API {vb!r}")
        ta, tb = (a.get("_meta") or {}).get("title"), (b.get("_meta") or {}).get("title")
        if tb is not None and ta != tb:
            problems.append(f"node {nid}: title {ta!r} in UI, {tb!r} in API")
    return problems


def validate_file(path: str | Path, schemas: dict[str, Any]) -> list[str]:
    """Validate one workflow file of either format; for ``workflows/X.json`` also compare ``api/X.json``.

    Never raises: whatever a file holds, it is reported as that file's problems (and the caller goes on
    with the other files)."""
    from .comfy.workflow import WorkflowError, read_json

    p = Path(path)
    try:
        data = read_json(p)
    except WorkflowError as exc:
        return [str(exc).removeprefix(f"{p}: ")]
    try:
        return _validate_data(p, data, schemas)
    except Exception as exc:  # a shape no check foresaw: one line for this file, the others go on
        return [f"could not be checked ({type(exc).__name__}: {exc})"]


def _validate_data(p: Path, data: Any, schemas: dict[str, Any]) -> list[str]:
    from .comfy.workflow import read_json

    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        problems = validate_ui(data, schemas)
        twin = p.parent / "api" / p.name
        if not problems and twin.exists():
            api = read_json(twin)
            problems += [f"vs {twin.name} (API): {x}" for x in compare_ui_api(data, api, schemas)]
        return problems
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    ):
        return validate_api(data, schemas)
    return [
        "not a ComfyUI workflow (neither UI format with 'nodes'/'links' nor API format {id: {class_type}})"
    ]
