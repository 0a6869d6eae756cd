"""Status objects and the exception that carries them to the HTTP layer.

Every API failure in the simulator is raised as ApiError and turned into a
`Status` body (or a plain-text body where the real server sends text) by the
request handler.
"""

# reason strings by HTTP code, as the real API server uses them
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_obj(code, message, reason=None, details=None, metadata=None):
    """Build a failure Status dict (kind Status, apiVersion v1)."""
    st = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
    }
    if details:
        st["details"] = details
    st["code"] = code
    return st


class ApiError(Exception):
    """An error answered as an HTTP status.

    `text` set means the body is plain text instead of a Status object.
    `headers` are extra response headers (e.g. Retry-After).
    """

    def __init__(self, code, message, reason=None, details=None,
                 metadata=None, text=None, headers=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.details = details
        self.metadata = metadata
        self.text = text
        self.headers = dict(headers or {})

    def status(self):
        return status_obj(self.code, self.message, self.reason, self.details,
                          self.metadata)


def res_details(res, name=None, extra=None):
    """`details` for an object error: name, group (if any), kind=resource."""
    d = {}
    if name is not None:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = res.plural
    if extra:
        d.update(extra)
    return d


def not_found(res, name):
    return ApiError(404, '%s "%s" not found' % (res.qualified, name),
                    details=res_details(res, name))


def already_exists(res, name):
    return ApiError(409, '%s "%s" already exists' % (res.qualified, name),
                    reason="AlreadyExists", details=res_details(res, name))


def conflict(res, name, why=None):
    msg = ("Operation cannot be fulfilled on %s \"%s\": %s" % (
        res.qualified, name,
        why or "the object has been modified; please apply your changes "
        "to the latest version and try again"))
    return ApiError(409, msg, reason="Conflict",
                    details=res_details(res, name))


def bad_request(message):
    return ApiError(400, message)


def invalid(kind, group, name, causes):
    """422 Invalid.  causes: list of (field, type word, detail) tuples where
    type word is e.g. "Required value", "Invalid value: ...", "Forbidden"."""
    reason_codes = {
        "Required value": "FieldValueRequired",
        "Forbidden": "FieldValueForbidden",
        "Duplicate value": "FieldValueDuplicate",
        "Unsupported value": "FieldValueNotSupported",
    }
    parts, cl = [], []
    for field, typ, detail in causes:
        word = typ.split(":")[0]
        text = typ + (": " + detail if detail else "")
        parts.append("%s: %s" % (field, text))
        cl.append({"reason": reason_codes.get(word, "FieldValueInvalid"),
                   "message": text, "field": field})
    qual = kind + ("." + group if group else "")
    if len(parts) == 1:
        summary = parts[0]
    else:
        summary = "[" + ", ".join(parts) + "]"
    msg = '%s "%s" is invalid: %s' % (qual, name, summary)
    det = {"name": name}
    if group:
        det["group"] = group
    det["kind"] = kind
    det["causes"] = cl
    return ApiError(422, msg, reason="Invalid", details=det)
