#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <linux/netfilter.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ctclean.h"
#include "ipcount.h"
#include "log.h"
#include "nft.h"
#include "nftgen.h"
#include "nftrules.h"
#include "nftsys.h"
#include "smap.h"

#define LOG_ERR_MAX 4000 /* bytes of nftables' error text logged */

/* ---------------------------------------------------------------- model */

static const char *const proto_names[NFT_PROTO__COUNT] = {"tcp", "udp", "sctp"};

const char *
nft_proto_name(enum nft_proto p)
{
    return (unsigned)p < NFT_PROTO__COUNT ? proto_names[p] : "?";
}

int
nft_proto_parse(const char *s, enum nft_proto *out)
{
    int i;

    for (i = 0; i < NFT_PROTO__COUNT; i++) {
        if (strcasecmp(s, proto_names[i]) == 0) {
            *out = (enum nft_proto)i;
            return 0;
        }
    }
    return -1;
}

int
nft_cidr_parse(const char *s, struct cidr *out, const char **why)
{
    return parse_cidr(s, 0, out, why);
}

/* "namespace/name:port": names of nft objects are built from it, so only
 * characters nft takes in a name, one '/', one ':' after it. */
static int
id_check(const char *id, struct err *e)
{
    const char *slash, *colon, *p;
    size_t len = id != NULL ? strnlen(id, NFT_ID_MAX) : 0;

    if (len == 0 || len >= NFT_ID_MAX)
        return err_set(e, "service id must be 1 to %d bytes", NFT_ID_MAX - 1);
    slash = strchr(id, '/');
    colon = slash ? strchr(slash, ':') : NULL;
    if (slash == NULL || slash == id || colon == NULL || colon == slash + 1
        || strchr(slash + 1, '/') != NULL || strchr(colon + 1, ':') != NULL)
        return err_set(e, "service id \"%.*s\" is not namespace/name:port",
                       (int)len, id);
    for (p = id; *p; p++) {
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                 || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'
                 || *p == '_' || p == slash || p == colon;

        if (!ok)
            return err_set(e,
                           "service id has a character nft names refuse "
                           "(0x%02x)",
                           (unsigned char)*p);
    }
    return 0;
}

static int
ip_check(const struct saddr *a, const char *what, struct err *e)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};

    if (a->u.sa.sa_family == AF_INET)
        return 0;
    if (a->u.sa.sa_family != AF_INET6)
        return err_set(e, "%s: not an IPv4 or IPv6 address", what);
    if (memcmp(&a->u.in6.sin6_addr, mapped, 12) == 0)
        return err_set(e, "%s: IPv4-mapped IPv6 address", what);
    return 0;
}

/* Service addresses and endpoints must be unicast addresses of a network:
 * a hostile or mistaken object naming 0.0.0.0, loopback, multicast or the
 * broadcast address would have the node rewrite its own local traffic (a
 * Service "on" 127.0.0.1:80 catches what the node sends to itself). */
static int
ip_servable(const struct saddr *a, const char *what, struct err *e)
{
    if (a->u.sa.sa_family == AF_INET) {
        uint32_t v = ntohl(a->u.in.sin_addr.s_addr);
        if (v == 0 || (v >> 24) == 127 || (v >> 28) == 0xe
            || v == 0xffffffffu)
            return err_set(e,
                           "%s: an unspecified, loopback, multicast or "
                           "broadcast address",
                           what);
        return 0;
    }
    if (IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr)
        || IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr)
        || IN6_IS_ADDR_MULTICAST(&a->u.in6.sin6_addr))
        return err_set(e,
                       "%s: an unspecified, loopback or multicast address",
                       what);
    return 0;
}

static int
ips_check(const struct saddr *a, size_t n, const char *what, struct err *e)
{
    size_t i;

    if (n > NFT_IPS_MAX)
        return err_set(e, "%s: %zu addresses, at most %d", what, n,
                       NFT_IPS_MAX);
    if (n > 0 && a == NULL)
        return err_set(e, "%s: no array", what);
    for (i = 0; i < n; i++)
        if (ip_check(&a[i], what, e) < 0 || ip_servable(&a[i], what, e) < 0)
            return -1;
    return 0;
}

static int
eps_check(const struct nft_ep *v, size_t n, int affinity, const char *what,
          struct err *e)
{
    uint64_t total = 0;
    size_t i, max = affinity ? NFT_AFF_EPS_MAX : NFT_EPS_MAX;

    if (n > max)
        return err_set(e, "%s: %zu endpoints, at most %zu%s", what, n, max,
                       affinity ? " with sessionAffinity" : "");
    if (n > 0 && v == NULL)
        return err_set(e, "%s: no array", what);
    for (i = 0; i < n; i++) {
        if (ip_check(&v[i].addr, what, e) < 0
            || ip_servable(&v[i].addr, what, e) < 0)
            return -1;
        if (saddr_port(&v[i].addr) == 0)
            return err_set(e, "%s: endpoint without a port", what);
        if (v[i].weight > NFT_WEIGHT_MAX)
            return err_set(e, "%s: weight %u over %d", what, v[i].weight,
                           NFT_WEIGHT_MAX);
        total += v[i].weight;
    }
    /* Each endpoint that takes flows owns at least one value of the
     * endpoint map's random number (nftgen.h). */
    if (total > NFTGEN_EP_MOD)
        return err_set(e, "%s: weights add up to %llu, over %u", what,
                       (unsigned long long)total, NFTGEN_EP_MOD);
    return 0;
}

static int
cidrs_check(const struct cidr *c, size_t n, size_t max, const char *what,
            struct err *e)
{
    size_t i;

    if (n > max)
        return err_set(e, "%s: %zu ranges, at most %zu", what, n, max);
    if (n > 0 && c == NULL)
        return err_set(e, "%s: no array", what);
    for (i = 0; i < n; i++) {
        unsigned max_pfx = c[i].ip.u.sa.sa_family == AF_INET ? 32 : 128;

        if (ip_check(&c[i].ip, what, e) < 0)
            return -1;
        if (c[i].prefix > max_pfx || !cidr_canonical(&c[i]))
            return err_set(e, "%s: bad prefix /%u", what, c[i].prefix);
    }
    return 0;
}

int
nft_svc_check(const struct nft_svc *s, struct err *e)
{
    if (id_check(s->id, e) < 0)
        return -1;
    if ((unsigned)s->proto >= NFT_PROTO__COUNT)
        return err_set(e, "%s: unknown protocol", s->id);
    if (s->port == 0)
        return err_set(e, "%s: port 0", s->id);
    if (s->redirect_port != 0 && s->proto != NFT_TCP)
        return err_set(e, "%s: only TCP is redirected to the proxy", s->id);
    if (s->affinity_s > NFT_AFFINITY_MAX_S)
        return err_set(e, "%s: affinity timeout %us over %ds", s->id,
                       s->affinity_s, NFT_AFFINITY_MAX_S);
    if (ips_check(s->cluster_ips, s->ncluster_ips, "clusterIPs", e) < 0
        || ips_check(s->external_ips, s->nexternal_ips, "externalIPs", e) < 0
        || ips_check(s->lb_ips, s->nlb_ips, "loadBalancer IPs", e) < 0
        || cidrs_check(s->source_ranges, s->nsource_ranges, NFT_RANGES_MAX,
                       "loadBalancerSourceRanges", e)
               < 0
        || eps_check(s->cluster_eps, s->ncluster_eps, s->affinity_s > 0,
                     "cluster endpoints", e)
               < 0
        || eps_check(s->local_eps, s->nlocal_eps, s->affinity_s > 0,
                     "local endpoints", e)
               < 0) {
        char msg[ERR_MSG_MAX];

        snprintf(msg, sizeof(msg), "%s", e ? e->msg : "");
        return err_set(e, "%s: %s", s->id, msg);
    }
    return 0;
}

int
nft_conf_check(const struct nft_conf *c, struct err *e)
{
    if (c->masq != NFT_MASQ_CIDR && c->masq != NFT_MASQ_ALL
        && c->masq != NFT_MASQ_NONE)
        return err_set(e, "unknown masquerade mode");
    if (c->masq_mark & (c->masq_mark - 1))
        return err_set(e, "masquerade mark 0x%x is not a single bit",
                       c->masq_mark);
    if (cidrs_check(c->cluster_cidrs, c->ncluster_cidrs, NFT_CIDRS_MAX,
                    "cluster CIDRs", e)
            < 0
        || cidrs_check(c->service_cidrs, c->nservice_cidrs, NFT_CIDRS_MAX,
                       "service CIDRs", e)
               < 0)
        return -1;
    return ips_check(c->nodeport_addrs, c->nnodeport_addrs,
                     "NodePort addresses", e);
}

/* ------------------------------------------------------------- services */

/*
 * The engine's copy of a service as put: what it counts in the shared sets
 * and compares with the next put. The endpoint lists are kept for UDP
 * services only, whose flows to an endpoint that goes away are cleaned
 * from conntrack (ctclean.h); for the others the rules generated from
 * them (the entry's group) are all the kernel holds of them, and only
 * the addresses counted in the hairpin sets are kept, 4 bytes each for
 * IPv4 (at 250,000 endpoints the lists took 9 MB).
 */
struct kept {
    struct nft_svc s; /* arrays copied; cluster_eps, local_eps: UDP only */
    uint32_t *hp4;    /* hairpin addresses, network order */
    size_t nhp4;
    struct in6_addr *hp6;
    size_t nhp6;
};

static void
kept_free(struct kept *k)
{
    if (k == NULL)
        return;
    free((char *)k->s.id);
    free(k->s.cluster_ips);
    free(k->s.external_ips);
    free(k->s.lb_ips);
    free(k->s.source_ranges);
    free(k->s.cluster_eps);
    free(k->s.local_eps);
    free(k->hp4);
    free(k->hp6);
    free(k);
}

