#include "kslice.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "intern.h"
#include "jdoc.h"
#include "jget.h"

/* The last stamp given (struct kslice). */
static atomic_uint_fast64_t stamps;
#include "translate.h"

/* Sizes of the parts of a slice's block, counted before it is filled. */
struct plan {
    size_t nports, neps, nhint_names, nhinted, nnotes, chars;
};

/* Every piece of the block is a multiple of 8 bytes, so each starts
 * aligned for pointers. */
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* metadata.name, "" when missing (kcache refuses such objects). */
static const char *
meta_name(const struct jdoc *d, int obj)
{
    const char *n = jdoc_gets(d, jdoc_get(d, obj, "metadata"), "name");

    return n != NULL ? n : "";
}

/* A list field: an array, or absent/null (empty). */
static int
list_ok(const struct jdoc *d, int v)
{
    return v < 0 || jdoc_type(d, v) == JD_ARR || jdoc_type(d, v) == JD_NULL;
}

/* Why a slice serves nothing, or -1. Slices without the service-name
 * label or of address type FQDN are left out, as kube-proxy does. */
static int
slice_skip(const struct jdoc *d, int s, const char *svc, const char **why)
{
    const char *at = jdoc_gets(d, s, "addressType");

    *why = "";
    if (svc == NULL || svc[0] == '\0') {
        *why = "no " TRANSLATE_LABEL_SERVICE_NAME " label";
        return SKIP_NO_SERVICE;
    }
    if (str_eq(at, "FQDN")) {
        *why = "addressType FQDN";
        return SKIP_ADDRESS_TYPE;
    }
    if (!str_eq(at, "IPv4") && !str_eq(at, "IPv6")) {
        *why = "addressType not IPv4, IPv6 or FQDN";
        return SKIP_MALFORMED;
    }
    if (!list_ok(d, jdoc_get(d, s, "endpoints"))
        || !list_ok(d, jdoc_get(d, s, "ports"))) {
        *why = "endpoints or ports not a list";
        return SKIP_MALFORMED;
    }
    return -1;
}

/* The address of endpoint <ep>, or NULL with the note's text in <what>
 * (index <i>). */
static const char *
ep_ip(const struct jdoc *d, int ep, size_t i, struct saddr *a, char *what,
      size_t len)
{
    const char *ip =
        jdoc_str(d, jdoc_first(d, jdoc_get(d, ep, "addresses")));
    const char *why;

    if (ip == NULL) {
        snprintf(what, len, "endpoints[%zu]: no address", i);
        return NULL;
    }
    if (parse_ip(ip, 0, a, &why) < 0) {
        snprintf(what, len, "endpoints[%zu]: address \"%.64s\": %s", i, ip,
                 why);
        return NULL;
    }
    return ip;
}

static size_t
hint_count(const struct jdoc *d, int hints, const char *field)
{
    return jdoc_size(d, jdoc_get(d, hints, field));
}

static void
plan_slice(const struct jdoc *d, int s, struct plan *p)
{
    size_t i = 0;
    int ep;

    memset(p, 0, sizeof(*p));
    p->nports = jdoc_size(d, jdoc_get(d, s, "ports"));
    p->chars = strlen(meta_name(d, s)) + 1;
    jdoc_foreach(d, jdoc_get(d, s, "endpoints"), ep)
    {
        int h = jdoc_get(d, ep, "hints");
        const char *pod = jdoc_gets(d, jdoc_get(d, ep, "targetRef"), "name");
        char what[256];
        struct saddr a;
        size_t nh;

        if (ep_ip(d, ep, i++, &a, what, sizeof(what)) == NULL) {
            p->nnotes++;
            p->chars += strlen(what) + 1;
            continue;
        }
        p->neps++;
        if (pod != NULL)
            p->chars += strlen(pod) + 1;
        nh = hint_count(d, h, "forNodes") + hint_count(d, h, "forZones");
        if (nh > 0) {
            p->nhinted++;
            p->nhint_names += nh;
        }
    }
}

/* Copy <s> into the block's characters at *<c>. */
static const char *
put_chars(char **c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *out = *c;

    memcpy(out, s, n);
    *c += n;
    return out;
}

static void
fill_port(struct kslice_port *p, const struct jdoc *d, int j, int *oom)
{
    int v = jdoc_get(d, j, "protocol");
    const char *proto;
    long long port = jdoc_int(d, jdoc_get(d, j, "port"));
    const char *name = jdoc_gets(d, j, "name");

    if (v < 0 || jdoc_type(d, v) == JD_NULL)
        proto = "TCP";
    else
        proto = jdoc_str(d, v) != NULL ? jdoc_str(d, v) : "";
    p->name = intern_str_oom(name ? name : "", oom);
    p->proto = intern_str_oom(proto, oom);
    p->port = port > 0 && port <= 65535 ? (uint16_t)port : 0;
}

