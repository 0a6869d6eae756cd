#include "intern.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A string's header sits right before its bytes, so intern_put() finds
 * it from the pointer it gave out. */
struct istr {
    struct istr *next; /* in its bucket */
    uint32_t hash;
    uint32_t refs;
    size_t len;
    char s[];
};

static struct {
    struct istr **b;
    size_t nb; /* buckets, a power of two (0 before the first string) */
    size_t n;  /* strings */
    size_t bytes;
} tab;

static uint32_t
hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static struct istr *
hdr(const char *s)
{
    return (struct istr *)(void *)(s - offsetof(struct istr, s));
}

/* Double the buckets once there are more strings than buckets; a failed
 * growth only makes chains longer. */
static void
grow(void)
{
    size_t nb = tab.nb ? tab.nb * 2 : 64, i;
    struct istr **b;

    if (tab.n < tab.nb)
        return;
    b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;
    for (i = 0; i < tab.nb; i++) {
        struct istr *p = tab.b[i], *next;
        for (; p != NULL; p = next) {
            next = p->next;
            p->next = b[p->hash & (nb - 1)];
            b[p->hash & (nb - 1)] = p;
        }
    }
    free(tab.b);
    tab.b = b;
    tab.nb = nb;
}

const char *
intern_get(const char *s, size_t len)
{
    uint32_t h = hash(s, len);
    struct istr *p;

    grow();
    if (tab.nb == 0)
        return NULL;
    for (p = tab.b[h & (tab.nb - 1)]; p != NULL; p = p->next) {
        if (p->hash == h && p->len == len && memcmp(p->s, s, len) == 0
            && p->refs < UINT32_MAX) {
            p->refs++;
            return p->s;
        }
    }
    p = malloc(sizeof(*p) + len + 1);
    if (p == NULL)
        return NULL;
    p->hash = h;
    p->refs = 1;
    p->len = len;
    memcpy(p->s, s, len);
    p->s[len] = '\0';
    p->next = tab.b[h & (tab.nb - 1)];
    tab.b[h & (tab.nb - 1)] = p;
    tab.n++;
    tab.bytes += sizeof(*p) + len + 1;
    return p->s;
}

const char *
intern_str(const char *s)
{
    return s != NULL ? intern_get(s, strlen(s)) : NULL;
}

const char *
intern_str_oom(const char *s, int *oom)
{
    const char *r = intern_str(s);

    if (s != NULL && r == NULL)
        *oom = 1;
    return r;
}

const char *
intern_ref(const char *s)
{
    if (s == NULL)
        return NULL;
    if (hdr(s)->refs == UINT32_MAX)
        return intern_get(s, hdr(s)->len); /* a second copy */
    hdr(s)->refs++;
    return s;
}

void
intern_put(const char *s)
{
    struct istr *p, **pp;

    if (s == NULL)
        return;
    p = hdr(s);
    if (--p->refs > 0)
        return;
    for (pp = &tab.b[p->hash & (tab.nb - 1)]; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    tab.n--;
    tab.bytes -= sizeof(*p) + p->len + 1;
    free(p);
    if (tab.n == 0) { /* nothing cached: give the buckets back too */
        free(tab.b);
        tab.b = NULL;
        tab.nb = 0;
    }
}

size_t
intern_count(void)
{
    return tab.n;
}

size_t
intern_bytes(void)
{
    return tab.bytes;
}