static void *
dup_array(const void *p, size_t n, size_t size, int *oom)
{
    void *d;

    if (n == 0)
        return NULL;
    d = malloc(n * size);
    if (d == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(d, p, n * size);
    return d;
}

static int
same_array(const void *a, size_t na, const void *b, size_t nb, size_t size)
{
    return na == nb && (na == 0 || memcmp(a, b, na * size) == 0);
}

/* Nonzero when <a> and <b> count and clean up the same (byte for byte: a
 * difference in padding only costs a transaction that changes nothing).
 * What the kernel is given is compared apart, as the entries' groups. */
static int
kept_equal(const struct kept *ka, const struct kept *kb)
{
    const struct nft_svc *a = &ka->s, *b = &kb->s;

    return strcmp(a->id, b->id) == 0 && a->proto == b->proto
           && a->port == b->port && a->node_port == b->node_port
           && a->affinity_s == b->affinity_s
           && a->external_local == b->external_local
           && a->redirect_port == b->redirect_port
           && same_array(a->cluster_ips, a->ncluster_ips, b->cluster_ips,
                         b->ncluster_ips, sizeof(*a->cluster_ips))
           && same_array(a->external_ips, a->nexternal_ips, b->external_ips,
                         b->nexternal_ips, sizeof(*a->external_ips))
           && same_array(a->lb_ips, a->nlb_ips, b->lb_ips, b->nlb_ips,
                         sizeof(*a->lb_ips))
           && same_array(a->source_ranges, a->nsource_ranges, b->source_ranges,
                         b->nsource_ranges, sizeof(*a->source_ranges))
           && same_array(a->cluster_eps, a->ncluster_eps, b->cluster_eps,
                         b->ncluster_eps, sizeof(*a->cluster_eps))
           && same_array(a->local_eps, a->nlocal_eps, b->local_eps,
                         b->nlocal_eps, sizeof(*a->local_eps))
           && same_array(ka->hp4, ka->nhp4, kb->hp4, kb->nhp4,
                         sizeof(*ka->hp4))
           && same_array(ka->hp6, ka->nhp6, kb->hp6, kb->nhp6,
                         sizeof(*ka->hp6));
}

/* The addresses of <s>'s endpoints that take new flows (both lists, an
 * address once per time it is listed) into k->hp4 and k->hp6, but those
 * on another node: a pod reaches itself through its own node, and at
 * 250,000 endpoints every node held 250,000 pairs; none when the engine
 * masquerades nothing or the proxy serves <s>. */
static int
kept_hairpins(struct kept *k, const struct nft_svc *s, enum nft_masq masq)
{
    size_t fill, pass, i, n4 = 0, n6 = 0;

    if (s->redirect_port != 0 || masq == NFT_MASQ_NONE)
        return 0;
    /* Counted first, then filled. */
    for (fill = 0; fill < 2; fill++) {
        if (fill && n4 > 0 && (k->hp4 = malloc(n4 * sizeof(*k->hp4))) == NULL)
            return -1;
        if (fill && n6 > 0 && (k->hp6 = malloc(n6 * sizeof(*k->hp6))) == NULL)
            return -1;
        for (pass = 0; pass < 2; pass++) {
            const struct nft_ep *v = pass ? s->local_eps : s->cluster_eps;
            size_t nv = pass ? s->nlocal_eps : s->ncluster_eps;

            for (i = 0; i < nv; i++) {
                const struct saddr *a = &v[i].addr;

                if (v[i].weight == 0 || v[i].remote)
                    continue;
                if (a->u.sa.sa_family == AF_INET) {
                    if (fill)
                        k->hp4[k->nhp4++] = a->u.in.sin_addr.s_addr;
                    else
                        n4++;
                } else if (fill) {
                    k->hp6[k->nhp6++] = a->u.in6.sin6_addr;
                } else {
                    n6++;
                }
            }
        }
    }
    return 0;
}

static struct kept *
kept_new(const struct nft_svc *s, enum nft_masq masq)
{
    struct kept *k = calloc(1, sizeof(*k));
    struct nft_svc *d;
    int oom = 0, udp = s->proto == NFT_UDP;

    if (k == NULL)
        return NULL;
    d = &k->s;
    *d = *s;
    if ((d->id = strdup(s->id)) == NULL)
        oom = 1;
    d->cluster_ips = dup_array(s->cluster_ips, s->ncluster_ips,
                               sizeof(*s->cluster_ips), &oom);
    d->external_ips = dup_array(s->external_ips, s->nexternal_ips,
                                sizeof(*s->external_ips), &oom);
    d->lb_ips = dup_array(s->lb_ips, s->nlb_ips, sizeof(*s->lb_ips), &oom);
    d->source_ranges = dup_array(s->source_ranges, s->nsource_ranges,
                                 sizeof(*s->source_ranges), &oom);
    d->cluster_eps = dup_array(s->cluster_eps, udp ? s->ncluster_eps : 0,
                               sizeof(*s->cluster_eps), &oom);
    d->ncluster_eps = udp ? s->ncluster_eps : 0;
    d->local_eps = dup_array(s->local_eps, udp ? s->nlocal_eps : 0,
                             sizeof(*s->local_eps), &oom);
    d->nlocal_eps = udp ? s->nlocal_eps : 0;
    if (oom || kept_hairpins(k, s, masq) < 0) {
        kept_free(k);
        return NULL;
    }
    return k;
}

static void
group_free(struct nftgen_group *g)
{
    if (g == NULL)
        return;
    nftgen_group_deinit(g);
    free(g);
}

/* ---------------------------------------------------------------- engine */

/* A shared set of addresses (both families) that holds an address while
 * some service wants it (ipcount.h). */
struct ipset {
    struct ipcount c;
    int pairs; /* the element is "ip . ip" (hairpin), not "ip" */
};

struct entry {
    char *key; /* "id|proto" */
    struct kept *want_svc, *have_svc; /* NULL = absent */
    struct nftgen_group *want, *have; /* NULL = absent */
    int dirty;
};

struct nft {
    struct nft_conf conf;
    struct nft_ctx *ctx;  /* commands */
    struct nft_ctx *jctx; /* listings, JSON */
    struct nftgen_group global;
    struct smap svcs;   /* key -> struct entry */
    struct smap owners; /* destination -> struct entry claiming it */
    struct ipset cips;  /* the ClusterIPs */
    struct ipset hp;    /* the endpoints' hairpin pairs */
    struct entry **dirty;
    size_t ndirty, dirtycap;
    int need_converge;
    size_t verify_at; /* where the next sample of hairpin pairs starts */
    /* [i]: elements the committed services put in global.v[i] (a shared
     * map or set), kept by commit_entry() for the verify. */
    size_t *gcount;
    /* Transactions of text run on the table (run_table()), and what a
     * verify that listed every set found: the kernel's use count of the
     * table then, and this count. */
    unsigned long shape, verified_shape;
    uint32_t verified_use;
    int verified;
    struct nft_stats st;
    struct nftrules_writer *nlw; /* the element writes' socket */
    /* Layout 4 (nftgen.h): the counts with a rule in the pick chains, the
     * pick chains and keyed maps written last (or being written), and
     * per family, protocol and count how many plain services' addresses
     * want that count and how many the kernel holds in its map. A count
     * keeps its rule while either is nonzero, and after, idle, until the
     * pick chains are written again with more than COUNTS_KEPT counts
     * (counts_tidy()). */
    struct nftgen_counts counts;
    struct nftgen_group picks;
    int picks_dirty;
    uint32_t cwant[NFTGEN_KEYS_SLOTS][NFT_PROTO__COUNT][NFTGEN_KEYS_MAX + 1];
    uint32_t chave[NFTGEN_KEYS_SLOTS][NFT_PROTO__COUNT][NFTGEN_KEYS_MAX + 1];
    size_t verify_svc; /* where the next sample of keys starts */
};

static void
entry_key(const char *id, enum nft_proto proto, char *out, size_t len)
{
    snprintf(out, len, "%s|%s", id, nft_proto_name(proto));
}

static struct nft_ctx *
ctx_new(unsigned flags)
{
    struct nft_ctx *c = nft_ctx_new(NFT_CTX_DEFAULT);

    if (c == NULL)
        return NULL;
    nft_ctx_output_set_flags(c, flags);
    if (nft_ctx_buffer_output(c) != 0 || nft_ctx_buffer_error(c) != 0) {
        nft_ctx_free(c);
        return NULL;
    }
    return c;
}

struct nft *
nft_new(const struct nft_conf *c, struct err *e)
{
    struct nft *n;

    if (nft_conf_check(c, e) < 0)
        return NULL;
    n = calloc(1, sizeof(*n));
    if (n == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    n->conf = *c;
    if (n->conf.masq_mark == 0)
        n->conf.masq_mark = 0x4000;
    n->need_converge = 1;
    ipcount_init(&n->cips.c);
    ipcount_init(&n->hp.c);
    n->hp.pairs = 1;
    n->ctx = ctx_new(0);
    n->jctx = ctx_new(NFT_CTX_OUTPUT_JSON);
    if (n->ctx == NULL || n->jctx == NULL) {
        err_set(e, "libnftables: cannot create a context");
        nft_free(n);
        return NULL;
    }
    if ((n->nlw = nftrules_writer_new()) == NULL) {
        err_set(e, "out of memory");
        nft_free(n);
        return NULL;
    }
    if (nftgen_global(&n->conf, &n->global) < 0
        || nftgen_picks(&n->conf, &n->counts, &n->picks) < 0
        || (n->gcount = calloc(n->global.n + 1, sizeof(*n->gcount)))
               == NULL) {
        err_set(e, "out of memory");
        nft_free(n);
        return NULL;
    }
    return n;
}

static void
entry_free(struct entry *en)
{
    if (en->want != en->have)
        group_free(en->want);
    group_free(en->have);
    if (en->want_svc != en->have_svc)
        kept_free(en->want_svc);
    kept_free(en->have_svc);
    free(en->key);
    free(en);
}

void
nft_free(struct nft *n)
{
    size_t i;

    if (n == NULL)
        return;
    for (i = 0; i < n->svcs.cap; i++)
        if (n->svcs.v[i].key)
            entry_free(n->svcs.v[i].val);
    smap_deinit(&n->svcs);
    smap_deinit(&n->owners);
    ipcount_deinit(&n->cips.c);
    ipcount_deinit(&n->hp.c);
    free(n->dirty);
    free(n->gcount);
    nftgen_group_deinit(&n->global);
    nftgen_group_deinit(&n->picks);
    if (n->ctx)
        nft_ctx_free(n->ctx);
    if (n->jctx)
        nft_ctx_free(n->jctx);
    nftrules_writer_free(n->nlw);
    free(n);
}

/* What an element claims: a destination (address, protocol, port), or a
 * NodePort (protocol, port) per family. */
static void
owner_key(const struct nftgen_obj *o, char *out, size_t len)
{
    if (strstr(o->name, "nodeports"))
        snprintf(out, len, "np%c %s", o->name[strlen(o->name) - 1], o->key);
    else
        snprintf(out, len, "%s", o->key);
}

static int
owners_check(struct nft *n, const struct nftgen_group *g,
             const struct entry *me, struct err *e)
{
    char k[256];
    size_t i;

    for (i = 0; i < g->n; i++) {
        const struct entry *o;

        if (g->v[i].kind != NFTGEN_ELEM)
            continue;
        owner_key(&g->v[i], k, sizeof(k));
        o = smap_get(&n->owners, k);
        if (o != NULL && o != me)
            return err_set(e, "%s is already served by %s", g->v[i].key,
                           o->key);
    }
    return 0;
}

static void
owners_set(struct nft *n, const struct nftgen_group *g, struct entry *me,
           int claim)
{
    char k[256];
    size_t i;

    if (g == NULL)
        return;
    for (i = 0; i < g->n; i++) {
        if (g->v[i].kind != NFTGEN_ELEM)
            continue;
        owner_key(&g->v[i], k, sizeof(k));
        if (claim)
            smap_put(&n->owners, k, me); /* no memory: conflict unseen */
        else if (smap_get(&n->owners, k) == me)
            smap_del(&n->owners, k);
    }
}

/* One more (<delta> > 0) or one fewer service wanting <a> in <set>. An
 * IP whose wanted state no longer matches the kernel's is noted for the
 * next transaction. */
static void
ipset_count(struct nft *n, struct ipset *set, const struct saddr *a, int delta)
{
    if (ipcount_add(&set->c, a, delta) < 0)
        n->need_converge = 1;
}

static void
cips_count(struct nft *n, const struct kept *k, int delta)
{
    size_t i;

    if (k == NULL)
        return;
    for (i = 0; i < k->s.ncluster_ips; i++)
        ipset_count(n, &n->cips, &k->s.cluster_ips[i], delta);
}

/* Count the hairpin addresses of <k> in or out of the hairpin sets. */
static void
hp_count(struct nft *n, const struct kept *k, int delta)
{
    size_t i;
    int rc = 0;

    for (i = 0; k != NULL && i < k->nhp4; i++)
        rc |= ipcount_add_key(&n->hp.c, 0, &k->hp4[i], delta);
    for (i = 0; k != NULL && i < k->nhp6; i++)
        rc |= ipcount_add_key(&n->hp.c, 1, &k->hp6[i], delta);
    if (rc < 0)
        n->need_converge = 1;
}

/* Element <a> of <set> added to (<add>) or deleted from the kernel by
 * <t>. */
static void
ipset_put(const struct ipset *set, struct nftgen_txn *t, const struct saddr *a,
          int add)
{
    const char *name = a->u.sa.sa_family == AF_INET ? NFTGEN_CLUSTER_IPS4
                                                    : NFTGEN_CLUSTER_IPS6;

    if (set->pairs)
        nftgen_hairpin(t, a, add);
    else if (add)
        nftgen_add_ip(t, name, a);
    else
        nftgen_del_ip(t, name, a);
}

/* Element <a> of <set> as the kernel keys it: the address (twice for a
 * pair; addresses need no padding). */
static void
ipset_elem(const struct ipset *set, const struct saddr *a,
           struct nftrules_elem *el)
{
    int v4 = a->u.sa.sa_family == AF_INET;
    const void *ip = v4 ? (const void *)&a->u.in.sin_addr
                        : (const void *)&a->u.in6.sin6_addr;
    size_t len = v4 ? 4 : 16;

    if (set->pairs)
        el->set = v4 ? NFTGEN_HAIRPIN4 : NFTGEN_HAIRPIN6;
    else
        el->set = v4 ? NFTGEN_CLUSTER_IPS4 : NFTGEN_CLUSTER_IPS6;
    memcpy(el->key, ip, len);
    el->len = len;
    if (set->pairs) {
        memcpy(el->key + len, ip, len);
        el->len = 2 * len;
    }
}

static int
elem_cmp(const void *pa, const void *pb)
{
    const struct nftrules_elem *a = pa, *b = pb;

    return strcmp(a->set, b->set);
}

/* IPs whose element the next transaction may add or delete. */
static size_t
ipset_touched(const struct nft *n)
{
    return ipcount_ntouched(&n->cips.c) + ipcount_ntouched(&n->hp.c);
}

/* The kernel now holds the wanted elements of <set>: of every IP (<all>,
 * after a convergence), or of the touched ones. */
static void
ipset_commit(struct nft *n, struct ipset *set, int all)
{
    if (ipcount_commit(&set->c, all) < 0)
        n->need_converge = 1;
}

static void
mark_dirty(struct nft *n, struct entry *en)
{
    if (en->dirty)
        return;
    if (n->ndirty == n->dirtycap) {
        size_t ncap = n->dirtycap ? n->dirtycap * 2 : 64;
        struct entry **p = realloc(n->dirty, ncap * sizeof(*p));

        if (p == NULL) {
            /* The entry is still wanted; a convergence writes it. */
            n->need_converge = 1;
            return;
        }
        n->dirty = p;
        n->dirtycap = ncap;
    }
    n->dirty[n->ndirty++] = en;
    en->dirty = 1;
}

/* ---------------------------------------------------- layout 4's counts */

static int
prefixed(const char *name, const char *prefix)
{
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

/* The slot of a KEYS object (nftgen_counts), from its maps' name:
 * "keys4-tcp" 0, "keys6-tcp" 1, "keysn4-tcp" 2, "keysn6-tcp" 3, and the
 * same after "keysl" 4 to 7. */
static int
keys_slot(const struct nftgen_obj *o)
{
    const char *p = o->name + strlen(NFTGEN_KEYS_PREFIX);
    int local = *p == 'l', np;

    p += local;
    np = *p == 'n';
    return 4 * local + 2 * np + (p[np] == '6');
}

static int
has_count(const struct nft *n, int f, enum nft_proto p, uint32_t c)
{
    size_t i;

    for (i = 0; i < n->counts.n[f][p]; i++)
        if (n->counts.v[f][p][i] == c)
            return 1;
    return 0;
}

/* A count whose rule nothing wants nor holds, or NFTGEN_COUNTS_MAX. */
static size_t
idle_count(const struct nft *n, int f, enum nft_proto p)
{
    size_t i;

    for (i = 0; i < n->counts.n[f][p]; i++) {
        uint32_t c = n->counts.v[f][p][i];

        if (n->cwant[f][p][c] == 0 && n->chave[f][p][c] == 0)
            return i;
    }
    return NFTGEN_COUNTS_MAX;
}

/* Nonzero when every count plain group <g> of protocol <p> names has a
 * rule, or one can have it. */
static int
counts_fit(const struct nft *n, const struct nftgen_group *g,
           enum nft_proto p)
{
    size_t i, more[NFTGEN_KEYS_SLOTS] = {0};

    for (i = 0; i < g->n; i++) {
        const struct nftgen_obj *o = &g->v[i];
        int f;

        if (o->kind != NFTGEN_KEYS)
            continue;
        f = keys_slot(o);
        if (o->count > NFTGEN_KEYS_MAX)
            return 0;
        if (!has_count(n, f, p, o->count)
            && (i == 0 || g->v[i - 1].kind != NFTGEN_KEYS
                || g->v[i - 1].count != o->count))
            more[f]++;
    }
    for (i = 0; i < NFTGEN_KEYS_SLOTS; i++)
        if (more[i] > 0 && n->counts.n[i][p] + more[i] > NFTGEN_COUNTS_MAX
            && (more[i] > 1 || idle_count(n, (int)i, p) == NFTGEN_COUNTS_MAX))
            return 0;
    return 1;
}

/* Give count <c> a rule, taking an idle one's slot when all are used
 * (counts_fit() said there is room). */
static void
count_add(struct nft *n, int f, enum nft_proto p, uint32_t c)
{
    uint32_t *v = n->counts.v[f][p];
    size_t *k = &n->counts.n[f][p], i;

    if (has_count(n, f, p, c))
        return;
    if (*k == NFTGEN_COUNTS_MAX) {
        i = idle_count(n, f, p);
        if (i == NFTGEN_COUNTS_MAX)
            return; /* cannot happen after counts_fit() */
        memmove(v + i, v + i + 1, (*k - i - 1) * sizeof(*v));
        (*k)--;
    }
    for (i = *k; i > 0 && v[i - 1] > c; i--)
        v[i] = v[i - 1];
    v[i] = c;
    (*k)++;
    n->picks_dirty = 1;
}

/* The addresses of group <g> counted in (<delta> 1) or out of <cnt>. */
static void
counts_move(struct nft *n,
            uint32_t (*cnt)[NFT_PROTO__COUNT][NFTGEN_KEYS_MAX + 1],
            const struct nftgen_group *g, enum nft_proto p, int delta)
{
    size_t i;

    for (i = 0; g != NULL && i < g->n; i++) {
        const struct nftgen_obj *o = &g->v[i];
        uint32_t *c;

        if (o->kind != NFTGEN_KEYS || o->count > NFTGEN_KEYS_MAX)
            continue;
        c = &cnt[keys_slot(o)][p][o->count];
        if (delta > 0) {
            (*c)++;
            if (cnt == n->cwant)
                count_add(n, keys_slot(o), p, o->count);
        } else if (*c > 0) {
            (*c)--;
        }
    }
}

/* Drop the rules of counts that nothing wants nor holds, the smallest
 * first (a connection's first packet tries the smaller counts before its
 * own: an idle count past its own costs it nothing), until at most
 * COUNTS_KEPT are left. Only when the pick chains are written anyway: a
 * convergence keeps them, so that it writes what the updates before it
 * did, and a restart drops them all.
 *
 * Idle counts are kept because a count coming back would cost a text,
 * and every text that adds a rule makes the kernel check the whole
 * table at its commit (every element of the dispatch maps): 1.8 ms at
 * 10,000 Services, 50 times in 2,000 changes when readiness flips walked
 * 40 Services' counts down from 25 and back, a tenth of ferry's CPU per
 * change. A rolling update moves a Service through a few counts, and
 * back. */
#define COUNTS_KEPT 32

static void
counts_tidy(struct nft *n)
{
    int f, p;
    size_t i, k, drop;

    for (f = 0; f < NFTGEN_KEYS_SLOTS; f++)
        for (p = 0; p < NFT_PROTO__COUNT; p++) {
            uint32_t *v = n->counts.v[f][p];

            drop = n->counts.n[f][p] > COUNTS_KEPT
                       ? n->counts.n[f][p] - COUNTS_KEPT
                       : 0;
            for (i = k = 0; i < n->counts.n[f][p]; i++) {
                if (drop > 0 && n->cwant[f][p][v[i]] == 0
                    && n->chave[f][p][v[i]] == 0) {
                    drop--;
                    continue;
                }
                v[k++] = v[i];
            }
            n->counts.n[f][p] = k;
        }
}

/* The pick chains and keyed maps for the counts now into <g> (empty
 * before). Returns 0 or -1 (out of memory). */
static int
picks_make(struct nft *n, struct nftgen_group *g)
{
    nftgen_group_init(g);
    if (nftgen_picks(&n->conf, &n->counts, g) < 0) {
        nftgen_group_deinit(g);
        return -1;
    }
    return 0;
}

int
nft_svc_put(struct nft *n, const struct nft_svc *s, struct err *e)
{
    char key[NFT_ID_MAX + 16];
    struct nftgen_group *g;
    struct kept *copy;
    struct entry *en;

    if (nft_svc_check(s, e) < 0)
        return -1;
    entry_key(s->id, s->proto, key, sizeof(key));
    en = smap_get(&n->svcs, key);
    if ((en == NULL || en->want == NULL) && n->st.services >= NFT_SVCS_MAX)
        return err_set(e, "%s: more than %d kernel services", s->id,
                       NFT_SVCS_MAX);
    g = calloc(1, sizeof(*g));
    copy = kept_new(s, n->conf.masq);
    if (g != NULL && copy != NULL) {
        int plain = nftgen_service_keys(&n->conf, s, g);

        if (plain == 1 && !counts_fit(n, g, s->proto)) {
            nftgen_group_deinit(g);
            plain = 0;
        }
        if (plain == 0 && nftgen_service(&n->conf, s, g) < 0)
            plain = -1;
        if (plain < 0) {
            group_free(g);
            g = NULL;
        }
    }
    if (g == NULL || copy == NULL) {
        group_free(g);
        kept_free(copy);
        return err_set(e, "%s: out of memory", s->id);
    }
    if (owners_check(n, g, en, e) < 0) {
        char msg[ERR_MSG_MAX];

        snprintf(msg, sizeof(msg), "%s", e ? e->msg : "");
        group_free(g);
        kept_free(copy);
        return err_set(e, "%s/%s: %s", s->id, nft_proto_name(s->proto), msg);
    }
    if (en != NULL && en->want != NULL && nftgen_group_equal(en->want, g)
        && kept_equal(en->want_svc, copy)) {
        /* Nothing changes: no transaction, no element counted twice. */
        group_free(g);
        kept_free(copy);
        return 0;
    }
    if (en == NULL) {
        en = calloc(1, sizeof(*en));
        if (en == NULL || (en->key = strdup(key)) == NULL
            || smap_put(&n->svcs, key, en) < 0) {
            if (en)
                free(en->key);
            free(en);
            group_free(g);
            kept_free(copy);
            return err_set(e, "%s: out of memory", s->id);
        }
    }
    if (en->want == NULL)
        n->st.services++;
    owners_set(n, en->want, en, 0);
    owners_set(n, g, en, 1);
    counts_move(n, n->cwant, g, s->proto, +1);
    counts_move(n, n->cwant, en->want, s->proto, -1);
    /* The new counts first: an address both want never drops to 0. */
    cips_count(n, copy, +1);
    cips_count(n, en->want_svc, -1);
    hp_count(n, copy, +1);
    hp_count(n, en->want_svc, -1);
    if (en->want != en->have)
        group_free(en->want);
    if (en->want_svc != en->have_svc)
        kept_free(en->want_svc);
    en->want = g;
    en->want_svc = copy;
    mark_dirty(n, en);
    return 0;
}

int
nft_svc_del(struct nft *n, const char *id, enum nft_proto proto)
{
    char key[NFT_ID_MAX + 16];
    struct entry *en;

    entry_key(id, proto, key, sizeof(key));
    en = smap_get(&n->svcs, key);
    if (en == NULL || en->want == NULL)
        return -1;
    owners_set(n, en->want, en, 0);
    counts_move(n, n->cwant, en->want, proto, -1);
    cips_count(n, en->want_svc, -1);
    hp_count(n, en->want_svc, -1);
    if (en->want != en->have)
        group_free(en->want);
    if (en->want_svc != en->have_svc)
        kept_free(en->want_svc);
    en->want = NULL;
    en->want_svc = NULL;
    n->st.services--;
    mark_dirty(n, en);
    return 0;
}

int
nft_pending(const struct nft *n)
{
    return n->need_converge || n->ndirty > 0 || ipset_touched(n) > 0;
}

void
nft_resync(struct nft *n)
{
    n->need_converge = 1;
}

void
nft_get_stats(const struct nft *n, struct nft_stats *out)
{
    *out = n->st;
}

/* ------------------------------------------------------------------ I/O */

/* Run <text> as one transaction. On failure <e> holds the first line of
 * nftables' message and the whole of it (capped) is logged. The text goes
 * through a memory file rather than nft_run_cmd_from_buffer(): for a file,
 * nftables' errors name the line and quote it right (for a buffer of
 * several lines, 1.0.6 quotes the first line whatever the error's). */
static int
run(struct nft_ctx *ctx, const char *text, const char *what, struct err *e)
{
    char path[64];
    const char *msg;
    size_t len = strlen(text), off = 0;
    int fd, rc;

    fd = memfd_create("ferry-nft", MFD_CLOEXEC);
    if (fd < 0)
        return err_set(e, "memfd_create: %s", strerror(errno));
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return err_set(e, "writing the %s: %s", what, strerror(errno));
        }
        off += (size_t)w;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    rc = nft_run_cmd_from_filename(ctx, path);
    close(fd);
    msg = nft_ctx_get_error_buffer(ctx);
    if (rc == 0)
        return 0;
    if (msg == NULL || *msg == '\0')
        msg = "no message";
    log_error("nftables refused the %s: %.*s", what, LOG_ERR_MAX, msg);
    return err_set(e, "nftables refused the %s: %.*s", what,
                   (int)strcspn(msg, "\n"), msg);
}

/* libnftables keeps what a listing fetched (every set of the table: 10,000
 * endpoint maps at 10,000 Services) in its context until the next
 * command, which here comes only with the next verify: a fresh context
 * frees it now (when one cannot be had, the old one stays). */
static void
list_release(struct nft *n)
{
    struct nft_ctx *c = ctx_new(NFT_CTX_OUTPUT_JSON);

    if (c == NULL)
        return;
    nft_ctx_free(n->jctx);
    n->jctx = c;
}

/* run() for a transaction on the table: what it creates or deletes may
 * change the table's count of chains and sets (nft_verify() reads it). */
static int
run_table(struct nft *n, const char *text, const char *what, struct err *e)
{
    n->shape++;
    return run(n->ctx, text, what, e);
}

/* Output of a listing command, or NULL with <e> (the string belongs to
 * the context until the next command). */
static const char *
list(struct nft *n, const char *cmd, int terse, struct err *e)
{
    nft_ctx_output_set_flags(n->jctx, NFT_CTX_OUTPUT_JSON
                                          | (terse ? NFT_CTX_OUTPUT_TERSE : 0));
    if (run(n->jctx, cmd, "listing", e) < 0)
        return NULL;
    return nft_ctx_get_output_buffer(n->jctx);
}

/* ---------------------------------------------------------------- commit */

/* Endpoints of <old> (both lists) that <new> no longer names. */
static void
removed_eps(const struct nft_svc *old, const struct nft_svc *new,
            struct ctclean_match **m, size_t *nm, size_t *cap,
            const struct saddr *dsts, size_t ndsts)
{
    size_t pass, i, j;

    for (pass = 0; pass < 2; pass++) {
        const struct nft_ep *v = pass ? old->local_eps : old->cluster_eps;
        size_t nv = pass ? old->nlocal_eps : old->ncluster_eps;

        for (i = 0; i < nv; i++) {
            int kept = 0;

            for (j = 0; new &&j < new->ncluster_eps && !kept; j++)
                kept = saddr_cmp(&new->cluster_eps[j].addr, &v[i].addr) == 0;
            for (j = 0; new &&j < new->nlocal_eps && !kept; j++)
                kept = saddr_cmp(&new->local_eps[j].addr, &v[i].addr) == 0;
            if (kept)
                continue;
            if (*nm == *cap) {
                size_t ncap = *cap ? *cap * 2 : 16;
                struct ctclean_match *p = realloc(*m, ncap * sizeof(*p));

                if (p == NULL)
                    return;
                *m = p;
                *cap = ncap;
            }
            (*m)[*nm].ep = v[i].addr;
            (*m)[*nm].dsts = dsts;
            (*m)[*nm].ndsts = ndsts;
            (*m)[*nm].node_port = old->node_port;
            (*nm)++;
        }
    }
}

/* The Service's destinations, ports set: what clients sent to. */
static struct saddr *
svc_dsts(const struct nft_svc *s, size_t *n)
{
    size_t total = s->ncluster_ips + s->nexternal_ips + s->nlb_ips, k = 0, i;
    struct saddr *d = calloc(total ? total : 1, sizeof(*d));

    *n = 0;
    if (d == NULL)
        return NULL;
    for (i = 0; i < s->ncluster_ips; i++)
        d[k++] = s->cluster_ips[i];
    for (i = 0; i < s->nexternal_ips; i++)
        d[k++] = s->external_ips[i];
    for (i = 0; i < s->nlb_ips; i++)
        d[k++] = s->lb_ips[i];
    for (i = 0; i < k; i++)
        saddr_set_port(&d[i], s->port);
    *n = k;
    return d;
}

/* The elements group <g> puts in the shared maps and sets, added to
 * (<add>) or taken from n->gcount. */
static void
count_elems(struct nft *n, const struct nftgen_group *g, int add)
{
    size_t i, j;

    for (i = 0; g != NULL && i < g->n; i++) {
        if (g->v[i].kind != NFTGEN_ELEM)
            continue;
        for (j = 0; j < n->global.n; j++) {
            if (n->global.v[j].kind != NFTGEN_SET
                || strcmp(n->global.v[j].name, g->v[i].name) != 0)
                continue;
            if (add)
                n->gcount[j]++;
            else if (n->gcount[j] > 0)
                n->gcount[j]--;
            break;
        }
    }
}

/* The committed state of <en> is now its wanted one. Collects the UDP
 * endpoints that went away into <m>. */
static void
commit_entry(struct nft *n, struct entry *en, struct ctclean_match **m,
             size_t *nm, size_t *cap, struct saddr ***dsts, size_t *ndsts)
{
    const struct nft_svc *old = en->have_svc ? &en->have_svc->s : NULL;

    if (old && old->proto == NFT_UDP && en->have_svc != en->want_svc) {
        size_t nd;
        struct saddr *d = svc_dsts(old, &nd);
        struct saddr **p = realloc(*dsts, (*ndsts + 1) * sizeof(*p));

        if (d != NULL && p != NULL) {
            *dsts = p;
            (*dsts)[(*ndsts)++] = d;
            removed_eps(old, en->want_svc ? &en->want_svc->s : NULL, m, nm,
                        cap, d, nd);
        } else {
            free(d);
            if (p)
                *dsts = p;
        }
    }
    if (en->have != en->want) {
        const struct kept *k = en->want_svc ? en->want_svc : en->have_svc;

        count_elems(n, en->have, 0);
        count_elems(n, en->want, 1);
        if (k != NULL) {
            counts_move(n, n->chave, en->have, k->s.proto, -1);
            counts_move(n, n->chave, en->want, k->s.proto, +1);
        }
        group_free(en->have);
    }
    if (en->have_svc != en->want_svc)
        kept_free(en->have_svc);
    en->have = en->want;
    en->have_svc = en->want_svc;
    en->dirty = 0;
    if (en->want == NULL) {
        smap_del(&n->svcs, en->key);
        entry_free(en);
    }
}

static void
ct_cleanup(struct nft *n, struct ctclean_match *m, size_t nm)
{
    struct err e;
    uint64_t deleted = 0;

    err_clear(&e);
    if (nm == 0)
        return;
    if (ctclean_udp(m, nm, &deleted, &e) < 0)
        log_warn("UDP conntrack cleanup: %s", e.msg);
    n->st.ct_deleted += deleted;
    if (deleted)
        log_debug("UDP conntrack cleanup: %llu entries deleted",
                  (unsigned long long)deleted);
}

/* Commit every entry, or only the dirty ones. */
static void
commit(struct nft *n, int all)
{
    struct ctclean_match *m = NULL;
    struct saddr **dsts = NULL;
    size_t nm = 0, cap = 0, ndsts = 0, i;

    if (all) {
        /* Collect first: committing may delete entries from the map. */
        struct entry **v = calloc(n->svcs.n + 1, sizeof(*v));
        size_t k = 0;

        for (i = 0; v && i < n->svcs.cap; i++)
            if (n->svcs.v[i].key)
                v[k++] = n->svcs.v[i].val;
        for (i = 0; i < k; i++)
            commit_entry(n, v[i], &m, &nm, &cap, &dsts, &ndsts);
        free(v);
    } else {
        for (i = 0; i < n->ndirty; i++)
            commit_entry(n, n->dirty[i], &m, &nm, &cap, &dsts, &ndsts);
    }
    n->ndirty = 0;
    ipset_commit(n, &n->cips, all);
    ipset_commit(n, &n->hp, all);
    n->st.transactions++;
    ct_cleanup(n, m, nm);
    for (i = 0; i < ndsts; i++)
        free(dsts[i]);
    free(dsts);
    free(m);
}

/* ------------------------------------------------------ layout 4's keys */

/* Steps of a netlink change (nftrules_change.steps) and where each piece
 * ends. */
struct steps {
    struct nftrules_elem *v;
    size_t n, cap;
    size_t *ends;
    size_t nends, ecap;
    int oom;
};

static struct nftrules_elem *
step_add(struct steps *st, enum nftrules_op op, const char *set)
{
    struct nftrules_elem *el;

    if (st->oom)
        return NULL;
    if (st->n == st->cap) {
        size_t ncap = st->cap ? st->cap * 2 : 64;
        struct nftrules_elem *p = realloc(st->v, ncap * sizeof(*p));

        if (p == NULL) {
            st->oom = 1;
            return NULL;
        }
        st->v = p;
        st->cap = ncap;
    }
    el = &st->v[st->n++];
    memset(el, 0, sizeof(*el));
    el->op = (uint8_t)op;
    el->set = set;
    return el;
}

static void
step_end(struct steps *st)
{
    if (st->oom || (st->nends > 0 && st->ends[st->nends - 1] == st->n))
        return;
    if (st->nends == st->ecap) {
        size_t ncap = st->ecap ? st->ecap * 2 : 16;
        size_t *p = realloc(st->ends, ncap * sizeof(*p));

        if (p == NULL) {
            st->oom = 1;
            return;
        }
        st->ends = p;
        st->ecap = ncap;
    }
    st->ends[st->nends++] = st->n;
}

static void
steps_free(struct steps *st)
{
    free(st->v);
    free(st->ends);
    memset(st, 0, sizeof(*st));
}

/* The address and port a KEYS object keys, or a NodePort's port alone
 * (the address left unspecified). Returns 0, or -1 with <*why>. */
static int
key_addr(const struct nftgen_obj *o, struct saddr *a, const char **why)
{
    char *end;
    unsigned long port;

    if (!((keys_slot(o) >> 1) & 1)) {
        if (nftrules_addrs_parse(o->key, a, 1, why) != 1) {
            if (*why == NULL)
                *why = "not one address";
            return -1;
        }
        return 0;
    }
    errno = 0;
    port = strtoul(o->key, &end, 10);
    if (errno != 0 || *end != '\0' || end == o->key || port == 0
        || port > 65535) {
        *why = "bad NodePort";
        return -1;
    }
    /* Unspecified, the port where an IPv4 address keeps it. */
    memset(a, 0, sizeof(*a));
    a->u.sa.sa_family = AF_UNSPEC;
    a->u.in.sin_port = htons((uint16_t)port);
    return 0;
}

/* A KEYS object read back: its address and port, and its endpoints by
 * key (<eps>, o->count of them, malloc'd). */
static int
keys_read(const struct nftgen_obj *o, struct saddr *key, struct saddr **eps,
          struct err *e)
{
    const char *why;
    long k;

    *eps = NULL;
    if (key_addr(o, key, &why) < 0)
        return err_set(e, "keys of %s: %s", o->key, why);
    if (o->count == 0 || o->count > NFTGEN_KEYS_MAX
        || (*eps = calloc(o->count, sizeof(**eps))) == NULL)
        return err_set(e, "keys of %s: %u keys", o->key, o->count);
    k = nftrules_addrs_parse(o->rules, *eps, o->count, &why);
    if (k != (long)o->count) {
        free(*eps);
        *eps = NULL;
        return err_set(e, "keys of %s: %s", o->key,
                       why ? why : "not as many as counted");
    }
    return 0;
}

/* Key <i> of the service at <a>: "address . port . i" as the kernel keys
 * the map (numgen's number in the host's byte order), or "port . i" for
 * a NodePort (<a> unspecified). */
static void
key_of(struct nftrules_elem *el, const struct saddr *a, uint32_t i)
{
    if (a->u.sa.sa_family == AF_UNSPEC) {
        memset(el->key, 0, 4);
        memcpy(el->key, &a->u.in.sin_port, sizeof(a->u.in.sin_port));
        el->len = 4;
    } else {
        el->len = nftrules_addr_port(a, el->key);
    }
    memcpy(el->key + el->len, &i, sizeof(i));
    el->len += sizeof(i);
}

/* The steps that take the kernel from KEYS object <o> to <nw> (either
 * NULL), to go in one piece: the keys whose endpoint changes deleted and
 * added again, those past the new count deleted, those past the old one
 * added; or, when the count changes, every key moved from the old
 * count's map to the new one's. */
static int
keys_piece(struct steps *st, const struct nftgen_obj *o,
           const struct nftgen_obj *nw, struct err *e)
{
    struct saddr ka, *oe = NULL, *ne = NULL;
    uint32_t no = 0, nn = 0, i;
    struct nftrules_elem *el;
    int rc = 0, moved;

    if (o != NULL && keys_read(o, &ka, &oe, e) < 0)
        return -1;
    if (nw != NULL && keys_read(nw, &ka, &ne, e) < 0) {
        free(oe);
        return -1;
    }
    no = o ? o->count : 0;
    nn = nw ? nw->count : 0;
    /* Another count is another map: every key moves. */
    moved = o == NULL || nw == NULL || strcmp(o->spec, nw->spec) != 0;
    for (i = 0; i < no; i++)
        if (moved || i >= nn || saddr_cmp(&oe[i], &ne[i]) != 0)
            if ((el = step_add(st, NFTRULES_DEL, o->spec)) != NULL)
                key_of(el, &ka, i);
    for (i = 0; i < nn; i++)
        if (moved || i >= no || saddr_cmp(&oe[i], &ne[i]) != 0)
            if ((el = step_add(st, NFTRULES_ADD, nw->spec)) != NULL) {
                key_of(el, &ka, i);
                el->dlen = (uint8_t)nftrules_addr_port(&ne[i], el->data);
            }
    if (st->oom)
        rc = err_set(e, "out of memory");
    free(oe);
    free(ne);
    return rc;
}

/* The key changes of <t> as steps, a piece each; with <flush>, one
 * piece that first flushes the keyed maps of n->picks (an adoption:
 * what the last process left is replaced), and with <sets> that also
 * flushes and refills the shared address sets. */
static int
keys_steps(struct nft *n, const struct nftgen_txn *t, int flush, int sets,
           struct steps *st, struct err *e)
{
    static const char *const names[] = {
        NFTGEN_CLUSTER_IPS4, NFTGEN_CLUSTER_IPS6, NFTGEN_HAIRPIN4,
        NFTGEN_HAIRPIN6};
    const struct ipset *ipsets[2] = {&n->cips, &n->hp};
    struct nftrules_elem *el;
    struct saddr a;
    size_t i, at;

    if (t->oom)
        return err_set(e, "out of memory");
    for (i = 0; flush && i < n->global.n + n->picks.n; i++) {
        const struct nftgen_obj *o = i < n->global.n
                                         ? &n->global.v[i]
                                         : &n->picks.v[i - n->global.n];

        if (o->kind == NFTGEN_SET && prefixed(o->name, NFTGEN_KEYS_PREFIX))
            step_add(st, NFTRULES_FLUSH, o->name);
    }
    /* The shared address sets, flushed and filled in the same piece:
     * libnftables would hold about 250 bytes an element parsing them
     * (the 250,000 hairpin pairs of 10,000 × 25). */
    for (i = 0; sets && i < sizeof(names) / sizeof(names[0]); i++)
        step_add(st, NFTRULES_FLUSH, names[i]);
    for (i = 0; sets && i < 2; i++)
        for (at = 0; ipcount_next(&ipsets[i]->c, &at, &a);)
            if ((el = step_add(st, NFTRULES_ADD, NULL)) != NULL)
                ipset_elem(ipsets[i], &a, el);
    for (i = 0; i < t->nkeys; i++) {
        if (keys_piece(st, t->keys[i].old, t->keys[i].new, e) < 0)
            return -1;
        if (!flush && !sets)
            step_end(st);
    }
    step_end(st);
    return st->oom ? err_set(e, "out of memory") : 0;
}

/* The plain services' keys (steps <st>, from keys_steps()) and the
 * endpoint maps of <t> (created or changed, each flushed and filled)
 * through netlink. */
static int
epmaps_write(struct nft *n, const struct nftgen_txn *t,
             const struct steps *st, struct err *e)
{
    struct nftrules_change c;
    const char **names, **elems;
    size_t i;
    int rc;

    if (t->oom)
        return err_set(e, "out of memory");
    if (t->nepm == 0 && st->n == 0)
        return 0;
    names = calloc(t->nepm + 1, sizeof(*names));
    elems = calloc(t->nepm + 1, sizeof(*elems));
    if (names == NULL || elems == NULL) {
        free(names);
        free(elems);
        return err_set(e, "out of memory");
    }
    for (i = 0; i < t->nepm; i++) {
        names[i] = t->epm[i]->name;
        elems[i] = t->epm[i]->rules;
    }
    memset(&c, 0, sizeof(c));
    c.steps = st->v;
    c.nsteps = st->n;
    c.ends = st->ends;
    c.nends = st->nends;
    c.maps = names;
    c.elems = elems;
    c.fresh = t->epm_fresh;
    c.nmaps = t->nepm;
    rc = nftrules_write(n->nlw, &c, e);
    free(names);
    free(elems);
    return rc;
}

/* An element one of the shared address sets gains. Those that nothing
 * wants any more are deleted after the rules that could still need them
 * are gone (in the same netlink transaction, or the one after a
 * libnftables text). One left behind would cost nothing but a verdict
 * that is right anyway: a hairpin pair masquerades a connection that DNAT
 * sent back to its own source (which cannot work without it), and a
 * ClusterIP that no Service holds is refused, as the service CIDRs' rule
 * refuses it. */
struct ipadd {
    const struct ipset *set;
    struct saddr a;
};

/* The touched IPs of <set> whose element must come or go: those wanted
 * into <add>, those to delete into <del> (room for every touched IP in
 * both); or, when <add> is NULL (memory short), both as commands of
 * <t>. */
static void
ipset_collect(const struct ipset *set, struct nftgen_txn *t,
              struct ipadd *add, size_t *nadd, struct nftrules_elem *del,
              size_t *ndel)
{
    size_t i;

    for (i = 0; i < ipcount_ntouched(&set->c); i++) {
        struct saddr a;
        int want, have;

        ipcount_touched(&set->c, i, &a, &want, &have);
        if (want == have)
            continue;
        if (add == NULL) {
            ipset_put(set, t, &a, want);
        } else if (want) {
            add[*nadd].set = set;
            add[(*nadd)++].a = a;
        } else {
            ipset_elem(set, &a, &del[(*ndel)++]);
        }
    }
}

/*
 * The changed services: first, when they rewrite chains or add or delete
 * whole services, one lean libnftables transaction (nftgen_txn_lean():
 * chains' rules, elements added to the shared sets), which libnftables
 * runs without first fetching every set of the table; then, straight
 * through netlink (nftrules_write()), the endpoint maps whose elements
 * changed and the shared sets' elements to delete. An endpoint change
 * alone (the most common change by far) is one netlink transaction:
 * the shared sets' new elements, the maps, the deletions. Each
 * transaction costs the kernel a walk of every chain of the table at
 * commit, and libnftables its parse. What is not lean (a service
 * deleted or an address of it moved: "delete element"; affinity rules,
 * which name their sets) costs libnftables' fetch as before; st.lean
 * counts the transactions that were, st.texts every libnftables one,
 * st.epmaps the maps written through netlink.
 */
static int
incremental(struct nft *n, struct err *e)
{
    struct nftrules_elem *del = NULL, *addk = NULL;
    struct nftrules_change c;
    struct steps st = {0};
    struct ipadd *add = NULL;
    struct nftgen_txn t;
    struct nftgen_group picks;
    const char **names = NULL, **elems = NULL;
    char *text = NULL;
    size_t i, ndel = 0, nadd = 0, nt = ipset_touched(n);
    int rc = 0, new_picks = 0;

    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &n->global);
    nftgen_group_init(&picks);
    if (n->picks_dirty) {
        /* A count gained (or handed over) its rule and set: written by
         * the text, before the keys that use them. Idle counts past
         * COUNTS_KEPT go now (counts_tidy()): never as they turn idle,
         * which would cost a text every time a service leaves a count
         * or comes back (one service resized back and forth). */
        counts_tidy(n);
        if (picks_make(n, &picks) < 0) {
            rc = err_set(e, "out of memory");
            goto fail;
        }
        nftgen_diff(&t, &n->picks, &picks);
        new_picks = 1;
    }
    for (i = 0; i < n->ndirty; i++)
        nftgen_diff(&t, n->dirty[i]->have, n->dirty[i]->want);
    del = calloc(nt + 1, sizeof(*del));
    add = calloc(nt + 1, sizeof(*add));
    if (del == NULL || add == NULL) {
        /* Short of memory: every element in the text. */
        free(del);
        free(add);
        del = NULL;
        add = NULL;
    }
    ipset_collect(&n->cips, &t, add, &nadd, del, &ndel);
    ipset_collect(&n->hp, &t, add, &nadd, del, &ndel);
    if (!nftgen_txn_no_text(&t)) {
        /* Chains change: the new elements in the same transaction. */
        for (i = 0; i < nadd; i++)
            ipset_put(add[i].set, &t, &add[i].a, 1);
        nadd = 0;
        text = nftgen_txn_text(&t);
        if (text == NULL) {
            rc = err_set(e, "transaction too large or out of memory");
            goto fail;
        }
        rc = run_table(n, text, "update", e);
        if (rc == 0)
            n->st.texts++;
        if (rc == 0 && nftgen_lean_text(text))
            n->st.lean++;
        free(text);
        if (rc < 0)
            goto fail;
    }
    if (new_picks) {
        nftgen_group_deinit(&n->picks);
        n->picks = picks;
        nftgen_group_init(&picks);
        n->picks_dirty = 0;
    }
    addk = calloc(nadd + 1, sizeof(*addk));
    names = calloc(t.nepm + 1, sizeof(*names));
    elems = calloc(t.nepm + 1, sizeof(*elems));
    if (t.oom || addk == NULL || names == NULL || elems == NULL) {
        rc = err_set(e, "out of memory");
        goto fail;
    }
    for (i = 0; i < nadd; i++)
        ipset_elem(add[i].set, &add[i].a, &addk[i]);
    if (nadd > 1)
        qsort(addk, nadd, sizeof(*addk), elem_cmp);
    if (ndel > 1)
        qsort(del, ndel, sizeof(*del), elem_cmp);
    for (i = 0; i < t.nepm; i++) {
        names[i] = t.epm[i]->name;
        elems[i] = t.epm[i]->rules;
    }
    if (keys_steps(n, &t, 0, 0, &st, e) < 0) {
        rc = -1;
        goto fail;
    }
    memset(&c, 0, sizeof(c));
    c.add = addk;
    c.nadd = nadd;
    c.steps = st.v;
    c.nsteps = st.n;
    c.ends = st.ends;
    c.nends = st.nends;
    c.maps = names;
    c.elems = elems;
    c.fresh = t.epm_fresh;
    c.nmaps = t.nepm;
    c.del = del;
    c.ndel = ndel;
    rc = nftrules_write(n->nlw, &c, e);
    if (rc < 0)
        goto fail;
    n->st.epmaps += t.nepm;
    n->st.keyed += t.nkeys;
    steps_free(&st);
    nftgen_txn_deinit(&t);
    commit(n, 0);
    free(del);
    free(add);
    free(addk);
    free(names);
    free(elems);
    return 0;
fail:
    steps_free(&st);
    nftgen_group_deinit(&picks);
    nftgen_txn_deinit(&t);
    free(del);
    free(add);
    free(addk);
    free(names);
    free(elems);
    n->st.failures++;
    n->need_converge = 1;
    return -1;
}

/* ----------------------------------------------------------- convergence */

/* Every wanted set name, and chain name unless <sets_only> (global and
 * services), for telling what in the kernel is stale. */
static int
wanted_names(struct nft *n, struct smap *names, int committed, int sets_only)
{
    size_t i, j;

    for (j = 0; j < n->global.n + n->picks.n; j++) {
        const struct nftgen_obj *o = j < n->global.n
                                         ? &n->global.v[j]
                                         : &n->picks.v[j - n->global.n];

        if (o->kind != NFTGEN_ELEM && (!sets_only || o->kind != NFTGEN_CHAIN)
            && smap_put(names, o->name, (void *)o) < 0)
            return -1;
    }
    for (i = 0; i < n->svcs.cap; i++) {
        const struct entry *en = n->svcs.v[i].val;
        const struct nftgen_group *g;

        if (n->svcs.v[i].key == NULL)
            continue;
        g = committed ? en->have : en->want;
        for (j = 0; g && j < g->n; j++)
            if (g->v[j].kind != NFTGEN_ELEM && g->v[j].kind != NFTGEN_KEYS
                && (!sets_only || g->v[j].kind != NFTGEN_CHAIN)
                && smap_put(names, g->v[j].name, &g->v[j]) < 0)
                return -1;
    }
    return 0;
}

/* Every wanted object into <t> (the shared address sets' elements go
 * through netlink: keys_steps()). */
static void
fill_wanted(struct nft *n, struct nftgen_txn *t)
{
    size_t i;

    nftgen_fill(t, &n->global);
    nftgen_fill(t, &n->picks);
    for (i = 0; i < n->svcs.cap; i++) {
        const struct entry *en = n->svcs.v[i].val;

        if (n->svcs.v[i].key && en->want)
            nftgen_fill(t, en->want);
    }
}

/* Read the names of what the kernel holds in table inet ferry (chains,
 * sets, maps: no rules, no elements). Never "list tables" nor "list
 * table": libnftables 1.0.6 fetches every rule for both, and the kernel
 * dumps rules in time quadratic in their number (11 s for "list tables"
 * at 5000 services). A table with none of ferry's objects counts as
 * absent: creating it again is harmless. */
static int
read_table(struct nft *n, struct nftsys_listing *l, struct err *e)
{
    static const char *const cmds[] = {"list sets inet", "list maps inet",
                                       "list chains inet"};
    const char *out;
    size_t i;

    int rc = 0;

    memset(l, 0, sizeof(*l));
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]) && rc == 0; i++) {
        out = list(n, cmds[i], 1, e);
        if (out == NULL || nftsys_parse_table(out, l, e) < 0)
            rc = -1;
    }
    list_release(n);
    l->present = l->n > 0;
    return rc;
}

