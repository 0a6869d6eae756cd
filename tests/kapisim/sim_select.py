"""Label and field selectors.

parse_labels(text) / parse_fields(text, allowed) return a predicate taking
(labels dict, fields dict) -> bool, or raise ValueError with a message close to
the real server's.
"""

import re

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    + _NAME + "$")
_VALUE_RE = re.compile("^(" + _NAME + ")?$")

_TOKEN_RE = re.compile(r"\s*(!=|==|=|\(|\)|,|!|>|<|[^\s!=(),<>]+)")


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise ValueError("unable to parse requirement: invalid character "
                             "at position %d" % pos)
        out.append(m.group(1))
        pos = m.end()
    return out


def _check_key(key):
    if len(key.split("/")[-1]) > 63 or not _KEY_RE.match(key):
        raise ValueError('unable to parse requirement: values[0][%s]: '
                         'Invalid value: "%s": name part must consist of '
                         'alphanumeric characters, \'-\', \'_\' or \'.\'' %
                         (key, key))


def _check_value(key, val):
    if len(val) > 63 or not _VALUE_RE.match(val):
        raise ValueError('unable to parse requirement: values[0][%s]: '
                         'Invalid value: "%s": a valid label must be an empty '
                         'string or consist of alphanumeric characters, \'-\', '
                         '\'_\' or \'.\'' % (key, val))


def parse_labels(text):
    """Parse a labelSelector; returns a predicate over a labels dict."""
    toks = _tokens(text or "")
    reqs = []
    i = 0
    n = len(toks)
    ops = ("=", "==", "!=", "in", "notin", ">", "<")

    def expect_value(j):
        if j >= n or toks[j] in ("(", ")", ",", "!", "=", "==", "!="):
            return "", j  # empty value is legal for = / ==
        return toks[j], j + 1

    while i < n:
        neg = False
        if toks[i] == "!":
            neg = True
            i += 1
        if i >= n or toks[i] in ("(", ")", ",", "=", "==", "!="):
            raise ValueError("unable to parse requirement: found '%s', "
                             "expected: identifier" %
                             (toks[i] if i < n else ""))
        key = toks[i]
        _check_key(key)
        i += 1
        if neg:
            reqs.append(("!", key, None))
        elif i >= n or toks[i] == ",":
            reqs.append(("exists", key, None))
        elif toks[i] in ops:
            op = toks[i]
            i += 1
            if op in ("in", "notin"):
                if i >= n or toks[i] != "(":
                    raise ValueError("unable to parse requirement: found "
                                     "'%s', expected: '('" %
                                     (toks[i] if i < n else ""))
                i += 1
                vals = []
                while True:
                    if i >= n:
                        raise ValueError("unable to parse requirement: "
                                         "found '', expected: ')'")
                    if toks[i] == ")":
                        i += 1
                        break
                    if toks[i] == ",":
                        vals.append("")
                        i += 1
                        continue
                    v = toks[i]
                    _check_value(key, v)
                    vals.append(v)
                    i += 1
                    if i < n and toks[i] == ",":
                        i += 1
                        if i < n and toks[i] == ")":
                            vals.append("")
                if not vals:
                    raise ValueError("unable to parse requirement: for 'in', "
                                     "'notin' operators, values set can't be "
                                     "empty")
                reqs.append((op, key, set(vals)))
            elif op in (">", "<"):
                if i >= n:
                    raise ValueError("unable to parse requirement: found '', "
                                     "expected: identifier")
                try:
                    num = int(toks[i])
                except ValueError:
                    raise ValueError("unable to parse requirement: for 'Gt', "
                                     "'Lt' operators, the value must be an "
                                     "integer")
                i += 1
                reqs.append((op, key, num))
            else:
                v, i = expect_value(i)
                _check_value(key, v)
                reqs.append(("!=" if op == "!=" else "=", key, v))
        else:
            raise ValueError("unable to parse requirement: found '%s', "
                             "expected: in, notin, =, ==, !=, gt, lt" % toks[i])
        if i < n:
            if toks[i] != ",":
                raise ValueError("unable to parse requirement: found '%s', "
                                 "expected: ','" % toks[i])
            i += 1
            if i >= n:
                raise ValueError("unable to parse requirement: found '', "
                                 "expected: identifier after ','")

    def match(labels):
        labels = labels or {}
        for op, key, val in reqs:
            has = key in labels
            cur = labels.get(key)
            if op == "exists" and not has:
                return False
            if op == "!" and has:
                return False
            if op == "=" and cur != val:
                return False
            if op == "!=" and has and cur == val:
                return False
            if op == "in" and (not has or cur not in val):
                return False
            if op == "notin" and has and cur in val:
                return False
            if op in (">", "<"):
                try:
                    num = int(cur)
                except (TypeError, ValueError):
                    return False
                if (op == ">" and not num > val) or (op == "<" and
                                                     not num < val):
                    return False
        return True

    match.empty = not reqs
    return match


def _split_escaped(text, sep):
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(s):
    return re.sub(r"\\(.)", r"\1", s)


def parse_fields(text, allowed):
    """Parse a fieldSelector against the allowed field names.

    Returns a predicate over a fields dict (name -> string value)."""
    reqs = []
    for part in _split_escaped(text or "", ","):
        if part.strip() == "":
            continue
        m = re.match(r"^\s*([^!=\s]+)\s*(!=|==|=)(.*)$", part)
        if not m:
            raise ValueError("invalid selector: '%s'; can't understand '%s'"
                             % (text, part))
        field, op, value = m.group(1), m.group(2), _unescape(m.group(3))
        if field not in allowed:
            raise ValueError('field label not supported: %s' % field)
        reqs.append((field, op != "!=", value))

    def match(fields):
        for field, eq, value in reqs:
            if (fields.get(field, "") == value) != eq:
                return False
        return True

    match.empty = not reqs
    return match
