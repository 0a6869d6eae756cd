"""Static bearer tokens.

Token file: one token per line, `#` starts a comment:

    TOKEN [USER [RULE ...]]

RULE is `VERBS:RESOURCES`, each a comma list or `*` (e.g.
`get,list,watch:services,endpointslices`).  A token without rules may do
everything.  USER defaults to `user-N` (N = line number).  The file is
re-read whenever its size, mtime or inode changes, so tests can rotate tokens
by rewriting (or renaming over) it.
"""

import os
import threading

from sim_errors import ApiError

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")


class User:
    def __init__(self, name, rules):
        self.name = name
        self.rules = rules   # None = everything; else list of (verbs, res)

    def allowed(self, verb, resource):
        if self.rules is None:
            return True
        for verbs, ress in self.rules:
            if ("*" in verbs or verb in verbs) and \
                    ("*" in ress or resource in ress):
                return True
        return False


ANONYMOUS = User("system:anonymous", [])


class TokenAuth:
    def __init__(self, path, anonymous=False):
        self.path = path
        self.anonymous = anonymous
        self.lock = threading.Lock()
        self.sig = None
        self.tokens = {}

    def _reload(self):
        try:
            st = os.stat(self.path)
        except OSError:
            self.tokens, self.sig = {}, None
            return
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self.sig:
            return
        tokens = {}
        try:
            with open(self.path) as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for n, line in enumerate(lines, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            rules = None
            if len(fields) > 2:
                rules = []
                for r in fields[2:]:
                    verbs, _, ress = r.partition(":")
                    rules.append((set(verbs.split(",")),
                                  set((ress or "*").split(","))))
            tokens[fields[0]] = User(fields[1] if len(fields) > 1
                                     else "user-%d" % n, rules)
        self.tokens, self.sig = tokens, sig

    def authenticate(self, header, path):
        """Return the User for an Authorization header value, or raise
        ApiError(401)."""
        unauthorized = ApiError(401, "Unauthorized")
        if header is None or not header.strip():
            if self.anonymous or path in PUBLIC_PATHS:
                return ANONYMOUS
            raise unauthorized
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized
        with self.lock:
            self._reload()
            user = self.tokens.get(token.strip())
        if user is None:
            raise unauthorized
        return user
