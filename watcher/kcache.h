/*
 * kcache.h - a local cache of one kind of Kubernetes object, and the
 * decoding of watch events into it.
 *
 * A cache maps "namespace/name" (or "name" for cluster-scoped kinds) to
 * the object, plus the last resourceVersion (RV) seen. Objects are kept
 * as decoded JSON, except EndpointSlices and Services: they are decoded
 * once, when they enter the cache, into a struct kslice (kslice.h) or a
 * struct ksvc (ksvc.h), and their JSON is dropped; at 250,000 endpoints
 * jansson's nodes for every field were most of ferry's memory, and at
 * 10,000 Services theirs came next (about 4.5 KB a Service).
 * Nothing here does I/O: a watch line goes in, the cache changes, and the
 * caller learns what happened. This is the fuzz entry point for watch
 * lines (kcache_apply_line()).
 */
#ifndef WATCHER_KCACHE_H
#define WATCHER_KCACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "jdoc.h"
#include "skip.h"

#define KCACHE_RV_MAX      32      /* RVs are decimal revisions */
#define KCACHE_MAX_OBJECTS 1000000 /* hard cap on cached objects */

enum kcache_ev {
    KCACHE_EV_ADDED = 0,
    KCACHE_EV_MODIFIED,
    KCACHE_EV_DELETED,
    KCACHE_EV_BOOKMARK,
    KCACHE_EV_ERROR,
};

/* What one watch line turned out to be. */
struct kcache_event {
    enum kcache_ev type;
    char rv[KCACHE_RV_MAX]; /* object or bookmark RV, "" if none */
    int code;               /* ERROR: Status code (410 = expired) */
    char reason[64];        /* ERROR: Status reason */
    char message[192];      /* ERROR: Status message */
    enum skip_reason skip;  /* why the line was refused (-1 returned) */
    /* ADDED or MODIFIED applied: the object as cached now (borrowed,
     * valid until the cache next changes); otherwise NULL. */
    const json_t *obj;
    /* DELETED applied: the object as the event carried it (its last
     * state; borrowed, valid until the cache next changes); otherwise
     * NULL. */
    const json_t *gone;
};

/* kcache_apply_line() results besides -1 (malformed, <e> filled). */
#define KCACHE_APPLIED 0 /* object event applied, or bookmark taken */
#define KCACHE_ERROR   1 /* an ERROR event: see ev->code */
#define KCACHE_REGRESS 2 /* RV went backwards: not applied, relist */

struct kcache;

/* Returns a new empty cache for objects of <kind> ("Service", ...; an
 * object whose "kind" is present and differs is refused), or NULL. When
 * <namespaced> is 0 keys are bare names. */
struct kcache *kcache_new(const char *kind, int namespaced);
void kcache_free(struct kcache *c);

size_t kcache_size(const struct kcache *c);

/* Nonzero when <c> keeps its objects decoded (EndpointSlices: struct
 * kslice; Services: struct ksvc) rather than as JSON. */
int kcache_decoded(const struct kcache *c);

/* Let go of the last watch event's object (struct kcache_event: obj or
 * gone), which a decoded kind holds until the next line otherwise; the
 * event's pointers are not valid after. For a caller that parses a line
 * in a jarena window (jarena.h): call it before the window ends. */
void kcache_drop_event(struct kcache *c);

/* JSON kinds: the objects, a JSON object from key to object (empty for
 * a decoded kind). Borrowed; valid until the cache next changes.
 * Iterate it with json_object_foreach(). */
const json_t *kcache_map(const struct kcache *c);

/* JSON kinds: borrowed object with <key>, or NULL (always NULL for a
 * decoded kind). */
const json_t *kcache_get(const struct kcache *c, const char *key);

/* Decoded kinds: borrowed object with <key>, or NULL. */
const void *kcache_find(const struct kcache *c, const char *key);

/* Decoded kinds: the entry of <key> (as kcache_iter.ent; its object
 * through kcache_ent_obj()), or NULL. */
const void *kcache_find_ent(const struct kcache *c, const char *key);

/* Decoded kinds: walk the objects in no particular order. Start with
 * {0, NULL}; kcache_next() returns the next object (its key in *<key>
 * when not NULL) or NULL at the end. The cache must not change during
 * the walk. */
struct kcache_iter {
    size_t bucket;
    const void *ent;
};
const void *kcache_next(const struct kcache *c, struct kcache_iter *it,
                        const char **key);

/* Counter bumped by every change to the objects (not by RV updates). */
uint64_t kcache_changes(const struct kcache *c);

/* Decoded kinds: a value that changes whenever an entry is added or
 * removed (an object modified in place keeps its entry), and differs
 * between any two caches. While it stays, the entries kcache_next()
 * walked (kcache_iter.ent) and their keys stay valid. */
