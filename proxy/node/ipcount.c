/*
 * ipcount.c - a counted set of IP addresses (ipcount.h).
 *
 * Each family's table is open-addressed with linear probing; an entry is
 * the key's bytes then a 32-bit value: services wanting the address << 2,
 * touched << 1, held by the kernel. A value of 0 is a free slot: an entry
 * no service wants, the kernel does not hold and nothing touched is
 * removed at once (shifting back the entries after it, so that no
 * tombstone is left).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "ipcount.h"

#define HAVE    1u
#define TOUCHED 2u
#define ONE     4u /* one service wanting it */

static size_t
stride(const struct ipcount_tab *t)
{
    return t->klen + 4;
}

static uint8_t *
slot(const struct ipcount_tab *t, size_t i)
{
    return t->v + i * stride(t);
}

static uint32_t
val_at(const struct ipcount_tab *t, size_t i)
{
    uint32_t v;

    memcpy(&v, slot(t, i) + t->klen, 4);
    return v;
}

static void
val_set(struct ipcount_tab *t, size_t i, uint32_t v)
{
    memcpy(slot(t, i) + t->klen, &v, 4);
}

static size_t
home(const struct ipcount_tab *t, const uint8_t *key)
{
    uint64_t h = 0;
    uint32_t w;
    size_t i;

    for (i = 0; i < t->klen; i += 4) {
        memcpy(&w, key + i, 4);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
    }
    return (size_t)h & (t->cap - 1);
}

/* The slot of <key>, or the free slot where it would go (<*found> 0). */
static size_t
find(const struct ipcount_tab *t, const uint8_t *key, int *found)
{
    size_t i = home(t, key);

    while (val_at(t, i) != 0) {
        if (memcmp(slot(t, i), key, t->klen) == 0) {
            *found = 1;
            return i;
        }
        i = (i + 1) & (t->cap - 1);
    }
    *found = 0;
    return i;
}

/* Make the slot of <i> free, moving back the entries of the run after it
 * that would no longer be found. */
