#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nftgen.h"
#include "smap.h"

#define T "inet " NFT_TABLE

/* Per family: index 0 is IPv4, 1 is IPv6. */
static const char *const fam_p[2] = {"ip", "ip6"};
static const char *const fam_type[2] = {"ipv4_addr", "ipv6_addr"};

static int
fam_of(const struct saddr *a)
{
    return a->u.sa.sa_family == AF_INET6;
}

/* -------------------------------------------------------------- groups */

void
nftgen_group_init(struct nftgen_group *g)
{
    memset(g, 0, sizeof(*g));
}

static void
obj_free(struct nftgen_obj *o)
{
    free(o->name);
    free(o->spec);
    free(o->rules);
    free(o->key);
    free(o->val);
}

void
nftgen_group_deinit(struct nftgen_group *g)
{
    size_t i;

    for (i = 0; i < g->n; i++)
        obj_free(&g->v[i]);
    free(g->v);
    memset(g, 0, sizeof(*g));
}

static char *
dup_or_null(const char *s, int *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

static struct nftgen_obj *
group_add(struct nftgen_group *g, enum nftgen_kind kind, const char *name,
          const char *spec, const char *rules, const char *key, const char *val)
{
    struct nftgen_obj *o;

    if (g->oom)
        return NULL;
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 4;
        struct nftgen_obj *p = realloc(g->v, ncap * sizeof(*p));

        if (p == NULL) {
            g->oom = 1;
            return NULL;
        }
        g->v = p;
        g->cap = ncap;
    }
    o = &g->v[g->n++];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    o->name = dup_or_null(name, &g->oom);
    o->spec = dup_or_null(spec, &g->oom);
    o->rules = dup_or_null(rules, &g->oom);
    o->key = dup_or_null(key, &g->oom);
    o->val = dup_or_null(val, &g->oom);
    return o;
}