/* libnftables keeps in its context a cache of what a transaction named
 * or fetched until the next one: after a whole table (at 10,000
 * Services, about 8 MB of chains and sets) that may be a while. A fresh
 * context holds none; when one cannot be made, the old one stays. */
static void
ctx_renew(struct nft *n)
{
    struct nft_ctx *c = ctx_new(0);

    if (c == NULL)
        return;
    nft_ctx_free(n->ctx);
    n->ctx = c;
}

/* The text of services one transaction takes when the table is created
 * from nothing. libnftables holds a whole transaction's objects until
 * its commit: 500 Services of 25 endpoints a part put ferry's peak at
 * 196 MiB at 10,000 Services, 100 (95 KB of text) at 177 MiB; at 10,000
 * of the proxy dataplane's redirects (elements of the shared maps, 60 to
 * 100 bytes each), parts of 100 KB put its peak 1.5 MiB higher than
 * parts of 40 KB. And the kernel checks every verdict map element of the
 * table at each commit: with 100 redirects a part, 100 commits, that
 * check was 15 % of the first sync. 40 KB: about 40 Services of 25
 * endpoints, or 500 redirects, a part; the kernel dataplane's first sync
 * took the same time with parts of 40 and of 100 KB. */
#define CREATE_PART_BYTES (40u << 10)

