#include "translate.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <uthash.h>

#include "jget.h"
#include "kslice.h"
#include "ksvc.h"

/* One candidate endpoint for one Service port. */
struct ep {
    struct saddr addr; /* endpoint IP + slice port */
    uint32_t flags;    /* TBL_BE_* */
    const char *name;  /* targetRef name, or NULL */
    const char *slice; /* slice name, for the de-duplication tie-break */
    const struct kslice_hints *hints;
};

/* The usable slices of every Service, sorted by (namespace, service
 * name, slice name). */
struct slice_idx {
    const struct kslice **v;
    const void **ents; /* the cache entry of each (kcache_iter.ent) */
    size_t n;
};

struct eps {
    struct ep *v;
    size_t n, cap;
};

struct fes {
    struct saddr *v;
    size_t n, cap;
};

/* What one Service contributes, decoded once for all its ports. */
struct svcctx {
    const struct ksvc *svc;
    const char *ns, *name;
    int family;    /* family of the primary ClusterIP */
    int itp_local; /* internalTrafficPolicy Local */
    int etp_local; /* externalTrafficPolicy Local */
    uint32_t affinity_ms;
    uint16_t hc_port;     /* healthCheckNodePort (LoadBalancer, ETP Local) */
    const struct kslice *const *slices; /* this Service's slices */
    const void *const *slice_ents;      /* and their cache entries */
    size_t nslices;
    int kernel;           /* served by the kernel dataplane */
    enum tbl_proto proto; /* of the port being translated (do_port) */
    /* The annotations' proxy features, applied over the policy. */
    int has_balance, has_retries, has_send_proxy, has_drain_timeout;
    uint32_t drain_timeout_ms;
    enum tbl_balance balance;
    uint32_t retries;
    enum tbl_send_proxy send_proxy;
    struct tbl_check check; /* type NONE: no annotation */
};

enum topo_mode { TOPO_NONE = 0, TOPO_NODE, TOPO_ZONE };

static const char *
label(const json_t *obj, const char *k)
{
    const json_t *l =
        json_object_get(json_object_get(obj, "metadata"), "labels");
    return jstr(l, k);
}

/* Note that object <ns>/<name> of <kind> (or a field of it) is not
 * served: <fmt> says what. */