static int
strcmp_null(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

static int
obj_cmp_id(const void *pa, const void *pb)
{
    const struct nftgen_obj *a = pa, *b = pb;
    int c;

    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    c = strcmp(a->name, b->name);
    if (c != 0)
        return c;
    return strcmp_null(a->key, b->key);
}

static int
obj_same(const struct nftgen_obj *a, const struct nftgen_obj *b)
{
    return obj_cmp_id(a, b) == 0 && a->is_map == b->is_map
           && strcmp_null(a->spec, b->spec) == 0
           && strcmp_null(a->rules, b->rules) == 0
           && strcmp_null(a->val, b->val) == 0;
}

/* obj_cmp_id(), then the contents: a total order, for a group whose
 * duplicates group_finish() drops the same way every time. */
static int
obj_cmp_all(const void *pa, const void *pb)
{
    const struct nftgen_obj *a = pa, *b = pb;
    int c = obj_cmp_id(a, b);

    if (c == 0)
        c = strcmp_null(a->val, b->val);
    if (c == 0)
        c = strcmp_null(a->spec, b->spec);
    if (c == 0)
        c = strcmp_null(a->rules, b->rules);
    return c;
}

static int
group_finish(struct nftgen_group *g)
{
    struct nftgen_obj *v;
    size_t i, k;

    if (g->oom)
        return -1;
    if (g->n > 1)
        qsort(g->v, g->n, sizeof(g->v[0]), obj_cmp_all);
    /* One object per name and key: a Service that lists an address twice
     * (an externalIP that is also its load balancer's) would otherwise
     * add the element twice and delete it twice, and the second deletion
     * fails the transaction. */
    for (i = k = 0; i < g->n; i++) {
        if (k > 0 && obj_cmp_id(&g->v[k - 1], &g->v[i]) == 0) {
            obj_free(&g->v[i]);
            continue;
        }
        g->v[k++] = g->v[i];
    }
    g->n = k;
    /* A service's group lives as long as the service is in the kernel
     * (twice while a change is pending): give back the room it grew
     * into (grown by doubling). A failed
     * shrink keeps the larger block. */
    if (g->n > 0 && g->n < g->cap
        && (v = realloc(g->v, g->n * sizeof(*v))) != NULL) {
        g->v = v;
        g->cap = g->n;
    }
    return 0;
}

int
nftgen_group_equal(const struct nftgen_group *a, const struct nftgen_group *b)
{
    size_t na = a ? a->n : 0, nb = b ? b->n : 0, i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (!obj_same(&a->v[i], &b->v[i]))
            return 0;
    return 1;
}

size_t
nftgen_rule_count(const struct nftgen_obj *o)
{
    size_t n = 0;
    const char *p;

    if (o->kind != NFTGEN_CHAIN || o->rules == NULL)
        return 0;
    for (p = o->rules; *p; p++)
        n += *p == '\n';
    return n;
}

/* ------------------------------------------------------------ snippets */

/* <v> in decimal at <out> (no NUL); returns its length. */
static size_t
u32_text(uint32_t v, char *out)
{
    char tmp[10];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* The address as inet_ntop() writes it (saddr_ip_str(): IPv4 by hand,
 * not through sprintf()); returns its length. */
static size_t
ip_text(const struct saddr *a, char *out)
{
    saddr_ip_str(a, out, INET6_ADDRSTRLEN);
    return strlen(out);
}

static void
ip_str(const struct saddr *a, char *out)
{
    saddr_ip_str(a, out, INET6_ADDRSTRLEN);
}

/* The IP as a piece of a name: IPv6's ':' is not allowed there. */
static void
ip_name(const struct saddr *a, char *out)
{
    char *p;

    ip_str(a, out);
    for (p = out; *p; p++)
        if (*p == ':')
            *p = '_';
}

void
nftgen_base(const struct nft_svc *s, char *out)
{
    char *p;

    snprintf(out, NFTGEN_BASE_MAX, "%.*s/%s", NFT_ID_MAX - 1, s->id,
             nft_proto_name(s->proto));
    for (p = out; *p; p++)
        if (*p == ':')
            *p = '/';
}

/* "{ 198.18.0.0/15, 198.18.5.1 }" of the CIDRs in family <f>; "" if
 * none. */
static void
cidr_set(struct sbuf *b, const struct cidr *c, size_t n, int f)
{
    char ip[INET6_ADDRSTRLEN];
    size_t i, k = 0;

    for (i = 0; i < n; i++) {
        if (fam_of(&c[i].ip) != f)
            continue;
        ip_str(&c[i].ip, ip);
        sbuf_printf(b, "%s%s/%u", k++ ? ", " : "{ ", ip, c[i].prefix);
    }
    if (k)
        sbuf_puts(b, " }");
}

static void
ip_set(struct sbuf *b, const struct saddr *a, size_t n, int f)
{
    char ip[INET6_ADDRSTRLEN];
    size_t i, k = 0;

    for (i = 0; i < n; i++) {
        if (fam_of(&a[i]) != f)
            continue;
        ip_str(&a[i], ip);
        sbuf_printf(b, "%s%s", k++ ? ", " : "{ ", ip);
    }
    if (k)
        sbuf_puts(b, " }");
}

static size_t
count_fam(const struct saddr *a, size_t n, int f)
{
    size_t i, k = 0;

    for (i = 0; i < n; i++)
        k += fam_of(&a[i]) == f;
    return k;
}

static size_t
count_cidr_fam(const struct cidr *c, size_t n, int f)
{
    size_t i, k = 0;

    for (i = 0; i < n; i++)
        k += fam_of(&c[i].ip) == f;
    return k;
}

/* ------------------------------------------------------------- skeleton */

struct chain_def {
    const char *name;
    const char *spec;
};

static const struct chain_def base_chains[] = {
    {"nat-prerouting",
     "{ type nat hook prerouting priority dstnat; policy accept; }"},
    /* nft 1.0.6 takes the names dstnat and srcnat on some hooks only:
     * -100 is dstnat. */
    {"nat-output", "{ type nat hook output priority -100; policy accept; }"},
    {"nat-postrouting",
     "{ type nat hook postrouting priority srcnat; policy accept; }"},
    /* Source ranges: before DNAT rewrites the destination. */
    {"filter-prerouting",
     "{ type filter hook prerouting priority dstnat - 10; policy accept; }"},
    {"filter-output-fw",
     "{ type filter hook output priority -110; policy accept; }"},
    /* Rejects: "reject" is valid only in input, forward and output. */
    {"filter-input",
     "{ type filter hook input priority filter - 10; policy accept; }"},
    {"filter-forward",
     "{ type filter hook forward priority filter - 10; policy accept; }"},
    {"filter-output",
     "{ type filter hook output priority filter - 10; policy accept; }"},
};

static void
map_def(struct nftgen_group *g, const char *name, const char *type)
{
    char spec[160];
    struct nftgen_obj *o;

    snprintf(spec, sizeof(spec), "{ type %s : verdict; }", type);
    o = group_add(g, NFTGEN_SET, name, spec, NULL, NULL, NULL);
    if (o != NULL)
        o->is_map = 1;
}

/* How NodePort traffic of family <f> is recognised, or "" when the
 * configured addresses leave that family out. */
static void
nodeport_match(const struct nft_conf *c, int f, struct sbuf *b)
{
    if (c->nnodeport_addrs == 0) {
        sbuf_printf(b, "fib daddr type local %s daddr != %s ", fam_p[f],
                    f ? "::1" : "127.0.0.0/8");
        return;
    }
    if (count_fam(c->nodeport_addrs, c->nnodeport_addrs, f) == 0)
        return;
    sbuf_printf(b, "%s daddr ", fam_p[f]);
    ip_set(b, c->nodeport_addrs, c->nnodeport_addrs, f);
    sbuf_puts(b, " ");
}

static void
add_chain(struct nftgen_group *g, const char *name, const char *spec,
          struct sbuf *rules)
{
    if (rules->overflow)
        g->oom = 1;
    group_add(g, NFTGEN_CHAIN, name, spec, NULL, NULL, NULL);
    if (g->oom)
        return;
    g->v[g->n - 1].rules = strdup(rules->p ? rules->p : "");
    if (g->v[g->n - 1].rules == NULL)
        g->oom = 1;
}

static void
global_chains(const struct nft_conf *c, struct nftgen_group *g)
{
    static const char *const check[] = {"firewall-check", "fw",
                                        "endpoints-check", "noep"};
    struct sbuf r;
    size_t i;
    int f, k;

    sbuf_init(&r, NFTGEN_TXN_MAX);
    for (i = 0; i < sizeof(base_chains) / sizeof(base_chains[0]); i++) {
        const char *n = base_chains[i].name;

        r.len = 0;
        if (r.p)
            r.p[0] = '\0';
        if (strcmp(n, "nat-postrouting") == 0) {
            /* Hairpin: a pod that reached itself through a Service must
             * see the node as the source, or its reply would bypass the
             * NAT. After DNAT the packet names the endpoint as its
             * destination: one set of "endpoint . endpoint" pairs
             * replaces a rule per endpoint. */
            if (c->masq != NFT_MASQ_NONE)
                for (f = 0; f < 2; f++)
                    sbuf_printf(&r,
                                "ct status dnat %s saddr . %s daddr @%s "
                                "jump mark-for-masq\n",
                                fam_p[f], fam_p[f],
                                f ? NFTGEN_HAIRPIN6 : NFTGEN_HAIRPIN4);
            sbuf_puts(&r, "jump masquerading\n");
        } else if (strncmp(n, "nat-", 4) == 0)
            sbuf_puts(&r, "jump services\n");
        else if (strcmp(n, "filter-prerouting") == 0
                 || strcmp(n, "filter-output-fw") == 0)
            /* Also the rule that keeps conntrack on in this namespace
             * for as long as the table exists. */
            sbuf_puts(&r, "ct state new jump firewall-check\n");
        else
            sbuf_puts(&r, "ct state new jump endpoints-check\n");
        if (strcmp(n, "filter-forward") == 0 || strcmp(n, "filter-output") == 0)
            sbuf_puts(&r, "ct state new jump cluster-ips-check\n");
        add_chain(g, n, base_chains[i].spec, &r);
    }
    /* services: dispatch by destination; nodeports last so that an
     * externalIP equal to a node address wins. */
    for (k = 0; k < 2; k++) {
        const char *chain = k ? "endpoints-check" : "services";
        const char *pre = k ? "noep" : "svc";

        r.len = 0;
        if (r.p)
            r.p[0] = '\0';
        for (f = 0; f < 2; f++)
            sbuf_printf(&r, "%s daddr . meta l4proto . th dport vmap @%s%d\n",
                        fam_p[f], pre, f ? 6 : 4);
        for (f = 0; f < 2; f++) {
            size_t mark = r.len;

            nodeport_match(c, f, &r);
            if (r.len != mark)
                sbuf_printf(&r, "meta l4proto . th dport vmap @%s%s%d\n",
                            k ? "noep-" : "", "nodeports", f ? 6 : 4);
        }
        add_chain(g, chain, NULL, &r);
    }
    r.len = 0;
    for (f = 0; f < 2; f++)
        sbuf_printf(&r, "%s daddr . meta l4proto . th dport vmap @%s%d\n",
                    fam_p[f], check[1], f ? 6 : 4);
    add_chain(g, check[0], NULL, &r);
    /* A ClusterIP on a port no Service has: refuse instead of sending it
     * to the default route. */
    r.len = 0;
    sbuf_printf(&r, "ip daddr @%s reject\nip6 daddr @%s reject\n",
                NFTGEN_CLUSTER_IPS4, NFTGEN_CLUSTER_IPS6);
    /* An address of the service ranges that no Service holds. */
    for (f = 0; f < 2; f++) {
        if (!count_cidr_fam(c->service_cidrs, c->nservice_cidrs, f))
            continue;
        sbuf_printf(&r, "%s daddr ", fam_p[f]);
        cidr_set(&r, c->service_cidrs, c->nservice_cidrs, f);
        sbuf_puts(&r, " reject\n");
    }
    add_chain(g, "cluster-ips-check", NULL, &r);
    r.len = 0;
    sbuf_printf(&r, "meta mark set meta mark | 0x%x\n", c->masq_mark);
    add_chain(g, "mark-for-masq", NULL, &r);
    r.len = 0;
    sbuf_printf(&r,
                "meta mark & 0x%x == 0 return\n"
                "meta mark set meta mark ^ 0x%x\n"
                "masquerade fully-random\n",
                c->masq_mark, c->masq_mark);
    add_chain(g, "masquerading", NULL, &r);
    r.len = 0;
    sbuf_puts(&r, "meta l4proto tcp reject with tcp reset\nreject\n");
    add_chain(g, "reject-chain", NULL, &r);
    for (k = 0; k < 2; k++) {
        char name[32];

        if (c->redirect_ports[k] == 0
            || (k == 1 && c->redirect_ports[1] == c->redirect_ports[0]))
            continue;
        r.len = 0;
        sbuf_printf(&r, "meta l4proto tcp redirect to :%u\n",
                    (unsigned)c->redirect_ports[k]);
        snprintf(name, sizeof(name), "redirect-%u",
                 (unsigned)c->redirect_ports[k]);
        add_chain(g, name, NULL, &r);
    }
    sbuf_deinit(&r);
}

static const char *const dport_of[NFT_PROTO__COUNT] = {
    "tcp dport", "udp dport", "sctp dport"};

void
nftgen_keys_name(int slot, enum nft_proto proto, uint32_t count, char *out)
{
    static const char *const in[4] = {"", "n", "l", "ln"};
    const char *k = in[(slot >> 1) & 3];

    if (count == 0)
        snprintf(out, NFTGEN_KEYS_NAME_MAX, NFTGEN_KEYS_PREFIX "%s%d-%s", k,
                 slot & 1 ? 6 : 4, nft_proto_name(proto));
    else
        snprintf(out, NFTGEN_KEYS_NAME_MAX, NFTGEN_KEYS_PREFIX "%s%d-%s-%u",
                 k, slot & 1 ? 6 : 4, nft_proto_name(proto), count);
}

int
nftgen_global(const struct nft_conf *c, struct nftgen_group *g)
{
    char spec[128];
    int f;

    snprintf(spec, sizeof(spec),
             "{ type inet_service; comment \"ferry layout %d\"; }", NFT_LAYOUT);
    group_add(g, NFTGEN_SET, NFTGEN_LAYOUT_SET, spec, NULL, NULL, NULL);
    for (f = 0; f < 2; f++) {
        char name[32], type[64];

        snprintf(type, sizeof(type), "%s . inet_proto . inet_service",
                 fam_type[f]);
        snprintf(name, sizeof(name), "svc%d", f ? 6 : 4);
        map_def(g, name, type);
        snprintf(name, sizeof(name), "noep%d", f ? 6 : 4);
        map_def(g, name, type);
        snprintf(name, sizeof(name), "fw%d", f ? 6 : 4);
        map_def(g, name, type);
        snprintf(name, sizeof(name), "nodeports%d", f ? 6 : 4);
        map_def(g, name, "inet_proto . inet_service");
        snprintf(name, sizeof(name), "noep-nodeports%d", f ? 6 : 4);
        map_def(g, name, "inet_proto . inet_service");
        snprintf(spec, sizeof(spec), "{ type %s; }", fam_type[f]);
        group_add(g, NFTGEN_SET, f ? NFTGEN_CLUSTER_IPS6 : NFTGEN_CLUSTER_IPS4,
                  spec, NULL, NULL, NULL);
        snprintf(spec, sizeof(spec), "{ type %s . %s; }", fam_type[f],
                 fam_type[f]);
        group_add(g, NFTGEN_SET, f ? NFTGEN_HAIRPIN6 : NFTGEN_HAIRPIN4, spec,
                  NULL, NULL, NULL);
    }
    global_chains(c, g);
    return group_finish(g);
}

/* ------------------------------------------------------------ services */

/* The endpoints of one family that take new flows, sorted by address,
 * duplicates dropped. */
struct eplist {
    const struct nft_ep **v;
    size_t n;
};

static int
ep_cmp(const void *pa, const void *pb)
{
    const struct nft_ep *a = *(const struct nft_ep *const *)pa;
    const struct nft_ep *b = *(const struct nft_ep *const *)pb;

    return saddr_cmp(&a->addr, &b->addr);
}

static int
eplist_make(struct eplist *l, const struct nft_ep *eps, size_t n, int f)
{
    size_t i, k = 0;

    l->n = 0;
    l->v = calloc(n ? n : 1, sizeof(*l->v));
    if (l->v == NULL)
        return -1;
    for (i = 0; i < n; i++)
        if (eps[i].weight > 0 && fam_of(&eps[i].addr) == f)
            l->v[l->n++] = &eps[i];
    qsort(l->v, l->n, sizeof(l->v[0]), ep_cmp);
    for (i = 0; i < l->n; i++)
        if (k == 0 || saddr_cmp(&l->v[k - 1]->addr, &l->v[i]->addr) != 0)
            l->v[k++] = l->v[i];
    l->n = k;
    return 0;
}

struct svcgen {
    const struct nft_conf *c;
    const struct nft_svc *s;
    struct nftgen_group *g;
    char base[NFTGEN_BASE_MAX];
    int f;
    struct sbuf r; /* rules of the chain being built */
};

static void
r_reset(struct svcgen *x)
{
    x->r.len = 0;
    if (x->r.p)
        x->r.p[0] = '\0';
}

static void
ep_chain_name(const struct svcgen *x, const struct nft_ep *e, char *out,
              size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    ip_name(&e->addr, ip);
    snprintf(out, len, "ep%d-%s/%s/%u", x->f ? 6 : 4, x->base, ip,
             (unsigned)saddr_port(&e->addr));
}

static void
aff_set_name(const struct svcgen *x, const struct nft_ep *e, char *out,
             size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    ip_name(&e->addr, ip);
    /* The timeout is part of the name: a changed timeout is a new set. */
    snprintf(out, len, "%s%d-%s/%s/%u/%us", NFTGEN_AFF_PREFIX, x->f ? 6 : 4,
             x->base, ip, (unsigned)saddr_port(&e->addr), x->s->affinity_s);
}

#define NAME_MAX_ 256

static void
endpoint_objs(struct svcgen *x, const struct nft_ep *e)
{
    char name[NAME_MAX_], set[NAME_MAX_], ip[INET6_ADDRSTRLEN], spec[128];
    const char *p = fam_p[x->f];

    ep_chain_name(x, e, name, sizeof(name));
    ip_str(&e->addr, ip);
    r_reset(x);
    aff_set_name(x, e, set, sizeof(set));
    snprintf(spec, sizeof(spec),
             "{ type %s; flags dynamic,timeout; timeout %us; }", fam_type[x->f],
             x->s->affinity_s);
    group_add(x->g, NFTGEN_SET, set, spec, NULL, NULL, NULL);
    sbuf_printf(&x->r, "update @%s { %s saddr }\n", set, p);
    sbuf_printf(&x->r, "meta l4proto %s dnat %s to %s%s%s:%u\n",
                nft_proto_name(x->s->proto), p, x->f ? "[" : "", ip,
                x->f ? "]" : "", (unsigned)saddr_port(&e->addr));
    add_chain(x->g, name, NULL, &x->r);
}

static uint32_t
gcd(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;

        a = b;
        b = t;
    }
    return a;
}

/* "198.18.1.2 . 8080" or "2001:2::1 . 8080": an endpoint as map data. */
static void
ep_data(struct sbuf *b, const struct nft_ep *e)
{
    char t[INET6_ADDRSTRLEN + 16];
    size_t n = ip_text(&e->addr, t);

    memcpy(t + n, " . ", 3);
    n += 3;
    n += u32_text(saddr_port(&e->addr), t + n);
    sbuf_add(b, t, n);
}

/*
 * Without affinity the service chain itself translates: one rule, "dnat
 * to numgen random mod NFTGEN_EP_MOD map @em4-<base>", and the service's
 * endpoint map holds each endpoint's range of the random number, in
 * proportion to its weight (nftgen.h says why the map is named and the
 * modulus fixed). The map is data, not verdicts: there is no endpoint
 * chain, no goto, and so nothing for the kernel's loop check to walk,
 * which is what made a chain per endpoint cost time and memory in
 * proportion to the endpoints of the whole table (kube-proxy's nftables
 * mode keeps one).
 *
 * Measured at 10,000 services of 25 endpoints (a full creation, before
 * the map was named): an anonymous map per rule, 20 s and 0.9 GB; a chain
 * per endpoint, 39 s and 3.5 GB; a rule per endpoint ("numgen random mod
 * R < w dnat to"), 22 s and 1.6 GB (what libnftables keeps per rule).
 * Most of the 20 s was the kernel's: it names each anonymous set by
 * walking the table's sets, so the cost grew with the square of the
 * services, and an endpoint change replaced the rule, which made the
 * kernel name a new set and check the whole table at commit.
 *
 * The rule is not replaced when endpoints change, and a transaction that
 * replaces it (a port changed, a restarted ferry adopting the table)
 * keeps the map: a packet that runs the old rule finds the map's
 * elements of the generation in force, so it needs no fallback rule (an
 * anonymous map went away with its rule, and needed one).
 */
static void
dispatch_map(struct svcgen *x, const struct eplist *l, const char *map)
{
    static const char *const dport[NFT_PROTO__COUNT] = {
        "tcp dport", "udp dport", "sctp dport"};
    char spec[160];
    struct sbuf el;
    uint64_t total = 0, cum = 0;
    uint32_t lo = 0;
    size_t i;

    for (i = 0; i < l->n; i++)
        total += l->v[i]->weight;
    sbuf_init(&el, NFTGEN_TXN_MAX);
    for (i = 0; i < l->n; i++) {
        uint32_t next;

        cum += l->v[i]->weight;
        next = (uint32_t)(cum * NFTGEN_EP_MOD / total);
        sbuf_printf(&el, "%s%u-%u : ", i ? ", " : "", lo, next - 1);
        ep_data(&el, l->v[i]);
        lo = next;
    }
    snprintf(spec, sizeof(spec),
             "{ typeof numgen random mod %u : %s daddr . %s; flags interval; }",
             NFTGEN_EP_MOD, fam_p[x->f], dport[x->s->proto]);
    if (el.overflow) {
        x->g->oom = 1;
    } else {
        struct nftgen_obj *o =
            group_add(x->g, NFTGEN_EPMAP, map, spec, el.p ? el.p : "", NULL,
                      NULL);

        if (o)
            o->is_map = 1;
    }
    sbuf_deinit(&el);
    sbuf_printf(&x->r,
                "meta l4proto %s dnat %s to numgen random mod %u map @%s\n",
                nft_proto_name(x->s->proto), fam_p[x->f], NFTGEN_EP_MOD, map);
}

/*
 * With ClientIP affinity each endpoint keeps a chain of its own: it
 * records the client in the endpoint's affinity set before translating.
 * The service chain looks the client up in each set, then picks at
 * random, weighted. Up to NFTGEN_VMAP_MIN endpoints, one rule each,
 * "numgen random mod R < w goto" with R the weight left, as kube-proxy's
 * iptables mode does; beyond, one "numgen random mod N vmap". Why not
 * always the vmap: each anonymous verdict map is a set of the table, and
 * the kernel's loop check walks every verdict-map set of the table for
 * every jump and goto it commits.
 */
static void
dispatch(struct svcgen *x, const struct eplist *l, const char *map)
{
    char name[NAME_MAX_];
    uint32_t g = 0, total = 0, at = 0;
    size_t i;

    for (i = 0; i < l->n; i++)
        g = gcd(g, l->v[i]->weight);
    for (i = 0; i < l->n; i++)
        total += l->v[i]->weight / g;
    if (x->s->affinity_s == 0) {
        dispatch_map(x, l, map);
        return;
    }
    for (i = 0; i < l->n; i++) {
        char set[NAME_MAX_];

        aff_set_name(x, l->v[i], set, sizeof(set));
        ep_chain_name(x, l->v[i], name, sizeof(name));
        sbuf_printf(&x->r, "%s saddr @%s goto %s\n", fam_p[x->f], set, name);
    }
    if (l->n <= NFTGEN_VMAP_MIN) {
        for (i = 0; i + 1 < l->n; i++) {
            uint32_t w = l->v[i]->weight / g;

            ep_chain_name(x, l->v[i], name, sizeof(name));
            sbuf_printf(&x->r, "numgen random mod %u < %u goto %s\n", total, w,
                        name);
            total -= w;
        }
        ep_chain_name(x, l->v[l->n - 1], name, sizeof(name));
        sbuf_printf(&x->r, "goto %s\n", name);
        return;
    }
    sbuf_printf(&x->r, "numgen random mod %u vmap { ", total);
    for (i = 0; i < l->n; i++) {
        uint32_t w = l->v[i]->weight / g;

        ep_chain_name(x, l->v[i], name, sizeof(name));
        if (w == 1)
            sbuf_printf(&x->r, "%s%u : goto %s", i ? ", " : "", at, name);
        else
            sbuf_printf(&x->r, "%s%u-%u : goto %s", i ? ", " : "", at,
                        at + w - 1, name);
        at += w;
    }
    sbuf_puts(&x->r, " }\n");
    /* The first endpoint outright, for a packet that straddles the
     * commit of a transaction replacing this rule: the kernel reads which
     * generation of rules a packet runs as it enters a chain, but the
     * generation of set elements at each lookup, so the old rule finds
     * its anonymous vmap's elements retired and would go on without a
     * translation, to be refused as a ClusterIP no Service holds (one
     * connection in 4,000 across ten restarts under load, before the
     * endpoints without affinity moved to named maps). */
    ep_chain_name(x, l->v[0], name, sizeof(name));
    sbuf_printf(&x->r, "goto %s\n", name);
}

static void
elem(struct svcgen *x, const char *map, const char *key, const char *verdict,
     const char *chain)
{
    char val[NAME_MAX_ + 16];

    snprintf(val, sizeof(val), "%s %s", verdict, chain);
    group_add(x->g, NFTGEN_ELEM, map, NULL, NULL, key, val);
}

static void
ip_elems(struct svcgen *x, const struct saddr *ips, size_t n, const char *map,
         const char *chain)
{
    char key[INET6_ADDRSTRLEN + 32], ip[INET6_ADDRSTRLEN];
    size_t i;

    for (i = 0; i < n; i++) {
        if (fam_of(&ips[i]) != x->f)
            continue;
        ip_str(&ips[i], ip);
        snprintf(key, sizeof(key), "%s . %s . %u", ip,
                 nft_proto_name(x->s->proto), (unsigned)x->s->port);
        elem(x, map, key, "goto", chain);
    }
}

static int
svc_has_family(const struct nft_svc *s, int f)
{
    return count_fam(s->cluster_ips, s->ncluster_ips, f)
           || count_fam(s->external_ips, s->nexternal_ips, f)
           || count_fam(s->lb_ips, s->nlb_ips, f);
}

/* The external chain: NodePort, externalIPs and LoadBalancer IPs. */
static void
external_chain(struct svcgen *x, const char *name, const char *svc,
               const char *loc, size_t ncl, size_t nloc)
{
    const char *p = fam_p[x->f];
    int masq = x->c->masq != NFT_MASQ_NONE;

    r_reset(x);
    if (!x->s->external_local) {
        if (masq)
            sbuf_puts(&x->r, "jump mark-for-masq\n");
        sbuf_printf(&x->r, "goto %s\n", svc);
    } else {
        if (ncl > 0) {
            /* Pods and the node itself reach every endpoint; only
             * traffic from outside keeps to this node's. */
            if (x->c->masq == NFT_MASQ_CIDR
                && count_cidr_fam(x->c->cluster_cidrs, x->c->ncluster_cidrs,
                                  x->f)) {
                sbuf_printf(&x->r, "%s saddr ", p);
                cidr_set(&x->r, x->c->cluster_cidrs, x->c->ncluster_cidrs,
                         x->f);
                sbuf_printf(&x->r, " goto %s\n", svc);
            }
            if (masq)
                sbuf_puts(&x->r, "fib saddr type local jump mark-for-masq\n");
            sbuf_printf(&x->r, "fib saddr type local goto %s\n", svc);
        }
        if (nloc > 0)
            sbuf_printf(&x->r, "goto %s\n", loc);
        else
            sbuf_puts(&x->r, "drop\n");
    }
    add_chain(x->g, name, NULL, &x->r);
}

/* A service of ferry's proxy: every address of family x->f goes to a
 * chain that redirects new connections to the proxy's local port: the
 * fixed one of that port (nft_conf.redirect_ports), else its own. */
static void
redirect_objs(struct svcgen *x)
{
    const struct nft_svc *s = x->s;
    char svc[NAME_MAX_], fw[NAME_MAX_], map[32], key[64];
    int f = x->f;

    if (!svc_has_family(s, f) && !(s->node_port && !svc_has_family(s, !f)))
        return;
    snprintf(fw, sizeof(fw), "fw-%s", x->base);
    snprintf(map, sizeof(map), "svc%d", f ? 6 : 4);
    if (s->redirect_port == x->c->redirect_ports[0]
        || s->redirect_port == x->c->redirect_ports[1]) {
        snprintf(svc, sizeof(svc), "redirect-%u", (unsigned)s->redirect_port);
    } else {
        snprintf(svc, sizeof(svc), "svc%d-%s", f ? 6 : 4, x->base);
        r_reset(x);
        sbuf_printf(&x->r, "meta l4proto tcp redirect to :%u\n",
                    (unsigned)s->redirect_port);
        add_chain(x->g, svc, NULL, &x->r);
    }
    ip_elems(x, s->cluster_ips, s->ncluster_ips, map, svc);
    ip_elems(x, s->external_ips, s->nexternal_ips, map, svc);
    ip_elems(x, s->lb_ips, s->nlb_ips, map, svc);
    if (s->node_port) {
        snprintf(map, sizeof(map), "nodeports%d", f ? 6 : 4);
        snprintf(key, sizeof(key), "%s . %u", nft_proto_name(s->proto),
                 (unsigned)s->node_port);
        elem(x, map, key, "goto", svc);
    }
    if (s->nsource_ranges > 0 && count_fam(s->lb_ips, s->nlb_ips, f)) {
        snprintf(map, sizeof(map), "fw%d", f ? 6 : 4);
        ip_elems(x, s->lb_ips, s->nlb_ips, map, fw);
    }
}

static void
family_objs(struct svcgen *x, const struct eplist *cl, const struct eplist *lo)
{
    const struct nft_svc *s = x->s;
    char svc[NAME_MAX_], ext[NAME_MAX_], loc[NAME_MAX_], fw[NAME_MAX_];
    char epm[NAME_MAX_], map[32], noep[32], key[64];
    int f = x->f, has_ext, ext_ok;
    size_t i, j;

    if (s->redirect_port != 0) {
        redirect_objs(x);
        return;
    }
    snprintf(svc, sizeof(svc), "svc%d-%s", f ? 6 : 4, x->base);
    snprintf(ext, sizeof(ext), "ext%d-%s", f ? 6 : 4, x->base);
    snprintf(loc, sizeof(loc), "loc%d-%s", f ? 6 : 4, x->base);
    snprintf(fw, sizeof(fw), "fw-%s", x->base);
    snprintf(map, sizeof(map), "svc%d", f ? 6 : 4);
    snprintf(noep, sizeof(noep), "noep%d", f ? 6 : 4);

    /* Endpoint chains (affinity only), each once even when in both
     * lists. */
    for (i = 0; i < cl->n && s->affinity_s > 0; i++)
        endpoint_objs(x, cl->v[i]);
    for (i = 0; i < lo->n && s->affinity_s > 0; i++) {
        for (j = 0; j < cl->n; j++)
            if (saddr_cmp(&cl->v[j]->addr, &lo->v[i]->addr) == 0)
                break;
        if (j == cl->n)
            endpoint_objs(x, lo->v[i]);
    }
    if (cl->n > 0) {
        r_reset(x);
        if (x->c->masq == NFT_MASQ_ALL)
            sbuf_puts(&x->r, "jump mark-for-masq\n");
        else if (x->c->masq == NFT_MASQ_CIDR
                 && count_fam(s->cluster_ips, s->ncluster_ips, f)
                 && count_cidr_fam(x->c->cluster_cidrs, x->c->ncluster_cidrs,
                                   f)) {
            /* ClusterIP traffic from outside the cluster: the reply must
             * come back through this node. */
            sbuf_printf(&x->r, "%s daddr ", fam_p[f]);
            ip_set(&x->r, s->cluster_ips, s->ncluster_ips, f);
            sbuf_printf(&x->r, " %s saddr != ", fam_p[f]);
            cidr_set(&x->r, x->c->cluster_cidrs, x->c->ncluster_cidrs, f);
            sbuf_puts(&x->r, " jump mark-for-masq\n");
        }
        snprintf(epm, sizeof(epm), NFTGEN_EPMAP_PREFIX "%d-%s", f ? 6 : 4,
                 x->base);
        dispatch(x, cl, epm);
        add_chain(x->g, svc, NULL, &x->r);
    }
    if (s->external_local && lo->n > 0) {
        r_reset(x);
        snprintf(epm, sizeof(epm), NFTGEN_EPMAP_PREFIX "l%d-%s", f ? 6 : 4,
                 x->base);
        dispatch(x, lo, epm);
        add_chain(x->g, loc, NULL, &x->r);
    }

    /* ClusterIPs: to the service chain, or refused. */
    if (cl->n > 0)
        ip_elems(x, s->cluster_ips, s->ncluster_ips, map, svc);
    else
        ip_elems(x, s->cluster_ips, s->ncluster_ips, noep, "reject-chain");

    has_ext =
        count_fam(s->external_ips, s->nexternal_ips, f)
        || count_fam(s->lb_ips, s->nlb_ips, f)
        || (s->node_port
            && (svc_has_family(s, f) || (!svc_has_family(s, !f) && cl->n > 0)));
    if (!has_ext)
        return;
    ext_ok = cl->n > 0 || (s->external_local && lo->n > 0);
    if (ext_ok)
        external_chain(x, ext, svc, loc, cl->n, lo->n);
    ip_elems(x, s->external_ips, s->nexternal_ips, ext_ok ? map : noep,
             ext_ok ? ext : "reject-chain");
    ip_elems(x, s->lb_ips, s->nlb_ips, ext_ok ? map : noep,
             ext_ok ? ext : "reject-chain");
    if (s->node_port) {
        char npmap[32];

        snprintf(npmap, sizeof(npmap), "%snodeports%d", ext_ok ? "" : "noep-",
                 f ? 6 : 4);
        snprintf(key, sizeof(key), "%s . %u", nft_proto_name(s->proto),
                 (unsigned)s->node_port);
        elem(x, npmap, key, "goto", ext_ok ? ext : "reject-chain");
    }
    if (s->nsource_ranges > 0 && count_fam(s->lb_ips, s->nlb_ips, f)) {
        snprintf(map, sizeof(map), "fw%d", f ? 6 : 4);
        ip_elems(x, s->lb_ips, s->nlb_ips, map, fw);
    }
}

/* loadBalancerSourceRanges: one chain for both families. */
static void
firewall_chain(struct svcgen *x)
{
    const struct nft_svc *s = x->s;
    char fw[NAME_MAX_];
    int f;

    if (s->nsource_ranges == 0 || s->nlb_ips == 0)
        return;
    snprintf(fw, sizeof(fw), "fw-%s", x->base);
    r_reset(x);
    for (f = 0; f < 2; f++) {
        if (!count_cidr_fam(s->source_ranges, s->nsource_ranges, f))
            continue;
        sbuf_printf(&x->r, "%s saddr ", fam_p[f]);
        cidr_set(&x->r, s->source_ranges, s->nsource_ranges, f);
        sbuf_puts(&x->r, " return\n");
    }
    sbuf_puts(&x->r, "drop\n");
    add_chain(x->g, fw, NULL, &x->r);
}

int
nftgen_service(const struct nft_conf *c, const struct nft_svc *s,
               struct nftgen_group *g)
{
    struct svcgen x;
    struct eplist cl = {0}, lo = {0};
    int rc = 0;

    memset(&x, 0, sizeof(x));
    x.c = c;
    x.s = s;
    x.g = g;
    nftgen_base(s, x.base);
    sbuf_init(&x.r, NFTGEN_TXN_MAX);
    for (x.f = 0; x.f < 2 && rc == 0; x.f++) {
        if (eplist_make(&cl, s->cluster_eps, s->ncluster_eps, x.f) < 0
            || eplist_make(&lo, s->local_eps, s->nlocal_eps, x.f) < 0) {
            g->oom = 1;
            rc = -1;
        } else {
            family_objs(&x, &cl, &lo);
        }
        free(cl.v);
        free(lo.v);
        cl.v = lo.v = NULL;
    }
    firewall_chain(&x);
    sbuf_deinit(&x.r);
    return rc < 0 ? -1 : group_finish(g);
}

/* ------------------------------------------------- layout 4: shared keys */

/* The keys of list <l>: each endpoint's weight over their common
 * factor, added up. */
static uint64_t
keys_of(const struct eplist *l)
{
    uint64_t total = 0;
    uint32_t g = 0;
    size_t i;

    for (i = 0; i < l->n; i++)
        g = gcd(g, l->v[i]->weight);
    for (i = 0; i < l->n; i++)
        total += l->v[i]->weight / g;
    return total;
}

/* "ip . port, ip . port, ...": the endpoint of each key in order, an
 * endpoint once per share of its weight. */
static void
keys_text(struct sbuf *b, const struct eplist *l)
{
    uint32_t g = 0, k;
    size_t i;

    for (i = 0; i < l->n; i++)
        g = gcd(g, l->v[i]->weight);
    for (i = 0; i < l->n; i++)
        for (k = 0; k < l->v[i]->weight / g; k++) {
            if (b->len)
                sbuf_puts(b, ", ");
            ep_data(b, l->v[i]);
        }
}

/* KEYS objects of map group <map> (count map <set>) for the addresses of
 * family x->f in <ips>, each at the service's port. */
static void
keys_addrs(struct svcgen *x, const struct saddr *ips, size_t n,
           const char *map, const char *set, const char *eps,
           uint32_t total)
{
    char key[INET6_ADDRSTRLEN + 16];
    struct nftgen_obj *o;
    size_t i, k;

    for (i = 0; i < n && !x->g->oom; i++) {
        if (fam_of(&ips[i]) != x->f)
            continue;
        k = ip_text(&ips[i], key);
        memcpy(key + k, " . ", 3);
        k += 3;
        key[k + u32_text(x->s->port, key + k)] = '\0';
        o = group_add(x->g, NFTGEN_KEYS, map, set, eps, key, NULL);
        if (o != NULL)
            o->count = total;
    }
}

/* The objects of family x->f of a plain service whose endpoints of that
 * family are <l> (and, under externalTrafficPolicy: Local, its local ones
 * <lo>): its addresses' and NodePort's keys and the dispatch maps'
 * elements that lead to the pick chains; with no endpoint, the elements
 * that refuse (as nftgen_service() does). */
static void
keys_objs(struct svcgen *x, const struct eplist *l, const struct eplist *lo)
{
    const struct nft_svc *s = x->s;
    const char *proto = nft_proto_name(s->proto);
    char map[NFTGEN_KEYS_NAME_MAX], set[NFTGEN_KEYS_NAME_MAX];
    char pick[40], svc[24], key[32], port[8];
    uint32_t total = (uint32_t)keys_of(l), ltotal = (uint32_t)keys_of(lo);
    int f = x->f, np, local = s->external_local;
    struct sbuf eps, leps;
    struct nftgen_obj *o;

    /* The NodePort of this family, as nftgen_service() decides it. */
    np = s->node_port
         && (svc_has_family(s, f) || (!svc_has_family(s, !f) && l->n > 0));
    snprintf(key, sizeof(key), "%s . %u", proto, (unsigned)s->node_port);
    /* loadBalancerSourceRanges: checked before the nat hook, in a chain
     * of the Service's own (firewall_chain()), whichever layout. */
    if (s->nsource_ranges > 0 && count_fam(s->lb_ips, s->nlb_ips, f)) {
        char fw[NAME_MAX_];

        snprintf(svc, sizeof(svc), "fw%d", f ? 6 : 4);
        snprintf(fw, sizeof(fw), "fw-%s", x->base);
        ip_elems(x, s->lb_ips, s->nlb_ips, svc, fw);
    }
    if (l->n == 0) {
        snprintf(svc, sizeof(svc), "noep%d", f ? 6 : 4);
        ip_elems(x, s->cluster_ips, s->ncluster_ips, svc, "reject-chain");
        ip_elems(x, s->external_ips, s->nexternal_ips, svc, "reject-chain");
        ip_elems(x, s->lb_ips, s->nlb_ips, svc, "reject-chain");
        snprintf(svc, sizeof(svc), "noep-nodeports%d", f ? 6 : 4);
        if (np)
            elem(x, svc, key, "goto", "reject-chain");
        return;
    }
    sbuf_init(&eps, NFTGEN_TXN_MAX);
    sbuf_init(&leps, NFTGEN_TXN_MAX);
    keys_text(&eps, l);
    keys_text(&leps, lo);
    if (eps.overflow || leps.overflow)
        x->g->oom = 1;
    nftgen_keys_name(f, s->proto, 0, map);
    nftgen_keys_name(f, s->proto, total, set);
    keys_addrs(x, s->cluster_ips, s->ncluster_ips, map, set, eps.p, total);
    keys_addrs(x, s->external_ips, s->nexternal_ips, map, set, eps.p, total);
    keys_addrs(x, s->lb_ips, s->nlb_ips, map, set, eps.p, total);
    if (local && lo->n > 0) {
        /* Outside traffic to the external addresses: the local list. */
        nftgen_keys_name(4 + f, s->proto, 0, map);
        nftgen_keys_name(4 + f, s->proto, ltotal, set);
        keys_addrs(x, s->external_ips, s->nexternal_ips, map, set, leps.p,
                   ltotal);
        keys_addrs(x, s->lb_ips, s->nlb_ips, map, set, leps.p, ltotal);
    }
    snprintf(svc, sizeof(svc), "svc%d", f ? 6 : 4);
    snprintf(pick, sizeof(pick), NFTGEN_PICK_PREFIX "%d-%s", f ? 6 : 4, proto);
    ip_elems(x, s->cluster_ips, s->ncluster_ips, svc, pick);
    /* External addresses are marked for masquerade first, or (Local)
     * sent to the local endpoints unless they come from the cluster. */
    snprintf(pick, sizeof(pick), NFTGEN_PICK_PREFIX "x%s%d-%s",
             local ? "l" : "", f ? 6 : 4, proto);
    ip_elems(x, s->external_ips, s->nexternal_ips, svc, pick);
    ip_elems(x, s->lb_ips, s->nlb_ips, svc, pick);
    if (np && !x->g->oom) {
        /* Any node address: keyed by the port alone. */
        snprintf(port, sizeof(port), "%u", (unsigned)s->node_port);
        nftgen_keys_name(2 + f, s->proto, 0, map);
        nftgen_keys_name(2 + f, s->proto, total, set);
        o = group_add(x->g, NFTGEN_KEYS, map, set, eps.p, port, NULL);
        if (o != NULL)
            o->count = total;
        if (local && lo->n > 0) {
            nftgen_keys_name(6 + f, s->proto, 0, map);
            nftgen_keys_name(6 + f, s->proto, ltotal, set);
            o = group_add(x->g, NFTGEN_KEYS, map, set, leps.p, port, NULL);
            if (o != NULL)
                o->count = ltotal;
        }
        snprintf(svc, sizeof(svc), "nodeports%d", f ? 6 : 4);
        snprintf(pick, sizeof(pick), NFTGEN_PICK_PREFIX "%sn%d-%s",
                 local ? "l" : "", f ? 6 : 4, proto);
        elem(x, svc, key, "goto", pick);
    }
    sbuf_deinit(&eps);
    sbuf_deinit(&leps);
}

int
nftgen_service_keys(const struct nft_conf *c, const struct nft_svc *s,
                    struct nftgen_group *g)
{
    struct svcgen x;
    struct eplist l = {0}, lo = {0};
    int pass;

    /* ClusterIP, external and load-balancer addresses and NodePorts; not
     * affinity or a proxy redirect. */
    if (c->own_chains || s->redirect_port != 0 || s->affinity_s != 0
        || (!svc_has_family(s, 0) && !svc_has_family(s, 1)))
        return 0;
    memset(&x, 0, sizeof(x));
    x.c = c;
    x.s = s;
    x.g = g;
    nftgen_base(s, x.base);
    /* First whether every family's keys fit, then the objects. */
    for (pass = 0; pass < 2; pass++)
        for (x.f = 0; x.f < 2; x.f++) {
            uint64_t total, ltotal;
            int ext;

            if (eplist_make(&l, s->cluster_eps, s->ncluster_eps, x.f) < 0
                || eplist_make(&lo, s->local_eps,
                               s->external_local ? s->nlocal_eps : 0, x.f)
                       < 0) {
                free(l.v);
                g->oom = 1;
                return -1;
            }
            total = keys_of(&l);
            ltotal = keys_of(&lo);
            /* Under Local, external traffic that no cluster endpoint
             * serves still reaches the local ones: chains of its own. */
            ext = count_fam(s->external_ips, s->nexternal_ips, x.f)
                  || count_fam(s->lb_ips, s->nlb_ips, x.f)
                  || (s->node_port && svc_has_family(s, x.f));
            if (pass == 1)
                keys_objs(&x, &l, &lo);
            free(l.v);
            free(lo.v);
            if (total > NFTGEN_KEYS_MAX || ltotal > NFTGEN_KEYS_MAX
                || (s->external_local && ext && l.n == 0 && lo.n > 0))
                return 0;
        }
    sbuf_init(&x.r, NFTGEN_TXN_MAX);
    firewall_chain(&x);
    sbuf_deinit(&x.r);
    return group_finish(g) < 0 ? -1 : 1;
}

/* The lines that send traffic from the cluster (its pod ranges, under
 * the CIDR mode) and from the node itself to chain <to>, the node's own
 * marked for masquerade: what an external chain under Local does before
 * it picks a local endpoint (nftgen_service()'s external_chain()). */
static void
local_prefix(const struct nft_conf *c, int f, const char *to, struct sbuf *r)
{
    if (c->masq == NFT_MASQ_CIDR
        && count_cidr_fam(c->cluster_cidrs, c->ncluster_cidrs, f)) {
        sbuf_printf(r, "%s saddr ", fam_p[f]);
        cidr_set(r, c->cluster_cidrs, c->ncluster_cidrs, f);
        sbuf_printf(r, " goto %s\n", to);
    }
    if (c->masq != NFT_MASQ_NONE)
        sbuf_puts(r, "fib saddr type local jump mark-for-masq\n");
    sbuf_printf(r, "fib saddr type local goto %s\n", to);
}

static void
r_clear(struct sbuf *r)
{
    r->len = 0;
    if (r->p)
        r->p[0] = '\0';
}

int
nftgen_picks(const struct nft_conf *c, const struct nftgen_counts *k,
             struct nftgen_group *g)
{
    char map[NFTGEN_KEYS_NAME_MAX], chain[48], spec[160], to[48];
    struct sbuf r, one;
    struct nftgen_obj *o;
    size_t i;
    int slot, p;

    if (c->own_chains)
        return group_finish(g);
    sbuf_init(&r, NFTGEN_TXN_MAX);
    sbuf_init(&one, NFTGEN_TXN_MAX);
    for (slot = 0; slot < NFTGEN_KEYS_SLOTS; slot++)
        for (p = 0; p < NFT_PROTO__COUNT; p++) {
            const char *proto = nft_proto_name((enum nft_proto)p);
            int f = slot & 1, np = (slot >> 1) & 1, local = slot >> 2;
            const char *in = local ? (np ? "ln" : "l") : (np ? "n" : "");

            r_clear(&r);
            if (local) {
                /* Under Local: the cluster and the node itself to every
                 * endpoint, the rest to the local ones, or dropped. */
                snprintf(to, sizeof(to), NFTGEN_PICK_PREFIX "%s%d-%s",
                         np ? "nc" : "", f ? 6 : 4, proto);
                local_prefix(c, f, to, &r);
            } else if (c->masq == NFT_MASQ_ALL) {
                /* What a Service chain marks, without its test of the
                 * destination: only ClusterIPs come here marked by
                 * nothing else. */
                sbuf_puts(&r, "jump mark-for-masq\n");
            } else if (!np && c->masq == NFT_MASQ_CIDR
                       && count_cidr_fam(c->cluster_cidrs, c->ncluster_cidrs,
                                         f)) {
                sbuf_printf(&r, "%s saddr != ", fam_p[f]);
                cidr_set(&r, c->cluster_cidrs, c->ncluster_cidrs, f);
                sbuf_puts(&r, " jump mark-for-masq\n");
            }
            /* The numgen part of the key is typed by a modulus of 1: only
             * its width and byte order count. Maps per protocol: nft
             * 1.0.6 reads a map typed with "th dport" back from the kernel
             * and then refuses any rule that names it ("conflicting
             * protocols specified"). */
            snprintf(spec, sizeof(spec),
                     "{ typeof %s%s%s . numgen random mod 1 : %s daddr . "
                     "%s; }",
                     np ? "" : fam_p[f], np ? "" : " daddr . ", dport_of[p],
                     fam_p[f], dport_of[p]);
            for (i = 0; i < k->n[slot][p]; i++) {
                uint32_t n = k->v[slot][p][i];

                nftgen_keys_name(slot, (enum nft_proto)p, n, map);
                o = group_add(g, NFTGEN_SET, map, spec, NULL, NULL, NULL);
                if (o != NULL)
                    o->is_map = 1;
                r_clear(&one);
                sbuf_printf(&one,
                            "dnat %s to %s%s%s . numgen random mod %u map "
                            "@%s\n",
                            fam_p[f], np ? "" : fam_p[f],
                            np ? "" : " daddr . ", dport_of[p], n, map);
                snprintf(chain, sizeof(chain), NFTGEN_PICK_PREFIX "%s%d-%s-%u",
                         in, f ? 6 : 4, proto, n);
                add_chain(g, chain, NULL, &one);
                sbuf_printf(&r, "jump %s\n", chain);
            }
            if (local)
                sbuf_puts(&r, "drop\n");
            /* pick4-tcp, picknc4-tcp (a NodePort's cluster endpoints,
             * unmarked), pickxl4-tcp, pickln4-tcp. */
            snprintf(chain, sizeof(chain), NFTGEN_PICK_PREFIX "%s%s%d-%s",
                     local && !np ? "x" : "", np && !local ? "nc" : in,
                     f ? 6 : 4, proto);
            add_chain(g, chain, NULL, &r);
            if (local)
                continue;
            /* Under Cluster, external addresses and NodePorts: marked,
             * then picked among every endpoint (pickx4-tcp, pickn4-tcp). */
            r_clear(&r);
            if (c->masq != NFT_MASQ_NONE)
                sbuf_puts(&r, "jump mark-for-masq\n");
            sbuf_printf(&r, "goto %s\n", chain);
            snprintf(chain, sizeof(chain), NFTGEN_PICK_PREFIX "%s%d-%s",
                     np ? "n" : "x", f ? 6 : 4, proto);
            add_chain(g, chain, NULL, &r);
        }
    sbuf_deinit(&r);
    sbuf_deinit(&one);
    return group_finish(g);
}

/* --------------------------------------------------------- transactions */

void
nftgen_txn_init(struct nftgen_txn *t)
{
    int i;

    memset(t, 0, sizeof(*t));
    for (i = 0; i < NFTGEN_PH__COUNT; i++)
        sbuf_init(&t->ph[i], NFTGEN_TXN_MAX);
}

void
nftgen_txn_deinit(struct nftgen_txn *t)
{
    size_t j;
    int i;

    for (i = 0; i < NFTGEN_PH__COUNT; i++)
        sbuf_deinit(&t->ph[i]);
    for (j = 0; j < t->nbk; j++)
        sbuf_deinit(&t->bk[j].elems);
    free(t->bk);
    t->bk = NULL;
    t->nbk = 0;
    free(t->epm);
    free(t->epm_fresh);
    free(t->keys);
    t->keys = NULL;
    t->nkeys = 0;
    t->epm = NULL;
    t->epm_fresh = NULL;
    t->nepm = 0;
}

void
nftgen_txn_lean(struct nftgen_txn *t, const struct nftgen_group *shared)
{
    t->shared = shared;
}

int
nftgen_txn_no_text(const struct nftgen_txn *t)
{
    int i;

    for (i = 0; i < NFTGEN_PH__COUNT; i++)
        if (t->ph[i].len > 0)
            return 0;
    return t->nbk == 0;
}

int
nftgen_txn_empty(const struct nftgen_txn *t)
{
    return nftgen_txn_no_text(t) && t->nepm == 0 && t->nkeys == 0;
}

/* "add set|map <name> { <spec without its '}'> elements = { ... } }" for
 * bucket <b> into <out>. */
static void
set_with_elems(struct sbuf *out, int is_map, const char *name,
               const char *spec, const char *elems, size_t len)
{
    const char *end = strrchr(spec, '}');

    if (end == NULL)
        end = spec + strlen(spec);
    while (end > spec && end[-1] == ' ')
        end--;
    sbuf_printf(out, "add %s " T " %s %.*s elements = { %.*s } }\n",
                is_map ? "map" : "set", name, (int)(end - spec), spec,
                (int)len, elems ? elems : "");
}

static void
bucket_text(const struct nftgen_bucket *b, struct sbuf *out)
{
    set_with_elems(out, b->set->is_map, b->set->name, b->set->spec,
                   b->elems.p, b->elems.len);
}

char *
nftgen_txn_text(const struct nftgen_txn *t)
{
    struct sbuf elems;
    size_t total = 0, at = 0, j;
    char *out = NULL;
    int i;

    sbuf_init(&elems, NFTGEN_TXN_MAX);
    for (j = 0; j < t->nbk; j++) {
        if (t->bk[j].elems.overflow)
            elems.overflow = 1;
        bucket_text(&t->bk[j], &elems);
    }
    if (t->oom || elems.overflow)
        goto out;
    for (i = 0; i < NFTGEN_PH__COUNT; i++) {
        if (t->ph[i].overflow)
            goto out;
        total += t->ph[i].len;
    }
    out = malloc(total + elems.len + 1);
    if (out == NULL)
        goto out;
    for (i = 0; i < NFTGEN_PH__COUNT; i++) {
        /* Additions to shared sets after every element deletion (an
         * element that changes value is deleted, then added). */
        if (i == NFTGEN_PH_DEL && elems.len) {
            memcpy(out + at, elems.p, elems.len);
            at += elems.len;
        }
        if (t->ph[i].len)
            memcpy(out + at, t->ph[i].p, t->ph[i].len);
        at += t->ph[i].len;
    }
    out[at] = '\0';
out:
    sbuf_deinit(&elems);
    return out;
}

/* Commands that libnftables 1.0.6 runs on its table cache alone. */
static const char *const lean_cmds[] = {"add chain ", "add set ", "add map ",
                                        "flush chain "};

int
nftgen_lean_text(const char *text)
{
    const char *p = text;
    size_t i;

    while (p && *p) {
        const char *nl = strchr(p, '\n');
        int ok = *p == '\t' || *p == '}' || *p == '\n';

        for (i = 0; !ok && i < sizeof(lean_cmds) / sizeof(lean_cmds[0]); i++)
            ok = strncmp(p, lean_cmds[i], strlen(lean_cmds[i])) == 0;
        if (!ok)
            return 0;
        p = nl ? nl + 1 : NULL;
    }
    return 1;
}

static void emit(struct nftgen_txn *t, enum nftgen_phase ph, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));

