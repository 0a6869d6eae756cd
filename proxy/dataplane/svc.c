#include <stdlib.h>
#include <string.h>

#include "affinity.h"
#include "balance.h"
#include "bug.h"
#include "drain.h"
#include "srcrules.h"
#include "stats.h"
#include "svc-t.h"

unsigned svc_nworkers = 1;
_Thread_local unsigned svc_worker_self;

/* The backend state of <addr>: the one <prev> (a service of the last
 * table, or NULL) has for it, else the registry's. Tables list a
 * Kubernetes Service's backends sorted by address, so a walk of <prev>'s
 * from *<j> finds most of them without a look-up in the registry, which
 * holds every backend of the node. */
static struct backend *
backend_like(const struct svc *prev, size_t *j, const struct saddr *addr)
{
    int c = 1;

    while (prev != NULL && *j < prev->nbe
           && (c = saddr_cmp(&prev->tbe[*j].addr, addr)) < 0)
        ++*j;
    if (prev != NULL && *j < prev->nbe && c == 0)
        return backend_ref(prev->be[(*j)++].b);
    return backend_get(addr);
}

struct svc *
svc_new(const struct tbl_service *ts)
{
    return svc_new_like(ts, NULL);
}

struct svc *
svc_new_like(const struct tbl_service *ts, const struct svc *prev)
{
    size_t j = 0;
    struct svc *s = calloc(1, sizeof(*s));
    struct tbl_service held;
    size_t i;

    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->spec = *ts;
    s->spec.frontends = NULL;
    s->spec.backends = NULL;
    s->spec.nfrontends = 0;
    s->spec.allow = NULL; /* the held arrays', below */
    s->spec.deny = NULL;
    s->spec.sni = NULL; /* routing reads the table's (sniroute.c) */
    s->spec.nsni = 0;
    s->spec.excluded = NULL; /* explanations read the table's */
    s->spec.nexcluded = 0;
    s->spec.arrays = NULL; /* svc->arrays holds the reference */
    s->bal = bal_get(ts->balance);
    s->nslots = svc_nworkers > 0 ? svc_nworkers : 1;
    if ((s->st = svc_stats_get(ts->name)) == NULL)
        goto fail;
    /* The table's arrays, with a reference; a service from no table (a
     * test's) gets copies, so that nothing is borrowed from its caller. */
    if (tbl_service_hold(&held, ts) < 0)
        goto fail;
    s->arrays = held.arrays;
    s->spec.name = held.name;
    s->spec.check.path = held.check.path;
    s->spec.allow = held.allow;
    s->spec.deny = held.deny;
    s->tbe = held.backends;
    /* Made here, on the control loop, before a worker can see <s>. */
    if ((ts->max_conns_per_source > 0 || ts->conn_rate_per_source > 0)
        && s->st->src == NULL && (s->st->src = srcrules_table_new()) == NULL)
        goto fail;
    if (ts->nbackends > 0
        && (s->be = calloc(ts->nbackends, sizeof(*s->be))) == NULL)
        goto fail;
    for (i = 0; i < ts->nbackends; i++) {
        const struct tbl_backend *tb = &ts->backends[i];
        s->be[i].b = backend_like(prev, &j, &tb->addr);
        if (s->be[i].b == NULL)
            goto fail;
        s->nbe++;
    }
    if (ts->affinity_timeout_ms > 0
        && (s->aff = affinity_new(ts->affinity_timeout_ms / 1e3)) == NULL)
        goto fail;
    if ((s->bal_state = s->bal->init(s, s->nslots)) == NULL)
        goto fail;
    return s;
fail:
    svc_unref(s);
    return NULL;
}