static void vnote(const struct translate_opts *o, enum skip_kind kind,
                  const char *ns, const char *name, enum skip_reason reason,
                  const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

static void
vnote(const struct translate_opts *o, enum skip_kind kind, const char *ns,
      const char *name, enum skip_reason reason, const char *fmt, va_list ap)
{
    struct skip_set *set = o->skips;
    struct skip_note n;
    char what[256], who[512];

    if (set == NULL && o->skips_at != NULL) {
        if (*o->skips_at == NULL)
            *o->skips_at = skip_set_new();
        set = *o->skips_at;
    }
    if (set == NULL) {
        if (o->skips_at != NULL && o->notes_lost != NULL)
            *o->notes_lost = 1; /* no memory for the set */
        return; /* not wanted, or no memory: not counted */
    }
    vsnprintf(what, sizeof(what), fmt, ap);
    snprintf(who, sizeof(who), "%s/%s", ns ? ns : "", name ? name : "");
    n.kind = kind;
    n.reason = reason;
    n.obj = who;
    n.what = what;
    if (skip_set_add(set, &n) < 0 && o->notes_lost != NULL)
        *o->notes_lost = 1; /* otherwise not counted, that is all */
}

/* Note that Service <svc> (or a field of it) is not served. */
static void skip_svc(const struct translate_opts *o, const struct ksvc *svc,
                     enum skip_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
skip_svc(const struct translate_opts *o, const struct ksvc *svc,
         enum skip_reason reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vnote(o, SKIP_KIND_SERVICE, svc->ns, svc->name, reason, fmt, ap);
    va_end(ap);
}

#define SKIP_SVC(o, sc, r, ...) skip_svc((o), (sc)->svc, (r), __VA_ARGS__)

/* Note that a slice (or a field of it) is not served. */
static void skip_slice(const struct translate_opts *o, const struct kslice *sl,
                       enum skip_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
skip_slice(const struct translate_opts *o, const struct kslice *sl,
           enum skip_reason reason, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vnote(o, SKIP_KIND_ENDPOINTSLICE, sl->ns, sl->name, reason, fmt, ap);
    va_end(ap);
}

/* Note that Service <ns>/<name> is not served on a frontend. */
static void skip_conflict(const struct translate_opts *o, const char *ns,
                          const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
skip_conflict(const struct translate_opts *o, const char *ns,
              const char *name, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vnote(o, SKIP_KIND_SERVICE, ns, name, SKIP_CONFLICT, fmt, ap);
    va_end(ap);
}

const char *
translate_node_zone(const json_t *node)
{
    return label(node, TRANSLATE_LABEL_ZONE);
}

int
translate_node_deleting(const json_t *node)
{
    const json_t *md = json_object_get(node, "metadata");
    const json_t *taint;
    size_t i;

    if (json_is_string(json_object_get(md, "deletionTimestamp")))
        return 1;
    json_array_foreach(
        json_object_get(json_object_get(node, "spec"), "taints"), i, taint)
    {
        if (str_eq(jstr(taint, "key"), TRANSLATE_TAINT_TO_BE_DELETED))
            return 1;
    }
    return 0;
}

/* Room for one more past <n> in <*v>. It starts with room for one: most
 * Services have one port, and a Service's record is kept as it is. */
static int
grow(void **v, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 1;
    p = realloc(*v, ncap * size);
    if (p == NULL)
        return -1;
    *v = p;
    *cap = ncap;
    return 0;
}

static int
slice_cmp(const void *pa, const void *pb)
{
    const struct kslice *a = *(const struct kslice *const *)pa;
    const struct kslice *b = *(const struct kslice *const *)pb;
    int c = strcmp(a->ns, b->ns);

    if (c == 0)
        c = strcmp(a->service, b->service);
    return c != 0 ? c : strcmp(a->name, b->name);
}

/* Index the slices that can serve by (namespace, service-name); note
 * the others, with the reason found when they were decoded. Returns 0,
 * or -1 when memory runs out. */
struct slice_pair {
    const struct kslice *s;
    const void *ent;
};

static int
pair_cmp(const void *a, const void *b)
{
    return slice_cmp(&((const struct slice_pair *)a)->s,
                     &((const struct slice_pair *)b)->s);
}

static int
index_slices(const struct kcache *slices, const struct translate_opts *o,
             struct slice_idx *idx)
{
    struct kcache_iter it = {0, NULL};
    const struct kslice *s;
    struct slice_pair *v;
    size_t i, n = 0, room = kcache_size(slices) + 1;

    idx->n = 0;
    idx->v = malloc(room * sizeof(*idx->v));
    idx->ents = malloc(room * sizeof(*idx->ents));
    v = malloc(room * sizeof(*v));
    if (idx->v == NULL || idx->ents == NULL || v == NULL) {
        free(v);
        return -1;
    }
    while ((s = kcache_next(slices, &it, NULL)) != NULL) {
        if (s->skip >= 0)
            skip_slice(o, s, (enum skip_reason)s->skip, "%s", s->skip_why);
        else if (s->ns != NULL) { /* the cache keys slices by namespace */
            v[n].s = s;
            v[n++].ent = it.ent;
        }
    }
    qsort(v, n, sizeof(*v), pair_cmp);
    for (i = 0; i < n; i++) {
        idx->v[i] = v[i].s;
        idx->ents[i] = v[i].ent;
    }
    idx->n = n;
    free(v);
    return 0;
}

/* The slices of Service <ns>/<name> into sc->slices. */
static void
find_slices(const struct slice_idx *idx, const char *ns, const char *name,
            struct svcctx *sc)
{
    size_t lo = 0, hi = idx->n, end;

    while (lo < hi) { /* the first slice not before (ns, name) */
        size_t mid = lo + (hi - lo) / 2;
        const struct kslice *m = idx->v[mid];
        int c = strcmp(m->ns, ns);
        if (c == 0)
            c = strcmp(m->service, name);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (end = lo; end < idx->n; end++)
        if (strcmp(idx->v[end]->ns, ns) != 0
            || strcmp(idx->v[end]->service, name) != 0)
            break;
    sc->slices = idx->v + lo;
    sc->slice_ents = idx->ents + lo;
    sc->nslices = end - lo;
}

/* The slice port matching Service port (name, protocol), or 0. A match
 * whose number is missing or out of range is noted (kube-proxy logs it
 * too) unless another match is good. */
static uint16_t
slice_port(const struct kslice *slice, const char *pname, const char *proto,
           const struct translate_opts *o)
{
    size_t i;
    int bad = 0;

    for (i = 0; i < slice->nports; i++) {
        const struct kslice_port *p = &slice->ports[i];
        if (strcmp(p->name, pname) != 0 || strcmp(p->proto, proto) != 0)
            continue;
        if (p->port != 0)
            return p->port;
        bad = 1;
    }
    if (bad)
        skip_slice(o, slice, SKIP_BAD_PORT,
                   "port \"%.64s\": no number in 1-65535", pname);
    return 0;
}

static int
add_slice_eps(const struct kslice *slice, uint16_t port,
              const struct translate_opts *o, struct eps *out)
{
    size_t i;

    /* The endpoints left out when the slice was decoded, noted as each
     * build that reads the slice has always noted them. */
    for (i = 0; i < slice->nnotes; i++)
        skip_slice(o, slice, slice->notes[i].reason, "%s",
                   slice->notes[i].what);
    for (i = 0; i < slice->neps; i++) {
        const struct kslice_ep *ep = &slice->eps[i];
        struct ep *n;

        if (grow((void **)&out->v, &out->cap, out->n, sizeof(*out->v)) < 0)
            return -1;
        n = &out->v[out->n];
        kslice_ep_addr(ep, port, &n->addr);
        n->flags = ((ep->cond & KSLICE_READY) ? TBL_BE_READY : 0)
                   | ((ep->cond & KSLICE_SERVING) ? TBL_BE_SERVING : 0)
                   | ((ep->cond & KSLICE_TERMINATING) ? TBL_BE_TERMINATING : 0);
        if (o->node_name != NULL && str_eq(ep->node, o->node_name))
            n->flags |= TBL_BE_LOCAL;
        else if (o->node_name != NULL && ep->node != NULL && ep->node[0])
            n->flags |= TBL_BE_REMOTE;
        n->name = kslice_ep_pod(slice, ep);
        n->slice = slice->name;
        n->hints = kslice_ep_hints(slice, ep);
        out->n++;
    }
    return 0;
}

/* Same address: the better one first (local, then ready, then slice
 * name), so de-duplication keeps it. */
static int
ep_cmp(const void *pa, const void *pb)
{
    const struct ep *a = pa, *b = pb;
    int c = saddr_cmp(&a->addr, &b->addr);

    if (c != 0)
        return c;
    if ((a->flags ^ b->flags) & TBL_BE_LOCAL)
        return (a->flags & TBL_BE_LOCAL) ? -1 : 1;
    if ((a->flags ^ b->flags) & TBL_BE_READY)
        return (a->flags & TBL_BE_READY) ? -1 : 1;
    return strcmp(a->slice, b->slice);
}

/* All endpoints of one Service port, merged over slices, de-duplicated
 * by IP:port, sorted by address. */
static int
collect_eps(const struct svcctx *sc, const char *pname, const char *proto,
            int family, const struct translate_opts *o, struct eps *out)
{
    size_t i, j;

    out->n = 0;
    for (i = 0; i < sc->nslices; i++) {
        const struct kslice *s = sc->slices[i];
        uint16_t port;
        if (family != AF_UNSPEC && s->family != family)
            continue;
        port = slice_port(s, pname, proto, o);
        if (port == 0)
            continue;
        if (add_slice_eps(s, port, o, out) < 0)
            return -1;
    }
    if (out->n == 0)
        return 0;
    qsort(out->v, out->n, sizeof(*out->v), ep_cmp);
    for (i = 1, j = 0; i < out->n; i++)
        if (saddr_cmp(&out->v[i].addr, &out->v[j].addr) != 0)
            out->v[++j] = out->v[i];
    out->n = j + 1;
    return 0;
}

/* Whether <hints> has entries for nodes (<zones> 0) or zones, and in
 * *has whether one of them names <want>. */
static int
hint_names(const struct kslice_hints *hints, int zones, const char *want,
           int *has)
{
    size_t i, from, n;

    *has = 0;
    if (hints == NULL)
        return 0;
    from = zones ? hints->nnodes : 0;
    n = zones ? hints->nzones : hints->nnodes;
    if (n == 0)
        return 0;
    for (i = from; i < from + n; i++)
        if (want != NULL && str_eq(hints->names[i], want))
            *has = 1;
    return 1;
}

/* kube-proxy's hint rule: among ready endpoints, if all carry node hints
 * and one names this node, keep those; else the same with zones; else
 * ignore hints. */
static enum topo_mode
topo_mode(const struct eps *all, const struct translate_opts *o)
{
    int all_node = 1, any_node = 0, all_zone = 1, any_zone = 0, has;
    size_t i;

    for (i = 0; i < all->n; i++) {
        if (!(all->v[i].flags & TBL_BE_READY))
            continue;
        if (!hint_names(all->v[i].hints, 0, o->node_name, &has))
            all_node = 0;
        any_node |= has;
        if (!hint_names(all->v[i].hints, 1, o->node_zone, &has))
            all_zone = 0;
        any_zone |= has;
    }
    if (all_node && any_node)
        return TOPO_NODE;
    if (all_zone && any_zone)
        return TOPO_ZONE;
    return TOPO_NONE;
}

static int
topo_ok(const struct ep *p, enum topo_mode m, const struct translate_opts *o)
{
    int has = 1;

    if (m == TOPO_NODE)
        hint_names(p->hints, 0, o->node_name, &has);
    else if (m == TOPO_ZONE)
        hint_names(p->hints, 1, o->node_zone, &has);
    return has;
}

#define SERVING_TERMINATING (TBL_BE_SERVING | TBL_BE_TERMINATING)

/* Does <p> belong to the set: pass 0 = ready (topology filtered for the
 * cluster set), pass 1 = the serving+terminating fallback. */
static int
in_set(const struct ep *p, int local, int pass, enum topo_mode m,
       const struct translate_opts *o)
{
    if (local && !(p->flags & TBL_BE_LOCAL))
        return 0;
    if (pass == 1)
        return (p->flags & SERVING_TERMINATING) == SERVING_TERMINATING;
    if (!(p->flags & TBL_BE_READY))
        return 0;
    return local || topo_ok(p, m, o);
}

/* Why <p> is not in the set built with ready endpoints first (<pass>
 * is the pass that filled the set). */
static enum tbl_excl
excl_reason(const struct ep *p, int local, int pass)
{
    if (local && !(p->flags & TBL_BE_LOCAL))
        return TBL_EXCL_OTHER_NODE;
    if (pass == 0 && (p->flags & SERVING_TERMINATING) == SERVING_TERMINATING)
        return TBL_EXCL_TERMINATING;
    if (!(p->flags & TBL_BE_READY) || pass == 1)
        return TBL_EXCL_NOT_READY;
    return TBL_EXCL_TOPOLOGY;
}

/* Text room for the name of an endpoint without a pod: its IP. */
typedef char ep_text[SADDR_STR_MAX];

/* Build the cluster (local = 0) or local (local = 1) endpoint set into
 * <out> (room for all->n), whose names may point into <text> (room for
 * all->n too). Returns its size. With <xout> (room for all->n), the
 * endpoints left out go there, with the reason, and their number in
 * <*nx>. */
static size_t
select_set(const struct eps *all, int local, const struct translate_opts *o,
           struct tbl_backend *out, ep_text *text, struct tbl_excluded *xout,
           size_t *nx)
{
    enum topo_mode m = local ? TOPO_NONE : topo_mode(all, o);
    size_t i, n = 0;
    int pass;

    for (pass = 0; pass < 2 && n == 0; pass++) {
        for (i = 0; i < all->n; i++) {
            const struct ep *p = &all->v[i];
            if (!in_set(p, local, pass, m, o))
                continue;
            memset(&out[n], 0, sizeof(out[n]));
            out[n].addr = p->addr;
            out[n].name = p->name ? p->name
                                  : saddr_ip_str(&p->addr, text[n],
                                                 sizeof(text[n]));
            out[n].weight = 1;
            out[n].flags = p->flags;
            n++;
        }
    }
    if (xout == NULL)
        return n;
    *nx = 0;
    for (i = 0; i < all->n; i++) {
        const struct ep *p = &all->v[i];
        struct tbl_excluded *x = &xout[*nx];
        char ip[SADDR_STR_MAX];
        if (in_set(p, local, pass - 1, m, o))
            continue;
        memset(x, 0, sizeof(*x));
        x->addr = p->addr;
        snprintf(x->name, sizeof(x->name), "%.*s", (int)sizeof(x->name) - 1,
                 p->name ? p->name : saddr_ip_str(&p->addr, ip, sizeof(ip)));
        x->reason = excl_reason(p, local, pass - 1);
        (*nx)++;
    }
    return n;
}

static int
add_fe_addr(struct fes *f, const struct saddr *a)
{
    size_t i;

    for (i = 0; i < f->n; i++)
        if (saddr_cmp(&f->v[i], a) == 0)
            return 0;
    if (grow((void **)&f->v, &f->cap, f->n, sizeof(*f->v)) < 0)
        return -1;
    f->v[f->n++] = *a;
    return 0;
}

static int
add_fe(struct fes *f, const char *ip, uint16_t port)
{
    struct saddr a;
    const char *why;

    if (ip == NULL || parse_ip(ip, port, &a, &why) < 0)
        return 0;
    return add_fe_addr(f, &a);
}

/* A frontend from an IP field of the Service (<field>[<i>]; <v> NULL
 * when not a string); a value that is not an IP literal is noted and
 * left out. */
static int
add_api_fe(const struct svcctx *sc, const struct translate_opts *o,
           struct fes *f, const char *v, uint16_t port, const char *field,
           size_t i)
{
    struct saddr a;
    const char *why = "not a string";

    if (v == NULL || parse_ip(v, port, &a, &why) < 0) {
        SKIP_SVC(o, sc, SKIP_BAD_ADDRESS, "%s[%zu] \"%.64s\": %s", field, i,
                 v != NULL ? v : "", why);
        return 0;
    }
    return add_fe_addr(f, &a);
}

/* The frontends of <l>, a list of IPs of the Service named <field>. */
static int
add_api_fes(const struct svcctx *sc, const struct translate_opts *o,
            struct fes *f, const struct ksvc_strs *l, uint16_t port,
            const char *field)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        if (add_api_fe(sc, o, f, l->v[i], port, field, i) < 0)
            return -1;
    return 0;
}

/* The LoadBalancer ingress IPs of a LoadBalancer Service. */
static int
add_lb_fes(const struct svcctx *sc, const struct translate_opts *o,
           struct fes *f, uint16_t port)
{
    const struct ksvc *s = sc->svc;
    size_t i;

    if (s->type != KSVC_TYPE_LOAD_BALANCER)
        return 0;
    for (i = 0; i < s->ningress; i++) {
        if (s->ingress[i].proxy || !s->ingress[i].has_ip)
            continue; /* the LB proxies: traffic arrives to nodes; or
                       * a hostname-only ingress */
        if (add_api_fe(sc, o, f, s->ingress[i].ip, port,
                       "status.loadBalancer.ingress", i)
            < 0)
            return -1;
    }
    return 0;
}

static int
internal_fes(const struct svcctx *sc, uint16_t port,
             const struct translate_opts *o, struct fes *f)
{
    if (sc->svc->cluster_ips.n == 0)
        return add_fe(f, sc->svc->cluster_ip, port);
    return add_api_fes(sc, o, f, &sc->svc->cluster_ips, port, "clusterIPs");
}

static int
external_fes(const struct svcctx *sc, const struct ksvc_port *sp,
             const struct translate_opts *o, struct fes *f)
{
    int64_t np = sp->node_port;
    uint16_t port = (uint16_t)sp->port;
    char ip[SADDR_STR_MAX];
    size_t i;

    if (add_api_fes(sc, o, f, &sc->svc->external_ips, port, "externalIPs") < 0
        || add_lb_fes(sc, o, f, port) < 0)
        return -1;
    if (sp->has_node_port && !(np > 0 && np <= 65535))
        SKIP_SVC(o, sc, SKIP_BAD_PORT,
                 "port \"%.64s\": nodePort %lld not in 1-65535", sp->name,
                 (long long)np);
    for (i = 0; np > 0 && np <= 65535 && i < o->n_node_addrs; i++) {
        saddr_ip_str(&o->node_addrs[i], ip, sizeof(ip));
        if (add_fe(f, ip, (uint16_t)np) < 0)
            return -1;
    }
    return 0;
}

/* ---- what one Service translates to -------------------------------------
 *
 * A Service is translated into a record of what it contributes: the table
 * services and kernel services it would add, in order, each holding its
 * arrays (table.h), what was skipped and its counters. The record is then
 * played into the table, where frontends taken by an earlier Service are
 * found. The memo keeps each Service's record with what it was made from
 * (the stamps of the Service and of its slices), so that a table built
 * after a change translates only the Services the change touched and
 * shares every other one's arrays with the table before. */

struct rec {
    struct tbl_service *svcs;
    size_t nsvcs, svcap;
    struct tbl_ksvc *ksvcs;
    size_t nksvcs, kcap;
    struct skip_set *skips; /* NULL until something is skipped */
    /* The counters of struct translate_stats a record adds on playing
     * (emitted and conflicts are counted there): not the whole struct,
     * whose conflict message would cost every memo entry 0.5 KB. */
    struct {
        size_t services, skipped, ports_skipped, kernel;
        size_t no_local_internal, no_local_external;
    } st;
};

static void
rec_clear(struct rec *r)
{
    size_t i;

    for (i = 0; i < r->nsvcs; i++)
        tbl_service_release(&r->svcs[i]);
    for (i = 0; i < r->nksvcs; i++)
        tbl_ksvc_release(&r->ksvcs[i]);
    free(r->svcs);
    free(r->ksvcs);
    skip_set_free(r->skips);
    memset(r, 0, sizeof(*r));
}

static int
rec_service(struct rec *r, const struct tbl_service *s)
{
    if (grow((void **)&r->svcs, &r->svcap, r->nsvcs, sizeof(*r->svcs)) < 0
        || tbl_service_hold(&r->svcs[r->nsvcs], s) < 0)
        return -1;
    r->nsvcs++;
    return 0;
}

static int
rec_ksvc(struct rec *r, const struct tbl_ksvc *k)
{
    if (grow((void **)&r->ksvcs, &r->kcap, r->nksvcs, sizeof(*r->ksvcs)) < 0
        || tbl_ksvc_hold(&r->ksvcs[r->nksvcs], k) < 0)
        return -1;
    r->nksvcs++;
    return 0;
}

static void
note_conflict(const struct translate_opts *o, const char *ns,
              const char *svc, const char *name, const struct err *e)
{
    struct translate_stats *st = o->stats;

    skip_conflict(o, ns, svc, "%s not served: %s", name, e->msg);
    if (st == NULL)
        return;
    if (st->conflicts++ == 0)
        snprintf(st->first_conflict, sizeof(st->first_conflict), "%s: %s", name,
                 e->msg);
}

static void
copy_skip(void *arg, const struct skip_note *n)
{
    (void)skip_set_add(arg, n); /* no memory: not counted */
}

/* Add what <r> records for Service <ns>/<svc> to <t>. Table refusals (a
 * frontend owned by another service) are noted and counted; only memory
 * failures are errors (-1). */
static int
play(struct table *t, const struct rec *r, const char *ns, const char *svc,
     const struct translate_opts *o)
{
    struct translate_stats *st = o->stats;
    struct err e;
    size_t i;

    if (st != NULL) {
        st->services += r->st.services;
        st->skipped += r->st.skipped;
        st->ports_skipped += r->st.ports_skipped;
        st->kernel += r->st.kernel;
        st->no_local_internal += r->st.no_local_internal;
        st->no_local_external += r->st.no_local_external;
    }
    if (r->skips != NULL && o->skips != NULL)
        skip_set_each_new(r->skips, NULL, copy_skip, o->skips);
    for (i = 0; i < r->nsvcs; i++) {
        err_clear(&e);
        if (table_add_service(t, &r->svcs[i], &e) < 0) {
            /* The whole message, not a substring: refusals quote names
             * that come from the API objects. */
            if (strcmp(e.msg, "out of memory") == 0)
                return -1;
            note_conflict(o, ns, svc, r->svcs[i].name, &e);
        } else if (st != NULL) {
            st->emitted++;
        }
    }
    for (i = 0; i < r->nksvcs; i++)
        if (table_add_ksvc(t, &r->ksvcs[i], NULL) < 0)
            return -1; /* only memory fails: the translator keeps names
                        * unique */
    return 0;
}

/* Nonzero when the kernel steers <sc>'s proxied port (sc->proto) to
 * the proxy's dispatch listener. */
static int
redirected(const struct svcctx *sc, const struct translate_opts *o)
{
    if (o->edge)
        return 0;
    return o->kernel || (o->redirect && sc->proto == TBL_PROTO_TCP);
}

/* Add one table service. Table refusals (a frontend owned by another
 * service) are counted and skipped; only memory failures are errors. */
static int
emit(struct rec *r, const struct svcctx *sc, const char *pname,
     const char *suffix, const struct fes *f, struct tbl_backend *be,
     size_t nbe, const struct tbl_excluded *ex, size_t nex, int hc,
     const struct cidr *allow, size_t nallow, const struct translate_opts *o)
{
    /* Under the nftables dataplane, and for TCP under the proxy
     * dataplane's redirect steering, a proxied Service's connections come
     * redirected by the kernel: nothing listens on its frontends. */
    enum tbl_reach reach = redirected(sc, o) ? TBL_REACH_REDIRECT
                                             : TBL_REACH_LISTEN;
    char name[TBL_NAME_MAX];
    struct tbl_service s;
    int n;

    if (f->n == 0)
        return 0;
    memset(&s, 0, sizeof(s));
    if (o->policy != NULL)
        s = *o->policy;
    s.origin = TBL_ORIGIN_API;
    n = snprintf(name, sizeof(name), "%s/%s:%s%s", sc->ns, sc->name, pname,
                 suffix);
    s.name = name; /* copied by the record */
    if (n < 0 || (size_t)n >= sizeof(name)) {
        SKIP_SVC(o, sc, SKIP_NAME_TOO_LONG,
                 "port \"%.64s\"%s: table name over %d bytes", pname, suffix,
                 TBL_NAME_MAX - 1);
        return 0;
    }
    s.frontends = f->v;
    s.nfrontends = f->n;
    s.backends = be;
    s.nbackends = nbe;
    s.excluded = (struct tbl_excluded *)ex;
    s.nexcluded = nex;
    s.reach = reach;
    s.allow = (struct cidr *)allow;
    s.nallow = nallow;
    s.affinity_timeout_ms = sc->affinity_ms;
    s.proto = sc->proto;
    if (s.proto == TBL_PROTO_UDP) {
        s.udp_idle_timeout_ms = TBL_UDP_IDLE_TIMEOUT_MS;
        s.max_flows = TBL_UDP_MAX_FLOWS;
    }
    if (sc->has_balance)
        s.balance = sc->balance;
    if (sc->has_retries)
        s.retries = sc->retries;
    if (sc->has_send_proxy && s.proto == TBL_PROTO_TCP)
        s.send_proxy = sc->send_proxy;
    if (sc->has_drain_timeout)
        s.drain_timeout_ms = sc->drain_timeout_ms;
    if (sc->check.type != TBL_CHECK_NONE)
        s.check = sc->check;
    if (hc && sc->hc_port != 0) {
        s.hc_node_port = sc->hc_port;
    }
    return rec_service(r, &s);
}

/* Scratch space reused across ports and services. */
struct scratch {
    struct eps eps;
    struct fes in, ex, lb;
    struct tbl_backend *be;
    size_t be_cap;
    ep_text *text;           /* be_cap too: names that are addresses */
    struct tbl_excluded *xs; /* be_cap too: the endpoints left out */
    struct cidr *ranges;
    size_t nranges, ranges_cap;
};

/* Room for both endpoint sets of <w->eps> in w->be. */
static int
be_room(struct scratch *w)
{
    size_t need = 2 * w->eps.n + 1;

    if (w->be_cap >= need && w->xs != NULL)
        return 0;
    free(w->be);
    free(w->xs);
    free(w->text);
    w->be = malloc(need * sizeof(*w->be));
    w->xs = malloc(need * sizeof(*w->xs));
    w->text = malloc(need * sizeof(*w->text));
    if (w->be == NULL || w->xs == NULL || w->text == NULL) {
        free(w->be);
        free(w->xs);
        free(w->text);
        w->be = NULL;
        w->xs = NULL;
        w->text = NULL;
        w->be_cap = 0;
        return -1;
    }
    w->be_cap = need;
    return 0;
}

static int source_ranges(const struct svcctx *sc,
                         const struct translate_opts *o, struct scratch *w,
                         int *all_bad);

/* loadBalancerSourceRanges on the proxy path, as kube-proxy applies them:
 * to the LoadBalancer IPs only. Those move from w->ex to w->lb, to be
 * served apart (emit_lb) with the ranges as the service's allow list;
 * when no range of a list that had some is valid, they are not served
 * at all (as on the kernel path). */
static int
split_lb(const struct svcctx *sc, const struct translate_opts *o,
         struct scratch *w, uint16_t port)
{
    const struct ksvc *s = sc->svc;
    size_t i, j, k;
    int all_bad;

    w->lb.n = 0;
    if (s->source_ranges.n == 0 || s->type != KSVC_TYPE_LOAD_BALANCER)
        return 0;
    if (source_ranges(sc, o, w, &all_bad) < 0)
        return -1;
    for (i = 0; i < s->ningress; i++) {
        struct saddr a;
        const char *why;
        const char *ip = s->ingress[i].ip;
        if (s->ingress[i].proxy || ip == NULL
            || parse_ip(ip, port, &a, &why) < 0)
            continue; /* not a frontend: external_fes noted it */
        if (add_fe_addr(&w->lb, &a) < 0)
            return -1;
    }
    for (i = 0, k = 0; i < w->ex.n; i++) {
        for (j = 0; j < w->lb.n; j++)
            if (saddr_cmp(&w->ex.v[i], &w->lb.v[j]) == 0)
                break;
        if (j == w->lb.n)
            w->ex.v[k++] = w->ex.v[i];
    }
    w->ex.n = k;
    if (all_bad)
        w->lb.n = 0;
    return 0;
}

/* The LoadBalancer IPs split_lb() set apart, with <be> (<nbe>), the
 * external endpoint set. */
static int
emit_lb(struct rec *r, const struct svcctx *sc, const char *pname,
        struct tbl_backend *be, size_t nbe, const struct tbl_excluded *ex,
        size_t nex, const struct translate_opts *o, struct scratch *w)
{
    if (w->lb.n == 0)
        return 0;
    return emit(r, sc, pname, "/lb", &w->lb, be, nbe, ex, nex, 0, w->ranges,
                w->nranges, o);
}

/* Edge mode with NodePort backends: the LoadBalancer/external frontends
 * of this port go to every configured node's NodePort. */
static int
edge_to_nodeports(struct rec *r, const struct svcctx *sc,
                  const struct ksvc_port *sp, const struct translate_opts *o,
                  struct scratch *w)
{
    int64_t np = sp->node_port;
    size_t i;

    if (np <= 0 || np > 65535) {
        if (np == 0)
            SKIP_SVC(o, sc, SKIP_NO_NODE_PORT,
                     "port \"%.64s\": no nodePort for the edge to send to",
                     sp->name);
        return 0;
    }
    if (w->be_cap < o->n_edge_nodes) {
        free(w->xs); /* be_room() makes all three again when it needs */
        w->xs = NULL;
        free(w->be);
        free(w->text);
        w->be = malloc(o->n_edge_nodes * sizeof(*w->be));
        w->text = malloc(o->n_edge_nodes * sizeof(*w->text));
        w->be_cap = w->be != NULL && w->text != NULL ? o->n_edge_nodes : 0;
        if (w->be_cap == 0)
            return -1;
    }
    for (i = 0; i < o->n_edge_nodes; i++) {
        struct tbl_backend *b = &w->be[i];
        memset(b, 0, sizeof(*b));
        b->addr = o->edge_nodes[i];
        saddr_set_port(&b->addr, (uint16_t)np);
        b->name = saddr_str(&b->addr, w->text[i], sizeof(w->text[i]));
        b->weight = 1;
        b->flags = TBL_BE_READY | TBL_BE_SERVING;
    }
    if (emit(r, sc, sp->name, "", &w->ex, w->be, o->n_edge_nodes, NULL, 0, 0,
             NULL, 0, o)
        < 0)
        return -1;
    return emit_lb(r, sc, sp->name, w->be, o->n_edge_nodes, NULL, 0, o, w);
}

/* The protocol of a Service port, or -1 when not one Kubernetes has. */
static int
proto_of(const struct ksvc_port *sp, enum tbl_proto *out)
{
    static const char *const api[TBL_PROTO__COUNT] = {
        [TBL_PROTO_TCP] = "TCP",
        [TBL_PROTO_UDP] = "UDP",
        [TBL_PROTO_SCTP] = "SCTP",
    };
    size_t i;

    for (i = 0; i < TBL_PROTO__COUNT; i++)
        if (strcmp(sp->proto, api[i]) == 0) {
            *out = (enum tbl_proto)i;
            return 0;
        }
    return -1;
}

/* spec.loadBalancerSourceRanges into w->ranges. Kubernetes itself takes
 * "10.0.0.1/8" to mean 10.0.0.0/8; so does ferry. A bad entry is noted
 * and left out; if none is left of a list that had some, every source is
 * refused rather than every source allowed. */
static int
source_ranges(const struct svcctx *sc, const struct translate_opts *o,
              struct scratch *w, int *all_bad)
{
    const struct ksvc_strs *l = &sc->svc->source_ranges;
    size_t i;

    w->nranges = 0;
    *all_bad = 0;
    for (i = 0; i < l->n; i++) {
        const char *v = l->v[i], *why = "not a string";
        struct cidr c;
        if (v == NULL || parse_cidr(v, PARSE_CIDR_MASK, &c, &why) < 0) {
            SKIP_SVC(o, sc, SKIP_BAD_ADDRESS,
                     "loadBalancerSourceRanges[%zu] \"%.64s\": %s", i,
                     v != NULL ? v : "", why);
            continue;
        }
        if (grow((void **)&w->ranges, &w->ranges_cap, w->nranges,
                 sizeof(*w->ranges))
            < 0)
            return -1;
        w->ranges[w->nranges++] = c;
    }
    *all_bad = l->n > 0 && w->nranges == 0;
    return 0;
}

/* Copy the addresses of <f> with port 0 (the kernel service keeps ports
 * apart from addresses). */
static void
strip_ports(struct fes *f)
{
    size_t i;

    for (i = 0; i < f->n; i++)
        saddr_set_port(&f->v[i], 0);
}

/* Count a Service port as kube-proxy counts ports with no local
 * endpoints: it has an endpoint it could use (ready, or serving and
 * terminating), a Local policy for internal traffic, or for external
 * traffic with <ext_local> (it has external addresses), and no such
 * endpoint on this node. */
static void
count_no_local(const struct eps *all, int itp_local, int ext_local,
               const struct translate_opts *o)
{
    int any = 0, local = 0;
    size_t i;

    if (o->stats == NULL || (!itp_local && !ext_local))
        return;
    for (i = 0; i < all->n; i++) {
        uint32_t f = all->v[i].flags;
        int usable = (f & TBL_BE_READY)
                     || (f & SERVING_TERMINATING) == SERVING_TERMINATING;
        any |= usable;
        local |= usable && (f & TBL_BE_LOCAL);
    }
    if (!any || local)
        return;
    if (itp_local)
        o->stats->no_local_internal++;
    if (ext_local)
        o->stats->no_local_external++;
}

/* One Service port for the kernel dataplane. */
static int
kernel_port(struct rec *r, const struct svcctx *sc, const struct ksvc_port *sp,
            enum tbl_proto proto, uint16_t port, int redirect,
            const struct translate_opts *o, struct scratch *w)
{
    const char *pname = sp->name;
    int64_t np = sp->node_port;
    char name[TBL_NAME_MAX];
    struct tbl_ksvc k;
    size_t n1, n2 = 0, x1 = 0, x2 = 0;
    int n, all_bad;

    memset(&k, 0, sizeof(k));
    n = pname[0] != '\0'
            ? snprintf(name, sizeof(name), "%s/%s:%s", sc->ns, sc->name, pname)
            : snprintf(name, sizeof(name), "%s/%s:%u", sc->ns, sc->name,
                       (unsigned)port);
    k.name = name; /* copied by the record */
    if (n < 0 || (size_t)n >= sizeof(name)) {
        SKIP_SVC(o, sc, SKIP_NAME_TOO_LONG,
                 "port \"%.64s\": name over %d bytes", pname,
                 TBL_NAME_MAX - 1);
        return 0;
    }
    k.proto = proto;
    k.port = port;
    w->in.n = w->ex.n = w->lb.n = 0;
    if (internal_fes(sc, 0, o, &w->in) < 0
        || add_api_fes(sc, o, &w->ex, &sc->svc->external_ips, 0, "externalIPs")
               < 0
        || add_lb_fes(sc, o, &w->lb, 0) < 0)
        return -1;
    strip_ports(&w->in);
    if (sp->has_node_port && !(np > 0 && np <= 65535))
        SKIP_SVC(o, sc, SKIP_BAD_PORT,
                 "port \"%.64s\": nodePort %lld not in 1-65535", pname,
                 (long long)np);
    else if (np > 0)
        k.node_port = (uint16_t)np;
    if (source_ranges(sc, o, w, &all_bad) < 0)
        return -1;
    if (all_bad)
        w->lb.n = 0; /* no range left: serve no LoadBalancer IP at all */
    if (redirect)
        w->eps.n = 0; /* the proxy has them */
    else if (collect_eps(sc, pname, sp->proto, AF_UNSPEC, o, &w->eps) < 0)
        return -1;
    if (be_room(w) < 0)
        return -1;
    n1 = select_set(&w->eps, sc->itp_local, o, w->be, w->text, w->xs, &x1);
    k.external_local =
        sc->etp_local && (k.node_port || w->ex.n > 0 || w->lb.n > 0);
    if (!redirect) /* else counted with the proxy's service */
        count_no_local(&w->eps, sc->itp_local, k.external_local, o);
    if (k.external_local)
        n2 = select_set(&w->eps, 1, o, w->be + n1, w->text + n1, w->xs + x1,
                        &x2);
    k.cluster_ips = w->in.v;
    k.ncluster_ips = w->in.n;
    k.external_ips = w->ex.v;
    k.nexternal_ips = w->ex.n;
    k.lb_ips = w->lb.v;
    k.nlb_ips = w->lb.n;
    k.source_ranges = w->ranges;
    k.nsource_ranges = w->nranges;
    k.affinity_s = redirect ? 0 : sc->affinity_ms / 1000;
    k.check = redirect ? (struct tbl_check){0} : sc->check;
    /* A Service with ClientIP affinity is redirected to a port of its
     * own, which worker 0 alone serves (TBL_REDIRECT_AFFINITY). */
    k.redirect = !redirect            ? 0
                 : sc->affinity_ms > 0 ? TBL_REDIRECT_AFFINITY
                                       : TBL_REDIRECT_PLAIN;
    k.cluster_eps = w->be;
    k.ncluster_eps = n1;
    k.local_eps = w->be + n1;
    k.nlocal_eps = n2;
    k.cluster_excluded = w->xs;
    k.ncluster_excluded = x1;
    k.local_excluded = w->xs + x1;
    k.nlocal_excluded = x2;
    if (k.external_local && sc->hc_port != 0) {
        k.hc_node_port = sc->hc_port;
    }
    if (rec_ksvc(r, &k) < 0)
        return -1;
    if (o->stats != NULL)
        o->stats->kernel++;
    return 0;
}

/* The kernel's side of a redirected port: its addresses, sent to the
 * proxy (which has its endpoints). */
static int
redirect_port(struct rec *r, const struct svcctx *sc,
              const struct ksvc_port *sp, uint16_t port,
              const struct translate_opts *o, struct scratch *w)
{
    if (!redirected(sc, o))
        return 0;
    return kernel_port(r, sc, sp, TBL_PROTO_TCP, port, 1, o, w);
}

static int
do_port(struct rec *r, const struct svcctx *svc_sc, const struct ksvc_port *sp,
        const struct translate_opts *o, struct scratch *w)
{
    struct svcctx port_sc = *svc_sc;
    const struct svcctx *sc = &port_sc;
    const char *pname = sp->name;
    int64_t port = sp->port;
    int ext_local, int_local = sc->itp_local;
    enum tbl_proto proto;
    size_t n1, n2, x1 = 0, x2 = 0;

    if (proto_of(sp, &proto) < 0) {
        SKIP_SVC(o, sc, SKIP_BAD_PROTOCOL, "port \"%.64s\": protocol \"%.32s\"",
                 pname, sp->proto);
        if (o->stats != NULL)
            o->stats->ports_skipped++;
        return 0;
    }
    if (!sp->port_is_int || port <= 0 || port > 65535) {
        if (sp->port_is_int)
            SKIP_SVC(o, sc, SKIP_BAD_PORT,
                     "port \"%.64s\": %lld not in "
                     "1-65535",
                     pname, (long long)port);
        else
            SKIP_SVC(o, sc, SKIP_BAD_PORT, "port \"%.64s\": no number", pname);
        if (o->stats != NULL)
            o->stats->ports_skipped++;
        return 0;
    }
    if (sc->kernel)
        return kernel_port(r, sc, sp, proto, (uint16_t)port, 0, o, w);
    port_sc.proto = proto;
    /* The proxy listens for UDP, but takes no UDP the kernel redirects
     * (its dispatch listener is TCP). */
    if (proto == TBL_PROTO_SCTP
        || (proto == TBL_PROTO_UDP && o->kernel && !o->edge)) {
        SKIP_SVC(o, sc, SKIP_UNSUPPORTED_PROTOCOL,
                 proto == TBL_PROTO_SCTP
                     ? "port \"%.64s\": the proxy serves no %s (the "
                       "nftables dataplane does)"
                     : "port \"%.64s\": the proxy serves %s only where it "
                       "listens (node.dataplane: proxy), not redirected "
                       "(the nftables dataplane serves it without the "
                       "annotation)",
                 pname, sp->proto);
        if (o->stats != NULL)
            o->stats->ports_skipped++;
        return 0;
    }
    w->in.n = w->ex.n = w->lb.n = 0;
    if ((!o->edge && internal_fes(sc, (uint16_t)port, o, &w->in) < 0)
        || external_fes(sc, sp, o, &w->ex) < 0
        || collect_eps(sc, pname, sp->proto, sc->family, o, &w->eps) < 0)
        return -1;
    if (split_lb(sc, o, w, (uint16_t)port) < 0)
        return -1;
    if (o->edge && o->n_edge_nodes > 0)
        return edge_to_nodeports(r, sc, sp, o, w);
    ext_local = sc->etp_local && (w->ex.n > 0 || w->lb.n > 0);
    if (be_room(w) < 0)
        return -1;
    count_no_local(&w->eps, int_local, ext_local, o);
    n1 = select_set(&w->eps, int_local, o, w->be, w->text, w->xs, &x1);
    if ((w->ex.n == 0 && w->lb.n == 0) || ext_local == int_local) {
        /* One endpoint set serves all: one service, all frontends. */
        size_t k;
        for (k = 0; k < w->ex.n; k++)
            if (add_fe_addr(&w->in, &w->ex.v[k]) < 0)
                return -1;
        if (emit(r, sc, pname, "", &w->in, w->be, n1, w->xs, x1, ext_local,
                 NULL, 0, o)
                < 0
            || emit_lb(r, sc, pname, w->be, n1, w->xs, x1, o, w) < 0)
            return -1;
        return redirect_port(r, sc, sp, (uint16_t)port, o, w);
    }
    n2 = select_set(&w->eps, ext_local, o, w->be + n1, w->text + n1, w->xs + x1,
                    &x2);
    if (emit(r, sc, pname, "", &w->in, w->be, n1, w->xs, x1, 0, NULL, 0, o)
            < 0
        || emit(r, sc, pname, "/external", &w->ex, w->be + n1, n2, w->xs + x1,
                x2, 1, NULL, 0, o)
               < 0
        || emit_lb(r, sc, pname, w->be + n1, n2, w->xs + x1, x2, o, w) < 0)
        return -1;
    return redirect_port(r, sc, sp, (uint16_t)port, o, w);
}

/* Why kube-proxy would not serve <svc> (*why says it in words), or -1
 * to serve it. */
static int
service_skip(const struct ksvc *svc, const struct translate_opts *o,
             const char **why)
{
    const char *cip = svc->cluster_ip;
    const char *pn = svc->proxy_name;

    *why = "";
    if (!svc->has_spec) {
        *why = "no spec";
        return SKIP_MALFORMED;
    }
    if (svc->type == KSVC_TYPE_EXTERNAL_NAME) {
        *why = "type ExternalName";
        return SKIP_EXTERNAL_NAME;
    }
    if (cip == NULL || cip[0] == '\0' || strcmp(cip, "None") == 0) {
        *why = "no clusterIP (headless)";
        return SKIP_HEADLESS;
    }
    if (svc->headless) {
        *why = "label " TRANSLATE_LABEL_HEADLESS;
        return SKIP_HEADLESS;
    }
    if ((o->service_proxy_name == NULL && pn != NULL)
        || (o->service_proxy_name != NULL
            && !str_eq(pn, o->service_proxy_name))) {
        *why = "label " TRANSLATE_LABEL_PROXY_NAME " names another proxy";
        return SKIP_OTHER_PROXY;
    }
    if (!svc->ports_ok) {
        *why = "spec.ports is not a list";
        return SKIP_MALFORMED;
    }
    return -1;
}

/* Index of <v> in the NULL-ended <names>, or -1. */
static int
name_index(const char *const *names, const char *v)
{
    int i;

    for (i = 0; names[i] != NULL; i++)
        if (strcmp(names[i], v) == 0)
            return i;
    return -1;
}

/* "tcp" or "http:/path" into <c>, with the policy's timings (or the
 * config's defaults for a health check). Returns 0 or -1. */
static int
parse_check(const char *v, const struct translate_opts *o,
            struct tbl_check *c)
{
    static const struct tbl_check dflt = {
        TBL_CHECK_TCP, 5000, 2000, 2, 3, 0, 200, 399, "",
    };
    size_t n;

    *c = o->policy != NULL && o->policy->check.interval_ms > 0
             ? o->policy->check
             : dflt;
    c->path = "";
    if (strcmp(v, "tcp") == 0) {
        c->type = TBL_CHECK_TCP;
        return 0;
    }
    if (strncmp(v, "http:/", 6) != 0)
        return -1;
    n = strlen(v + 5);
    if (n >= TBL_CHECK_PATH_MAX)
        return -1;
    for (const char *p = v + 5; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f
            || *p == '"' || *p == '#' || *p == '\\')
            return -1;
    c->type = TBL_CHECK_HTTP;
    c->path = v + 5; /* the cached Service's; the record copies it */
    if (c->status_min == 0) {
        c->status_min = 200;
        c->status_max = 399;
    }
    return 0;
}

/* The ferry.dev/ annotations that choose proxy features. */
static void
annotations(struct svcctx *sc, const char *const *ann,
            const struct translate_opts *o)
{
    const char *v;
    uint64_t n;
    int i;

    if ((v = ann[KSVC_ANN_BALANCE]) != NULL) {
        if ((i = name_index(tbl_balance_names, v)) >= 0) {
            sc->has_balance = 1;
            sc->balance = (enum tbl_balance)i;
        } else {
            SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                     TRANSLATE_ANN_BALANCE " \"%.32s\": not roundrobin, "
                     "leastconn or random", v);
        }
    }
    if ((v = ann[KSVC_ANN_RETRIES]) != NULL) {
        const char *why;
        if (parse_uint(v, 0, TBL_RETRIES_MAX, &n, &why) == 0) {
            sc->has_retries = 1;
            sc->retries = (uint32_t)n;
        } else {
            SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                     TRANSLATE_ANN_RETRIES " \"%.32s\": not 0 to %d", v,
                     TBL_RETRIES_MAX);
        }
    }
    if ((v = ann[KSVC_ANN_SEND_PROXY]) != NULL) {
        if ((i = name_index(tbl_send_proxy_names, v)) >= 0) {
            sc->has_send_proxy = 1;
            sc->send_proxy = (enum tbl_send_proxy)i;
        } else {
            SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                     TRANSLATE_ANN_SEND_PROXY " \"%.32s\": not none, v1 or "
                     "v2", v);
        }
    }
    if ((v = ann[KSVC_ANN_DRAIN_TIMEOUT]) != NULL) {
        const char *why;
        if (parse_duration_ms(v, &n, &why) == 0
            && n <= TBL_DRAIN_TIMEOUT_MAX_MS) {
            sc->has_drain_timeout = 1;
            sc->drain_timeout_ms = (uint32_t)n;
        } else {
            SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                     TRANSLATE_ANN_DRAIN_TIMEOUT " \"%.32s\": not a duration "
                     "from 0 to 24h",
                     v);
        }
    }
    if ((v = ann[KSVC_ANN_HEALTH_CHECK]) != NULL
        && parse_check(v, o, &sc->check) < 0) {
        sc->check.type = TBL_CHECK_NONE;
        SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                 TRANSLATE_ANN_HEALTH_CHECK " \"%.64s\": not tcp or "
                 "http:/path", v);
    }
}

