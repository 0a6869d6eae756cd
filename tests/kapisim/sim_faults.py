"""Fault injection rules, driven by POST /_sim/faults.

A rule is a dict.  Common keys: "action", "path" (URL path prefix, default
every API path), "method" (e.g. "GET"), "watch" (true: watches only, false:
everything but watches), "count" (how many requests it hits; -1 = until
cleared).  Actions:

  fail        answer with "status" (default 500); "retryAfter" seconds;
              "format": "json" (a Status, default) or "text"; "message".
  drop        close the connection without any answer.
  end_watch   end matching watches after "afterEvents" events and/or
              "afterSeconds" seconds; "mode": "clean" (terminating chunk,
              default) or "abort" (connection cut mid-stream).
  gone        the next matching watch gets 200 + one ERROR 410 event.
  delay_flush sleep "seconds" before each watch write (until cleared).
  inject      write raw bytes into a matching open watch (each use of
              the rule, one watch): "lines" lines (default 1), each the
              string "text" repeated "repeat" times (default 1) and a
              newline; no validation (a corrupt or hostile server).
  chunking    "mode": "split" (each event split across chunks), "coalesce"
              (events sharing chunks) or "normal".
  suppress_bookmarks  "enabled" (default true): no BOOKMARK is sent.
  reject_send_initial_events  "enabled" (default true): the WatchList gate
              is off, sendInitialEvents gives 422.
Immediate actions (applied by the handler, not stored): compact
{"revision"}, regress {"revision", "closeWatches"}, end_watches {"mode"}.
"""

import itertools
import threading

STORED = ("fail", "drop", "end_watch", "gone", "delay_flush", "chunking",
          "inject")
FLAGS = ("suppress_bookmarks", "reject_send_initial_events")
IMMEDIATE = ("compact", "regress", "end_watches")


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.rules = []
        self.flags = {}
        self.end_mode = "clean"   # for end_watches

    def clear(self):
        with self.lock:
            self.rules = []
            self.flags = {}
            self.end_mode = "clean"

    def add(self, rule):
        """Store one rule or flag; returns its id (flags: None)."""
        act = rule.get("action")
        if act in FLAGS:
            with self.lock:
                self.flags[act] = bool(rule.get("enabled", True))
            return None
        if act not in STORED:
            raise ValueError("unknown fault action %r" % act)
        r = dict(rule)
        default_count = -1 if act in ("delay_flush", "chunking") else 1
        r["count"] = int(r.get("count", default_count))
        r["path"] = r.get("path", "")
        with self.lock:
            r["id"] = next(self.ids)
            self.rules.append(r)
        return r["id"]

    def flag(self, name):
        with self.lock:
            return self.flags.get(name, False)

    def listing(self):
        with self.lock:
            return {"rules": [dict(r) for r in self.rules],
                    "flags": dict(self.flags)}

    def _matches(self, r, method, path, is_watch):
        if not path.startswith(r["path"]):
            return False
        if r.get("method") and r["method"].upper() != method:
            return False
        if "watch" in r and r["watch"] is not None and \
                bool(r["watch"]) != is_watch:
            return False
        return True

    def take(self, actions, method, path, is_watch):
        """First live rule with an action in actions matching the request;
        consumes one use of it."""
        with self.lock:
            for r in self.rules:
                if r["action"] in actions and r["count"] != 0 and \
                        self._matches(r, method, path, is_watch):
                    if r["count"] > 0:
                        r["count"] -= 1
                    return dict(r)
        return None

    def peek(self, action, path):
        """A live rule of this action for a watch on path, not consumed."""
        with self.lock:
            for r in self.rules:
                if r["action"] == action and r["count"] != 0 and \
                        self._matches(r, "GET", path, True):
                    return dict(r)
        return None
