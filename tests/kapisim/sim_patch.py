"""PATCH bodies: JSON merge patch (RFC 7386), a simple strategic merge patch
and JSON patch (RFC 6902).  Each apply_* returns a new document."""

import copy

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"
SUPPORTED = (JSONPATCH, MERGE, STRATEGIC)

# list fields merged by key in a strategic merge patch
_MERGE_KEYS = {"ports": ("port", "name"), "containers": ("name",),
               "ingress": ("ip",)}


def apply_merge(doc, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge(out.get(k), v)
    return out


def apply_strategic(doc, patch, field=None):
    """Merge patch, but lists of objects named in _MERGE_KEYS are merged
    element by element on their key; `$patch: delete` removes an element and
    other `$` directives are ignored."""
    if isinstance(patch, list) and field in _MERGE_KEYS and \
            isinstance(doc, list):
        out = copy.deepcopy(doc)
        for item in patch:
            if not isinstance(item, dict):
                return copy.deepcopy(patch)
            mk = next((k for k in _MERGE_KEYS[field] if k in item), None)
            if mk is None:
                return copy.deepcopy(patch)
            idx = next((i for i, o in enumerate(out)
                        if isinstance(o, dict) and o.get(mk) == item[mk]),
                       None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    del out[idx]
                continue
            if idx is None:
                out.append(apply_strategic({}, item))
            else:
                out[idx] = apply_strategic(out[idx], item)
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    if patch.get("$patch") == "replace":
        out = {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_strategic(out.get(k), v, k)
    return out


def _walk(doc, pointer):
    if pointer == "":
        return None, None
    if not pointer.startswith("/"):
        raise ValueError("invalid JSON pointer %r" % pointer)
    parts = [p.replace("~1", "/").replace("~0", "~")
             for p in pointer[1:].split("/")]
    cur = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    return cur, parts[-1]


def apply_jsonpatch(doc, ops):
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a list of operations")
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        try:
            if kind in ("move", "copy"):
                src, sk = _walk(doc, op["from"])
                val = src[int(sk)] if isinstance(src, list) else src[sk]
                val = copy.deepcopy(val)
                if kind == "move":
                    if isinstance(src, list):
                        del src[int(sk)]
                    else:
                        del src[sk]
                kind, op = "add", {"value": val}
            parent, k = _walk(doc, path)
            if parent is None:
                if kind in ("add", "replace"):
                    doc = copy.deepcopy(op["value"])
                    continue
                raise ValueError("cannot %s the whole document" % kind)
            if kind == "add":
                if isinstance(parent, list):
                    idx = len(parent) if k == "-" else int(k)
                    parent.insert(idx, copy.deepcopy(op["value"]))
                else:
                    parent[k] = copy.deepcopy(op["value"])
            elif kind == "remove":
                if isinstance(parent, list):
                    del parent[int(k)]
                else:
                    del parent[k]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(k)] = copy.deepcopy(op["value"])
                else:
                    if k not in parent:
                        raise KeyError(k)
                    parent[k] = copy.deepcopy(op["value"])
            elif kind == "test":
                cur = parent[int(k)] if isinstance(parent, list) else \
                    parent[k]
                if cur != op.get("value"):
                    raise ValueError("testing value %s failed" % path)
            else:
                raise ValueError("Unexpected kind: %s" % kind)
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError("%s operation does not apply: doc is missing "
                             "path: %s (%s)" % (kind, path, e))
    return doc