static int
svcctx_init(struct svcctx *sc, const struct ksvc *svc,
            const struct slice_idx *idx, const struct translate_opts *o)
{
    struct saddr a;
    const char *why, *cip, *dp;

    memset(sc, 0, sizeof(*sc));
    sc->svc = svc;
    sc->ns = svc->ns;
    sc->name = svc->name;
    cip = svc->cluster_ips.n > 0 ? svc->cluster_ips.v[0] : NULL;
    if (cip == NULL)
        cip = svc->cluster_ip;
    if (sc->ns == NULL || sc->name == NULL)
        return -1; /* the cache keys Services by them: not here */
    if (cip == NULL || parse_ip(cip, 0, &a, &why) < 0) {
        SKIP_SVC(o, sc, SKIP_BAD_ADDRESS, "clusterIP \"%.64s\": %s",
                 cip ? cip : "", cip ? why : "not a string");
        return -1;
    }
    sc->family = a.u.sa.sa_family;
    /* Without a node (edge mode) Local has no meaning: act as Cluster. */
    sc->itp_local = o->node_name != NULL && svc->itp_local;
    sc->etp_local = o->node_name != NULL && svc->etp_local;
    if (svc->client_ip) {
        int64_t to = svc->affinity_timeout;
        sc->affinity_ms =
            1000u
            * (to > 0 && to <= 86400 ? (uint32_t)to
                                     : TRANSLATE_AFFINITY_DEFAULT_S);
    }
    if (sc->etp_local && svc->type == KSVC_TYPE_LOAD_BALANCER) {
        int64_t hp = svc->hc_node_port;
        if (hp < 0 || hp > 65535)
            SKIP_SVC(o, sc, SKIP_BAD_PORT,
                     "healthCheckNodePort %lld not in 1-65535", (long long)hp);
        else if (strlen(sc->ns) >= TBL_K8S_NAME_MAX
                 || strlen(sc->name) >= TBL_K8S_NAME_MAX)
            SKIP_SVC(o, sc, SKIP_NAME_TOO_LONG,
                     "healthCheckNodePort: namespace or name over %d bytes",
                     TBL_K8S_NAME_MAX - 1);
        else if (hp > 0)
            sc->hc_port = (uint16_t)hp;
    }
    /* The annotation chooses the proxy over the kernel; under
     * node.dataplane proxy nftables is left alone whatever it says. */
    sc->kernel = !o->edge && o->kernel;
    dp = svc->ann[KSVC_ANN_DATAPLANE];
    if (dp != NULL && sc->kernel) {
        if (strcmp(dp, "proxy") == 0)
            sc->kernel = 0;
        else if (strcmp(dp, "nftables") != 0)
            SKIP_SVC(o, sc, SKIP_BAD_ANNOTATION,
                     TRANSLATE_ANN_DATAPLANE " \"%.32s\": not nftables or "
                     "proxy (node default kept)",
                     dp);
    }
    annotations(sc, svc->ann, o);
    find_slices(idx, sc->ns, sc->name, sc);
    return 0;
}

