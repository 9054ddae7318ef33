"""Pure payload transformations: set at a key path, delete keys, select keys.

Payload dicts stored in segments are never mutated: every function returns
new dicts and shares untouched sub-trees.
"""

from __future__ import annotations

from typing import Any

from qcluster.types import PayloadSelector

__all__ = ["delete_keys", "select_payload", "set_payload"]

Payload = dict[str, Any]


def _split(key: str) -> list[str]:
    parts = key.split(".")
    assert all(parts), f"empty segment in key path {key!r}"
    return parts


def set_payload(old: Payload | None, new: Payload, *, key: str | None) -> Payload:
    """Qdrant's set_payload: merge ``new`` into the payload, or into the object at ``key``."""
    base: Payload = dict(old or {})
    if key is None:
        base.update(new)
        return base
    parts = _split(key)
    node = base
    for part in parts[:-1]:
        child = node.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    leaf = node.get(parts[-1])
    merged = dict(leaf) if isinstance(leaf, dict) else {}
    merged.update(new)
    node[parts[-1]] = merged
    return base


def _delete_path(node: Payload, parts: list[str]) -> Payload:
    """A copy of ``node`` without the value at ``parts`` (unchanged if absent)."""
    head = parts[0]
    if head not in node:
        return node
    result = dict(node)
    if len(parts) == 1:
        del result[head]
        return result
    child = node[head]
    if isinstance(child, dict):
        result[head] = _delete_path(child, parts[1:])
    elif isinstance(child, list):
        result[head] = [
            _delete_path(item, parts[1:]) if isinstance(item, dict) else item for item in child
        ]
    return result


def delete_keys(old: Payload | None, keys: tuple[str, ...]) -> Payload:
    """The payload without each (dotted) key; array elements are descended into."""
    result: Payload = dict(old or {})
    for key in keys:
        result = _delete_path(result, _split(key.replace("[]", "")))
    return result


def _pick(node: Payload, parts: list[str]) -> Any:
    head = parts[0]
    if head not in node:
        return None
    value = node[head]
    if len(parts) == 1:
        return {head: value}
    if isinstance(value, dict):
        picked = _pick(value, parts[1:])
        return None if picked is None else {head: picked}
    return None


def _merge_into(target: Payload, source: Payload) -> None:
    """Deep-merge ``source`` into ``target``, copying (never mutating) shared sub-dicts."""
    for key, value in source.items():
        existing = target.get(key)
        if isinstance(existing, dict) and isinstance(value, dict):
            copy = dict(existing)
            _merge_into(copy, value)
            target[key] = copy
        else:
            target[key] = value


def select_payload(payload: Payload | None, selector: PayloadSelector) -> Payload | None:
    """Apply with_payload: None when disabled, else the selected keys ({} for no payload)."""
    if not selector.enabled:
        return None
    payload = payload or {}
    if selector.include is not None:
        result: Payload = {}
        for key in selector.include:
            picked = _pick(payload, _split(key))
            if picked is not None:
                _merge_into(result, picked)
        return result
    if selector.exclude is not None:
        return delete_keys(payload, selector.exclude)
    return payload
