"""The graph description behind every bundled template: one ``Graph`` per template, written out as ComfyUI's UI
format (workflows/<name>.json) and API format (workflows/api/<name>.json) from the same nodes, so the two versions
cannot diverge.

Everything a template leaves unset comes from the node schemas (``/object_info``): widget values are the schema's
defaults, the UI's widget order and extra slots (control_after_generate, upload) follow the schema, and an output
can be named (``node["locked_images"]``) instead of numbered, so a node that gains inputs, widgets or outputs is picked
up by regenerating, without editing the templates.
"""

from __future__ import annotations

import uuid
from typing import Any

from identitylock.core.workflow_validate import _input_order, _spec, is_widget, widget_slots

# Names a user replaces with their own files (model-file combos are not validated).
LORA = "identitylock_person.safetensors"
TRIGGER = "ilkperson"
REFERENCE = "reference_face.png"
REFERENCE_2 = "reference_face_2.png"  # a second, different photo: validation holds out whole photos
IDENTITY = "person.safetensors"  # written by 01_prep_and_embed (IdentityEmbed save_name "person")
NEGATIVE = (
    "multiple people, different person, inconsistent face, deformed, (deformed iris, deformed pupils), "
    "cartoon, drawing, text, cropped, out of frame, worst quality, low quality, jpeg artifacts"
)
PORTRAIT_PROMPT = f"{TRIGGER}, portrait photo of a person, natural window light, 85mm, detailed skin"


class Out:
    """Output ``slot`` of ``node``: a number, or the output's name (resolved against the schema when written)."""

    def __init__(self, node: Node, slot: int | str):
        self.node, self.slot = node, slot

    def index(self, schemas: dict[str, Any]) -> int:
        schema = schemas[self.node.cls]
        if isinstance(self.slot, int):
            return self.slot
        names = list(schema.get("output_name") or schema["output"])
        if self.slot not in names:
            raise SystemExit(f"{self.node.cls} has no output {self.slot!r} (outputs: {names})")
        return names.index(self.slot)


class IfDefined:
    """A widget value set only where the node's schema has that input (one a node is about to gain); where it does
    not, the input is left out instead of stopping the build."""

    def __init__(self, value: Any):
        self.value = value


class Node:
    def __init__(self, graph: Graph, nid: int, cls: str, title: str, inputs: dict[str, Any]):
        self.graph, self.id, self.cls, self.title, self.inputs = graph, nid, cls, title, inputs

    def __getitem__(self, slot: int | str) -> Out:
        return Out(self, slot)