static void
remove_at(struct ipcount_tab *t, size_t i)
{
    size_t mask = t->cap - 1, j = i, k;

    val_set(t, i, 0);
    t->n--;
    for (;;) {
        j = (j + 1) & mask;
        if (val_at(t, j) == 0)
            return;
        k = home(t, slot(t, j));
        /* The entry at j stays when its home lies cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        memcpy(slot(t, i), slot(t, j), stride(t));
        val_set(t, j, 0);
        i = j;
    }
}

/* A table of <cap> slots holding the entries of <t> for which <keep>
 * (applied to the value, which it may change) is nonzero. */
static int
rebuild(struct ipcount_tab *t, size_t cap, uint32_t (*keep)(uint32_t))
{
    struct ipcount_tab nt = *t;
    size_t i, at;
    int found;

    nt.cap = cap;
    nt.n = 0;
    nt.v = calloc(cap, stride(t));
    if (nt.v == NULL)
        return -1;
    for (i = 0; i < t->cap; i++) {
        uint32_t v = val_at(t, i);

        if (v == 0 || (keep != NULL && (v = keep(v)) == 0))
            continue;
        at = find(&nt, slot(t, i), &found);
        memcpy(slot(&nt, at), slot(t, i), t->klen);
        val_set(&nt, at, v);
        nt.n++;
    }
    free(t->v);
    *t = nt;
    return 0;
}

static const uint8_t *
key_of(const struct saddr *a, int *fam)
{
    *fam = a->u.sa.sa_family == AF_INET6;
    return *fam ? (const uint8_t *)&a->u.in6.sin6_addr
                : (const uint8_t *)&a->u.in.sin_addr;
}

static void
addr_of(int fam, const uint8_t *key, struct saddr *a)
{
    memset(a, 0, sizeof(*a));
    if (fam) {
        a->u.in6.sin6_family = AF_INET6;
        memcpy(&a->u.in6.sin6_addr, key, 16);
        a->len = sizeof(a->u.in6);
    } else {
        a->u.in.sin_family = AF_INET;
        memcpy(&a->u.in.sin_addr, key, 4);
        a->len = sizeof(a->u.in);
    }
}

void
ipcount_init(struct ipcount *c)
{
    memset(c, 0, sizeof(*c));
    c->t[0].klen = 4;
    c->t[1].klen = 16;
}

void
ipcount_deinit(struct ipcount *c)
{
    int f;

    for (f = 0; f < 2; f++) {
        free(c->t[f].v);
        free(c->t[f].touch);
    }
    ipcount_init(c);
}

static int
touch(struct ipcount_tab *t, const uint8_t *key)
{
    if (t->ntouch == t->tcap) {
        size_t ncap = t->tcap ? t->tcap * 2 : 64;
        uint8_t *p = realloc(t->touch, ncap * t->klen);

        if (p == NULL)
            return -1;
        t->touch = p;
        t->tcap = ncap;
    }
    memcpy(t->touch + t->ntouch++ * t->klen, key, t->klen);
    return 0;
}

int
ipcount_add(struct ipcount *c, const struct saddr *a, int delta)
{
    int fam;
    const uint8_t *key = key_of(a, &fam);

    return ipcount_add_key(c, fam, key, delta);
}

int
ipcount_add_key(struct ipcount *c, int v6, const void *k, int delta)
{
    const uint8_t *key = k;
    struct ipcount_tab *t = &c->t[v6 != 0];
    int found;
    uint32_t v, cnt;
    size_t i;

    if (delta > 0 && (t->n + 1) * 4 > t->cap * 3
        && rebuild(t, t->cap ? t->cap * 2 : 64, NULL) < 0)
        return -1;
    if (t->cap == 0)
        return 0; /* nothing to take away */
    i = find(t, key, &found);
    if (!found) {
        if (delta <= 0)
            return 0;
        memcpy(slot(t, i), key, t->klen);
        t->n++;
        v = 0;
    } else {
        v = val_at(t, i);
    }
    cnt = v / ONE;
    if (delta > 0)
        cnt++;
    else if (cnt > 0)
        cnt--;
    v = cnt * ONE | (v & (HAVE | TOUCHED));
    if ((cnt > 0) != ((v & HAVE) != 0) && !(v & TOUCHED)) {
        if (touch(t, key) < 0) {
            val_set(t, i, v); /* nonzero: wanted or held */
            return -1;
        }
        v |= TOUCHED;
    }
    if (v == 0)
        remove_at(t, i);
    else
        val_set(t, i, v);
    return 0;
}

size_t
ipcount_ntouched(const struct ipcount *c)
{
    return c->t[0].ntouch + c->t[1].ntouch;
}

void
ipcount_touched(const struct ipcount *c, size_t i, struct saddr *a, int *want,
                int *have)
{
    int fam = i >= c->t[0].ntouch, found;
    const struct ipcount_tab *t = &c->t[fam];
    const uint8_t *key = t->touch + (fam ? i - c->t[0].ntouch : i) * t->klen;
    uint32_t v = 0;
    size_t at;

    addr_of(fam, key, a);
    if (t->cap > 0) {
        at = find(t, key, &found);
        v = found ? val_at(t, at) : 0;
    }
    *want = v >= ONE;
    *have = (v & HAVE) != 0;
}

static uint32_t
held_if_wanted(uint32_t v)
{
    return v >= ONE ? (v & ~TOUCHED) | HAVE : 0;
}

int
ipcount_commit(struct ipcount *c, int all)
{
    size_t i, at;
    int f, found;

    for (f = 0; f < 2; f++) {
        struct ipcount_tab *t = &c->t[f];

        if (all) {
            if (t->cap > 0 && rebuild(t, t->cap, held_if_wanted) < 0)
                return -1;
        } else {
            for (i = 0; i < t->ntouch && t->cap > 0; i++) {
                at = find(t, t->touch + i * t->klen, &found);
                if (!found)
                    continue;
                if (val_at(t, at) >= ONE)
                    val_set(t, at, held_if_wanted(val_at(t, at)));
                else
                    remove_at(t, at);
            }
        }
        free(t->touch);
        t->touch = NULL;
        t->ntouch = t->tcap = 0;
    }
    return 0;
}

/* The next address from <*at> on that is wanted (<held> 0) or that the
 * kernel holds (<held> 1). */
static int
next_where(const struct ipcount *c, size_t *at, struct saddr *a, int held)
{
    for (; *at < c->t[0].cap + c->t[1].cap; (*at)++) {
        int fam = *at >= c->t[0].cap;
        const struct ipcount_tab *t = &c->t[fam];
        size_t i = fam ? *at - c->t[0].cap : *at;
        uint32_t v = val_at(t, i);

        if (held ? (v & HAVE) != 0 : v >= ONE) {
            addr_of(fam, slot(t, i), a);
            (*at)++;
            return 1;
        }
    }
    return 0;
}

int
ipcount_next(const struct ipcount *c, size_t *at, struct saddr *a)
{
    return next_where(c, at, a, 0);
}

int
ipcount_next_held(const struct ipcount *c, size_t *at, struct saddr *a)
{
    return next_where(c, at, a, 1);
}

size_t
ipcount_held(const struct ipcount *c, int v6)
{
    const struct ipcount_tab *t = &c->t[v6 != 0];
    size_t i, k = 0;

    for (i = 0; i < t->cap; i++)
        k += (val_at(t, i) & HAVE) != 0;
    return k;
}
