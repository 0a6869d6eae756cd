#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "util.h"
#include "svc-t.h"

#define BAL_LINE 64 /* bytes in a cache line */

/* Room for a state of <size> bytes, cache-line aligned (the size rounded
 * up as aligned_alloc wants), zeroed; NULL when out of memory. */
static void *
line_alloc(size_t size)
{
    void *p;

    size = (size + BAL_LINE - 1) / BAL_LINE * BAL_LINE;
    if ((p = aligned_alloc(BAL_LINE, size)) != NULL)
        memset(p, 0, size);
    return p;
}

/*
 * Smooth weighted round-robin: every pick, each candidate's running weight
 * grows by its weight; the largest wins and gives back the sum of the
 * candidates' weights. The sequence interleaves (5,1,1 gives a a b a c a a)
 * instead of sending bursts to the heaviest backend.
 *
 * With the table's weights the sequence repeats every sum-of-weights picks,
 * so it is computed once (rr_seq) and the workers share a ticket counter
 * into it: one atomic add per pick, and the order is the same as with one
 * worker. A backend that may not take the connection (drained, down,
 * already tried) gives its ticket up and the pick takes the next one, so
 * the others keep their proportions. When an admin weight override comes in
 * force the sequence is rebuilt for the new weights; when it would be too
 * long, each worker runs the algorithm itself on its own running weights
 * (then the order is per worker).
 */
#define RR_SEQ_MAX 4096 /* longest shared sequence, in picks */
#define RR_OLD_MAX 32   /* replaced sequences kept until the release */

/* A round-robin pick order, <period> picks long. With every weight the
 * same (a Kubernetes Service's endpoints), the order is 0, 1, ... n-1 and
 * <idx> is not kept (1 MB at 10,000 Services of 25). */
struct rr_seq {
    struct rr_seq *next_old; /* replaced ones, newest first */
    uint32_t period;
    uint32_t uniform; /* nonzero: pick t is t % period */
    uint32_t idx[];
};

/* The backend of ticket <t>. */
static inline uint32_t
seq_at(const struct rr_seq *q, uint64_t t)
{
    return q->uniform ? (uint32_t)(t % q->period) : q->idx[t % q->period];
}

/* Two cache lines a service (it was ten, 5 MB at 10,000 Services, most
 * of it running weights no pick used). */
struct rr_state {
    /* The next ticket into <seq>: written by every pick of every worker,
     * so alone on its line. */
    atomic_uint_fast64_t ticket;
    /* The order for the weights in force (NULL: none, each worker runs
     * its own), read by every pick; replaced ones wait in <old> because a
     * worker may still be reading them. */
    alignas(BAL_LINE) _Atomic(struct rr_seq *) seq;
    struct rr_seq *old;
    unsigned nold;
    unsigned nslots;
    /* Worker k's running weights (one per backend), made by worker k at
     * its first pick the shared order does not serve; most services never
     * need them. Written once each, so they share the read-mostly line
     * (with up to 5 workers, a service's state is two lines). */
    _Atomic(int32_t *) cur[];
};

static int
rr_smooth(const struct svc *s, int32_t *cur, bal_eligible_fn ok, void *arg)
{
    int best = -1;
    int32_t total = 0;
    size_t i;

    for (i = 0; i < s->nbe; i++) {
        uint32_t w = svc_be_weight(s, i);
        if (w == 0 || !ok(s, i, arg))
            continue;
        cur[i] += (int32_t)w;
        total += (int32_t)w;
        if (best < 0 || cur[i] > cur[best])
            best = (int)i;
    }
    if (best >= 0)
        cur[best] -= total;
    return best;
}

static int
all_ok(const struct svc *s, size_t i, void *arg)
{
    (void)s;
    (void)i;
    (void)arg;
    return 1;
}

/* The shared sequence for the weights in force now, or NULL (too long,
 * all weights zero, out of memory). */
