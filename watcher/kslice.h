/*
 * kslice.h - an EndpointSlice decoded once, as the translator reads it.
 *
 * The cache keeps EndpointSlices in this form instead of their JSON: the
 * fields translation needs, repeated strings interned (intern.h), the
 * rest of the slice in one block. A slice's problems are found here, when
 * it enters the cache, and kept: a slice that serves nothing says why
 * (skip, skip_why), and each endpoint left out leaves a note that every
 * build of the table replays into its skip set, as if it had been read
 * from the JSON again.
 */
#ifndef WATCHER_KSLICE_H
#define WATCHER_KSLICE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jdoc.h"
#include "parse.h"
#include "skip.h"

/* Conditions of an endpoint; a missing one is ready, serving and not
 * terminating. */
#define KSLICE_READY       0x1
#define KSLICE_SERVING     0x2
#define KSLICE_TERMINATING 0x4

struct kslice_port {
    const char *name;  /* interned; "" when absent */
    const char *proto; /* interned; "TCP" when absent or null, "" when
                        * not a string */
    uint16_t port;     /* 0: missing or not in 1-65535 */
};

/* An endpoint's topology hints: how many entries forNodes and forZones
 * have, then their names (interned; NULL for a name that is not a
 * string), nodes first. */
struct kslice_hints {
    uint32_t nnodes, nzones;
    const char *names[];
};

/* 32 bytes: a cluster of 10,000 Services of 25 endpoints holds 250,000.
 * The endpoint's zone is not kept: topology is read from the hints. */
struct kslice_ep {
    uint8_t ip[16];   /* addresses[0], 4 or 16 bytes used */
    const char *node; /* nodeName, interned, or NULL */
    /* Where in the slice's own block targetRef.name is, from the slice's
     * address; 0 for none. Read it with kslice_ep_pod(). */
    uint32_t pod_at;
    uint8_t family; /* 4 or 6 */
    uint8_t cond;   /* KSLICE_* */
    /* Nonzero: it has hints, found through the slice's hint index (few
     * endpoints have any; kslice_ep_hints()). */
    uint8_t hinted;
};

/* Where an endpoint's hints are: the endpoint's index in the slice, and
 * the hints' offset from the slice's address. */
struct kslice_hint_at {
    uint32_t ep, at;
};

/* An endpoint left out (its address missing or not an IP). */
struct kslice_note {
    enum skip_reason reason;
    const char *what; /* "endpoints[3]: no address" */
};

struct kslice {
    const char *ns; /* interned */
    const char *name;
    const char *service; /* service-name label, interned; NULL if none */
    /* -1, or why the whole slice serves nothing (enum skip_reason, with a
     * constant text): no service-name label, addressType FQDN or
     * unknown, endpoints or ports not lists. Nothing below is set then. */
    int skip;
    const char *skip_why;
    int family; /* AF_INET or AF_INET6, from addressType */
    const struct kslice_port *ports;
    size_t nports;
    const struct kslice_ep *eps; /* only those with an IP address */
    size_t neps;
    const struct kslice_note *notes;
    size_t nnotes;
    /* The endpoints that have hints, by index (kslice_ep_hints()). */
    const struct kslice_hint_at *hint_at;
    size_t nhinted;
    /* Unique to this decoding: a slice replaced in the cache gets a new
     * one, so a stamp names one version of one slice (the translator's
     * memo keys on them). */
    uint64_t stamp;
};

/* Endpoint <ep> of slice <s>: its targetRef.name, or NULL. */
static inline const char *
kslice_ep_pod(const struct kslice *s, const struct kslice_ep *ep)
{
    return ep->pod_at ? (const char *)s + ep->pod_at : NULL;
}

/* Endpoint <ep> of slice <s>: its topology hints, or NULL for none. */
static inline const struct kslice_hints *
kslice_ep_hints(const struct kslice *s, const struct kslice_ep *ep)
{
    size_t lo = 0, hi = s->nhinted, i = (size_t)(ep - s->eps);

    if (!ep->hinted)
        return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->hint_at[mid].ep == i)
            return (const struct kslice_hints
                        *)(const void *)((const char *)s + s->hint_at[mid].at);
        if (s->hint_at[mid].ep < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Decode value <obj> of <d>, an EndpointSlice whose metadata.namespace
 * and name are non-empty strings (kcache checked them). A slice that
 * cannot be served still decodes (skip set). Returns a new slice, or
 * NULL when memory runs out. */
struct kslice *kslice_decode_doc(const struct jdoc *d, int obj);

/* The same from jansson's form (tests): written out and parsed again. */
struct kslice *kslice_decode(const json_t *obj);
void kslice_free(struct kslice *s);

/* Nonzero when <a> and <b> would translate the same. */
int kslice_equal(const struct kslice *a, const struct kslice *b);

/* The address of <ep> with <port> into <out>. */
void kslice_ep_addr(const struct kslice_ep *ep, uint16_t port,
                    struct saddr *out);

#endif
