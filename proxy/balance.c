#include <stdatomic.h>

#include "balance.h"
#include "svc.h"

/*
 * Smooth weighted round-robin: every pick, each candidate's running weight
 * grows by its weight; the largest wins and gives back the sum of the
 * candidates' weights. The sequence interleaves (5,1,1 gives a a b a c a a)
 * instead of sending bursts to the heaviest backend.
 */
static void
rr_init(struct svc *s)
{
    size_t i;

    for (i = 0; i < s->nbe; i++)
        s->be[i].cur = 0;
}

static int
rr_pick(struct svc *s, bal_eligible_fn ok, void *arg)
{
    int best = -1;
    int32_t total = 0;
    size_t i;

    for (i = 0; i < s->nbe; i++) {
        struct svc_be *e = &s->be[i];
        uint32_t w = svc_be_weight(e);
        if (w == 0 || !ok(s, i, arg))
            continue;
        e->cur += (int32_t)w;
        total += (int32_t)w;
        if (best < 0 || e->cur > s->be[best].cur)
            best = (int)i;
    }
    if (best >= 0)
        s->be[best].cur -= total;
    return best;
}

/*
 * Least connections, weighted: the candidate with the lowest
 * active/weight wins (compared by cross-multiplying, no division). The
 * scan starts one past the previous winner so that ties rotate.
 */
static void
lc_init(struct svc *s)
{
    s->lc_next = 0;
}

static int
lc_pick(struct svc *s, bal_eligible_fn ok, void *arg)
{
    uint64_t best_act = 0, best_w = 1;
    int best = -1;
    size_t k;

    for (k = 0; k < s->nbe; k++) {
        size_t i = (s->lc_next + k) % s->nbe;
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
        s->lc_next = (unsigned)(best + 1) % (unsigned)s->nbe;
    return best;
}

/* Weighted random with a xorshift64* generator seeded per service. */
static void
rand_init(struct svc *s)
{
    if (s->rng == 0)
        s->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)s;
}

static uint64_t
rand_next(struct svc *s)
{
    uint64_t x = s->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

static int
rand_pick(struct svc *s, bal_eligible_fn ok, void *arg)
{
    uint64_t total = 0, r;
    size_t i;

    for (i = 0; i < s->nbe; i++)
        if (svc_be_weight(&s->be[i]) > 0 && ok(s, i, arg))
            total += svc_be_weight(&s->be[i]);
    if (total == 0)
        return -1;
    r = rand_next(s) % total;
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
    [TBL_BAL_ROUNDROBIN] = {"roundrobin", rr_init, rr_pick},
    [TBL_BAL_LEASTCONN] = {"leastconn", lc_init, lc_pick},
    [TBL_BAL_RANDOM] = {"random", rand_init, rand_pick},
};

const struct bal_ops *
bal_get(enum tbl_balance algo)
{
    if ((unsigned)algo >= TBL_BAL__COUNT)
        algo = TBL_BAL_ROUNDROBIN;
    return &bal_table[algo];
}