static struct rr_seq *
rr_build(const struct svc *s)
{
    uint64_t period = 0;
    struct rr_seq *q;
    int32_t *cur;
    size_t i;
    int uniform = 1;

    for (i = 0; i < s->nbe; i++) {
        period += svc_be_weight(s, i);
        uniform &= svc_be_weight(s, i) == svc_be_weight(s, 0);
    }
    if (period == 0)
        return NULL;
    if (uniform) { /* the smooth order of equal weights */
        if ((q = malloc(sizeof(*q))) != NULL) {
            q->next_old = NULL;
            q->period = (uint32_t)s->nbe;
            q->uniform = 1;
        }
        return q;
    }
    if (period > RR_SEQ_MAX)
        return NULL;
    q = malloc(sizeof(*q) + period * sizeof(q->idx[0]));
    cur = calloc(s->nbe, sizeof(*cur));
    if (q == NULL || cur == NULL) {
        free(q);
        free(cur);
        return NULL;
    }
    q->next_old = NULL;
    q->period = (uint32_t)period;
    q->uniform = 0;
    for (i = 0; i < period; i++)
        q->idx[i] = (uint32_t)rr_smooth(s, cur, all_ok, NULL);
    free(cur);
    return q;
}

static void *
rr_init(const struct svc *s, unsigned nslots)
{
    struct rr_state *st;
    unsigned k;

    nslots = nslots > 0 ? nslots : 1;
    st = line_alloc(offsetof(struct rr_state, cur)
                    + (size_t)nslots * sizeof(st->cur[0]));
    if (st == NULL)
        return NULL;
    st->nslots = nslots;
    for (k = 0; k < nslots; k++)
        atomic_init(&st->cur[k], NULL);
    atomic_init(&st->ticket, 0);
    atomic_init(&st->seq, rr_build(s));
    return st;
}

/* Worker <k>'s running weights, made at its first use (by that worker
 * only), or NULL when out of memory. */
static int32_t *
rr_cur(struct rr_state *st, const struct svc *s, unsigned k)
{
    int32_t *cur, *none = NULL;

    if (k >= st->nslots)
        k = 0;
    cur = atomic_load_explicit(&st->cur[k], memory_order_acquire);
    if (cur != NULL || s->nbe == 0
        || (cur = calloc(s->nbe, sizeof(*cur))) == NULL)
        return cur;
    /* Another thread of the same slot (none should be) made one first:
     * use that. */
    if (!atomic_compare_exchange_strong(&st->cur[k], &none, cur)) {
        free(cur);
        cur = none;
    }
    return cur;
}

/* Weights changed (admin override): publish a new sequence. The old one
 * may still be read by a worker, so it is kept until the release. The
 * last free place goes to the final retirement: from then on the workers
 * use their own running weights (correct, per-worker order). */
static void
rr_reweight(void *p, const struct svc *s)
{
    struct rr_state *st = p;
    struct rr_seq *q, *old;

    if (st->nold >= RR_OLD_MAX)
        return;
    q = st->nold < RR_OLD_MAX - 1 ? rr_build(s) : NULL;
    old = atomic_exchange(&st->seq, q);
    if (old != NULL) {
        old->next_old = st->old;
        st->old = old;
        st->nold++;
    }
}

static int
rr_pick(void *p, const struct svc *s, unsigned k,
        const struct saddr *client, bal_eligible_fn ok, void *arg)
{
    struct rr_state *st = p;
    const struct rr_seq *q =
        atomic_load_explicit(&st->seq, memory_order_acquire);
    uint32_t n, tries;
    int32_t *cur;
    (void)client;

    if (q != NULL) {
        /* A few tickets at most: with many candidates refused (drained,
         * down, in back-off) the scan below is the cheaper way to one. */
        tries =
            q->period < 2 * s->nbe + 2 ? q->period : (uint32_t)(2 * s->nbe + 2);
        for (n = 0; n < tries; n++) {
            uint64_t t =
                atomic_fetch_add_explicit(&st->ticket, 1, memory_order_relaxed);
            uint32_t i = seq_at(q, t);
            if (i < s->nbe && svc_be_weight(s, i) > 0 && ok(s, i, arg))
                return (int)i;
        }
        /* No candidate among them: the scan decides (its order is this
         * worker's own). */
    }
    if ((cur = rr_cur(st, s, k)) == NULL) {
        /* Out of memory: the first that may take it. */
        for (n = 0; n < s->nbe; n++)
            if (svc_be_weight(s, n) > 0 && ok(s, n, arg))
                return (int)n;
        return -1;
    }
    return rr_smooth(s, cur, ok, arg);
}

