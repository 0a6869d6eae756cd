#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clienthash.h"
#include "srcrules.h"

void
srcrules_client_ip(const struct saddr *client, struct saddr *out)
{
    if (!saddr_is_v4mapped(client)) {
        *out = *client;
        return;
    }
    memset(out, 0, sizeof(*out));
    out->u.in.sin_family = AF_INET;
    memcpy(&out->u.in.sin_addr, &client->u.in6.sin6_addr.s6_addr[12], 4);
    out->u.in.sin_port = client->u.in6.sin6_port;
    out->len = sizeof(out->u.in);
}

static int
any_contains(const struct cidr *v, size_t n, const struct saddr *a)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (cidr_contains(&v[i], a))
            return 1;
    return 0;
}

int
srcrules_match(const struct cidr *allow, size_t nallow, const struct cidr *deny,
               size_t ndeny, const struct saddr *client)
{
    if (any_contains(deny, ndeny, client))
        return STATS_SRC_DENY;
    if (nallow > 0 && !any_contains(allow, nallow, client))
        return STATS_SRC_NOT_ALLOWED;
    return -1;
}

/* ---- the per-source table ------------------------------------------------ */

struct src_entry {
    unsigned char key[16]; /* IPv6, or IPv4-mapped IPv6 */
    uint32_t used;         /* ever filled; see live() for "still counts" */
    uint32_t active;       /* connections open now */
    double tokens;         /* the bucket at <stamp> */
    double stamp;
};

struct srcrules_table {
    pthread_mutex_t mu;
    struct src_entry *slots; /* SRCRULES_SLOTS, a power of two */
    uint64_t seed; /* per table, so clients cannot aim at one window */
};

_Static_assert((SRCRULES_SLOTS & (SRCRULES_SLOTS - 1)) == 0,
               "SRCRULES_SLOTS must be a power of two");

static size_t
key_hash(const struct srcrules_table *t, const unsigned char key[16])
{
    return client_hash(t->seed, key);
}

/* The bucket of <e> at <now> under <rate>, at most full. */
static double
tokens_at(const struct src_entry *e, uint32_t rate, double now)
{
    double dt = now - e->stamp, v;

    if (dt < 0) /* workers' loop clocks differ a little */
        dt = 0;
    v = e->tokens + dt * rate;
    return v < rate ? v : rate;
}

/* Nonzero while <e> counts something: an open connection, or a bucket
 * not yet full again. */
static int
live(const struct src_entry *e, uint32_t rate, double now)
{
    return e->used
           && (e->active > 0 || (rate > 0 && tokens_at(e, rate, now) < rate));
}

struct srcrules_table *
srcrules_table_new(void)
{
    struct srcrules_table *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    /* calloc: the pages of slots never used cost nothing. */
    t->slots = calloc(SRCRULES_SLOTS, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    t->seed = client_seed(t);
    return t;
}

void
srcrules_table_free(struct srcrules_table *t)
{
    if (t == NULL)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t);
}

/* The entry of <key>, live or not, or NULL. Mutex held. */
static struct src_entry *
find(struct srcrules_table *t, const unsigned char key[16])
{
    size_t h = key_hash(t, key), i;

    for (i = 0; i < SRCRULES_WINDOW; i++) {
        struct src_entry *e = &t->slots[(h + i) & (SRCRULES_SLOTS - 1)];
        if (e->used && memcmp(e->key, key, 16) == 0)
            return e;
    }
    return NULL;
}

/* A free slot of <key>'s window, or NULL when every one is live. */
static struct src_entry *
find_free(struct srcrules_table *t, const unsigned char key[16], uint32_t rate,
          double now)
{
    size_t h = key_hash(t, key), i;

    for (i = 0; i < SRCRULES_WINDOW; i++) {
        struct src_entry *e = &t->slots[(h + i) & (SRCRULES_SLOTS - 1)];
        if (!live(e, rate, now))
            return e;
    }
    return NULL;
}

enum srcrules_verdict
srcrules_admit(struct srcrules_table *t, const struct saddr *client,
               uint32_t max, uint32_t rate, double now)
{
    enum srcrules_verdict v = SRCRULES_COUNTED;
    unsigned char key[16];
    struct src_entry *e;
    double tok;

    client_key(client, key);
    pthread_mutex_lock(&t->mu);
    e = find(t, key);
    if (e != NULL && !live(e, rate, now))
        e->used = 0; /* expired: as good as new, maybe in a better slot */
    if (e == NULL || !e->used) {
        if ((e = find_free(t, key, rate, now)) == NULL) {
            pthread_mutex_unlock(&t->mu);
            return SRCRULES_UNCOUNTED;
        }
        memcpy(e->key, key, 16);
        e->used = 1;
        e->active = 0;
        e->tokens = rate;
        e->stamp = now;
    }
    tok = rate > 0 ? tokens_at(e, rate, now) : 0;
    if (max > 0 && e->active >= max) {
        v = SRCRULES_MAX;
    } else if (rate > 0 && tok < 1) {
        v = SRCRULES_RATE;
    } else {
        e->active++;
        if (rate > 0) {
            e->tokens = tok - 1;
            e->stamp = now > e->stamp ? now : e->stamp;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return v;
}

void
srcrules_release(struct srcrules_table *t, const struct saddr *client)
{
    unsigned char key[16];
    struct src_entry *e;

    client_key(client, key);
    pthread_mutex_lock(&t->mu);
    /* A counted connection keeps its entry live: it is there. */
    if ((e = find(t, key)) != NULL && e->active > 0)
        e->active--;
    pthread_mutex_unlock(&t->mu);
}

size_t
srcrules_table_live(struct srcrules_table *t, uint32_t rate, double now)
{
    size_t i, n = 0;

    pthread_mutex_lock(&t->mu);
    for (i = 0; i < SRCRULES_SLOTS; i++)
        n += live(&t->slots[i], rate, now) != 0;
    pthread_mutex_unlock(&t->mu);
    return n;
}