/* A cached Service under its key. */
struct keyed {
    const char *key;
    const struct ksvc *svc;
};

static int
key_cmp(const void *a, const void *b)
{
    return strcmp(((const struct keyed *)a)->key,
                  ((const struct keyed *)b)->key);
}

/* The Services of <c>, sorted by key, so tables come out in a stable
 * order. */
static struct keyed *
sorted_services(const struct kcache *c, size_t *n)
{
    struct keyed *v = malloc((kcache_size(c) + 1) * sizeof(*v));
    struct kcache_iter it = {0, NULL};
    const struct ksvc *s;
    const char *k;

    *n = 0;
    if (v == NULL)
        return NULL;
    while ((s = kcache_next(c, &it, &k)) != NULL) {
        v[*n].key = k;
        v[(*n)++].svc = s;
    }
    qsort(v, *n, sizeof(*v), key_cmp);
    return v;
}

static int
do_service(struct rec *r, const struct ksvc *svc, const struct slice_idx *idx,
           const struct translate_opts *o, struct scratch *w)
{
    const char *why;
    int skip = service_skip(svc, o, &why);
    struct svcctx sc;
    size_t i;

    if (skip >= 0)
        skip_svc(o, svc, (enum skip_reason)skip, "%s", why);
    if (skip >= 0 || svcctx_init(&sc, svc, idx, o) < 0) {
        if (o->stats != NULL)
            o->stats->skipped++;
        return 0;
    }
    if (o->stats != NULL)
        o->stats->services++;
    for (i = 0; i < svc->nports; i++)
        if (do_port(r, &sc, &svc->ports[i], o, w) < 0)
            return -1;
    return 0;
}