/* Run <t> if it holds anything (its endpoint maps' elements after it,
 * through netlink), and start it again, lean. */
static int
run_part(struct nft *n, struct nftgen_txn *t, struct err *e)
{
    char *text;
    int rc = 0;

    if (!nftgen_txn_no_text(t)) {
        text = nftgen_txn_text(t);
        rc = text == NULL
                 ? err_set(e, "transaction too large or out of memory")
                 : run_table(n, text, "creation", e);
        free(text);
    }
    if (rc == 0) {
        struct steps st = {0};

        rc = keys_steps(n, t, 0, 0, &st, e);
        if (rc == 0)
            rc = epmaps_write(n, t, &st, e);
        steps_free(&st);
    }
    nftgen_txn_deinit(t);
    nftgen_txn_init(t);
    nftgen_txn_lean(t, &n->global);
    return rc;
}

/*
 * Create the table from nothing in several transactions: the skeleton
 * with the first services, then the next ones, CREATE_PART_BYTES of
 * text a transaction, then the elements of the shared sets (ClusterIPs,
 * hairpin pairs) in one netlink transaction. The kernel finds a set by name
 * by walking the sets of the table (a new endpoint map: to see that it is
 * new, to fill it, to bind its rule), so the creation costs time in the
 * square of the services whatever the parts (12.5 s at 10,000 × 25);
 * and libnftables holds about 250 bytes per element while it parses a
 * transaction (the 250,000 hairpin pairs of 10,000 Services of 25
 * endpoints in one text took 62 MB at once; in texts of 5,000, the
 * creation took 1.5-1.7 s in nftdrive, 0.83-0.94 s without). Nothing was
 * served by this table before, so a service or an element that comes a
 * part later loses nothing; a failed part leaves a table that the next
 * convergence adopts in one transaction. The parts are lean
 * (nftgen_txn_lean()): but for the first, which adds the table and the
 * fixed chains, libnftables does not fetch the sets the parts before
 * made. Returns what run() returns.
 */