struct svc *
svc_ref(struct svc *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void
svc_unref(struct svc *s)
{
    struct svc *succ;
    size_t i;

    if (s == NULL
        || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    succ = drain_forget(s);
    s->bal->release(s->bal_state);
    for (i = 0; i < s->nbe; i++)
        backend_unref(s->be[i].b);
    svc_stats_unref(s->st);
    affinity_free(s->aff);
    tbl_arrays_unref(s->arrays);
    free(atomic_load_explicit(&s->drain, memory_order_relaxed));
    free(s->be);
    free(s);
    svc_unref(succ);
}

int
svc_matches(const struct svc *s, const struct tbl_service *ts)
{
    size_t i;

    if (s->nbe != ts->nbackends || !tbl_service_policy_equal(&s->spec, ts))
        return 0;
    /* The same arrays: nothing in them changed (a Kubernetes table shares
     * every service the change did not touch). */
    if (s->arrays != NULL && s->arrays == ts->arrays && s->tbe == ts->backends)
        return 1;
    for (i = 0; i < s->nbe; i++)
        if (!tbl_backend_equal(&s->tbe[i], &ts->backends[i]))
            return 0;
    return 1;
}

int
svc_set_weight_override(struct svc *s, size_t i, int32_t w)
{
    uint32_t before = svc_be_weight(s, i);
    struct svc_drain *d;

    if (w < 0 && svc_drain_at(s, i) == NULL)
        return 0;
    if ((d = svc_drain_make(s)) == NULL)
        return -1;
    atomic_store(&d[i].ovr_weight, w < 0 ? -1 : w);
    return svc_be_weight(s, i) != before;
}

void
svc_reweighted(struct svc *s)
{
    if (s->bal->reweight != NULL)
        s->bal->reweight(s->bal_state, s);
}

/* Whether a pick may choose a backend in passive-health back-off. */
enum pick_backoff {
    PICK_AVOID_BACKOFF = 0,
    PICK_IGNORE_BACKOFF, /* every candidate is in back-off: try anyway */
};

struct pick_ctx {
    const struct svc_tried *tried;
    double now;
    enum pick_backoff backoff;
};

static int
pick_ok(const struct svc *s, size_t i, void *arg)
{
    const struct pick_ctx *c = arg;

    if (svc_tried_has(c->tried, i)
        || svc_be_drained(s, i) || !backend_healthy(s->be[i].b))
        return 0;
    return c->backoff == PICK_IGNORE_BACKOFF
           || !backend_ejected(s->be[i].b, c->now);
}

static int
pick(struct svc *s, const struct saddr *client, const struct svc_tried *tried,
     double now)
{
    struct pick_ctx c = {tried, now, PICK_AVOID_BACKOFF};
    unsigned k = svc_slot_self(s);
    int i;

    if (s->nbe == 0)
        return -1;
    i = s->bal->pick(s->bal_state, s, k, client, pick_ok, &c);
    if (i < 0) {
        c.backoff = PICK_IGNORE_BACKOFF;
        i = s->bal->pick(s->bal_state, s, k, client, pick_ok, &c);
    }
    return i;
}

int
svc_pick(struct svc *s, const struct svc_tried *tried, double now)
{
    return pick(s, NULL, tried, now);
}

int
svc_pick_client(struct svc *s, const struct saddr *client,
                const struct svc_tried *tried, double now)
{
    struct pick_ctx c = {tried, now, PICK_AVOID_BACKOFF};
    int i;

    if (s->aff == NULL)
        return pick(s, client, tried, now);
    i = affinity_get(s->aff, client, now);
    if (i < 0 || (size_t)i >= s->nbe || !pick_ok(s, (size_t)i, &c))
        i = pick(s, client, tried, now);
    if (i >= 0)
        affinity_set(s->aff, client, (uint32_t)i, now);
    return i;
}

static int
peek(const struct svc *s, const struct saddr *client, double now)
{
    struct svc_tried none = {.n = 0};
    struct pick_ctx c = {&none, now, PICK_AVOID_BACKOFF};
    int i;

    if (s->nbe == 0)
        return SVC_PEEK_NONE;
    if (s->bal->peek == NULL)
        return SVC_PEEK_UNKNOWN;
    i = s->bal->peek(s->bal_state, s, client, pick_ok, &c);
    if (i == -1) {
        c.backoff = PICK_IGNORE_BACKOFF;
        i = s->bal->peek(s->bal_state, s, client, pick_ok, &c);
    }
    if (i == BAL_PEEK_UNKNOWN)
        return SVC_PEEK_UNKNOWN;
    return i >= 0 ? i : SVC_PEEK_NONE;
}

int
svc_peek(struct svc *s, const struct saddr *client, double now, int *pinned)
{
    struct svc_tried none = {.n = 0};
    struct pick_ctx c = {&none, now, PICK_AVOID_BACKOFF};
    int i;

    *pinned = 0;
    if (s->aff != NULL && client != NULL) {
        i = affinity_peek(s->aff, client, now);
        if (i >= 0 && (size_t)i < s->nbe && pick_ok(s, (size_t)i, &c)) {
            *pinned = 1;
            return i;
        }
    }
    return peek(s, client, now);
}

void
svc_inherit(struct svc *to, const struct svc *from, double now)
{
    int32_t *map;
    size_t i, j;

    if (to->aff == NULL || from->aff == NULL || from->nbe == 0)
        return;
    map = malloc(from->nbe * sizeof(*map));
    if (map == NULL)
        return; /* the pins are lost, not the service */
    for (i = 0; i < from->nbe; i++) {
        map[i] = -1;
        for (j = 0; j < to->nbe && map[i] < 0; j++)
            if (to->be[j].b == from->be[i].b)
                map[i] = (int32_t)j;
    }
    affinity_inherit(to->aff, from->aff, map, from->nbe, now);
    free(map);
}

void
svc_unref_array(struct svc **v, size_t n)
{
    size_t i;

    for (i = 0; v != NULL && i < n; i++)
        svc_unref(v[i]);
    free(v);
}

/* ---- vectors ------------------------------------------------------------ */

static void
chunk_unref(struct svcv_chunk *c)
{
    size_t i;

    if (c == NULL
        || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; i < SVCV_CHUNK; i++)
        svc_unref(c->v[i]);
    free(c);
}

static struct svcv *
svcv_alloc(size_t n)
{
    size_t nc = (n + SVCV_CHUNK - 1) / SVCV_CHUNK;
    struct svcv *v = calloc(1, sizeof(*v) + nc * sizeof(v->c[0]));

    if (v == NULL)
        return NULL;
    atomic_init(&v->refs, 1);
    v->n = n;
    return v;
}

struct svcv *
svcv_new(size_t n)
{
    struct svcv *v = svcv_alloc(n);
    size_t i;

    if (v == NULL)
        return NULL;
    for (i = 0; i * SVCV_CHUNK < n; i++) {
        if ((v->c[i] = calloc(1, sizeof(*v->c[i]))) == NULL) {
            svcv_unref(v);
            return NULL;
        }
        atomic_init(&v->c[i]->refs, 1);
    }
    return v;
}

struct svcv *
svcv_derive(const struct svcv *from)
{
    struct svcv *v = svcv_alloc(from->n);
    size_t i;

    if (v == NULL)
        return NULL;
    for (i = 0; i * SVCV_CHUNK < from->n; i++) {
        v->c[i] = from->c[i];
        atomic_fetch_add_explicit(&v->c[i]->refs, 1, memory_order_relaxed);
    }
    return v;
}

int
svcv_set(struct svcv *v, size_t i, struct svc *s)
{
    struct svcv_chunk *c = v->c[i / SVCV_CHUNK], *o;
    size_t k;

    if (atomic_load_explicit(&c->refs, memory_order_acquire) != 1) {
        if ((o = malloc(sizeof(*o))) == NULL) {
            svc_unref(s);
            return -1;
        }
        atomic_init(&o->refs, 1);
        for (k = 0; k < SVCV_CHUNK; k++)
            o->v[k] = c->v[k] != NULL ? svc_ref(c->v[k]) : NULL;
        chunk_unref(c);
        v->c[i / SVCV_CHUNK] = c = o;
    }
    svc_unref(c->v[i % SVCV_CHUNK]);
    c->v[i % SVCV_CHUNK] = s;
    return 0;
}

struct svcv *
svcv_ref(struct svcv *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void
svcv_unref(struct svcv *v)
{
    size_t i;

    if (v == NULL
        || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; i * SVCV_CHUNK < v->n; i++)
        chunk_unref(v->c[i]);
    free(v);
}

/* ---- accessors ---------------------------------------------------------- */

const char *
svc_name(const struct svc *s)
{
    return s->spec.name;
}

const struct tbl_service *
svc_spec(const struct svc *s)
{
    return &s->spec;
}

const char *
svc_balance_name(const struct svc *s)
{
    return tbl_balance_name(s->spec.balance);
}

struct svc_stats *
svc_counters(const struct svc *s)
{
    return s->st;
}

const struct svc_ctr *
svc_counts(const struct svc *s)
{
    return svc_ctr_read(s->st);
}

size_t
svc_nbackends(const struct svc *s)
{
    return s->nbe;
}

struct backend *
svc_backend(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return s->be[i].b;
}

const char *
svc_backend_name(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return s->tbe[i].name;
}

uint32_t
svc_backend_weight(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return svc_be_weight(s, i);
}

const struct saddr *
svc_backend_saddr(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return &s->tbe[i].addr;
}

uint32_t
svc_backend_flags(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return s->tbe[i].flags;
}

uint32_t
svc_backend_config_weight(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return s->tbe[i].weight;
}

int
svc_backend_drained(const struct svc *s, size_t i)
{
    BUG_ON(i >= s->nbe);
    return svc_be_drained(s, i);
}

struct svc_drain *
svc_drain_make(struct svc *s)
{
    struct svc_drain *d = atomic_load_explicit(&s->drain, memory_order_relaxed);
    size_t i;

    if (d != NULL || s->nbe == 0)
        return d;
    if ((d = malloc(s->nbe * sizeof(*d))) == NULL)
        return NULL;
    for (i = 0; i < s->nbe; i++) {
        atomic_init(&d[i].drained, 0);
        atomic_init(&d[i].ovr_weight, -1);
        d[i].since = 0;
        atomic_init(&d[i].deadline, 0);
    }
    /* Filled before the workers can see it. */
    atomic_store_explicit(&s->drain, d, memory_order_release);
    return d;
}

int
svc_set_drained(struct svc *s, size_t i, int drained)
{
    struct svc_drain *d;
    double dl = 0;

    BUG_ON(i >= s->nbe);
    if (!drained && svc_drain_at(s, i) == NULL)
        return 0; /* none ever was: nothing to undo */
    if ((d = svc_drain_make(s)) == NULL)
        return -1;
    d = &d[i];
    atomic_store(&d->drained, drained ? 1u : 0u);
    if (!drained)
        d->since = 0;
    else if (d->since <= 0)
        d->since = drain_now();
    if (drained && s->spec.drain_timeout_ms > 0)
        dl = d->since + s->spec.drain_timeout_ms / 1e3;
    if (atomic_load_explicit(&d->deadline, memory_order_relaxed) != dl) {
        atomic_store(&d->deadline, dl);
        drain_mark_changed();
    }
    return 0;
}