static void
emit(struct nftgen_txn *t, enum nftgen_phase ph, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        t->ph[ph].overflow = 1;
        return;
    }
    sbuf_add(&t->ph[ph], s, (size_t)n);
    free(s);
}

/* The bucket of shared set <name> in a lean <t>, or NULL (not lean, not a
 * shared set, a spec it cannot extend, or no memory: the caller then
 * emits its usual command). */
static struct sbuf *
bucket(struct nftgen_txn *t, const char *name)
{
    const struct nftgen_obj *set = NULL;
    struct nftgen_bucket *p;
    size_t i;

    if (t->shared == NULL)
        return NULL;
    for (i = 0; i < t->nbk; i++)
        if (strcmp(t->bk[i].set->name, name) == 0)
            return &t->bk[i].elems;
    for (i = 0; i < t->shared->n && set == NULL; i++)
        if (t->shared->v[i].kind == NFTGEN_SET
            && strcmp(t->shared->v[i].name, name) == 0)
            set = &t->shared->v[i];
    if (set == NULL || set->spec == NULL || strrchr(set->spec, '}') == NULL)
        return NULL;
    p = realloc(t->bk, (t->nbk + 1) * sizeof(*p));
    if (p == NULL)
        return NULL;
    t->bk = p;
    p[t->nbk].set = set;
    sbuf_init(&p[t->nbk].elems, NFTGEN_TXN_MAX);
    return &p[t->nbk++].elems;
}