static int
create_in_parts(struct nft *n, const char *comment, struct err *e)
{
    struct nftgen_txn t;
    size_t i;
    int rc = 0;

    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &n->global);
    nftgen_add_table(&t, comment);
    nftgen_fill(&t, &n->global);
    nftgen_fill(&t, &n->picks);
    for (i = 0; i < n->svcs.cap && rc == 0; i++) {
        const struct entry *en = n->svcs.v[i].val;

        if (n->svcs.v[i].key == NULL || en->want == NULL)
            continue;
        nftgen_fill(&t, en->want);
        if (nftgen_txn_bytes(&t) >= CREATE_PART_BYTES)
            rc = run_part(n, &t, e);
    }
    if (rc == 0)
        rc = run_part(n, &t, e);
    if (rc == 0) {
        /* The shared address sets, last, in one netlink transaction. */
        struct steps st = {0};

        rc = keys_steps(n, &t, 0, 1, &st, e);
        if (rc == 0)
            rc = epmaps_write(n, &t, &st, e);
        steps_free(&st);
    }
    nftgen_txn_deinit(&t);
    return rc;
}

/*
 * One transaction that makes the kernel's table exactly the wanted one
 * (created when absent, in parts: create_in_parts()), recreated when its
 * layout differs, otherwise adopted: every chain flushed and refilled,
 * every shared map refilled, stale chains and sets deleted, affinity
 * sets that are still wanted left with their elements, and then every
 * endpoint map rewritten through netlink. Conntrack keeps the
 * established flows either way.
 */
