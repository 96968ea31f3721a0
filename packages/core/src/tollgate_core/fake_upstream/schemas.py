"""A small value that fits a JSON Schema: what the fake upstream answers to structured output
and writes as a tool call's arguments, as a model following the schema would."""

from __future__ import annotations

from typing import Any


def instance(schema: object, root: object = None, depth: int = 0) -> Any:
    """A value valid against `schema` (the subset models are given: objects, arrays, scalars,
    enums, consts, ``anyOf``/``oneOf`` and local ``$ref``)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        return instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return instance(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        return {name: instance(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 1))
        return [instance(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return "tok"
    if kind == "integer":
        return int(schema.get("minimum") or 1)
    if kind == "number":
        return float(schema.get("minimum") or 1.5)
    if kind == "boolean":
        return True
    return None


def _resolve(root: object, ref: object) -> object:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return {}
    node = root
    for key in ref[2:].split("/"):
        node = node.get(key) if isinstance(node, dict) else None
    return node
