#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctrace.h"

/* The ring: <n> records, the newest at (head + CTRACE_RING - 1). */
static struct ctrace_rec *ring;
static size_t head, n;
static uint64_t next_seq = 1;

/* The <i>th newest record (0: the newest); i < n. */
static struct ctrace_rec *
nth_newest(size_t i)
{
    return &ring[(head + CTRACE_RING - 1 - i) % CTRACE_RING];
}

void
ctrace_received(enum ctrace_kind kind, int modified, const char *ns,
                const char *svc, const char *obj, double trigger, double now)
{
    struct ctrace_rec *r;

    if (ring == NULL && (ring = calloc(CTRACE_RING, sizeof(*ring))) == NULL)
        return; /* a trace is not worth failing anything for */
    r = &ring[head];
    head = (head + 1) % CTRACE_RING;
    if (n < CTRACE_RING)
        n++;
    memset(r, 0, sizeof(*r));
    r->seq = next_seq++;
    snprintf(r->ns, sizeof(r->ns), "%s", ns);
    snprintf(r->svc, sizeof(r->svc), "%s", svc);
    snprintf(r->obj, sizeof(r->obj), "%s", obj);
    r->kind = kind;
    r->modified = modified;
    r->trigger = trigger;
    r->received = now;
}

/* Records are filled in the order they came, so the ones a stage has not
 * reached are the newest: each walk stops at the first it already did. */
void
ctrace_built(uint64_t tgen, double now)
{
    size_t i;

    for (i = 0; i < n; i++) {
        struct ctrace_rec *r = nth_newest(i);
        if (r->built != 0)
            break;
        r->built = now;
        r->tgen = tgen;
        r->unchanged = tgen == 0;
    }
}

void
ctrace_posted(uint64_t tgen, uint64_t gen, double now, int ok, int kernel)
{
    size_t i;

    for (i = 0; i < n; i++) {
        struct ctrace_rec *r = nth_newest(i);
        if (r->posted != 0)
            break;
        /* Not built into this table (yet), or nothing to post. An
         * older table never posted (the merge ran out of memory) is
         * part of this one. */
        if (r->built == 0 || r->unchanged || r->tgen > tgen)
            continue;
        r->posted = now;
        r->gen = gen;
        r->apply_failed = !ok;
        r->kernel = kernel ? CTRACE_KERNEL_PENDING : CTRACE_KERNEL_NONE;
    }
}

void
ctrace_committed(double now)
{
    size_t i;

    for (i = 0; i < n; i++) {
        struct ctrace_rec *r = nth_newest(i);
        if (r->kernel == CTRACE_KERNEL_DONE)
            break;
        if (r->kernel != CTRACE_KERNEL_PENDING)
            continue;
        r->kernel = CTRACE_KERNEL_DONE;
        r->committed = now;
    }
}

size_t
ctrace_find(const char *ns, const char *name, const struct ctrace_rec **out,
            size_t max)
{
    size_t i, got = 0;

    for (i = 0; i < n && got < max; i++) {
        const struct ctrace_rec *r = nth_newest(i);
        if (strcmp(r->ns, ns) == 0 && strcmp(r->svc, name) == 0)
            out[got++] = r;
    }
    return got;
}

void
ctrace_reset(void)
{
    free(ring);
    ring = NULL;
    head = n = 0;
    next_seq = 1;
}