/* ---- the memo ----------------------------------------------------------- */

/* FNV-1a over <s>, from <h>. */
static uint64_t
fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* What a record keeps of a slice's cache key, "namespace/name": enough
 * to tell which of its slices a changed key names without reading a
 * slice that may be gone. key_hash(k) of a cache key k. */
static uint64_t
key_hash(const char *key)
{
    return fnv(0xcbf29ce484222325ull, key);
}

static uint64_t
slice_key_hash(const char *ns, const char *name)
{
    return fnv(fnv(fnv(0xcbf29ce484222325ull, ns), "/"), name);
}

/* One Service's record and what it was made from. */
struct memo_ent {
    UT_hash_handle hh;
    uint64_t svc;     /* the stamp of the Service as it was translated */
    /* Of its slices, in index order, in one block that <stamps> owns:
     * their stamps, their cache entries (kcache_iter.ent), their cache
     * keys' slice_key_hash(). */
    uint64_t *stamps;
    const void **ents;
    uint64_t *khash;
    size_t nstamps;
    uint64_t build;   /* the last build that used it */
    /* Where its services and kernel services are in the last table
     * built, and whether each of its services is there (none refused). */
    size_t spos, kpos;
    int clean;
    struct rec rec;
    char key[];
};

/* What translation depends on besides the objects: a change to any of
 * it empties the memo. */