/* The hints of one endpoint into <h>. */
static void
fill_hints(struct kslice_hints *h, const struct jdoc *d, int hints, int *oom)
{
    const char *fields[2] = {"forNodes", "forZones"};
    size_t f, n = 0;
    int e;

    h->nnodes = (uint32_t)hint_count(d, hints, "forNodes");
    h->nzones = (uint32_t)hint_count(d, hints, "forZones");
    for (f = 0; f < 2; f++) {
        jdoc_foreach(d, jdoc_get(d, hints, fields[f]), e)
        {
            h->names[n++] = intern_str_oom(jdoc_gets(d, e, "name"), oom);
        }
    }
}

/* A condition: true or false, or <dflt> when it is not a boolean. */
static int
cond(const struct jdoc *d, int c, const char *field, int dflt)
{
    int t = jdoc_type(d, jdoc_get(d, c, field));

    return t == JD_TRUE ? 1 : t == JD_FALSE ? 0 : dflt;
}

static void
fill_ep(struct kslice_ep *n, const struct jdoc *d, int ep,
        const struct saddr *a, int *oom)
{
    int c = jdoc_get(d, ep, "conditions");

    if (a->u.sa.sa_family == AF_INET6) {
        n->family = 6;
        memcpy(n->ip, &a->u.in6.sin6_addr, 16);
    } else {
        n->family = 4;
        memcpy(n->ip, &a->u.in.sin_addr, 4);
    }
    n->cond |= cond(d, c, "ready", 1) ? KSLICE_READY : 0;
    n->cond |= cond(d, c, "serving", 1) ? KSLICE_SERVING : 0;
    n->cond |= cond(d, c, "terminating", 0) ? KSLICE_TERMINATING : 0;
    n->node = intern_str_oom(jdoc_gets(d, ep, "nodeName"), oom);
}

/* Fill the endpoints, hints, hint index, notes and their characters. */
static void
fill_eps(struct kslice *s, const struct jdoc *d, int obj,
         struct kslice_ep *eps, char *hints, struct kslice_hint_at *hint_at,
         struct kslice_note *notes, char **chars, int *oom)
{
    size_t i = 0;
    int ep;

    jdoc_foreach(d, jdoc_get(d, obj, "endpoints"), ep)
    {
        int h = jdoc_get(d, ep, "hints");
        const char *pod = jdoc_gets(d, jdoc_get(d, ep, "targetRef"), "name");
        struct kslice_ep *n = &eps[s->neps];
        size_t nh = hint_count(d, h, "forNodes") + hint_count(d, h, "forZones");
        char what[256];
        struct saddr a;

        if (ep_ip(d, ep, i++, &a, what, sizeof(what)) == NULL) {
            notes[s->nnotes].reason = SKIP_BAD_ADDRESS;
            notes[s->nnotes++].what = put_chars(chars, what);
            continue;
        }
        fill_ep(n, d, ep, &a, oom);
        if (pod != NULL)
            n->pod_at = (uint32_t)(put_chars(chars, pod) - (char *)s);
        if (nh > 0) {
            struct kslice_hints *kh = (struct kslice_hints *)(void *)hints;
            fill_hints(kh, d, h, oom);
            n->hinted = 1;
            hint_at[s->nhinted].ep = (uint32_t)s->neps;
            hint_at[s->nhinted++].at = (uint32_t)(hints - (char *)s);
            hints += sizeof(*kh) + nh * sizeof(kh->names[0]);
        }
        s->neps++;
    }
}

struct kslice *
kslice_decode_doc(const struct jdoc *d, int obj)
{
    int md = jdoc_get(d, obj, "metadata"), port;
    const char *svc =
        jdoc_gets(d, jdoc_get(d, md, "labels"), TRANSLATE_LABEL_SERVICE_NAME);
    size_t ports_sz, eps_sz, hints_sz, hint_at_sz, notes_sz, i;
    struct kslice_port *ports;
    struct kslice *s;
    struct plan p;
    char *block, *chars;
    int oom = 0, skip;
    const char *why;

    skip = slice_skip(d, obj, svc, &why);
    if (skip >= 0)
        memset(&p, 0, sizeof(p)), p.chars = strlen(meta_name(d, obj)) + 1;
    else
        plan_slice(d, obj, &p);
    ports_sz = ALIGN8(p.nports * sizeof(struct kslice_port));
    eps_sz = ALIGN8(p.neps * sizeof(struct kslice_ep));
    hints_sz = p.nhinted * sizeof(struct kslice_hints)
               + p.nhint_names * sizeof(const char *);
    hint_at_sz = ALIGN8(p.nhinted * sizeof(struct kslice_hint_at));
    notes_sz = ALIGN8(p.nnotes * sizeof(struct kslice_note));
    block = calloc(1, ALIGN8(sizeof(*s)) + ports_sz + eps_sz + hints_sz
                          + hint_at_sz + notes_sz + p.chars);
    if (block == NULL)
        return NULL;
    s = (struct kslice *)(void *)block;
    ports = (struct kslice_port *)(void *)(block + ALIGN8(sizeof(*s)));
    s->eps = (struct kslice_ep *)(void *)((char *)ports + ports_sz);
    s->hint_at =
        (struct kslice_hint_at *)(void *)((char *)s->eps + eps_sz + hints_sz);
    s->notes = (struct kslice_note *)(void *)((char *)s->hint_at + hint_at_sz);
    chars = (char *)s->notes + notes_sz;
    s->ns = intern_str_oom(jdoc_gets(d, md, "namespace"), &oom);
    s->name = put_chars(&chars, meta_name(d, obj));
    s->service = intern_str_oom(svc, &oom);
    s->skip = skip;
    s->skip_why = why;
    s->stamp = atomic_fetch_add_explicit(&stamps, 1, memory_order_relaxed) + 1;
    s->family =
        str_eq(jdoc_gets(d, obj, "addressType"), "IPv6") ? AF_INET6 : AF_INET;
    if (skip < 0) {
        i = 0;
        jdoc_foreach(d, jdoc_get(d, obj, "ports"), port)
        {
            fill_port(&ports[i++], d, port, &oom);
        }
        s->ports = ports;
        s->nports = p.nports;
        fill_eps(s, d, obj, (struct kslice_ep *)s->eps,
                 (char *)s->eps + eps_sz, (struct kslice_hint_at *)s->hint_at,
                 (struct kslice_note *)s->notes, &chars, &oom);
    }
    if (oom) {
        kslice_free(s);
        return NULL;
    }
    return s;
}

