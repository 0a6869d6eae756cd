#include "kcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bug.h"
#include "jdoc.h"
#include "jget.h"
#include "kslice.h"
#include "ksvc.h"

/* A kind kept decoded in ferry's own form rather than as JSON, read
 * from a jdoc (jdoc.h). */
struct codec {
    const char *kind;
    void *(*decode)(const struct jdoc *d, int obj); /* NULL: out of memory */
    void (*free)(void *obj);
    int (*equal)(const void *a, const void *b);
};

static void *
slice_decode(const struct jdoc *d, int obj)
{
    return kslice_decode_doc(d, obj);
}

static void
slice_free(void *obj)
{
    kslice_free(obj);
}

static int
slice_equal(const void *a, const void *b)
{
    return kslice_equal(a, b);
}

static void *
svc_decode(const struct jdoc *d, int obj)
{
    return ksvc_decode_doc(d, obj);
}

static void
svc_free(void *obj)
{
    ksvc_free(obj);
}

static int
svc_equal(const void *a, const void *b)
{
    return ksvc_equal(a, b);
}

static const struct codec codecs[] = {
    {"EndpointSlice", slice_decode, slice_free, slice_equal},
    {"Service", svc_decode, svc_free, svc_equal},
};

/* A decoded object under its key. */
struct kent {
    struct kent *next; /* in its bucket */
    /* The decoded object; NULL in a list's cache for an object its base
     * holds at the same resourceVersion (kcache_set_base()). */
    void *obj;
    uint64_t born; /* kcache_members() right after it was added */
    /* metadata.resourceVersion, when it is a number (0: not one). */
    uint64_t rv;
    uint32_t hash;
    char key[];
};

struct kcache {
    json_t *map; /* key -> object (JSON kinds; empty for decoded ones) */
    const struct codec *codec; /* NULL: objects kept as JSON */
    struct kent **b;           /* decoded kinds: buckets */
    size_t nb, n;              /* buckets (a power of two), objects */
    json_t *held; /* the last watch event's object (kcache_event.obj) */
    char kind[32];
    int namespaced;
    char rv[KCACHE_RV_MAX];
    uint64_t changes;
    uint64_t members; /* decoded kinds: kcache_members() */
    uint64_t entries; /* decoded kinds: kcache_entries() */
    /* A list's cache: the cache it will replace (kcache_set_base()). */
    const struct kcache *base;
    /* Decoded kinds: the watch line being applied, parsed (its text a
     * copy), and while an object is put, where its whole form is: the
     * JSON given to kcache_put_why() is then only its kind and metadata
     * (slim_of()). */
    struct jdoc doc;
    char *text;
    size_t textcap;
    const json_t *doc_for;
    const struct jdoc *doc_of;
    int doc_at;
};

/* The source of kcache_members() values: process-wide, so that no two
 * sets of entries of any caches share one. */
static uint64_t member_seq;

static const char *const ev_names[] = {
    [KCACHE_EV_ADDED] = "ADDED",     [KCACHE_EV_MODIFIED] = "MODIFIED",
    [KCACHE_EV_DELETED] = "DELETED", [KCACHE_EV_BOOKMARK] = "BOOKMARK",
    [KCACHE_EV_ERROR] = "ERROR",
};

const char *
kcache_ev_name(enum kcache_ev t)
{
    return (unsigned)t <= KCACHE_EV_ERROR ? ev_names[t] : "?";
}