/* rr_pick() without taking tickets: the next tickets in order. When the
 * shared order cannot serve, the scan's answer is the control loop's own
 * running weights', not a worker's: say nothing then. */
static int
rr_peek(const void *p, const struct svc *s, const struct saddr *client,
        bal_eligible_fn ok, void *arg)
{
    const struct rr_state *st = p;
    const struct rr_seq *q =
        atomic_load_explicit(&st->seq, memory_order_acquire);
    uint64_t t;
    uint32_t n, tries;

    (void)client;
    if (q == NULL) /* each worker's own running weights decide */
        return BAL_PEEK_UNKNOWN;
    t = atomic_load_explicit(&st->ticket, memory_order_relaxed);
    tries = q->period < 2 * s->nbe + 2 ? q->period : (uint32_t)(2 * s->nbe + 2);
    for (n = 0; n < tries; n++) {
        uint32_t i = seq_at(q, t + n);
        if (i < s->nbe && svc_be_weight(s, i) > 0 && ok(s, i, arg))
            return (int)i;
    }
    /* The worker's own scan decides: known only when it finds none. */
    for (n = 0; n < s->nbe; n++)
        if (svc_be_weight(s, n) > 0 && ok(s, n, arg))
            return BAL_PEEK_UNKNOWN;
    return -1;
}

static void
rr_release(void *p)
{
    struct rr_state *st = p;
    struct rr_seq *q;
    unsigned k;

    if (st == NULL)
        return;
    free(atomic_load(&st->seq));
    while ((q = st->old) != NULL) {
        st->old = q->next_old;
        free(q);
    }
    for (k = 0; k < st->nslots; k++)
        free(atomic_load(&st->cur[k]));
    free(st);
}

static uint32_t
rr_shared_period(const void *p)
{
    const struct rr_state *st = p;
    const struct rr_seq *q = atomic_load(&st->seq);

    return q != NULL ? q->period : 0;
}

/*
 * Least connections, weighted: the candidate with the lowest
 * active/weight wins (compared by cross-multiplying, no division). The
 * scan starts one past the previous winner so that ties rotate. The
 * rotation is shared: a race between workers only changes which of two
 * tied backends wins.
 */
struct lc_state {
    alignas(BAL_LINE) atomic_uint next;
};

static void *
lc_init(const struct svc *s, unsigned nslots)
{
    struct lc_state *st = line_alloc(sizeof(*st));

    (void)s;
    (void)nslots;
    if (st != NULL)
        atomic_init(&st->next, 0);
    return st;
}

/* Nonzero if backend <i> of <s> is less loaded than <j> (active over
 * weight, cross-multiplied; both weights nonzero). */
static int
less_loaded(const struct svc *s, size_t i, size_t j)
{
    uint64_t ai = atomic_load_explicit(&s->be[i].b->active,
                                       memory_order_relaxed);
    uint64_t aj = atomic_load_explicit(&s->be[j].b->active,
                                       memory_order_relaxed);

    return ai * svc_be_weight(s, j) < aj * svc_be_weight(s, i);
}

/* The least loaded candidate, scanning from <start>; ties go to the first
 * met. -1 when none. */