static int
converge(struct nft *n, struct err *e)
{
    struct nftsys_listing l;
    struct nftgen_txn t;
    struct steps st = {0};
    struct smap names = {0}, held = {0};
    char comment[64], *text;
    size_t i;
    int rc;

    if (read_table(n, &l, e) < 0) {
        n->st.failures++;
        return -1;
    }
    /* The pick chains for the counts with a rule (counts_tidy()). */
    {
        struct nftgen_group picks;

        if (picks_make(n, &picks) < 0) {
            nftsys_listing_free(&l);
            n->st.failures++;
            return err_set(e, "out of memory");
        }
        nftgen_group_deinit(&n->picks);
        n->picks = picks;
        n->picks_dirty = 0;
    }
    nftgen_txn_init(&t);
    snprintf(comment, sizeof(comment), "ferry: Kubernetes Services, layout %d",
             NFT_LAYOUT);
    if (!l.present) {
        rc = create_in_parts(n, comment, e);
        goto done;
    }
    if (!l.layout_ok) {
        /* One transaction: the old table serves until the new one does. */
        log_warn("table inet %s has another layout: recreating it", NFT_TABLE);
        nftgen_delete_table(&t);
        nftgen_add_table(&t, comment);
        fill_wanted(n, &t);
    } else {
        if (wanted_names(n, &names, 0, 0) < 0) {
            rc = err_set(e, "out of memory");
            goto out;
        }
        nftgen_add_table(&t, NULL);
        /* Every rule at once: a "flush chain" per chain makes libnftables
         * dump the rules chain by chain (minutes at 5000 services). Sets
         * keep their elements. */
        nftgen_flush_table(&t);
        for (i = 0; i < l.n; i++) {
            const struct nftsys_obj *o = &l.v[i];
            int wanted = smap_get(&names, o->name) != NULL;

            if (o->kind == NFTSYS_CHAIN) {
                if (!wanted)
                    nftgen_delete_chain(&t, o->name);
            } else if (!wanted) {
                nftgen_delete_set(&t, o->name, o->is_map);
            } else if (!prefixed(o->name, NFTGEN_AFF_PREFIX)
                       && !prefixed(o->name, NFTGEN_EPMAP_PREFIX)
                       && !prefixed(o->name, NFTGEN_KEYS_PREFIX)
                       && !prefixed(o->name, NFTGEN_HAIRPIN4)
                       && !prefixed(o->name, NFTGEN_HAIRPIN6)
                       && !prefixed(o->name, NFTGEN_CLUSTER_IPS4)
                       && !prefixed(o->name, NFTGEN_CLUSTER_IPS6)) {
                /* The keyed maps and the shared address sets are flushed
                 * and filled in one netlink transaction after the text. */
                nftgen_flush_set(&t, o->name, o->is_map);
            }
        }
        /* The endpoint maps keep the elements the last process left
         * through the transaction, and are rewritten one by one through
         * netlink after it (each flushed and filled at once): in the
         * text, libnftables would hold 1.3 GB parsing the 250,000 ranges
         * of 10,000 Services of 25 endpoints. A map new since then is
         * empty for that moment. */
        t.epm_netlink = 1;
        /* The shared sets' elements in one "add set|map" each, as a lean
         * transaction writes them: an "add element" command makes
         * libnftables fetch the elements of every set first, the
         * endpoint maps' too (470 MB at once at 10,000 × 25). */
        nftgen_txn_lean(&t, &n->global);
        for (i = 0; i < l.n; i++)
            if (smap_put(&held, l.v[i].name, &held) < 0) {
                rc = err_set(e, "out of memory");
                goto out;
            }
        t.existing = &held;
        fill_wanted(n, &t);
    }
    text = nftgen_txn_text(&t);
    if (text == NULL) {
        rc = err_set(e, "transaction too large or out of memory");
        goto out;
    }
    /* The keys and the shared address sets in one netlink transaction
     * (the keyed maps and the sets flushed first: an adoption replaces
     * what the last process left), made ready before the text: between
     * its commit and theirs, a new connection to a plain service whose
     * keys are not there is refused (a table recreated), or finds the
     * last process's (adopted). About 0.65 s at 10,000 × 25 for a table
     * recreated (0.53 s of it the kernel's commit of the keys): its text
     * would carry the keys only at libnftables' 2 KB an element (700 MB
     * at once), and the sets at 250 bytes an element. */
    if (keys_steps(n, &t, !n->conf.own_chains, 1, &st, e) < 0) {
        free(text);
        rc = -1;
        goto out;
    }
    rc = run_table(n, text, "convergence", e);
    free(text);
    if (rc == 0)
        rc = epmaps_write(n, &t, &st, e);
done:
    if (rc == 0) {
        log_info("table inet %s %s: %zu kernel services", NFT_TABLE,
                 !l.present    ? "created"
                 : l.layout_ok ? "adopted"
                               : "recreated",
                 n->st.services);
        n->need_converge = 0;
        n->st.converges++;
        commit(n, 1);
        ctx_renew(n);
    } else {
        n->st.failures++;
    }
out:
    steps_free(&st);
    nftgen_txn_deinit(&t);
    smap_deinit(&names);
    smap_deinit(&held);
    nftsys_listing_free(&l);
    return rc;
}