struct memo_opts {
    char *node_name, *node_zone, *service_proxy_name;
    struct saddr *node_addrs, *edge_nodes;
    size_t n_node_addrs, n_edge_nodes;
    struct tbl_service policy;
    int has_policy, edge, kernel, redirect;
};

/* The Services' keys in order, with their cache entries, kept while no
 * Service is added or removed (kcache_members()): a change to one then
 * sorts nothing. */
struct sorted_ent {
    const char *key;
    const void *ent; /* a kcache_iter.ent */
};

struct translate_memo {
    struct memo_ent *map;
    uint64_t build;
    int has_opts;
    struct memo_opts opts;
    struct sorted_ent *sorted;
    size_t nsorted;
    uint64_t sorted_members; /* kcache_members() they were taken at */
    /* The last table built through the memo (translate_build(),
     * translate_patch()) and its counters: what a patch starts from. */
    uint64_t last_serial;    /* 0: none */
    uint64_t slice_members;  /* kcache_members() of the slices then */
    uint64_t slice_entries;  /* kcache_entries() of the slices then */
    size_t nslices;          /* kcache_size() of the slices then */
    struct translate_stats last_st;
    int has_last_st;
};

static void
ent_free(struct memo_ent *m)
{
    rec_clear(&m->rec);
    free(m->stamps); /* and ents, khash: one block */
    free(m);
}

static void
memo_opts_clear(struct memo_opts *mo)
{
    free(mo->node_name);
    free(mo->node_zone);
    free(mo->service_proxy_name);
    free(mo->node_addrs);
    free(mo->edge_nodes);
    if (mo->has_policy)
        tbl_service_release(&mo->policy);
    memset(mo, 0, sizeof(*mo));
}

static void
memo_flush(struct translate_memo *m)
{
    struct memo_ent *e, *tmp;

    HASH_ITER(hh, m->map, e, tmp)
    {
        HASH_DEL(m->map, e);
        ent_free(e);
    }
}

struct translate_memo *
translate_memo_new(void)
{
    return calloc(1, sizeof(struct translate_memo));
}

void
translate_memo_free(struct translate_memo *m)
{
    if (m == NULL)
        return;
    memo_flush(m);
    memo_opts_clear(&m->opts);
    free(m->sorted);
    free(m);
}

size_t
translate_memo_size(const struct translate_memo *m)
{
    return m != NULL ? HASH_COUNT(m->map) : 0;
}

static int
str_same(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static int
opts_same(const struct memo_opts *mo, const struct translate_opts *o)
{
    return str_same(mo->node_name, o->node_name)
           && str_same(mo->node_zone, o->node_zone)
           && str_same(mo->service_proxy_name, o->service_proxy_name)
           && tbl_saddrs_equal(mo->node_addrs, mo->n_node_addrs, o->node_addrs,
                          o->n_node_addrs)
           && tbl_saddrs_equal(mo->edge_nodes, mo->n_edge_nodes, o->edge_nodes,
                          o->n_edge_nodes)
           && mo->has_policy == (o->policy != NULL)
           && (o->policy == NULL || tbl_service_equal(&mo->policy, o->policy))
           && mo->edge == o->edge && mo->kernel == o->kernel
           && mo->redirect == o->redirect;
}

static char *
dup_or_null(const char *v, int *oom)
{
    char *c = v != NULL ? strdup(v) : NULL;

    *oom |= v != NULL && c == NULL;
    return c;
}

static struct saddr *
dup_addrs(const struct saddr *v, size_t n, int *oom)
{
    struct saddr *c = n > 0 ? malloc(n * sizeof(*c)) : NULL;

    if (n > 0 && c == NULL)
        *oom = 1;
    else if (n > 0)
        memcpy(c, v, n * sizeof(*c));
    return c;
}

static int
sorted_ent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sorted_ent *)a)->key,
                  ((const struct sorted_ent *)b)->key);
}

/* sorted_services() through <m>: the order of the last build is taken
 * again while the set of Services is the same, each entry read for its
 * object now. */
static struct keyed *
sorted_memo(struct translate_memo *m, const struct kcache *c, size_t *n)
{
    struct keyed *v = malloc((kcache_size(c) + 1) * sizeof(*v));
    struct kcache_iter it = {0, NULL};
    size_t i;

    *n = 0;
    if (v == NULL)
        return NULL;
    if (m->sorted == NULL || m->sorted_members != kcache_members(c)
        || m->nsorted != kcache_size(c)) {
        free(m->sorted);
        m->nsorted = 0;
        m->sorted = malloc((kcache_size(c) + 1) * sizeof(*m->sorted));
        if (m->sorted == NULL) {
            free(v);
            return NULL;
        }
        while (kcache_next(c, &it, &m->sorted[m->nsorted].key) != NULL)
            m->sorted[m->nsorted++].ent = it.ent;
        qsort(m->sorted, m->nsorted, sizeof(*m->sorted), sorted_ent_cmp);
        m->sorted_members = kcache_members(c);
    }
    for (i = 0; i < m->nsorted; i++) {
        v[i].key = m->sorted[i].key;
        v[i].svc = kcache_ent_obj(m->sorted[i].ent);
    }
    *n = m->nsorted;
    return v;
}

/* Start a build with <o>: when anything but the objects changed since
 * the last one, forget every record. Returns 0, or -1 when memory runs
 * out (the memo is then empty). */
static int
memo_begin(struct translate_memo *m, const struct translate_opts *o)
{
    struct memo_opts *mo = &m->opts;
    int oom = 0;

    m->build++;
    if (m->has_opts && opts_same(mo, o))
        return 0;
    memo_flush(m);
    memo_opts_clear(mo);
    m->has_opts = 0;
    mo->node_name = dup_or_null(o->node_name, &oom);
    mo->node_zone = dup_or_null(o->node_zone, &oom);
    mo->service_proxy_name = dup_or_null(o->service_proxy_name, &oom);
    mo->node_addrs = dup_addrs(o->node_addrs, o->n_node_addrs, &oom);
    mo->n_node_addrs = o->n_node_addrs;
    mo->edge_nodes = dup_addrs(o->edge_nodes, o->n_edge_nodes, &oom);
    mo->n_edge_nodes = o->n_edge_nodes;
    if (o->policy != NULL && !oom) {
        oom = tbl_service_hold(&mo->policy, o->policy) < 0;
        mo->has_policy = !oom;
    }
    mo->edge = o->edge;
    mo->kernel = o->kernel;
    mo->redirect = o->redirect;
    if (oom) {
        memo_opts_clear(mo);
        return -1;
    }
    m->has_opts = 1;
    return 0;
}