static void *
decode_any(const struct jdoc *d, int at)
{
    return kslice_decode_doc(d, at);
}

struct kslice *
kslice_decode(const json_t *obj)
{
    return jdoc_decode_json(obj, decode_any);
}

void
kslice_free(struct kslice *s)
{
    size_t i, j;

    if (s == NULL)
        return;
    intern_put(s->ns);
    intern_put(s->service);
    for (i = 0; i < s->nports; i++) {
        intern_put(s->ports[i].name);
        intern_put(s->ports[i].proto);
    }
    for (i = 0; i < s->neps; i++) {
        const struct kslice_hints *h = kslice_ep_hints(s, &s->eps[i]);
        intern_put(s->eps[i].node);
        for (j = 0; h != NULL && j < h->nnodes + h->nzones; j++)
            intern_put(h->names[j]);
    }
    free(s);
}

static int
opt_eq(const char *a, const char *b)
{
    return a == b || str_eq(a, b);
}

static int
hints_eq(const struct kslice_hints *a, const struct kslice_hints *b)
{
    size_t i;

    if (a == NULL || b == NULL)
        return a == b;
    if (a->nnodes != b->nnodes || a->nzones != b->nzones)
        return 0;
    for (i = 0; i < a->nnodes + a->nzones; i++)
        if (!opt_eq(a->names[i], b->names[i]))
            return 0;
    return 1;
}

static int
ep_eq(const struct kslice *sa, const struct kslice_ep *a,
      const struct kslice *sb, const struct kslice_ep *b)
{
    return a->family == b->family && a->cond == b->cond
           && memcmp(a->ip, b->ip, sizeof(a->ip)) == 0
           && opt_eq(a->node, b->node)
           && opt_eq(kslice_ep_pod(sa, a), kslice_ep_pod(sb, b))
           && hints_eq(kslice_ep_hints(sa, a), kslice_ep_hints(sb, b));
}

int
kslice_equal(const struct kslice *a, const struct kslice *b)
{
    size_t i;

    if (!opt_eq(a->ns, b->ns) || !opt_eq(a->name, b->name)
        || !opt_eq(a->service, b->service) || a->skip != b->skip
        || !opt_eq(a->skip_why, b->skip_why) || a->family != b->family
        || a->nports != b->nports || a->neps != b->neps
        || a->nnotes != b->nnotes)
        return 0;
    for (i = 0; i < a->nports; i++)
        if (!opt_eq(a->ports[i].name, b->ports[i].name)
            || !opt_eq(a->ports[i].proto, b->ports[i].proto)
            || a->ports[i].port != b->ports[i].port)
            return 0;
    for (i = 0; i < a->neps; i++)
        if (!ep_eq(a, &a->eps[i], b, &b->eps[i]))
            return 0;
    for (i = 0; i < a->nnotes; i++)
        if (a->notes[i].reason != b->notes[i].reason
            || !opt_eq(a->notes[i].what, b->notes[i].what))
            return 0;
    return 1;
}

void
kslice_ep_addr(const struct kslice_ep *ep, uint16_t port, struct saddr *out)
{
    memset(out, 0, sizeof(*out));
    if (ep->family == 6) {
        out->u.in6.sin6_family = AF_INET6;
        memcpy(&out->u.in6.sin6_addr, ep->ip, 16);
        out->u.in6.sin6_port = htons(port);
        out->len = sizeof(out->u.in6);
    } else {
        out->u.in.sin_family = AF_INET;
        memcpy(&out->u.in.sin_addr, ep->ip, 4);
        out->u.in.sin_port = htons(port);
        out->len = sizeof(out->u.in);
    }
}