struct kcache *
kcache_new(const char *kind, int namespaced)
{
    struct kcache *c = calloc(1, sizeof(*c));
    size_t i;

    if (c == NULL)
        return NULL;
    c->map = json_object();
    if (c->map == NULL) {
        free(c);
        return NULL;
    }
    snprintf(c->kind, sizeof(c->kind), "%s", kind ? kind : "");
    c->namespaced = namespaced;
    c->members = ++member_seq;
    for (i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (strcmp(c->kind, codecs[i].kind) == 0)
            c->codec = &codecs[i];
    return c;
}

/* Free the decoded objects of <c>, keeping its buckets. */
static void
ents_clear(struct kcache *c)
{
    size_t i;

    for (i = 0; i < c->nb; i++) {
        struct kent *e = c->b[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            c->codec->free(e->obj);
            free(e);
        }
        c->b[i] = NULL;
    }
    c->n = 0;
}

void
kcache_free(struct kcache *c)
{
    if (c == NULL)
        return;
    if (c->codec != NULL)
        ents_clear(c);
    free(c->b);
    json_decref(c->map);
    json_decref(c->held);
    jdoc_free(&c->doc);
    free(c->text);
    free(c);
}

size_t
kcache_size(const struct kcache *c)
{
    return c->codec != NULL ? c->n : json_object_size(c->map);
}

void
kcache_drop_event(struct kcache *c)
{
    json_decref(c->held);
    c->held = NULL;
}

int
kcache_decoded(const struct kcache *c)
{
    return c->codec != NULL;
}

static uint32_t
key_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The link that points to the entry with <key>, or to the NULL at the
 * end of its bucket. <c> has buckets. */
static struct kent **
ent_link(const struct kcache *c, const char *key, uint32_t h)
{
    struct kent **pp = &c->b[h & (c->nb - 1)];

    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0)
            break;
    return pp;
}