/* Forget the Services the build did not meet: they are gone. */
static void
memo_end(struct translate_memo *m)
{
    struct memo_ent *e, *tmp;

    HASH_ITER(hh, m->map, e, tmp)
    {
        if (e->build != m->build) {
            HASH_DEL(m->map, e);
            ent_free(e);
        }
    }
}

/* Nonzero when <e> was made from <svc> with the slices <sc>. */
static int
ent_fresh(const struct memo_ent *e, const struct ksvc *svc,
          const struct svcctx *sc)
{
    size_t i;

    if (e->svc != svc->stamp || e->nstamps != sc->nslices)
        return 0;
    for (i = 0; i < sc->nslices; i++)
        if (e->stamps[i] != sc->slices[i]->stamp)
            return 0;
    return 1;
}

/* Give back what <*v> has beyond its <n> elements. */
static void
shrink(void **v, size_t *cap, size_t n, size_t size)
{
    void *p;

    if (n == *cap)
        return;
    if (n == 0) {
        free(*v);
        *v = NULL;
        *cap = 0;
        return;
    }
    if ((p = realloc(*v, n * size)) != NULL) {
        *v = p;
        *cap = n;
    }
}

/* Record in <r> what Service <svc> contributes. Returns 0, or -1 when
 * memory runs out. */
static int
record(struct rec *r, const struct ksvc *svc, const struct slice_idx *idx,
       const struct translate_opts *o, struct scratch *w)
{
    struct translate_opts ro = *o;
    struct translate_stats st;
    int lost = 0;

    memset(r, 0, sizeof(*r));
    memset(&st, 0, sizeof(st));
    ro.stats = &st;
    ro.skips = NULL;
    ro.skips_at = o->skips != NULL ? &r->skips : NULL;
    /* A note lost here would stay lost for every build that plays the
     * record after (test_translate_memo.c saw it): memory ran out. */
    ro.notes_lost = &lost;
    if (do_service(r, svc, idx, &ro, w) < 0 || lost)
        return -1;
    r->st.services = st.services;
    r->st.skipped = st.skipped;
    r->st.ports_skipped = st.ports_skipped;
    r->st.kernel = st.kernel;
    r->st.no_local_internal = st.no_local_internal;
    r->st.no_local_external = st.no_local_external;
    /* Kept until the Service changes: no room to spare (a table service
     * is 240 bytes, and the arrays double as they grow). */
    shrink((void **)&r->svcs, &r->svcap, r->nsvcs, sizeof(*r->svcs));
    shrink((void **)&r->ksvcs, &r->kcap, r->nksvcs, sizeof(*r->ksvcs));
    if (r->skips != NULL && skip_set_size(r->skips) == 0) {
        skip_set_free(r->skips);
        r->skips = NULL;
    }
    return 0;
}

/* Where the new record <r> says the same as the old one <old> for a
 * service, keep the old one's arrays: the tables after it then share
 * them with the tables before, and the data plane sees no change. */
static void
keep_unchanged(struct rec *r, const struct rec *old)
{
    size_t i;

    for (i = 0; i < r->nsvcs && i < old->nsvcs; i++) {
        struct tbl_service c;
        if (r->svcs[i].arrays == old->svcs[i].arrays
            || !tbl_service_equal(&r->svcs[i], &old->svcs[i])
            || tbl_service_hold(&c, &old->svcs[i]) < 0)
            continue;
        tbl_service_release(&r->svcs[i]);
        r->svcs[i] = c;
    }
    for (i = 0; i < r->nksvcs && i < old->nksvcs; i++) {
        struct tbl_ksvc c;
        if (r->ksvcs[i].arrays == old->ksvcs[i].arrays
            || !tbl_ksvc_equal(&r->ksvcs[i], &old->ksvcs[i])
            || tbl_ksvc_hold(&c, &old->ksvcs[i]) < 0)
            continue;
        tbl_ksvc_release(&r->ksvcs[i]);
        r->ksvcs[i] = c;
    }
}

/* The memo's record for Service <key>, made again if <svc> or its slices
 * changed since; NULL when memory runs out. */
static struct memo_ent *
memo_rec(struct translate_memo *m, const char *key, const struct ksvc *svc,
         const struct slice_idx *idx, const struct translate_opts *o,
         struct scratch *w)
{
    const char *ns = svc->ns, *name = svc->name;
    struct svcctx sc;
    struct memo_ent *e;
    struct rec r;
    uint64_t *stamps = NULL, *khash = NULL;
    const void **ents = NULL;
    size_t i, klen = strlen(key);

    memset(&sc, 0, sizeof(sc));
    if (ns != NULL && name != NULL)
        find_slices(idx, ns, name, &sc);
    HASH_FIND(hh, m->map, key, klen, e);
    if (e != NULL && ent_fresh(e, svc, &sc)) {
        e->build = m->build;
        return e;
    }
    if (o->stats != NULL)
        o->stats->translated++;
    if (sc.nslices > 0) {
        if ((stamps =
                 malloc(sc.nslices
                        * (sizeof(*stamps) + sizeof(*ents) + sizeof(*khash))))
            == NULL)
            return NULL;
        khash = stamps + sc.nslices;
        ents = (const void **)(void *)(khash + sc.nslices);
    }
    for (i = 0; i < sc.nslices; i++) {
        stamps[i] = sc.slices[i]->stamp;
        ents[i] = sc.slice_ents[i];
        khash[i] = slice_key_hash(sc.slices[i]->ns, sc.slices[i]->name);
    }
    if (record(&r, svc, idx, o, w) < 0) {
        rec_clear(&r);
        free(stamps);
        return NULL;
    }
    if (e == NULL) {
        if ((e = calloc(1, sizeof(*e) + klen + 1)) == NULL) {
            rec_clear(&r);
            free(stamps);
            return NULL;
        }
        memcpy(e->key, key, klen + 1);
        HASH_ADD(hh, m->map, key, klen, e);
    } else {
        keep_unchanged(&r, &e->rec);
        rec_clear(&e->rec);
        free(e->stamps);
    }
    e->rec = r;
    e->svc = svc->stamp;
    e->stamps = stamps;
    e->ents = ents;
    e->khash = khash;
    e->nstamps = sc.nslices;
    e->build = m->build;
    return e;
}

/* Translate Service <svc> (cache key <key>) into <t>, through the memo
 * when there is one. */
static int
do_key(struct table *t, const char *key, const struct ksvc *svc,
       const struct slice_idx *idx, const struct translate_opts *o,
       struct scratch *w)
{
    const char *ns = svc->ns, *name = svc->name;
    struct memo_ent *me;
    struct rec once;
    int rc;

    if (o->memo != NULL) {
        if ((me = memo_rec(o->memo, key, svc, idx, o, w)) == NULL)
            return -1;
        me->spos = t->nservices;
        me->kpos = t->nksvcs;
        rc = play(t, &me->rec, ns, name, o);
        me->clean = t->nservices - me->spos == me->rec.nsvcs;
        return rc;
    }
    if (o->stats != NULL)
        o->stats->translated++;
    rc = record(&once, svc, idx, o, w);
    if (rc == 0)
        rc = play(t, &once, ns, name, o);
    rec_clear(&once);
    return rc;
}

static void
scratch_free(struct scratch *w)
{
    free(w->eps.v);
    free(w->in.v);
    free(w->ex.v);
    free(w->lb.v);
    free(w->ranges);
    free(w->be);
    free(w->xs);
    free(w->text);
}

int
translate_build(const struct kcache *services, const struct kcache *slices,
                const struct translate_opts *o, struct table *out,
                struct err *e)
{
    struct scratch w;
    struct slice_idx idx = {NULL, NULL, 0};
    struct keyed *keys;
    size_t i, n;
    int rc = 0;

    memset(&w, 0, sizeof(w));
    if (o->stats != NULL)
        memset(o->stats, 0, sizeof(*o->stats));
    if (o->memo != NULL && memo_begin(o->memo, o) < 0)
        return err_set(e, "out of memory");
    keys = o->memo != NULL ? sorted_memo(o->memo, services, &n)
                           : sorted_services(services, &n);
    if (index_slices(slices, o, &idx) < 0 || keys == NULL) {
        free(idx.v);
        free(idx.ents);
        free(keys);
        return err_set(e, "out of memory");
    }
    for (i = 0; i < n && rc == 0; i++)
        rc = do_key(out, keys[i].key, keys[i].svc, &idx, o, &w);
    if (o->memo != NULL)
        o->memo->last_serial = 0;
    if (o->memo != NULL && rc == 0) {
        struct translate_memo *m = o->memo;
        memo_end(m);
        m->last_serial = out->serial;
        m->slice_members = kcache_members(slices);
        m->slice_entries = kcache_entries(slices);
        m->nslices = kcache_size(slices);
        m->has_last_st = o->stats != NULL;
        if (o->stats != NULL)
            m->last_st = *o->stats;
    }
    free(keys);
    scratch_free(&w);
    free(idx.v);
    free(idx.ents);
    return rc < 0 ? err_set(e, "out of memory") : 0;
}

/* ---- patching the last table ---------------------------------------------
 *
 * Most changes are one EndpointSlice of one Service: its endpoints, not
 * its addresses. Then the table before, with that Service's services put
 * in their places, is the table a full build would make (the same
 * services in the same order, the same frontends refused), and making it
 * costs the change, not the cluster. translate_patch() does that when it
 * can prove it, and leaves everything else to translate_build(). */

/* Add <me> to <v> (<*n> of them, room for <cap>) once. */
static int
dirty_add(struct memo_ent **v, size_t *n, size_t cap, struct memo_ent *me)
{
    size_t i;

    for (i = 0; i < *n; i++)
        if (v[i] == me)
            return 0;
    if (*n == cap)
        return -1;
    v[(*n)++] = me;
    return 0;
}

/* A changed slice key, as a patch sees it. */
struct dkey {
    uint64_t h;              /* key_hash() of the key */
    const void *ent;         /* its cache entry now; NULL: deleted */
    const struct kslice *sl; /* ... and its slice */
    int fresh;               /* the entry was added since the last table */
    int found;               /* a dirty Service's record held the key */
};

