#include <stdatomic.h>
#include <stdlib.h>

#include "balance.h"
#include "svc-t.h"

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

static int
rr_smooth(struct svc *s, int32_t *cur, bal_eligible_fn ok, void *arg)
{
    int best = -1;
    int32_t total = 0;
    size_t i;

    for (i = 0; i < s->nbe; i++) {
        struct svc_be *e = &s->be[i];
        uint32_t w = svc_be_weight(e);
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
rr_build(struct svc *s)
{
    uint64_t period = 0;
    struct rr_seq *q;
    int32_t *cur;
    size_t i;

    for (i = 0; i < s->nbe; i++)
        period += svc_be_weight(&s->be[i]);
    if (period == 0 || period > RR_SEQ_MAX)
        return NULL;
    q = malloc(sizeof(*q) + period * sizeof(q->idx[0]));
    cur = calloc(s->nbe, sizeof(*cur));
    if (q == NULL || cur == NULL) {
        free(q);
        free(cur);
        return NULL;
    }
    q->period = (uint32_t)period;
    for (i = 0; i < period; i++)
        q->idx[i] = (uint32_t)rr_smooth(s, cur, all_ok, NULL);
    free(cur);
    return q;
}

static void
rr_init(struct svc *s, union svc_slot *sl, unsigned k)
{
    size_t i;

    if (k == 0)
        atomic_store(&s->rr, rr_build(s));
    for (i = 0; i < s->nbe; i++)
        sl->cur[i] = 0;
}

/* Weights changed (admin override): publish a new sequence. The old one
 * may still be read by a worker, so it is kept until the svc is freed.
 * The last free place goes to the final retirement: from then on the
 * workers use their own running weights (correct, per-worker order). */
static void
rr_reweight(struct svc *s)
{
    struct rr_seq *q, *old;

    if (s->nrr_old >= SVC_RR_OLD_MAX)
        return;
    q = s->nrr_old < SVC_RR_OLD_MAX - 1 ? rr_build(s) : NULL;
    old = atomic_exchange(&s->rr, q);
    if (old != NULL)
        s->rr_old[s->nrr_old++] = old;
}

static int
rr_pick(struct svc *s, union svc_slot *sl, bal_eligible_fn ok, void *arg)
{
    const struct rr_seq *q = atomic_load_explicit(&s->rr, memory_order_acquire);
    uint32_t n, tries;

    if (q != NULL) {
        /* A few tickets at most: with many candidates refused (drained,
         * down, in back-off) the scan below is the cheaper way to one. */
        tries = q->period < 2 * s->nbe + 2 ? q->period : (uint32_t)(2 * s->nbe + 2);
        for (n = 0; n < tries; n++) {
            uint64_t t = atomic_fetch_add_explicit(&s->rr_ticket, 1,
                                                   memory_order_relaxed);
            uint32_t i = q->idx[t % q->period];
            if (i < s->nbe && svc_be_weight(&s->be[i]) > 0 && ok(s, i, arg))
                return (int)i;
        }
        /* No candidate among them: the scan decides (its order is this
         * worker's own). */
    }
    return rr_smooth(s, sl->cur, ok, arg);
}

/*
 * Least connections, weighted: the candidate with the lowest
 * active/weight wins (compared by cross-multiplying, no division). The
 * scan starts one past the previous winner so that ties rotate.
 */
static void
lc_init(struct svc *s, union svc_slot *sl, unsigned k)
{
    (void)sl;
    if (k == 0)
        atomic_store_explicit(&s->lc_next, 0, memory_order_relaxed);
}

static int
lc_pick(struct svc *s, union svc_slot *sl, bal_eligible_fn ok, void *arg)
{
    unsigned start = atomic_load_explicit(&s->lc_next, memory_order_relaxed);
    uint64_t best_act = 0, best_w = 1;
    int best = -1;
    size_t k;

    (void)sl;
    for (k = 0; k < s->nbe; k++) {
        size_t i = (start + k) % s->nbe;
        struct svc_be *e = &s->be[i];
        uint64_t act, w = svc_be_weight(e);

        if (w == 0 || !ok(s, i, arg))
            continue;
        act = atomic_load_explicit(&e->b->active, memory_order_relaxed);
        if (best < 0 || act * best_w < best_act * w) {
            best = (int)i;
            best_act = act;
            best_w = w;
        }
    }
    if (best >= 0)
        atomic_store_explicit(&s->lc_next, (unsigned)(best + 1) % (unsigned)s->nbe,
                              memory_order_relaxed);
    return best;
}

/* Weighted random with a xorshift64* generator seeded per service. */
static void
rand_init(struct svc *s, union svc_slot *sl, unsigned k)
{
    if (sl->rng == 0)
        sl->rng = (0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)s)
                  + 0xbf58476d1ce4e5b9ull * k;
    if (sl->rng == 0)
        sl->rng = 1;
}

static uint64_t
rand_next(union svc_slot *sl)
{
    uint64_t x = sl->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    sl->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static int
rand_pick(struct svc *s, union svc_slot *sl, bal_eligible_fn ok, void *arg)
{
    uint64_t total = 0, r;
    size_t i;

    for (i = 0; i < s->nbe; i++)
        if (svc_be_weight(&s->be[i]) > 0 && ok(s, i, arg))
            total += svc_be_weight(&s->be[i]);
    if (total == 0)
        return -1;
    r = rand_next(sl) % total;
    for (i = 0; i < s->nbe; i++) {
        uint32_t w = svc_be_weight(&s->be[i]);
        if (w == 0 || !ok(s, i, arg))
            continue;
        if (r < w)
            return (int)i;
        r -= w;
    }
    return -1;
}

static const struct bal_ops bal_table[TBL_BAL__COUNT] = {
    [TBL_BAL_ROUNDROBIN] = {"roundrobin", rr_init, rr_pick, rr_reweight},
    [TBL_BAL_LEASTCONN] = {"leastconn", lc_init, lc_pick, NULL},
    [TBL_BAL_RANDOM] = {"random", rand_init, rand_pick, NULL},
};

const struct bal_ops *
bal_get(enum tbl_balance algo)
{
    if ((unsigned)algo >= TBL_BAL__COUNT)
        algo = TBL_BAL_ROUNDROBIN;
    return &bal_table[algo];
}