/* Element <key> (": <val>" for a map) added to set <name>: into its
 * bucket when <t> is lean, else as its own command. */
static void
add_elem(struct nftgen_txn *t, const char *name, const char *key,
         const char *val)
{
    struct sbuf *b = bucket(t, name);

    if (b == NULL) {
        emit(t, NFTGEN_PH_EADD, "add element " T " %s { %s%s%s }\n", name, key,
             val ? " : " : "", val ? val : "");
        return;
    }
    sbuf_printf(b, "%s%s%s%s", b->len ? ", " : "", key, val ? " : " : "",
                val ? val : "");
}

void
nftgen_add_table(struct nftgen_txn *t, const char *comment)
{
    if (comment)
        emit(t, NFTGEN_PH_ADD, "add table " T " { comment \"%s\"; }\n",
             comment);
    else
        emit(t, NFTGEN_PH_ADD, "add table " T "\n");
}

void
nftgen_delete_table(struct nftgen_txn *t)
{
    emit(t, NFTGEN_PH_ADD, "delete table " T "\n");
}

void
nftgen_flush_table(struct nftgen_txn *t)
{
    emit(t, NFTGEN_PH_FLUSH, "flush table " T "\n");
}

void
nftgen_flush_chain(struct nftgen_txn *t, const char *name)
{
    emit(t, NFTGEN_PH_FLUSH, "flush chain " T " %s\n", name);
}