int
nft_apply(struct nft *n, struct err *e)
{
    if (n->need_converge)
        return converge(n, e);
    if (n->ndirty == 0 && ipset_touched(n) == 0)
        return 0;
    return incremental(n, e);
}

/* ---------------------------------------------------------------- verify */

/* Elements the committed state puts in each shared map or set
 * global.v[<idx>[m]] into <want>[m], m < <k>. */
static void
committed_elems(struct nft *n, const size_t *idx, size_t k, size_t *want)
{
    size_t m;

    for (m = 0; m < k; m++) {
        const char *name = n->global.v[idx[m]].name;
        int v6 = strcmp(name, NFTGEN_CLUSTER_IPS6) == 0;

        /* The ClusterIPs the kernel was given, counted by address. */
        want[m] = v6 || strcmp(name, NFTGEN_CLUSTER_IPS4) == 0
                      ? ipcount_held(&n->cips.c, v6)
                      : n->gcount[idx[m]];
    }
}

/* Compare the rule counts of the fixed chains: a table flushed by hand
 * ("flush table", "flush chain") shows there first. Counted by the kernel
 * (nftrules.h says why not through libnftables). */
static int
compare_rules(struct nft *n, char *what, size_t len, struct err *e)
{
    size_t all = n->global.n + n->picks.n;
    const char **names = calloc(all + 1, sizeof(*names));
    size_t *counts = calloc(all + 1, sizeof(*counts));
    const struct nftgen_obj **objs = calloc(all + 1, sizeof(*objs));
    size_t i, k = 0;
    int rc = 0;

    if (names == NULL || counts == NULL || objs == NULL) {
        rc = err_set(e, "out of memory");
        goto out;
    }
    /* The fixed chains and the pick chains. */
    for (i = 0; i < all; i++) {
        const struct nftgen_obj *o = i < n->global.n
                                         ? &n->global.v[i]
                                         : &n->picks.v[i - n->global.n];

        if (o->kind != NFTGEN_CHAIN)
            continue;
        objs[k] = o;
        names[k++] = o->name;
    }
    rc = nftrules_count(names, k, counts, e);
    for (i = 0; i < k && rc == 0 && !what[0]; i++)
        if (counts[i] != nftgen_rule_count(objs[i]))
            snprintf(what, len, "chain %s has %zu rules, not %zu", names[i],
                     counts[i], nftgen_rule_count(objs[i]));
out:
    free(names);
    free(counts);
    free(objs);
    return rc;
}

/*
 * Look up VERIFY_SAMPLE of the hairpin pairs the kernel should hold, the
 * next ones after those of the last verify: a flushed set shows at once,
 * a pair deleted by hand within a few verifies at a small table (the
 * hourly convergence rewrites them all anyway). Counting them instead
 * takes a dump that grows faster than the pairs (nftrules_has_elems()).
 * A pair that nothing wants any more but is still held is harmless and
 * not looked for.
 */
#define VERIFY_SAMPLE 64
static int
sample_hairpins(struct nft *n, char *what, size_t len, struct err *e)
{
    struct nftrules_elem v[VERIFY_SAMPLE];
    struct saddr a;
    size_t k = 0, i, from, start = n->verify_at;
    int wrapped = start == 0, rc = 1;

    /* From where the last sample ended to the end of the table, then
     * from its start up to there: each pair once. */
    while (k < VERIFY_SAMPLE) {
        if (!ipcount_next_held(&n->hp.c, &n->verify_at, &a)) {
            if (wrapped)
                break;
            n->verify_at = 0;
            wrapped = 1;
            continue;
        }
        if (wrapped && start > 0 && n->verify_at > start) {
            n->verify_at--; /* the next sample starts with this one */
            break;
        }
        ipset_elem(&n->hp, &a, &v[k++]);
    }
    /* The addresses come by family: one lookup per set. */
    for (from = 0, i = 1; i <= k && rc == 1; i++) {
        if (i < k && strcmp(v[i].set, v[from].set) == 0)
            continue;
        rc = nftrules_has_elems(v + from, i - from, e);
        if (rc == 0)
            snprintf(what, len, "set %s lacks pairs ferry wrote",
                     v[from].set);
        from = i;
    }
    return rc < 0 ? -1 : 0;
}