class Graph:
    def __init__(self, name: str, description: str):
        self.name, self.description = name, description
        self.nodes: list[Node] = []
        self.notes: list[str] = [description]

    def add(self, cls: str, title: str | None = None, **inputs: Any) -> Node:
        node = Node(self, len(self.nodes) + 1, cls, title or cls, inputs)
        self.nodes.append(node)
        return node

    # -- API format
    def api(self, schemas: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n in self.nodes:
            schema = schemas[n.cls]
            inputs: dict[str, Any] = {}
            for name in _input_order(schema):
                spec, _ = _spec(schema, name)
                if name in n.inputs:
                    v = n.inputs[name]
                    v = v.value if isinstance(v, IfDefined) else v
                    inputs[name] = [str(v.node.id), v.index(schemas)] if isinstance(v, Out) else v
                elif is_widget(spec):
                    inputs[name] = _default(n.cls, name, spec)
            unknown = {k for k, v in n.inputs.items() if not isinstance(v, IfDefined)} - set(
                _input_order(schema)
            )
            if unknown:
                raise SystemExit(f"{self.name}: {n.cls} has no inputs {sorted(unknown)}")
            out[str(n.id)] = {"inputs": inputs, "class_type": n.cls, "_meta": {"title": n.title}}
        return out

    # -- UI format
    def ui(self, schemas: dict[str, Any]) -> dict[str, Any]:
        api = self.api(schemas)
        depth = self._depths()
        links: list[list[Any]] = []
        ui_nodes: dict[int, dict[str, Any]] = {}
        rows: dict[int, int] = {}
        for n in self.nodes:
            schema = schemas[n.cls]
            d = depth[n.id]
            row = rows.get(d, 0)
            inputs = []
            for name in _input_order(schema):
                spec, _ = _spec(schema, name)
                linked = isinstance(n.inputs.get(name), Out)
                if is_widget(spec) and not linked:
                    continue
                entry: dict[str, Any] = {"name": name, "type": _type_name(spec), "link": None}
                if is_widget(spec):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            outputs = [
                {"name": oname, "type": otype, "links": [], "slot_index": i}
                for i, (otype, oname) in enumerate(
                    zip(schema["output"], schema.get("output_name", schema["output"]))
                )
            ]
            values = []
            for slot in widget_slots(schema):
                if slot is None:
                    values.append("image" if values and n.cls.startswith("LoadImage") else "fixed")
                else:
                    values.append(
                        api[str(n.id)]["inputs"][slot]
                        if not isinstance(n.inputs.get(slot), Out)
                        else _default(n.cls, slot, _spec(schema, slot)[0])
                    )
            height = 46 + 24 * (len(inputs) + len([s for s in widget_slots(schema) if s]) + len(outputs))
            if n.cls == "LoadImage":
                height += 260  # the front end shows the picked image inside the node
            ui_nodes[n.id] = {
                "id": n.id,
                "type": n.cls,
                "pos": [40 + d * 400, 40 + row],
                "size": [340, height],
                "flags": {},
                "order": 0,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "title": n.title,
                "properties": {"Node name for S&R": n.cls},
                "widgets_values": values,
            }
            rows[d] = row + height + 50
        order = sorted(self.nodes, key=lambda n: (depth[n.id], n.id))
        for i, n in enumerate(order):
            ui_nodes[n.id]["order"] = i
        for n in self.nodes:
            node = ui_nodes[n.id]
            for slot_i, entry in enumerate(node["inputs"]):
                v = n.inputs.get(entry["name"])
                if not isinstance(v, Out):
                    continue
                lid = len(links) + 1
                slot = v.index(schemas)
                otype = schemas[v.node.cls]["output"][slot]
                links.append([lid, v.node.id, slot, n.id, slot_i, otype])
                entry["link"] = lid
                ui_nodes[v.node.id]["outputs"][slot]["links"].append(lid)
        nid = len(self.nodes)
        max_y = max((r for r in rows.values()), default=0)
        for k, text in enumerate(self.notes):
            nid += 1
            ui_nodes[nid] = {
                "id": nid,
                "type": "Note",
                "pos": [40 + k * 420, max_y + 60] if k else [40, -260],
                "size": [760 if not k else 400, 220],
                "flags": {},
                "order": len(order) + k,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "title": "About this workflow" if not k else "Note",
                "properties": {"text": ""},
                "widgets_values": [text],
                "color": "#432",
                "bgcolor": "#653",
            }
        return {
            # the front end's workflow schema wants a UUID here; derived from the name, so it is stable
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"identitylock/workflows/{self.name}")),
            "revision": 0,
            "last_node_id": nid,
            "last_link_id": len(links),
            "nodes": [ui_nodes[k] for k in sorted(ui_nodes)],
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [0, 300]}, "identitylock": {"template": self.name}},
            "version": 0.4,
        }

    def _depths(self) -> dict[int, int]:
        depth: dict[int, int] = {}

        def d(n: Node) -> int:
            if n.id not in depth:
                srcs = [v.node for v in n.inputs.values() if isinstance(v, Out)]
                depth[n.id] = 1 + max((d(s) for s in srcs), default=-1)
            return depth[n.id]

        for n in self.nodes:
            d(n)
        return depth


def _type_name(spec: list[Any]) -> str:
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def _default(cls: str, name: str, spec: list[Any]) -> Any:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        if not spec[0]:
            raise SystemExit(f"{cls}.{name}: a file list with no default; the template must set it")
        return spec[0][0]
    if spec[0] == "COMBO":
        return (opts.get("options") or [""])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


# ----------------------------------------------------------------------------------------------------------------
# The templates


def prompts(
    g: Graph,
    clip: Out,
    text: str,
    titles: tuple[str, str] = ("Positive", "Negative"),
    negative: str = NEGATIVE,
) -> tuple[Node, Node]:
    """Positive and negative CLIPTextEncode on one clip."""
    pos = g.add("CLIPTextEncode", titles[0], clip=clip, text=text)
    return pos, g.add("CLIPTextEncode", titles[1], clip=clip, text=negative)