void
nftgen_flush_set(struct nftgen_txn *t, const char *name, int is_map)
{
    emit(t, NFTGEN_PH_FLUSH, "flush %s " T " %s\n", is_map ? "map" : "set",
         name);
}

void
nftgen_delete_chain(struct nftgen_txn *t, const char *name)
{
    emit(t, NFTGEN_PH_DEL, "delete chain " T " %s\n", name);
}

void
nftgen_delete_set(struct nftgen_txn *t, const char *name, int is_map)
{
    emit(t, NFTGEN_PH_DEL, "delete %s " T " %s\n", is_map ? "map" : "set",
         name);
}

void
nftgen_add_ip(struct nftgen_txn *t, const char *name, const struct saddr *ip)
{
    char s[INET6_ADDRSTRLEN];

    ip_str(ip, s);
    add_elem(t, name, s, NULL);
}

void
nftgen_del_ip(struct nftgen_txn *t, const char *name, const struct saddr *ip)
{
    char s[INET6_ADDRSTRLEN];

    ip_str(ip, s);
    emit(t, NFTGEN_PH_EDEL, "delete element " T " %s { %s }\n", name, s);
}

/* Nonzero when set <name> is one that nftgen_diff() declares with the
 * chains that name it: an endpoint map, layout 4's keyed maps (of the
 * pick chains' group). */