/* Room for one more object; a failed growth only makes chains longer. */
static int
ents_grow(struct kcache *c)
{
    size_t nb = c->nb ? c->nb * 2 : 64, i;
    struct kent **b;

    if (c->n < c->nb)
        return 0;
    b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return c->nb > 0 ? 0 : -1;
    for (i = 0; i < c->nb; i++) {
        struct kent *e = c->b[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(c->b);
    c->b = b;
    c->nb = nb;
    return 0;
}

const void *
kcache_find(const struct kcache *c, const char *key)
{
    struct kent *e;

    if (c->codec == NULL || c->n == 0)
        return NULL;
    e = *ent_link(c, key, key_hash(key));
    return e != NULL ? e->obj : NULL;
}

const void *
kcache_find_ent(const struct kcache *c, const char *key)
{
    if (c->codec == NULL || c->n == 0)
        return NULL;
    return *ent_link(c, key, key_hash(key));
}

const void *
kcache_next(const struct kcache *c, struct kcache_iter *it, const char **key)
{
    const struct kent *e = it->ent;

    if (c->codec == NULL)
        return NULL;
    if (e != NULL)
        e = e->next;
    while (e == NULL && it->bucket < c->nb)
        e = c->b[it->bucket++];
    it->ent = e;
    if (e == NULL)
        return NULL;
    if (key != NULL)
        *key = e->key;
    return e->obj;
}

uint64_t
kcache_members(const struct kcache *c)
{
    return c->members;
}

uint64_t
kcache_entries(const struct kcache *c)
{
    return c->entries;
}

uint64_t
kcache_ent_born(const void *ent)
{
    return ((const struct kent *)ent)->born;
}

const void *
kcache_ent_obj(const void *ent)
{
    return ((const struct kent *)ent)->obj;
}

const json_t *
kcache_map(const struct kcache *c)
{
    return c->map;
}

const json_t *
kcache_get(const struct kcache *c, const char *key)
{
    return c->codec == NULL ? json_object_get(c->map, key) : NULL;
}

uint64_t
kcache_changes(const struct kcache *c)
{
    return c->changes;
}

const char *
kcache_rv(const struct kcache *c)
{
    return c->rv;
}

void
kcache_set_rv(struct kcache *c, const char *rv)
{
    snprintf(c->rv, sizeof(c->rv), "%s", rv ? rv : "");
}

static const char *
meta_str(const json_t *obj, const char *field)
{
    const json_t *v = json_object_get(json_object_get(obj, "metadata"), field);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Record the object's "ns/name" in <e> for error messages. */
static void
note_obj(struct err *e, const json_t *obj)
{
    const char *ns = meta_str(obj, "namespace");
    const char *name = meta_str(obj, "name");

    if (e != NULL)
        snprintf(e->obj, sizeof(e->obj), "%s%s%s", ns ? ns : "", ns ? "/" : "",
                 name ? name : "");
}

/* kcache_key() saying why a key cannot be made. */
static int
key_of(const struct kcache *c, const json_t *obj, char *out, size_t outlen,
       enum skip_reason *why, struct err *e)
{
    const char *ns = meta_str(obj, "namespace");
    const char *name = meta_str(obj, "name");
    const json_t *kind = json_object_get(obj, "kind");
    int n;

    note_obj(e, obj);
    *why = SKIP_MALFORMED;
    if (!json_is_object(obj))
        return err_set(e, "object is not a JSON object");
    if (c->kind[0] != '\0' && json_is_string(kind)
        && strcmp(json_string_value(kind), c->kind) != 0)
        return err_set(e, "unexpected kind \"%s\" (want %s)",
                       json_string_value(kind), c->kind);
    if (name == NULL || name[0] == '\0')
        return err_set(e, "%s without metadata.name", c->kind);
    if (c->namespaced && (ns == NULL || ns[0] == '\0'))
        return err_set(e, "%s without metadata.namespace", c->kind);
    if (c->namespaced)
        n = snprintf(out, outlen, "%s/%s", ns, name);
    else
        n = snprintf(out, outlen, "%s", name);
    *why = SKIP_NAME_TOO_LONG;
    if (n < 0 || (size_t)n >= outlen)
        return err_set(e, "object name too long");
    return 0;
}

int
kcache_key(const struct kcache *c, const json_t *obj, char *out, size_t outlen,
           struct err *e)
{
    enum skip_reason why;

    return key_of(c, obj, out, outlen, &why, e);
}

/* metadata.resourceVersion of <obj> as a number; 0 when it is missing
 * or not one (the API only promises an opaque string; a number is what
 * every server gives, and a string that is not one is never reused). */
static uint64_t
obj_rv(const json_t *obj)
{
    const char *s = jstr(json_object_get(obj, "metadata"), "resourceVersion");
    uint64_t v = 0;
    size_t i;

    if (s == NULL || s[0] == '\0' || strlen(s) > 19)
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v;
}

/* Decode <obj>: from the document it came from when it is the one
 * being put (kcache_put_doc(), kcache_apply_line()), else from its JSON
 * written out and parsed. NULL when out of memory. */
static void *
decode(struct kcache *c, const json_t *obj)
{
    if (c->doc_for == obj && obj != NULL)
        return c->codec->decode(c->doc_of, c->doc_at);
    return jdoc_decode_json(obj, c->codec->decode);
}

/* kcache_put_why() of a decoded kind: decode <obj> (taken) and keep
 * only the result. In a list's cache, an object its base holds at the
 * same resourceVersion is not decoded again: the entry is a mark (no
 * object) that kcache_replace() resolves to the base's object. A relist
 * of a large cluster, where little changed, then makes no new objects:
 * at 10,000 EndpointSlices they were 13 MB, made while the old ones
 * were alive, and their room stayed with the process after. */
static int
put_decoded(struct kcache *c, const char *key, json_t *obj,
            enum skip_reason *why, struct err *e)
{
    uint32_t h = key_hash(key);
    uint64_t rv = obj_rv(obj);
    struct kent **pp, *n, *be = NULL;
    void *d = NULL;

    pp = c->n > 0 ? ent_link(c, key, h) : NULL;
    if ((pp == NULL || *pp == NULL) && c->n >= KCACHE_MAX_OBJECTS) {
        json_decref(obj);
        *why = SKIP_CACHE_FULL;
        return err_set(e, "cache full (%d objects)", KCACHE_MAX_OBJECTS);
    }
    *why = SKIP_NO_MEMORY;
    if (c->base != NULL && c->base->n > 0 && rv != 0)
        be = *ent_link(c->base, key, h);
    if (be == NULL || be->rv != rv || be->obj == NULL) {
        d = decode(c, obj);
        json_decref(obj);
        if (d == NULL)
            return err_set(e, "out of memory");
    } else {
        json_decref(obj);
    }
    if (pp != NULL && *pp != NULL) {
        c->codec->free((*pp)->obj);
        (*pp)->obj = d;
        (*pp)->rv = rv;
        c->changes++;
        return 0;
    }
    n = malloc(sizeof(*n) + strlen(key) + 1);
    if (n == NULL || ents_grow(c) < 0) {
        free(n);
        c->codec->free(d);
        return err_set(e, "out of memory");
    }
    n->obj = d;
    n->rv = rv;
    n->hash = h;
    c->members = ++member_seq;
    n->born = c->members;
    strcpy(n->key, key);
    pp = &c->b[h & (c->nb - 1)];
    n->next = *pp;
    *pp = n;
    c->n++;
    c->changes++;
    return 0;
}

int
kcache_put_why(struct kcache *c, json_t *obj, enum skip_reason *why,
               struct err *e)
{
    enum skip_reason dummy;
    char key[512];

    if (why == NULL)
        why = &dummy;
    if (key_of(c, obj, key, sizeof(key), why, e) < 0) {
        json_decref(obj);
        return -1;
    }
    if (c->codec != NULL)
        return put_decoded(c, key, obj, why, e);
    if (json_object_get(c->map, key) == NULL
        && json_object_size(c->map) >= KCACHE_MAX_OBJECTS) {
        json_decref(obj);
        *why = SKIP_CACHE_FULL;
        return err_set(e, "cache full (%d objects)", KCACHE_MAX_OBJECTS);
    }
    if (json_object_set_new(c->map, key, obj) < 0) {
        *why = SKIP_NO_MEMORY;
        return err_set(e, "out of memory");
    }
    c->changes++;
    return 0;
}

int
kcache_put(struct kcache *c, json_t *obj, struct err *e)
{
    return kcache_put_why(c, obj, NULL, e);
}

/* Object <o> of <d> as JSON with only what the cache and the watch
 * event's readers look at: its kind and metadata's namespace, name,
 * resourceVersion, labels and annotations. Anything but an object is
 * made whole. NULL when out of memory. */
static json_t *
slim_of(const struct jdoc *d, int o)
{
    static const char *const fields[] = {"namespace", "name",
                                         "resourceVersion", "labels",
                                         "annotations"};
    json_t *s, *m;
    size_t i;
    int k, md;

    if (jdoc_type(d, o) != JD_OBJ)
        return jdoc_to_json(d, o);
    if ((s = json_object()) == NULL)
        return NULL;
    if ((k = jdoc_get(d, o, "kind")) >= 0
        && json_object_set_new(s, "kind", jdoc_to_json(d, k)) < 0)
        goto oom;
    if ((md = jdoc_get(d, o, "metadata")) < 0)
        return s;
    if (jdoc_type(d, md) != JD_OBJ) {
        if (json_object_set_new(s, "metadata", jdoc_to_json(d, md)) < 0)
            goto oom;
        return s;
    }
    if ((m = json_object()) == NULL
        || json_object_set_new(s, "metadata", m) < 0)
        goto oom;
    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if ((k = jdoc_get(d, md, fields[i])) >= 0
            && json_object_set_new(m, fields[i], jdoc_to_json(d, k)) < 0)
            goto oom;
    return s;
oom:
    json_decref(s);
    return NULL;
}

int
kcache_put_doc(struct kcache *c, const struct jdoc *d, int obj,
               enum skip_reason *why, struct err *e)
{
    json_t *j = c->codec != NULL ? slim_of(d, obj) : jdoc_to_json(d, obj);
    int rc;

    if (j == NULL) {
        if (why != NULL)
            *why = SKIP_NO_MEMORY;
        return err_set(e, "out of memory");
    }
    c->doc_for = j;
    c->doc_of = d;
    c->doc_at = obj;
    rc = kcache_put_why(c, j, why, e);
    c->doc_for = NULL;
    return rc;
}

static int
del_decoded(struct kcache *c, const char *key)
{
    struct kent **pp, *n;

    if (c->n == 0)
        return 0;
    pp = ent_link(c, key, key_hash(key));
    if (*pp == NULL)
        return 0;
    n = *pp;
    *pp = n->next;
    c->codec->free(n->obj);
    free(n);
    c->members = ++member_seq;
    c->n--;
    c->changes++;
    return 1;
}

int
kcache_del(struct kcache *c, const json_t *obj, struct err *e)
{
    char key[512];

    if (kcache_key(c, obj, key, sizeof(key), e) < 0)
        return -1;
    if (c->codec != NULL)
        return del_decoded(c, key);
    if (json_object_del(c->map, key) < 0)
        return 0;
    c->changes++;
    return 1;
}

/* kcache_replace() of decoded kinds (both of the same kind). An object
 * equal to the one it replaces is dropped and the one in place kept, so
 * that a relist leaves every unchanged object as it was (its stamp too:
 * the translator's memo then translates only what changed). */
static size_t
replace_decoded(struct kcache *dst, struct kcache *src)
{
    struct kcache_iter it = {0, NULL};
    struct kent **b;
    const char *key;
    const void *v;
    size_t gone = 0, nb;
    int differs = dst->n != src->n;

    while ((v = kcache_next(dst, &it, &key)) != NULL) {
        struct kent *oe = (struct kent *)it.ent, *ne = NULL;
        if (src->n > 0)
            ne = *ent_link(src, key, key_hash(key));
        if (ne == NULL) {
            gone++;
            differs = 1;
        } else if (ne->obj == NULL || dst->codec->equal(ne->obj, v)) {
            /* The old entry and object stay (src's chain takes them), the
             * new ones go with dst's, freed below. The old were made
             * among the cache's other long-lived memory; the new, at the
             * top of the heap during the list: freeing these lets the
             * heap give a relist's memory back (keeping the old objects
             * but the new entries left every page of freed objects with
             * a live entry in it: 18 MB at 10,000 slices). */
            struct kent **dl = ent_link(dst, key, oe->hash);
            struct kent **sl = ent_link(src, key, ne->hash);
            struct kent *dnext = oe->next;

            *dl = ne;
            *sl = oe;
            oe->next = ne->next;
            ne->next = dnext;
            it.ent = ne; /* the walk goes on from where oe was */
            /* A mark names the version oe is at, unless a watch event
             * changed oe while the list ran (none does: a list and a
             * watch of a kind never overlap); then oe is the newer. */
            differs |= ne->obj == NULL && ne->rv != oe->rv;
            if (ne->obj != NULL) /* equal, at the version listed */
                oe->rv = ne->rv;
        } else {
            differs = 1;
        }
    }
    ents_clear(dst);
    /* Marks left: objects gone from the base since the list named them
     * (as above, never seen). Their objects are gone too. */
    for (nb = 0; nb < src->nb; nb++)
        for (b = &src->b[nb]; *b != NULL;) {
            struct kent *m = *b;
            if (m->obj != NULL) {
                b = &m->next;
                continue;
            }
            *b = m->next;
            free(m);
            src->n--;
            differs = 1;
        }
    dst->members = ++member_seq;
    src->members = ++member_seq;
    dst->entries = dst->members; /* every entry is new */
    b = dst->b, nb = dst->nb;
    dst->b = src->b, dst->nb = src->nb, dst->n = src->n;
    src->b = b, src->nb = nb, src->n = 0;
    memcpy(dst->rv, src->rv, sizeof(dst->rv));
    src->rv[0] = '\0';
    if (differs)
        dst->changes++;
    return gone;
}

void
kcache_set_base(struct kcache *list, const struct kcache *base)
{
    list->base = base != NULL && base->codec != NULL
                         && base->codec == list->codec
                     ? base
                     : NULL;
}

size_t
kcache_replace(struct kcache *dst, struct kcache *src)
{
    const char *key;
    json_t *v, *old;
    size_t gone = 0;
    int differs = json_object_size(dst->map) != json_object_size(src->map);

    if (dst->codec != NULL && dst->codec == src->codec) {
        BUG_ON(src->base != NULL && src->base != dst);
        src->base = NULL;
        return replace_decoded(dst, src);
    }

    json_object_foreach(dst->map, key, v)
    {
        json_t *n = json_object_get(src->map, key);
        if (n == NULL)
            gone++;
        if (!differs && (n == NULL || !json_equal(n, v)))
            differs = 1;
    }
    old = dst->map;
    dst->map = src->map;
    src->map = old;
    json_object_clear(src->map);
    memcpy(dst->rv, src->rv, sizeof(dst->rv));
    src->rv[0] = '\0';
    if (differs)
        dst->changes++;
    return gone;
}

static int
rv_valid(const char *s)
{
    size_t i;

    if (s == NULL || s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
        return 0;
    for (i = 0; s[i] != '\0'; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int
kcache_rv_cmp(const char *a, const char *b, int *cmp)
{
    size_t la, lb;
    int r;

    if (!rv_valid(a) || !rv_valid(b))
        return -1;
    la = strlen(a);
    lb = strlen(b);
    if (la != lb) {
        *cmp = la < lb ? -1 : 1;
        return 0;
    }
    r = strcmp(a, b);
    *cmp = r < 0 ? -1 : (r > 0 ? 1 : 0);
    return 0;
}

static int
parse_type(const json_t *t, enum kcache_ev *out)
{
    const char *s = json_string_value(t);
    int i;

    if (s == NULL)
        return -1;
    for (i = 0; i <= KCACHE_EV_ERROR; i++) {
        if (strcmp(s, ev_names[i]) == 0) {
            *out = (enum kcache_ev)i;
            return 0;
        }
    }
    return -1;
}

static void
decode_status(const json_t *st, struct kcache_event *ev)
{
    const json_t *code = json_object_get(st, "code");
    const char *reason = json_string_value(json_object_get(st, "reason"));
    const char *msg = json_string_value(json_object_get(st, "message"));

    ev->code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
    snprintf(ev->reason, sizeof(ev->reason), "%s", reason ? reason : "");
    snprintf(ev->message, sizeof(ev->message), "%s", msg ? msg : "");
    /* Servers up to 1.17 sent reason Gone without always a code. */
    if (ev->code == 0
        && (strcmp(ev->reason, "Expired") == 0
            || strcmp(ev->reason, "Gone") == 0))
        ev->code = 410;
}

/* RV ordering check: objects must move strictly forward, bookmarks may
 * repeat the current RV. Incomparable RVs are let through. */
static int
rv_regresses(const struct kcache *c, const char *rv, int strict)
{
    int cmp;

    if (c->rv[0] == '\0' || rv[0] == '\0' || kcache_rv_cmp(rv, c->rv, &cmp) < 0)
        return 0;
    return strict ? cmp <= 0 : cmp < 0;
}

static int
apply_object(struct kcache *c, enum kcache_ev type, json_t *obj,
             struct kcache_event *ev, struct err *e)
{
    char key[512];
    const char *rv = meta_str(obj, "resourceVersion");

    snprintf(ev->rv, sizeof(ev->rv), "%s", rv ? rv : "");
    ev->skip = SKIP_MALFORMED;
    if (rv != NULL && strlen(rv) >= sizeof(ev->rv))
        return err_set(e, "resourceVersion too long");
    if (key_of(c, obj, key, sizeof(key), &ev->skip, e) < 0)
        return -1;
    if (rv_regresses(c, ev->rv, type != KCACHE_EV_BOOKMARK))
        return KCACHE_REGRESS;
    if (type == KCACHE_EV_BOOKMARK)
        ; /* never stored: a bookmark is an empty object */
    else if (type == KCACHE_EV_DELETED) {
        if (kcache_del(c, obj, e) < 0)
            return -1;
        ev->gone = obj;
    } else if (kcache_put_why(c, json_incref(obj), &ev->skip, e) < 0)
        return -1;
    else
        ev->obj = obj; /* the cache holds a reference now */
    if (ev->rv[0] != '\0')
        kcache_set_rv(c, ev->rv);
    return KCACHE_APPLIED;
}

static int
apply_bookmark(struct kcache *c, const json_t *obj, struct kcache_event *ev,
               struct err *e)
{
    const char *rv = meta_str(obj, "resourceVersion");

    if (rv == NULL || rv[0] == '\0')
        return err_set(e, "BOOKMARK without resourceVersion");
    if (strlen(rv) >= sizeof(ev->rv))
        return err_set(e, "resourceVersion too long");
    snprintf(ev->rv, sizeof(ev->rv), "%s", rv);
    if (rv_regresses(c, rv, 0))
        return KCACHE_REGRESS;
    kcache_set_rv(c, rv);
    return KCACHE_APPLIED;
}

/* Copy <len> bytes of <line> into c->text. Returns 0 or -1. */
static int
take_text(struct kcache *c, const char *line, size_t len)
{
    if (len + 1 > c->textcap) {
        char *n = realloc(c->text, len + 1);
        if (n == NULL)
            return -1;
        c->text = n;
        c->textcap = len + 1;
    }
    memcpy(c->text, line, len);
    return 0;
}

/* Watch line <line> as JSON, parsed into c->doc (jdoc.h): made whole
 * for a kind kept as JSON; for a decoded kind, the event's type and a
 * slim object (slim_of(); an ERROR's Status whole), which the put
 * decodes from c->doc. NULL with <e> filled, and <why> SKIP_NO_MEMORY
 * when memory ran out. Not jansson's parser: when one of its
 * allocations fails it can return an object with a key cut short
 * ("resourceVersio"), which test_oom.c saw. */
static json_t *
line_root(struct kcache *c, const char *line, size_t len,
          enum skip_reason *why, struct err *e)
{
    struct err pe;
    const char *type;
    json_t *root = NULL, *o;
    int t, obj;

    if (take_text(c, line, len) < 0)
        goto oom;
    err_clear(&pe);
    if (jdoc_parse(&c->doc, c->text, len, &pe) < 0) {
        if (c->doc.nomem)
            goto oom;
        err_set_at(e, pe.line, pe.col, "bad JSON: %s", pe.msg);
        return NULL;
    }
    if (c->codec == NULL) {
        if ((root = jdoc_to_json(&c->doc, 0)) == NULL)
            goto oom;
        return root;
    }
    if ((root = json_object()) == NULL)
        goto oom;
    t = jdoc_get(&c->doc, 0, "type");
    obj = jdoc_get(&c->doc, 0, "object");
    if (t >= 0 && json_object_set_new(root, "type", jdoc_to_json(&c->doc, t)) < 0)
        goto oom;
    if (obj >= 0) {
        type = jdoc_str(&c->doc, t);
        o = type != NULL && strcmp(type, "ERROR") == 0
                ? jdoc_to_json(&c->doc, obj)
                : slim_of(&c->doc, obj);
        if (json_object_set_new(root, "object", o) < 0)
            goto oom;
        c->doc_for = o;
        c->doc_of = &c->doc;
        c->doc_at = obj;
    }
    return root;
oom:
    json_decref(root);
    *why = SKIP_NO_MEMORY;
    err_set(e, "out of memory");
    return NULL;
}

int
kcache_apply_line(struct kcache *c, const char *line, size_t len,
                  struct kcache_event *ev, struct err *e)
{
    json_t *root, *obj;
    int rc;

    memset(ev, 0, sizeof(*ev));
    ev->skip = SKIP_MALFORMED;
    json_decref(c->held);
    c->held = NULL;
    if ((root = line_root(c, line, len, &ev->skip, e)) == NULL)
        return -1;
    obj = json_object_get(root, "object");
    if (parse_type(json_object_get(root, "type"), &ev->type) < 0) {
        note_obj(e, obj);
        rc = err_set(e, "watch event without a known type");
    } else if (!json_is_object(obj)) {
        note_obj(e, obj);
        rc = err_set(e, "%s event without an object", kcache_ev_name(ev->type));
    } else if (ev->type == KCACHE_EV_ERROR) {
        decode_status(obj, ev);
        rc = KCACHE_ERROR;
    } else if (ev->type == KCACHE_EV_BOOKMARK) {
        rc = apply_bookmark(c, obj, ev, e);
    } else {
        rc = apply_object(c, ev->type, obj, ev, e);
    }
    c->doc_for = NULL;
    if ((ev->obj != NULL && c->codec != NULL) || ev->gone != NULL)
        c->held = json_incref(obj); /* the cache keeps no JSON of it */
    json_decref(root);
    return rc;
}