static struct dkey *
dkey_of(struct dkey *d, size_t nd, uint64_t h)
{
    size_t i;

    for (i = 0; i < nd; i++)
        if (d[i].h == h)
            return &d[i];
    return NULL;
}

/* The memo entries of the Services the keys name, and of the Services of
 * the slices they name, into <v>; what each slice key is now into <d>.
 * Returns 0, or -1 when the keys cannot be patched: a Service gone or
 * new, a slice skipped, moved to another Service, or deleted from a
 * record no key names, or the count of slices not explained by the keys
 * (then something changed that they do not tell). */
static int
dirty_ents(struct translate_memo *m, const struct kcache *slices,
           const char *const *svc_keys, size_t nsvc,
           const char *const *slice_keys, size_t nslice, struct dkey *d,
           struct memo_ent **v, size_t *n, size_t cap)
{
    char key[2 * TBL_NAME_MAX];
    struct memo_ent *me;
    size_t i, j, added = 0, removed = 0;

    *n = 0;
    for (i = 0; i < nsvc; i++) {
        HASH_FIND(hh, m->map, svc_keys[i], strlen(svc_keys[i]), me);
        if (me == NULL || dirty_add(v, n, cap, me) < 0)
            return -1;
    }
    for (i = 0; i < nslice; i++) {
        const void *ent = kcache_find_ent(slices, slice_keys[i]);
        const struct kslice *sl = ent != NULL ? kcache_ent_obj(ent) : NULL;
        int n_key;
        memset(&d[i], 0, sizeof(d[i]));
        d[i].h = key_hash(slice_keys[i]);
        d[i].ent = ent;
        d[i].sl = sl;
        if (ent == NULL)
            continue; /* deleted: its Service is among the keys */
        if (sl->skip >= 0 || sl->ns == NULL || sl->service == NULL)
            return -1;
        d[i].fresh = kcache_ent_born(ent) > m->slice_members;
        n_key = snprintf(key, sizeof(key), "%s/%s", sl->ns, sl->service);
        if (n_key < 0 || (size_t)n_key >= sizeof(key))
            return -1;
        HASH_FIND(hh, m->map, key, strlen(key), me);
        if (me == NULL || dirty_add(v, n, cap, me) < 0)
            return -1;
        for (j = 0; !d[i].fresh && j < me->nstamps && me->ents[j] != ent; j++)
            ;
        if (!d[i].fresh && j == me->nstamps)
            return -1; /* an older slice new to its Service: moved */
    }
    /* Only a changed Service's record can hold a changed key. */
    for (i = 0; i < *n; i++)
        for (j = 0; j < v[i]->nstamps; j++) {
            struct dkey *k = dkey_of(d, nslice, v[i]->khash[j]);
            if (k != NULL)
                k->found = 1;
        }
    for (i = 0; i < nslice; i++) {
        if (d[i].ent == NULL && !d[i].found)
            return -1;
        added += d[i].ent != NULL && d[i].fresh;
        removed += d[i].found && (d[i].ent == NULL || d[i].fresh);
    }
    return kcache_size(slices) + removed == m->nslices + added ? 0 : -1;
}

/* Translate <me>'s Service <svc> again into <t> (from table_derive()),
 * with its slices as the changed keys <d> leave them, adjusting <st>.
 * Returns 1 when done, 0 when the change cannot be patched, -1 when
 * memory runs out. */
static int
patch_one(struct translate_memo *m, struct memo_ent *me, const struct ksvc *svc,
          struct dkey *d, size_t nd, const struct translate_opts *o,
          struct translate_stats *st, struct table *t, struct scratch *w)
{
    const struct kslice **cur = NULL;
    const void **ents = NULL;
    struct slice_pair *pv = NULL;
    struct slice_idx one;
    struct memo_ent *again;
    struct err e;
    size_t j, ns = 0, room = me->nstamps + nd;
    size_t nsvcs = me->rec.nsvcs, nksvcs = me->rec.nksvcs;
    int rc = 0;
    __typeof__(me->rec.st) was = me->rec.st;

    if (!me->clean || me->rec.skips != NULL || svc->ns == NULL
        || svc->name == NULL)
        return 0;
    if (room > 0
        && ((pv = malloc(room * sizeof(*pv))) == NULL
            || (cur = malloc(room * sizeof(*cur))) == NULL
            || (ents = malloc(room * sizeof(*ents))) == NULL)) {
        rc = -1;
        goto out;
    }
    /* Its slices: those no key names (untouched, so still there), those
     * changed in place, and those new to the cache that name it. A key
     * deleted, or deleted and added again, drops the entry held. */
    for (j = 0; j < me->nstamps; j++) {
        const struct dkey *k = dkey_of(d, nd, me->khash[j]);
        if (k == NULL || (k->ent != NULL && !k->fresh)) {
            const void *ent = k != NULL ? k->ent : me->ents[j];
            pv[ns].ent = ent;
            pv[ns].s = kcache_ent_obj(ent);
            ns++;
        }
    }
    for (j = 0; j < nd; j++)
        if (d[j].ent != NULL && d[j].fresh
            && strcmp(d[j].sl->ns, svc->ns) == 0
            && strcmp(d[j].sl->service, svc->name) == 0) {
            pv[ns].ent = d[j].ent;
            pv[ns++].s = d[j].sl;
        }
    if (ns > 1)
        qsort(pv, ns, sizeof(*pv), pair_cmp); /* one Service: by name */
    for (j = 0; j < ns; j++) {
        const struct kslice *sl = pv[j].s;
        if (sl->skip >= 0 || sl->ns == NULL || sl->service == NULL
            || strcmp(sl->ns, svc->ns) != 0
            || strcmp(sl->service, svc->name) != 0)
            goto out; /* a slice that left: the index is stale */
        cur[j] = sl;
        ents[j] = pv[j].ent;
    }
    one.v = cur;
    one.ents = ents;
    one.n = ns;
    again = memo_rec(m, me->key, svc, &one, o, w);
    if (again == NULL) {
        rc = -1;
        goto out;
    }
    if (again != me || me->rec.nsvcs != nsvcs || me->rec.nksvcs != nksvcs
        || me->rec.skips != NULL)
        goto out;
    for (j = 0; j < nsvcs; j++) {
        const struct tbl_service *s = &me->rec.svcs[j];
        if (table_service(t, me->spos + j)->arrays == s->arrays)
            continue;
        err_clear(&e);
        if (table_replace_service(t, me->spos + j, s, &e) < 0) {
            rc = strcmp(e.msg, "out of memory") == 0 ? -1 : 0;
            goto out;
        }
    }
    for (j = 0; j < nksvcs; j++) {
        const struct tbl_ksvc *k = &me->rec.ksvcs[j];
        if (table_ksvc(t, me->kpos + j)->arrays == k->arrays)
            continue;
        err_clear(&e);
        if (table_replace_ksvc(t, me->kpos + j, k, &e) < 0) {
            rc = strcmp(e.msg, "out of memory") == 0 ? -1 : 0;
            goto out;
        }
    }
    st->services += me->rec.st.services - was.services;
    st->skipped += me->rec.st.skipped - was.skipped;
    st->ports_skipped += me->rec.st.ports_skipped - was.ports_skipped;
    st->kernel += me->rec.st.kernel - was.kernel;
    st->no_local_internal += me->rec.st.no_local_internal
                             - was.no_local_internal;
    st->no_local_external += me->rec.st.no_local_external
                             - was.no_local_external;
    rc = 1;
out:
    free(pv);
    free(cur);
    free(ents);
    return rc;
}

int
translate_patch(const struct kcache *services, const struct kcache *slices,
                const struct translate_opts *o, const struct table *prev,
                const char *const *svc_keys, size_t nsvc,
                const char *const *slice_keys, size_t nslice,
                struct table **out, struct err *e)
{
    struct translate_memo *m = o->memo;
    struct memo_ent **dirty = NULL;
    struct dkey *dk = NULL;
    struct translate_opts ro = *o;
    struct translate_stats st;
    struct scratch w;
    struct table *t = NULL;
    size_t i, n, cap = nsvc + nslice;
    int rc = 0;

    *out = NULL;
    /* Without o->skips a record would not keep its notes, and the memo
     * would lose them for the builds after. */
    if (m == NULL || o->skips == NULL || prev == NULL || !m->has_opts
        || m->last_serial == 0
        || prev->serial != m->last_serial || !opts_same(&m->opts, o)
        || (o->stats != NULL && !m->has_last_st) || m->sorted == NULL
        || m->sorted_members != kcache_members(services)
        || m->nsorted != kcache_size(services)
        || m->slice_entries != kcache_entries(slices) || cap == 0
        /* Beyond this many, a full build is about as cheap. */
        || cap > 64 + m->nsorted / 16)
        return 0;
    if ((dirty = malloc(cap * sizeof(*dirty))) == NULL
        || (nslice > 0 && (dk = malloc(nslice * sizeof(*dk))) == NULL)) {
        free(dirty);
        return err_set(e, "out of memory");
    }
    if (dirty_ents(m, slices, svc_keys, nsvc, slice_keys, nslice, dk, dirty,
                   &n, cap)
        < 0) {
        free(dirty);
        free(dk);
        return 0;
    }
    if ((t = table_derive(prev)) == NULL) {
        free(dirty);
        free(dk);
        return err_set(e, "out of memory");
    }
    memset(&w, 0, sizeof(w));
    st = m->last_st;
    st.translated = 0;
    ro.stats = o->stats != NULL ? &st : NULL;
    /* From here the records change: until the table is whole, no patch
     * may start from the table before. */
    m->last_serial = 0;
    for (i = 0; i < n && rc >= 0; i++) {
        const struct ksvc *svc = kcache_find(services, dirty[i]->key);
        rc = svc != NULL
                 ? patch_one(m, dirty[i], svc, dk, nslice, &ro, &st, t, &w)
                 : 0;
        if (rc == 0)
            break;
    }
    scratch_free(&w);
    free(dirty);
    free(dk);
    if (rc <= 0) {
        table_unref(t);
        return rc < 0 ? err_set(e, "out of memory") : 0;
    }
    m->last_serial = t->serial;
    /* The slices the next patch finds new are those added after now. */
    m->slice_members = kcache_members(slices);
    m->nslices = kcache_size(slices);
    if (o->stats != NULL) {
        m->last_st = st;
        *o->stats = st;
    }
    *out = t;
    return 1;
}

void
translate_memo_adopt(struct translate_memo *m, const struct table *t)
{
    if (m != NULL && t != NULL && m->last_serial != 0)
        m->last_serial = t->serial;
}