static int
declared(const char *name)
{
    return strncmp(name, NFTGEN_EPMAP_PREFIX, strlen(NFTGEN_EPMAP_PREFIX)) == 0
           || strncmp(name, NFTGEN_KEYS_PREFIX, strlen(NFTGEN_KEYS_PREFIX))
                  == 0;
}

/* Nonzero when every set <rules> name is declared with it (declared()),
 * so libnftables knows them without fetching its set cache. */
static int
names_only_epmaps(const char *rules)
{
    const char *p = rules;

    while ((p = strchr(p, '@')) != NULL) {
        p++;
        if (!declared(p))
            return 0;
    }
    return 1;
}

static void
add_rules(struct nftgen_txn *t, const struct nftgen_obj *o)
{
    const char *p = o->rules, *nl;

    if (t->shared != NULL && o->spec == NULL && p && *p
        && names_only_epmaps(p)) {
        /* Lean: one command, a rule a line. */
        emit(t, NFTGEN_PH_RULES, "add chain " T " %s {\n", o->name);
        while (*p) {
            nl = strchr(p, '\n');
            if (nl == NULL)
                nl = p + strlen(p);
            emit(t, NFTGEN_PH_RULES, "\t%.*s\n", (int)(nl - p), p);
            p = *nl ? nl + 1 : nl;
        }
        emit(t, NFTGEN_PH_RULES, "}\n");
        return;
    }

    while (p && *p) {
        nl = strchr(p, '\n');
        if (nl == NULL)
            nl = p + strlen(p);
        emit(t, NFTGEN_PH_RULES, "add rule " T " %s %.*s\n", o->name,
             (int)(nl - p), p);
        p = *nl ? nl + 1 : nl;
    }
}