uint64_t kcache_members(const struct kcache *c);

/* Decoded kinds: a value that changes whenever every entry is made anew
 * (kcache_replace()); while it stays, an entry that was not removed is
 * the entry it was. */
uint64_t kcache_entries(const struct kcache *c);

/* The kcache_members() value that entry <ent> was added at: greater
 * than a value taken earlier when it was added since. */
uint64_t kcache_ent_born(const void *ent);

/* The object of entry <ent> (a kcache_iter.ent) now. */
const void *kcache_ent_obj(const void *ent);

/* Last RV seen ("" before the first list). */
const char *kcache_rv(const struct kcache *c);
void kcache_set_rv(struct kcache *c, const char *rv);

/* Insert or replace <obj> (the cache takes the reference, also on
 * failure; a decoded kind decodes it and drops it). Fails with <e> filled if
 * metadata.name (or namespace) is missing, the kind is wrong or the cache is
 * full. Returns 0 or -1. */
int kcache_put(struct kcache *c, json_t *obj, struct err *e);

/* kcache_put_why() of value <obj> of <d> (borrowed): a decoded kind
 * decodes it from <d>, and makes JSON of its kind and metadata only; a
 * JSON kind keeps it as JSON. */
int kcache_put_doc(struct kcache *c, const struct jdoc *d, int obj,
                   enum skip_reason *why, struct err *e);

/* kcache_put() that also says why an object was refused: on -1 *why is
 * SKIP_MALFORMED, SKIP_NAME_TOO_LONG or SKIP_CACHE_FULL (<why> may be
 * NULL). */
int kcache_put_why(struct kcache *c, json_t *obj, enum skip_reason *why,
                   struct err *e);

/* Remove the object with the key of <obj>. Returns 1 if it was there,
 * 0 if not, -1 with <e> filled if <obj> has no usable metadata. */
int kcache_del(struct kcache *c, const json_t *obj, struct err *e);

/* Replace the content and RV of <dst> by those of <src>, leaving <src>
 * empty. Returns how many keys of <dst> vanished. Counts as a change
 * when anything differs. Decoded kinds keep an object of <dst> that the
 * one of <src> with its key equals, and its entry (kcache_find() then
 * returns the same pointer as before). */
size_t kcache_replace(struct kcache *dst, struct kcache *src);

/* Decoded kinds: <list>, an empty cache that a list fills, will replace
 * <base> (kcache_replace(base, list)). An object <base> holds at the
 * resourceVersion the list gives is not decoded again: <list> keeps a
 * mark for it, which kcache_replace() resolves to <base>'s object. Until
 * then, only kcache_put*(), kcache_set_rv(), kcache_rv(),
 * kcache_decoded() and kcache_free() may be called on <list>, and
 * <base> must not change. Ignored for a JSON kind or another kind. */
void kcache_set_base(struct kcache *list, const struct kcache *base);

/* Key of <obj> into <out> ("ns/name" or "name"). Returns 0, or -1 with
 * <e> filled (its obj set to what is known). */
int kcache_key(const struct kcache *c, const json_t *obj, char *out,
               size_t outlen, struct err *e);

/*
 * Compare two RVs as Kubernetes defines comparable RVs: decimal digits,
 * no leading zero, a longer one is larger, else lexical order. Returns 0
 * and sets *cmp (<0, 0, >0), or -1 if either is not of that form.
 */
int kcache_rv_cmp(const char *a, const char *b, int *cmp);

/*
 * Decode one watch line (<len> bytes, no newline needed, need not be NUL
 * terminated) and apply it to <c>. ADDED/MODIFIED insert, DELETED
 * removes, BOOKMARK only advances the RV (its object is never stored),
 * ERROR fills <ev> and changes nothing. An object or bookmark whose RV is
 * not newer than the cache's (equal is fine for a bookmark) is refused
 * with KCACHE_REGRESS. Returns KCACHE_APPLIED, KCACHE_ERROR,
 * KCACHE_REGRESS, or -1 with <e> filled (obj = "ns/name" when known) and
 * ev->skip set.
 *
 * The line is parsed whole by jdoc, into the cache's own copy of it,
 * and a kind kept as JSON is made from that (jdoc_to_json()). jdoc stops
 * at nesting depth 2048 (JDOC_DEPTH, as jansson's JSON_PARSER_MAX_DEPTH
 * in Debian's build): a line of nothing but '[' is refused after 2049
 * bytes, however long it is. When memory runs out, -1 comes with
 * ev->skip SKIP_NO_MEMORY, and the cache and its RV are as they were.
 */
int kcache_apply_line(struct kcache *c, const char *line, size_t len,
                      struct kcache_event *ev, struct err *e);

/* Name of an event type for logs. */
const char *kcache_ev_name(enum kcache_ev t);

#endif
