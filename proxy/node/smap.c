#include <stdlib.h>
#include <string.h>

#include "smap.h"

static uint64_t
hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static struct smap_slot *
smap_find(const struct smap *m, const char *k, uint64_t h)
{
    size_t i;

    if (m->cap == 0)
        return NULL;
    for (i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct smap_slot *s = &m->v[i];

        if (s->key == NULL)
            return NULL;
        if (s->h == h && strcmp(s->key, k) == 0)
            return s;
    }
}

void *
smap_get(const struct smap *m, const char *k)
{
    struct smap_slot *s = smap_find(m, k, hash_str(k));

    return s ? s->val : NULL;
}

static void
smap_insert_slot(struct smap *m, struct smap_slot in)
{
    size_t i;

    for (i = in.h & (m->cap - 1); m->v[i].key; i = (i + 1) & (m->cap - 1))
        ;
    m->v[i] = in;
}

static int
smap_grow(struct smap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64, i;
    struct smap_slot *old = m->v;
    size_t ocap = m->cap;

    m->v = calloc(ncap, sizeof(*m->v));
    if (m->v == NULL) {
        m->v = old;
        return -1;
    }
    m->cap = ncap;
    for (i = 0; i < ocap; i++)
        if (old[i].key)
            smap_insert_slot(m, old[i]);
    free(old);
    return 0;
}

int
smap_put(struct smap *m, const char *k, void *val)
{
    uint64_t h = hash_str(k);
    struct smap_slot *s = smap_find(m, k, h), in;

    if (s) {
        s->val = val;
        return 0;
    }
    if ((m->n + 1) * 4 > m->cap * 3 && smap_grow(m) < 0)
        return -1;
    in.key = strdup(k);
    if (in.key == NULL)
        return -1;
    in.val = val;
    in.h = h;
    smap_insert_slot(m, in);
    m->n++;
    return 0;
}

void
smap_del(struct smap *m, const char *k)
{
    struct smap_slot *s = smap_find(m, k, hash_str(k));
    size_t i, j;

    if (s == NULL)
        return;
    free(s->key);
    i = (size_t)(s - m->v);
    m->v[i].key = NULL;
    m->n--;
    /* Pull back the entries of the probe run that follows. */
    for (j = (i + 1) & (m->cap - 1); m->v[j].key; j = (j + 1) & (m->cap - 1)) {
        size_t home = m->v[j].h & (m->cap - 1);

        if ((j > i && (home <= i || home > j))
            || (j < i && (home <= i && home > j))) {
            m->v[i] = m->v[j];
            m->v[j].key = NULL;
            i = j;
        }
    }
}

void
smap_deinit(struct smap *m)
{
    size_t i;

    for (i = 0; i < m->cap; i++)
        free(m->v[i].key);
    free(m->v);
    memset(m, 0, sizeof(*m));
}
