"""What a workflow or node-schema JSON must look like before anything reads it.

Files and servers can hold anything: ids that are text, links that are strings, ``inputs`` that are numbers.
These checks run first, so the validator and the UI -> API conversion can rely on the shapes they read and a
hostile file becomes a list of one-line problems instead of a crash.
"""

from __future__ import annotations

from typing import Any


def usable_schema(schema: Any) -> bool:
    """A schema of the shape ComfyUI's /object_info gives (hostile or broken entries are left out, so their
    class reads as unknown instead of crashing the checks)."""
    if not isinstance(schema, dict):
        return False
    inputs = schema.get("input", {})
    if not isinstance(inputs, dict) or not isinstance(schema.get("output", []), list):
        return False
    for section in ("required", "optional"):
        specs = inputs.get(section) or {}
        if not isinstance(specs, dict):
            return False
        if not all(isinstance(v, list) and v and isinstance(v[0], (str, list)) for v in specs.values()):
            return False
    order = schema.get("input_order") or {}
    if not isinstance(order, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) for v in order.values()
    ):
        return False
    return True


def ui_shape_problems(ui: dict[str, Any]) -> list[str]:
    """What in a UI-format workflow is not shaped like ComfyUI's (the checks and the conversion rely on it)."""
    problems: list[str] = []
    if "id" in ui and not _uuid(ui["id"]):
        problems.append(
            f"the workflow 'id' {str(ui['id'])[:60]!r} is not a UUID; ComfyUI's front end alerts "
            "'Invalid uuid at \"id\"' on loading it (use a UUID, or leave 'id' out)"
        )
    ids = set()
    for i, n in enumerate(ui.get("nodes") or []):
        if not isinstance(n, dict) or not _int(n.get("id")) or not isinstance(n.get("type"), str):
            problems.append(f"nodes[{i}]: expected an object with an integer 'id' and a text 'type'")
            continue
        if n["id"] in ids:
            problems.append(f"node {n['id']}: the id is used twice")
        ids.add(n["id"])
        for key, item_ok in (("inputs", _ui_input_ok), ("outputs", _ui_output_ok)):
            items = n.get(key) or []
            if not isinstance(items, list) or not all(item_ok(x) for x in items):
                problems.append(f"node {n['id']}: '{key}' is not a list of slots shaped like ComfyUI's")
        if not isinstance(n.get("widgets_values") or [], (list, dict)):
            problems.append(f"node {n['id']}: 'widgets_values' must be a list or an object")
        if not isinstance(n.get("title") or "", str) or not _int(n.get("mode", 0)):
            problems.append(f"node {n['id']}: 'title' must be text and 'mode' an integer")
    links = ui.get("links") or []
    if not isinstance(links, list):
        return problems + ["'links' must be a list"]
    for i, link in enumerate(links):
        if isinstance(link, dict):
            fields = [link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
        else:
            fields = link[:5] if isinstance(link, list) and len(link) >= 6 else [None]
        if not all(_int(f) for f in fields) or min(fields[2], fields[4]) < 0:
            problems.append(
                f"links[{i}]: expected [id, from node, from slot, to node, to slot, type] integers"
            )
    return problems[:10]


def _uuid(value: Any) -> bool:
    import uuid

    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ui_input_ok(slot: Any) -> bool:
    return (
        isinstance(slot, dict)
        and isinstance(slot.get("name", ""), str)
        and (slot.get("link") is None or _int(slot.get("link")))
        and isinstance(slot.get("widget") or {}, dict)
    )


def _ui_output_ok(slot: Any) -> bool:
    links = slot.get("links") if isinstance(slot, dict) else None
    return isinstance(slot, dict) and (links is None or (isinstance(links, list) and all(map(_int, links))))