/* Compare the element counts of the shared maps and sets but the hairpin
 * pairs', counted by the kernel (nftrules.h says why not through
 * libnftables), then look up a sample of the pairs. */
/*
 * Look up the keys of a few plain services (layout 4), the next ones
 * after those of the last verify: each key of the service's addresses in
 * the keyed map of its count. Counting the keyed maps' elements would
 * take dumps that grow faster than the maps (sample_hairpins() says
 * why).
 */
#define VERIFY_KEYED 8
static int
sample_keys(struct nft *n, char *what, size_t len, struct err *e)
{
    struct nftrules_elem v[NFTGEN_KEYS_MAX];
    size_t seen = 0, tries, i, j;
    int rc = 1;

    for (tries = 0; tries < n->svcs.cap && seen < VERIFY_KEYED && rc == 1;
         tries++) {
        const struct entry *en;
        size_t at = n->verify_svc++ % n->svcs.cap;

        if (n->svcs.v[at].key == NULL)
            continue;
        en = n->svcs.v[at].val;
        for (i = 0; en->have != NULL && i < en->have->n && rc == 1; i++) {
            const struct nftgen_obj *o = &en->have->v[i];
            struct saddr a;
            const char *why;

            if (o->kind != NFTGEN_KEYS || o->count > NFTGEN_KEYS_MAX
                || key_addr(o, &a, &why) < 0)
                continue;
            seen++;
            for (j = 0; j < o->count; j++) {
                memset(&v[j], 0, sizeof(v[j]));
                v[j].set = o->spec;
                key_of(&v[j], &a, (uint32_t)j);
            }
            rc = nftrules_has_elems(v, o->count, e);
            if (rc == 0)
                snprintf(what, len, "map %s lacks keys of %s", o->spec,
                         o->key);
        }
    }
    return rc < 0 ? -1 : 0;
}

/* Compare the element counts of the shared maps and sets but the hairpin
 * pairs', counted by the kernel (nftrules.h says why not through
 * libnftables), then look up a sample of the pairs and of layout 4's
 * keys. */
static int
compare_elems(struct nft *n, char *what, size_t len, struct err *e)
{
    const char **names = calloc(n->global.n + 1, sizeof(*names));
    size_t *counts = calloc(n->global.n + 1, sizeof(*counts));
    size_t *want = calloc(n->global.n + 1, sizeof(*want));
    size_t *idx = calloc(n->global.n + 1, sizeof(*idx));
    const struct nftgen_obj **objs = calloc(n->global.n + 1, sizeof(*objs));
    size_t i, k = 0;
    int rc = 0;

    if (names == NULL || counts == NULL || want == NULL || idx == NULL
        || objs == NULL) {
        rc = err_set(e, "out of memory");
        goto out;
    }
    for (i = 0; i < n->global.n; i++) {
        const struct nftgen_obj *g = &n->global.v[i];

        if (g->kind != NFTGEN_SET || strcmp(g->name, NFTGEN_LAYOUT_SET) == 0
            || strcmp(g->name, NFTGEN_HAIRPIN4) == 0
            || strcmp(g->name, NFTGEN_HAIRPIN6) == 0)
            continue;
        idx[k] = i;
        objs[k] = g;
        names[k++] = g->name;
    }
    rc = nftrules_count_elems(names, k, counts, e);
    if (rc == 0)
        committed_elems(n, idx, k, want);
    for (i = 0; i < k && rc == 0 && !what[0]; i++)
        if (counts[i] != want[i])
            snprintf(what, len, "%s %s has %zu elements, not %zu",
                     objs[i]->is_map ? "map" : "set", names[i], counts[i],
                     want[i]);
    if (rc == 0 && !what[0])
        rc = sample_hairpins(n, what, len, e);
    if (rc == 0 && !what[0])
        rc = sample_keys(n, what, len, e);
out:
    free(names);
    free(counts);
    free(want);
    free(idx);
    free(objs);
    return rc;
}

/* The fixed chains' rules and the shared sets' elements: the first
 * difference into <what>, or "" (as compare()). */
static int
compare_contents(struct nft *n, char *what, size_t len, struct err *e)
{
    int rc = compare_rules(n, what, len, e);

    if (rc == 0 && !what[0])
        rc = compare_elems(n, what, len, e);
    return rc;
}

/* A description of the first difference into <what>, or "" when the
 * kernel matches the committed state: every set and map by name, the
 * rules of the fixed chains, the elements of the shared maps and sets.
 * The services' own chains are not listed (too slow at scale: the kernel
 * dumps chains and rules in time that grows faster than their number): a
 * chain that a map element names cannot be deleted by hand without the
 * element (which the counts see), and the periodic full convergence
 * rewrites their rules. */
static int
compare(struct nft *n, const struct nftsys_listing *l, char *what, size_t len,
        struct err *e)
{
    struct smap names = {0};
    size_t i, seen = 0;

    what[0] = '\0';
    if (!l->present) {
        snprintf(what, len, "the table is gone");
        return 0;
    }
    if (!l->layout_ok) {
        snprintf(what, len, "the layout set is gone or changed");
        return 0;
    }
    if (wanted_names(n, &names, 1, 1) < 0)
        return err_set(e, "out of memory");
    for (i = 0; i < l->n && !what[0]; i++) {
        const struct nftsys_obj *o = &l->v[i];
        const struct nftgen_obj *w = smap_get(&names, o->name);

        if (w == NULL)
            snprintf(what, len, "%s %s is not ferry's",
                     o->kind == NFTSYS_CHAIN ? "chain" : "set", o->name);
        else if ((o->kind == NFTSYS_CHAIN) != (w->kind == NFTGEN_CHAIN))
            snprintf(what, len, "%s changed kind", o->name);
        seen++;
    }
    if (!what[0] && seen != names.n)
        snprintf(what, len, "%zu sets or maps are missing", names.n - seen);
    smap_deinit(&names);
    return what[0] ? 0 : compare_contents(n, what, len, e);
}

/*
 * Every set of the table is listed by name only when something may have
 * added or deleted one: at 10,000 Services the list is 10,000 endpoint
 * maps, about a third of a verify's time, and a change waits for the
 * whole verify. The kernel counts the chains and sets of a table (its
 * use); an endpoint change, which goes through netlink, creates none.
 * So when no text ran since a verify that listed them all and the count
 * is the same, the names are not listed again; a set deleted or added by
 * hand moves the count. (Deleting one and adding another would not: the
 * hourly convergence rewrites the table whole.)
 */
int
nft_verify(struct nft *n, struct err *e)
{
    struct nftsys_listing l = {0};
    char what[512];
    uint32_t use = 0;
    int rc;

    if (n->need_converge)
        return nft_apply(n, e) < 0 ? -1 : 1;
    rc = nftrules_table_present(NFPROTO_INET, NFT_TABLE, &use, e);
    if (rc < 0)
        return -1;
    n->st.verifies++;
    if (rc == 1 && n->verified && n->verified_shape == n->shape
        && n->verified_use == use) {
        what[0] = '\0';
        rc = compare_contents(n, what, sizeof(what), e);
    } else {
        n->verified = 0;
        n->st.verify_lists++;
        if (nftrules_list_sets(&l, e) < 0) {
            nftsys_listing_free(&l);
            return -1;
        }
        rc = compare(n, &l, what, sizeof(what), e);
        nftsys_listing_free(&l);
        if (rc == 0 && !what[0]) {
            n->verified = 1;
            n->verified_shape = n->shape;
            n->verified_use = use;
        }
    }
    if (rc < 0)
        return -1;
    if (!what[0])
        return 0;
    log_warn("table inet %s was changed outside ferry (%s): restoring it",
             NFT_TABLE, what);
    n->st.restores++;
    n->need_converge = 1;
    return converge(n, e) < 0 ? -1 : 1;
}

/* --------------------------------------------------------------- system */

int
nft_cleanup(struct err *e)
{
    struct nft_ctx *c = ctx_new(NFT_CTX_OUTPUT_JSON);
    int rc;

    if (c == NULL)
        return err_set(e, "libnftables: cannot create a context");
    rc = nftrules_table_present(NFPROTO_INET, NFT_TABLE, NULL, e);
    if (rc == 1 && run(c, "delete table inet " NFT_TABLE, "cleanup", e) < 0)
        rc = -1;
    nft_ctx_free(c);
    return rc;
}

int
nft_kube_proxy_found(char *why, size_t whylen, struct err *e)
{
    static const struct {
        uint8_t family;
        const char *name;
    } fams[] = {{NFPROTO_IPV4, "ip"}, {NFPROTO_IPV6, "ip6"}};
    char(*tables)[NFTRULES_NAME_MAX];
    char found[NFTRULES_NAME_MAX + 64] = "";
    size_t i, j, n;
    int rc = 0;

    /* Through netlink, names only: libnftables' "list tables" fetches
     * every rule of every table first, and its "list chains" every chain
     * (ferry's own at a restart too: 5.8 s and 495 MB, and 0.15 s, at
     * 10,000 Services of 25 endpoints; this check takes 0.01 s there). Per family, the tables' names,
     * then one lookup of KUBE-SERVICES by name in each: the check costs
     * the same however many chains iptables-nft holds (kube-proxy's
     * iptables mode makes one per Service and per endpoint), and it runs
     * every few seconds while kube-proxy's rules are there. */
    for (i = 0; i < sizeof(fams) / sizeof(fams[0]) && !found[0]; i++) {
        if (nftrules_table_names(fams[i].family, &tables, &n, e) < 0)
            return -1;
        for (j = 0; j < n && !found[0]; j++)
            if (strcmp(tables[j], "kube-proxy") == 0)
                snprintf(found, sizeof(found), "nftables table %s kube-proxy",
                         fams[i].name);
        if (!found[0]) {
            rc = nftrules_chain_in(fams[i].family,
                                   (const char(*)[NFTRULES_NAME_MAX])tables, n,
                                   "KUBE-SERVICES", &j, e);
            if (rc == 1)
                snprintf(found, sizeof(found),
                         "iptables chain KUBE-SERVICES (nftables table %s "
                         "%s)",
                         fams[i].name, tables[j]);
        }
        free(tables);
        if (rc < 0)
            return -1;
    }
    if (!found[0])
        nftsys_legacy_find("KUBE-SERVICES", found, sizeof(found));
    if (!found[0])
        return 0;
    snprintf(why, whylen, "%s", found);
    return 1;
}