/* "add map <name> { <spec without '}'> elements = { <rules> } }": an
 * endpoint map's elements, after any flush of the map (a convergence). */
static void
epmap_fill(struct nftgen_txn *t, const struct nftgen_obj *o)
{
    set_with_elems(&t->ph[NFTGEN_PH_EADD], 1, o->name, o->spec, o->rules,
                   strlen(o->rules));
}

static void
epmap_changed(struct nftgen_txn *t, const struct nftgen_obj *o, int fresh)
{
    const struct nftgen_obj **p;
    unsigned char *f;

    p = realloc(t->epm, (t->nepm + 1) * sizeof(*p));
    if (p != NULL)
        t->epm = p;
    f = realloc(t->epm_fresh, t->nepm + 1);
    if (f != NULL)
        t->epm_fresh = f;
    if (p == NULL || f == NULL) {
        t->oom = 1;
        return;
    }
    p[t->nepm] = o;
    f[t->nepm++] = (unsigned char)fresh;
}

static void
keys_changed(struct nftgen_txn *t, const struct nftgen_obj *o,
             const struct nftgen_obj *n)
{
    struct nftgen_keychange *p;

    p = realloc(t->keys, (t->nkeys + 1) * sizeof(*p));
    if (p == NULL) {
        t->oom = 1;
        return;
    }
    t->keys = p;
    p[t->nkeys].old = o;
    p[t->nkeys++].new = n;
}