static int
least_from(const struct svc *s, unsigned start, bal_eligible_fn ok,
           void *arg)
{
    uint64_t best_act = 0, best_w = 1;
    int best = -1;
    size_t n;

    for (n = 0; n < s->nbe; n++) {
        size_t i = (start + n) % s->nbe;
        const struct svc_be *e = &s->be[i];
        uint64_t act, w = svc_be_weight(s, i);

        if (w == 0 || !ok(s, i, arg))
            continue;
        act = atomic_load_explicit(&e->b->active, memory_order_relaxed);
        if (best < 0 || act * best_w < best_act * w) {
            best = (int)i;
            best_act = act;
            best_w = w;
        }
    }
    return best;
}

static int
lc_pick(void *p, const struct svc *s, unsigned k,
        const struct saddr *client, bal_eligible_fn ok, void *arg)
{
    struct lc_state *st = p;
    unsigned start = atomic_load_explicit(&st->next, memory_order_relaxed);
    int best = least_from(s, start, ok, arg);
    (void)client;

    (void)k;
    if (best >= 0)
        atomic_store_explicit(&st->next,
                              (unsigned)(best + 1) % (unsigned)s->nbe,
                              memory_order_relaxed);
    return best;
}

static int
lc_peek(const void *p, const struct svc *s, const struct saddr *client,
        bal_eligible_fn ok, void *arg)
{
    const struct lc_state *st = p;

    (void)client;
    return least_from(s, atomic_load_explicit(&st->next, memory_order_relaxed),
                      ok, arg);
}

/* Weighted random with one xorshift64* generator per worker: the state
 * is an array of <nslots> of these. */
struct rand_slot {
    alignas(BAL_LINE) uint64_t x;
};

static void *
rand_init(const struct svc *s, unsigned nslots)
{
    struct rand_slot *st;
    unsigned k;

    (void)s;
    st = line_alloc(sizeof(*st) * (nslots > 0 ? nslots : 1));
    if (st == NULL)
        return NULL;
    for (k = 0; k < nslots; k++) {
        uint64_t x = (0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)st)
                     + 0xbf58476d1ce4e5b9ull * k;
        st[k].x = x != 0 ? x : 1;
    }
    return st;
}

static uint64_t
rand_next(struct rand_slot *sl)
{
    uint64_t x = sl->x;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    sl->x = x;
    return x * 0x2545f4914f6cdd1dull;
}

static int
rand_pick(void *p, const struct svc *s, unsigned k,
        const struct saddr *client, bal_eligible_fn ok, void *arg)
{
    struct rand_slot *st = p;
    uint64_t total = 0, r;
    size_t i;
    (void)client;

    for (i = 0; i < s->nbe; i++)
        if (svc_be_weight(s, i) > 0 && ok(s, i, arg))
            total += svc_be_weight(s, i);
    if (total == 0)
        return -1;
    r = rand_next(&st[k]) % total;
    for (i = 0; i < s->nbe; i++) {
        uint32_t w = svc_be_weight(s, i);
        if (w == 0 || !ok(s, i, arg))
            continue;
        if (r < w)
            return (int)i;
        r -= w;
    }
    return -1;
}

/*
 * Power of two choices: two distinct candidates drawn at random (the
 * worker's own generator), the less loaded of them (active over weight)
 * wins. It avoids both the herd that least-connections sends to a fresh
 * backend from every worker at once and random's blindness to load. When
 * a few draws do not find two candidates (most backends drained, down or
 * tried), the pick scans them all as least-connections does.
 */
#define P2C_DRAWS 8

static int
p2c_pick(void *p, const struct svc *s, unsigned k,
        const struct saddr *client, bal_eligible_fn ok, void *arg)
{
    struct rand_slot *st = p;
    int c[2] = {-1, -1};
    unsigned d;
    (void)client;

    if (s->nbe == 0)
        return -1;
    for (d = 0; d < P2C_DRAWS && c[1] < 0; d++) {
        size_t i = (size_t)(rand_next(&st[k]) % s->nbe);
        if ((int)i == c[0] || svc_be_weight(s, i) == 0 || !ok(s, i, arg))
            continue;
        if (c[0] < 0)
            c[0] = (int)i;
        else
            c[1] = (int)i;
    }
    if (c[1] < 0)
        return least_from(s, (unsigned)(rand_next(&st[k]) % s->nbe), ok, arg);
    return less_loaded(s, (size_t)c[1], (size_t)c[0]) ? c[1] : c[0];
}