/* Nonzero when <t> says the kernel holds chain or set <name> already. */
static int
exists(const struct nftgen_txn *t, const char *name)
{
    return t->existing != NULL && smap_get(t->existing, name) != NULL;
}

static void
obj_create(struct nftgen_txn *t, const struct nftgen_obj *o)
{
    switch (o->kind) {
    case NFTGEN_EPMAP:
        if (!exists(t, o->name))
            emit(t, NFTGEN_PH_ADD, "add map " T " %s %s\n", o->name,
                 o->spec);
        /* In a lean transaction (an update, a part of a creation) the
         * elements go through netlink after the text, as a change's do:
         * libnftables takes hundreds of bytes per interval element while
         * it parses (a Service of 100,000 endpoints: 700 MB), and so does
         * an adoption (nftgen_txn.epm_netlink). A table recreated keeps
         * them in its one transaction. */
        if (t->shared != NULL || t->epm_netlink)
            /* New, and empty, but in an adoption: the last process's. */
            epmap_changed(t, o, !t->epm_netlink);
        else
            epmap_fill(t, o);
        break;
    case NFTGEN_SET:
        emit(t, NFTGEN_PH_ADD, "add %s " T " %s %s\n",
             o->is_map ? "map" : "set", o->name, o->spec);
        break;
    case NFTGEN_CHAIN:
        /* A base chain is declared whatever the kernel holds: its spec
         * (hook, priority) is part of what is wanted. */
        if (o->spec != NULL || !exists(t, o->name))
            emit(t, NFTGEN_PH_ADD, "add chain " T " %s%s%s\n", o->name,
                 o->spec ? " " : "", o->spec ? o->spec : "");
        add_rules(t, o);
        break;
    case NFTGEN_ELEM:
        add_elem(t, o->name, o->key, o->val);
        break;
    case NFTGEN_KEYS:
        keys_changed(t, NULL, o);
        break;
    }
}

static void
obj_remove(struct nftgen_txn *t, const struct nftgen_obj *o)
{
    switch (o->kind) {
    case NFTGEN_EPMAP:
        /* In PH_DEL after the chains (the group sorts chains first),
         * whose flush drops the rules that name the map. */
        nftgen_delete_set(t, o->name, 1);
        break;
    case NFTGEN_SET:
        nftgen_delete_set(t, o->name, o->is_map);
        break;
    case NFTGEN_CHAIN:
        /* Flushed first so its jumps and gotos are gone before any chain
         * they name is deleted. */
        nftgen_flush_chain(t, o->name);
        nftgen_delete_chain(t, o->name);
        break;
    case NFTGEN_ELEM:
        emit(t, NFTGEN_PH_EDEL, "delete element " T " %s { %s }\n", o->name,
             o->key);
        break;
    case NFTGEN_KEYS:
        keys_changed(t, o, NULL);
        break;
    }
}

static void
obj_change(struct nftgen_txn *t, const struct nftgen_obj *o,
           const struct nftgen_obj *n)
{
    if (o->kind == NFTGEN_CHAIN && strcmp_null(o->spec, n->spec) == 0) {
        nftgen_flush_chain(t, n->name);
        add_rules(t, n);
    } else if (o->kind == NFTGEN_EPMAP && strcmp_null(o->spec, n->spec) == 0) {
        epmap_changed(t, n, 0);
    } else if (o->kind == NFTGEN_ELEM) {
        obj_remove(t, o);
        obj_create(t, n);
    } else if (o->kind == NFTGEN_KEYS) {
        keys_changed(t, o, n);
    } else {
        /* A set whose spec changed, or a chain whose hook did: both are
         * new names in practice (the spec is in the name or fixed). */
        obj_remove(t, o);
        obj_create(t, n);
    }
}

/* Nonzero when <g> holds an object of <o>'s kind and name. */
static int
in_group(const struct nftgen_group *g, const struct nftgen_obj *o)
{
    size_t i;

    for (i = 0; g && i < g->n; i++)
        if (g->v[i].kind == o->kind && strcmp(g->v[i].name, o->name) == 0)
            return 1;
    return 0;
}

void
nftgen_diff(struct nftgen_txn *t, const struct nftgen_group *old,
            const struct nftgen_group *new)
{
    size_t i = 0, j = 0, no = old ? old->n : 0, nn = new ? new->n : 0;
    int chains = 0;

    while (i < no || j < nn) {
        int c;

        if (i == no)
            c = 1;
        else if (j == nn)
            c = -1;
        else
            c = obj_cmp_id(&old->v[i], &new->v[j]);
        if (c < 0) {
            obj_remove(t, &old->v[i++]);
        } else if (c > 0) {
            chains |= new->v[j].kind == NFTGEN_CHAIN;
            obj_create(t, &new->v[j++]);
        } else {
            if (!obj_same(&old->v[i], &new->v[j])) {
                chains |= new->v[j].kind == NFTGEN_CHAIN;
                obj_change(t, &old->v[i], &new->v[j]);
            }
            i++;
            j++;
        }
    }
    /* A chain written again names its endpoint maps (layout 4's pick
     * chains, its keyed maps): declared here, so that
     * libnftables finds them without its set cache (creating a set that
     * exists changes nothing). */
    for (j = 0; chains && j < nn; j++)
        if ((new->v[j].kind == NFTGEN_EPMAP
             || (new->v[j].kind == NFTGEN_SET && declared(new->v[j].name)))
            && in_group(old, &new->v[j]))
            emit(t, NFTGEN_PH_ADD, "add %s " T " %s %s\n",
                 new->v[j].is_map ? "map" : "set", new->v[j].name,
                 new->v[j].spec);
}

size_t
nftgen_txn_bytes(const struct nftgen_txn *t)
{
    size_t i, n = 0;

    for (i = 0; i < NFTGEN_PH__COUNT; i++)
        n += t->ph[i].len;
    for (i = 0; i < t->nbk; i++)
        n += t->bk[i].elems.len;
    return n;
}

void
nftgen_fill(struct nftgen_txn *t, const struct nftgen_group *g)
{
    size_t i;

    for (i = 0; i < g->n; i++)
        obj_create(t, &g->v[i]);
}

void
nftgen_hairpin(struct nftgen_txn *t, const struct saddr *ip, int add)
{
    char s[INET6_ADDRSTRLEN];

    ip_str(ip, s);
    if (add) {
        char pair[2 * INET6_ADDRSTRLEN + 4];

        snprintf(pair, sizeof(pair), "%s . %s", s, s);
        add_elem(t, fam_of(ip) ? NFTGEN_HAIRPIN6 : NFTGEN_HAIRPIN4, pair, NULL);
        return;
    }
    emit(t, NFTGEN_PH_EDEL, "delete element " T " %s { %s . %s }\n",
         fam_of(ip) ? NFTGEN_HAIRPIN6 : NFTGEN_HAIRPIN4, s, s);
}