/*
 * Maglev consistent hashing on the client's IP (Eisenbud et al., NSDI
 * 2016): a lookup table of a prime number of slots, filled by letting
 * each backend claim slots along its own permutation, turn by turn, a
 * backend of weight w taking w turns per round. A client goes to the
 * backend of slot hash(IP) mod M. The table depends only on the
 * backends' addresses and weights, so two ferry instances with the same
 * backends send a client to the same one, and a backend leaving moves
 * little more than its own share of clients. A slot whose backend may not
 * take the connection (down, drained, tried) passes it to the next slots
 * in order, so the detour is the same everywhere too.
 */
#define MAGLEV_OLD_MAX 32

struct mg_table {
    uint32_t m;       /* slots, a prime */
    uint16_t slot[];  /* backend index of each slot */
};

struct mg_state {
    _Atomic(struct mg_table *) t;
    unsigned nold;
    struct mg_table *old[MAGLEV_OLD_MAX];
};

/* 64-bit FNV-1a of <n> bytes from <seed>: fixed, so that every instance
 * computes the same tables and the same client hashes. */
static uint64_t
fnv1a(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    /* A final mix: FNV's low bits alone spread short keys poorly. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* The bytes that name an address (IP and port, or the IP alone). */
static size_t
addr_key(const struct saddr *a, int with_port, uint8_t out[18])
{
    size_t n;

    if (a->u.sa.sa_family == AF_INET6) {
        memcpy(out, &a->u.in6.sin6_addr, 16);
        n = 16;
    } else {
        memcpy(out, &a->u.in.sin_addr, 4);
        n = 4;
    }
    if (with_port) {
        uint16_t port = saddr_port(a);
        out[n++] = (uint8_t)(port >> 8);
        out[n++] = (uint8_t)port;
    }
    return n;
}

/* Slots for <n> backends: the first of a few fixed primes with at least
 * 100 slots per backend (the paper's M >> N), up to 65537. Fixed steps,
 * not the next prime after 100 N, so that a backend coming or going
 * keeps the table's size, and with it most clients' slots. */
static uint32_t
mg_size(size_t n)
{
    static const uint32_t primes[] = {257, 1031, 4099, 16411, 65537};
    size_t i;

    for (i = 0; i + 1 < ARRAY_SIZE(primes); i++)
        if ((uint64_t)n * 100 <= primes[i])
            break;
    return primes[i];
}

static struct mg_table *
mg_build(const struct svc *s)
{
    struct mg_table *t;
    uint32_t *next = NULL, *offset = NULL, *skip = NULL;
    uint32_t m, filled = 0, w;
    size_t i, live = 0;

    for (i = 0; i < s->nbe; i++)
        live += svc_be_weight(s, i) > 0;
    m = mg_size(live);
    t = malloc(sizeof(*t) + m * sizeof(t->slot[0]));
    next = calloc(s->nbe + 1, sizeof(*next));
    offset = calloc(s->nbe + 1, sizeof(*offset));
    skip = calloc(s->nbe + 1, sizeof(*skip));
    if (t == NULL || next == NULL || offset == NULL || skip == NULL)
        goto fail;
    t->m = m;
    for (i = 0; i < m; i++)
        t->slot[i] = UINT16_MAX;
    for (i = 0; i < s->nbe; i++) {
        uint8_t key[18];
        size_t n = addr_key(&s->tbe[i].addr, 1, key);
        offset[i] = (uint32_t)(fnv1a(key, n, 0x6d61676c) % m);
        skip[i] = (uint32_t)(fnv1a(key, n, 0x65763031) % (m - 1)) + 1;
    }
    while (live > 0 && filled < m) {
        for (i = 0; i < s->nbe && filled < m; i++) {
            for (w = svc_be_weight(s, i); w > 0 && filled < m; w--) {
                uint32_t c;
                do {
                    c = (uint32_t)((offset[i] + (uint64_t)next[i] * skip[i])
                                   % m);
                    next[i]++;
                } while (t->slot[c] != UINT16_MAX);
                t->slot[c] = (uint16_t)i;
                filled++;
            }
        }
    }
    free(next);
    free(offset);
    free(skip);
    return t;
fail:
    free(t);
    free(next);
    free(offset);
    free(skip);
    return NULL;
}

static void *
mg_init(const struct svc *s, unsigned nslots)
{
    struct mg_state *st;

    (void)nslots;
    if (s->nbe >= UINT16_MAX)
        return NULL;
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    atomic_init(&st->t, mg_build(s));
    if (atomic_load(&st->t) == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

static void
mg_reweight(void *p, const struct svc *s)
{
    struct mg_state *st = p;
    struct mg_table *t = mg_build(s);

    /* Out of memory, or too many replaced tables: keep the one in force. */
    if (t == NULL || st->nold == MAGLEV_OLD_MAX) {
        free(t);
        return;
    }
    st->old[st->nold++] = atomic_exchange(&st->t, t);
}

static int
mg_pick(void *p, const struct svc *s, unsigned k, const struct saddr *client,
        bal_eligible_fn ok, void *arg)
{
    struct mg_state *st = p;
    const struct mg_table *t = atomic_load(&st->t);
    uint8_t key[18];
    uint64_t h = 0;
    uint32_t at, n;

    (void)k;
    if (client != NULL)
        h = fnv1a(key, addr_key(client, 0, key), 0x636c6e74);
    at = (uint32_t)(h % t->m);
    for (n = 0; n < t->m; n++, at = at + 1 == t->m ? 0 : at + 1) {
        uint16_t i = t->slot[at];
        if (i < s->nbe && svc_be_weight(s, i) > 0 && ok(s, i, arg))
            return i;
    }
    return -1;
}

/* A maglev pick writes nothing: the peek is the pick. */
static int
mg_peek(const void *p, const struct svc *s, const struct saddr *client,
        bal_eligible_fn ok, void *arg)
{
    return mg_pick((void *)p, s, 0, client, ok, arg);
}

static void
mg_release(void *p)
{
    struct mg_state *st = p;
    unsigned i;

    if (st == NULL)
        return;
    for (i = 0; i < st->nold; i++)
        free(st->old[i]);
    free(atomic_load(&st->t));
    free(st);
}

/* Least connections and random keep nothing but one allocation. */
static void
plain_release(void *st)
{
    free(st);
}

static const struct bal_ops bal_table[TBL_BAL__COUNT] = {
    [TBL_BAL_ROUNDROBIN] = {.init = rr_init,
                            .pick = rr_pick,
                            .peek = rr_peek,
                            .reweight = rr_reweight,
                            .release = rr_release,
                            .shared_period = rr_shared_period},
    [TBL_BAL_LEASTCONN] = {.init = lc_init,
                           .pick = lc_pick,
                           .peek = lc_peek,
                           .release = plain_release},
    [TBL_BAL_RANDOM] = {.init = rand_init,
                        .pick = rand_pick,
                        .release = plain_release},
    [TBL_BAL_P2C] = {.init = rand_init,
                     .pick = p2c_pick,
                     .release = plain_release},
    [TBL_BAL_MAGLEV] = {.init = mg_init,
                        .pick = mg_pick,
                        .peek = mg_peek,
                        .reweight = mg_reweight,
                        .release = mg_release},
};

const struct bal_ops *
bal_get(enum tbl_balance algo)
{
    if ((unsigned)algo >= TBL_BAL__COUNT)
        algo = TBL_BAL_ROUNDROBIN;
    return &bal_table[algo];
}
