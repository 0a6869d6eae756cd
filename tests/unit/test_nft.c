/* Unit tests for the kernel dataplane's pure parts: the model's checks
 * (proxy/node/nft.c), the rules it generates and their diffs
 * (nftgen.c), the JSON description (nftjson.c), nftables listings
 * (nftsys.c), conntrack messages (ctclean.c), and the engine's claims on
 * addresses (no kernel needed: nft_svc_put does no I/O). */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* clang-format off: cmocka needs setjmp.h and stdarg.h first */
#include <cmocka.h>

#include "failalloc.h"
/* clang-format on */

#include "ctclean.h"
#include "nft.h"
#include "nftgen.h"
#include "nftjson.h"
#include "nftrules.h"
#include "nftsys.h"
#include "smap.h"

/* The listings and texts below name the layout. */
_Static_assert(NFT_LAYOUT == 4, "tests name layout 4");

static struct saddr
ip(const char *s, uint16_t port)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip(s, port, &a, &why), 0);
    return a;
}

static struct cidr
cidr(const char *s)
{
    struct cidr c;
    const char *why;

    assert_int_equal(nft_cidr_parse(s, &c, &why), 0);
    return c;
}

/* A fixture service: ClusterIP 198.18.128.10:80 over two endpoints. */
struct fix {
    struct nft_svc s;
    struct saddr cips[2], lbs[1], exts[1];
    struct nft_ep cl[3], lo[1];
    struct cidr ranges[1];
};

static void
fix_init(struct fix *f)
{
    memset(f, 0, sizeof(*f));
    f->s.id = "default/web:http";
    f->s.proto = NFT_TCP;
    f->s.port = 80;
    f->cips[0] = ip("198.18.128.10", 0);
    f->s.cluster_ips = f->cips;
    f->s.ncluster_ips = 1;
    f->cl[0].addr = ip("198.18.1.3", 8080);
    f->cl[0].weight = 1;
    f->cl[1].addr = ip("198.18.1.2", 8080);
    f->cl[1].weight = 1;
    f->s.cluster_eps = f->cl;
    f->s.ncluster_eps = 2;
}

static struct nft_conf
conf_cidr(void)
{
    struct nft_conf c;

    memset(&c, 0, sizeof(c));
    c.masq = NFT_MASQ_CIDR;
    c.cluster_cidrs[0] = cidr("198.18.1.0/24");
    c.ncluster_cidrs = 1;
    c.masq_mark = 0x4000;
    return c;
}

/* The whole group as text, for strstr() checks. */
static char *
group_text(const struct nftgen_group *g)
{
    struct nftgen_txn t;
    char *s;

    nftgen_txn_init(&t);
    nftgen_diff(&t, NULL, g);
    s = nftgen_txn_text(&t);
    nftgen_txn_deinit(&t);
    assert_non_null(s);
    return s;
}

static char *
gen(const struct nft_conf *c, const struct nft_svc *s)
{
    struct nftgen_group g;
    char *text;

    nftgen_group_init(&g);
    assert_int_equal(nft_svc_check(s, NULL), 0);
    assert_int_equal(nftgen_service(c, s, &g), 0);
    text = group_text(&g);
    nftgen_group_deinit(&g);
    return text;
}

static void
has(const char *text, const char *needle)
{
    assert_non_null(text);
    if (strstr(text, needle) == NULL)
        fail_msg("missing \"%s\" in:\n%.60000s", needle, text);
}

static void
hasnt(const char *text, const char *needle)
{
    assert_non_null(text);
    if (strstr(text, needle) != NULL)
        fail_msg("unexpected \"%s\" in:\n%.60000s", needle, text);
}

/* ------------------------------------------------------------- model */

static void
test_cidr_parse(void **state)
{
    struct cidr c;
    const char *why;

    (void)state;
    assert_int_equal(nft_cidr_parse("198.18.0.0/15", &c, &why), 0);
    assert_int_equal(c.prefix, 15);
    assert_int_equal(nft_cidr_parse("2001:2::/48", &c, &why), 0);
    assert_int_equal(nft_cidr_parse("198.19.0.0/15", &c, &why), -1);
    assert_int_equal(nft_cidr_parse("198.18.0.0/33", &c, &why), -1);
    assert_int_equal(nft_cidr_parse("198.18.0.0", &c, &why), -1);
    assert_int_equal(nft_cidr_parse("host/8", &c, &why), -1);
    assert_int_equal(nft_cidr_parse("/8", &c, &why), -1);
}

static void
test_svc_check(void **state)
{
    static const char *const bad_ids[] = {"",
                                          "noslash:80",
                                          "ns/name",
                                          "/name:80",
                                          "ns/:80",
                                          "ns/a/b:80",
                                          "ns/name:80:81",
                                          "ns/na me:80",
                                          "ns/name:\"x",
                                          "ns/name:x;y",
                                          NULL};
    struct fix f;
    struct err e;
    size_t i;

    (void)state;
    fix_init(&f);
    assert_int_equal(nft_svc_check(&f.s, &e), 0);
    for (i = 0; bad_ids[i]; i++) {
        fix_init(&f);
        f.s.id = bad_ids[i];
        err_clear(&e);
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
        assert_true(e.msg[0] != '\0');
    }
    fix_init(&f);
    f.cips[0] = ip("::ffff:198.18.0.1", 0);
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    assert_non_null(strstr(e.msg, "IPv4-mapped"));
    /* Addresses that would have the node rewrite its own traffic. */
    for (i = 0; i < 6; i++) {
        static const char *const local[] = {"0.0.0.0",   "127.0.0.1",
                                            "224.0.0.1", "255.255.255.255",
                                            "::1",       "ff02::1"};
        fix_init(&f);
        f.cips[0] = ip(local[i], 0);
        err_clear(&e);
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
        assert_non_null(strstr(e.msg, "loopback"));
        fix_init(&f);
        f.cl[0].addr = ip(local[i], 8080);
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
    }
    fix_init(&f);
    f.s.ncluster_ips = NFT_IPS_MAX + 1;
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    fix_init(&f);
    f.cl[0].weight = NFT_WEIGHT_MAX + 1;
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    /* Endpoints past what one affinity list takes: fine without
     * affinity, refused with it; weights past the map's random values
     * refused. */
    {
        size_t n = NFT_AFF_EPS_MAX + 1, k;
        struct nft_ep *many = calloc(NFT_EPS_MAX + 1, sizeof(*many));

        assert_non_null(many);
        for (k = 0; k < NFT_EPS_MAX + 1; k++) {
            many[k].addr = ip("198.18.1.2", 8080);
            many[k].addr.u.in.sin_addr.s_addr =
                htonl(0xc6130000u + (uint32_t)k);
            many[k].weight = 1;
        }
        fix_init(&f);
        f.s.cluster_eps = many;
        f.s.ncluster_eps = n;
        err_clear(&e);
        assert_int_equal(nft_svc_check(&f.s, &e), 0);
        f.s.affinity_s = 60;
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
        assert_non_null(strstr(e.msg, "with sessionAffinity"));
        f.s.affinity_s = 0;
        f.s.ncluster_eps = NFTGEN_EP_MOD / NFT_WEIGHT_MAX + 1;
        for (k = 0; k < f.s.ncluster_eps; k++)
            many[k].weight = NFT_WEIGHT_MAX;
        err_clear(&e);
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
        assert_non_null(strstr(e.msg, "weights add up to"));
        f.s.ncluster_eps = NFTGEN_EP_MOD / NFT_WEIGHT_MAX;
        assert_int_equal(nft_svc_check(&f.s, &e), 0);
        /* As many endpoints as a list takes, and one more. */
        for (k = 0; k < NFT_EPS_MAX + 1; k++)
            many[k].weight = 1;
        f.s.ncluster_eps = NFT_EPS_MAX;
        assert_int_equal(nft_svc_check(&f.s, &e), 0);
        f.s.ncluster_eps = NFT_EPS_MAX + 1;
        assert_int_equal(nft_svc_check(&f.s, &e), -1);
        assert_non_null(strstr(e.msg, "at most 131072"));
        free(many);
    }
    fix_init(&f);
    f.s.port = 0;
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    fix_init(&f);
    f.s.affinity_s = NFT_AFFINITY_MAX_S + 1;
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    fix_init(&f);
    f.s.proto = NFT_PROTO__COUNT;
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
}

/* --------------------------------------------------------- generation */

static void
test_gen_cluster_ip(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    t = gen(&c, &f.s);
    /* Map element to the service chain; endpoints sorted by address. */
    has(t, "add element inet ferry svc4 { 198.18.128.10 . tcp . 80 : goto "
           "svc4-default/web/http/tcp }");
    has(t, "add rule inet ferry svc4-default/web/http/tcp ip daddr { "
           "198.18.128.10 } ip saddr != { 198.18.1.0/24 } jump "
           "mark-for-masq");
    /* One rule translates: a random number into the service's endpoint
     * map, no chain per endpoint, no hairpin rule (a global set does
     * that), and nothing after it (the map outlives the rule). */
    has(t, "add rule inet ferry svc4-default/web/http/tcp meta l4proto tcp "
           "dnat ip to numgen random mod 16777216 map "
           "@em4-default/web/http/tcp\n");
    hasnt(t, "dnat ip to 198.18.1.2:8080");
    /* The map is declared before the rules, and filled after any flush,
     * half of the random number each. */
    has(t, "add map inet ferry em4-default/web/http/tcp { typeof numgen "
           "random mod 16777216 : ip daddr . tcp dport; flags interval; }\n");
    has(t, "add map inet ferry em4-default/web/http/tcp { typeof numgen "
           "random mod 16777216 : ip daddr . tcp dport; flags interval; "
           "elements = { 0-8388607 : 198.18.1.2 . 8080, 8388608-16777215 : "
           "198.18.1.3 . 8080 } }\n");
    assert_true(strstr(t, "flags interval; }\n")
                < strstr(t, "add rule inet ferry svc4-default/web/http/tcp"));
    hasnt(t, "ep4-");
    hasnt(t, "goto ep");
    hasnt(t, "saddr 198.18.1.2");
    hasnt(t, "noep");
    hasnt(t, "update @");
    free(t);
}

/* A proxied Service: its addresses go to one chain that redirects to the
 * proxy's port; no endpoint, masquerade or reject objects. */
static void
test_gen_redirect(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    struct err e;
    char *t;

    (void)state;
    fix_init(&f);
    f.s.redirect_port = 10263;
    f.s.node_port = 30080;
    t = gen(&c, &f.s);
    has(t, "add element inet ferry svc4 { 198.18.128.10 . tcp . 80 : goto "
           "svc4-default/web/http/tcp }");
    has(t, "add rule inet ferry svc4-default/web/http/tcp meta l4proto tcp "
           "redirect to :10263\n");
    has(t, "nodeports4 { tcp . 30080 : goto svc4-default/web/http/tcp }");
    hasnt(t, "ep4-");
    hasnt(t, "mark-for-masq");
    hasnt(t, "noep");
    hasnt(t, "dnat");
    free(t);
    /* A port the table has a fixed chain for: the addresses go there, and
     * the service has no chain of its own. */
    c.redirect_ports[0] = 10263;
    c.redirect_ports[1] = 10264;
    t = gen(&c, &f.s);
    has(t, "add element inet ferry svc4 { 198.18.128.10 . tcp . 80 : goto "
           "redirect-10263 }");
    has(t, "nodeports4 { tcp . 30080 : goto redirect-10263 }");
    hasnt(t, "add chain");
    hasnt(t, "redirect to");
    free(t);
    {
        struct nftgen_group g;

        nftgen_group_init(&g);
        assert_int_equal(nftgen_global(&c, &g), 0);
        t = group_text(&g);
        nftgen_group_deinit(&g);
        has(t, "add rule inet ferry redirect-10263 meta l4proto tcp "
               "redirect to :10263\n");
        has(t, "add rule inet ferry redirect-10264 meta l4proto tcp "
               "redirect to :10264\n");
        free(t);
    }
    /* The proxy serves TCP only. */
    f.s.proto = NFT_UDP;
    err_clear(&e);
    assert_int_equal(nft_svc_check(&f.s, &e), -1);
    assert_non_null(strstr(e.msg, "only TCP"));
}

static void
test_gen_masquerade_modes(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    c.masq = NFT_MASQ_ALL;
    t = gen(&c, &f.s);
    has(t, "svc4-default/web/http/tcp jump mark-for-masq\n");
    free(t);
    c.masq = NFT_MASQ_NONE;
    t = gen(&c, &f.s);
    hasnt(t, "mark-for-masq");
    free(t);
    /* kube-proxy's rule without cluster CIDRs: no ClusterIP traffic is
     * told from outside, so none is masqueraded (hairpin still is). */
    c.masq = NFT_MASQ_CIDR;
    c.ncluster_cidrs = 0;
    t = gen(&c, &f.s);
    hasnt(t, "svc4-default/web/http/tcp ip daddr");
    hasnt(t, "svc4-default/web/http/tcp jump mark-for-masq");
    free(t);
}

static void
test_gen_no_endpoints_rejects(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    f.s.ncluster_eps = 0;
    f.s.node_port = 30080;
    t = gen(&c, &f.s);
    has(t, "add element inet ferry noep4 { 198.18.128.10 . tcp . 80 : goto "
           "reject-chain }");
    has(t, "add element inet ferry noep-nodeports4 { tcp . 30080 : goto "
           "reject-chain }");
    hasnt(t, "add chain");
    free(t);
    /* Weight 0 takes no new flows: same as absent. */
    fix_init(&f);
    f.cl[0].weight = 0;
    f.cl[1].weight = 0;
    t = gen(&c, &f.s);
    has(t, "noep4");
    free(t);
}

static void
test_gen_external_local(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    f.s.node_port = 30080;
    f.lbs[0] = ip("198.18.200.1", 0);
    f.s.lb_ips = f.lbs;
    f.s.nlb_ips = 1;
    f.s.external_local = 1;
    f.lo[0] = f.cl[0];
    f.s.local_eps = f.lo;
    f.s.nlocal_eps = 1;
    t = gen(&c, &f.s);
    has(t, "add element inet ferry svc4 { 198.18.200.1 . tcp . 80 : goto "
           "ext4-default/web/http/tcp }");
    has(t, "add element inet ferry nodeports4 { tcp . 30080 : goto "
           "ext4-default/web/http/tcp }");
    /* Pods and the node reach every endpoint, the rest only local ones,
     * without masquerade. */
    has(t, "ext4-default/web/http/tcp ip saddr { 198.18.1.0/24 } goto "
           "svc4-default/web/http/tcp");
    has(t, "ext4-default/web/http/tcp fib saddr type local jump "
           "mark-for-masq");
    has(t, "ext4-default/web/http/tcp goto loc4-default/web/http/tcp");
    /* The local list has an endpoint map of its own. */
    has(t, "add rule inet ferry loc4-default/web/http/tcp meta l4proto tcp "
           "dnat ip to numgen random mod 16777216 map "
           "@eml4-default/web/http/tcp\n");
    has(t, "add map inet ferry eml4-default/web/http/tcp { typeof numgen "
           "random mod 16777216 : ip daddr . tcp dport; flags interval; "
           "elements = { 0-16777215 : 198.18.1.3 . 8080 } }\n");
    free(t);
    /* No local endpoint: outside traffic is dropped, not rejected. */
    f.s.nlocal_eps = 0;
    t = gen(&c, &f.s);
    has(t, "ext4-default/web/http/tcp drop");
    hasnt(t, "loc4-");
    free(t);
    /* Cluster policy masquerades external traffic. */
    f.s.external_local = 0;
    t = gen(&c, &f.s);
    has(t, "add rule inet ferry ext4-default/web/http/tcp jump "
           "mark-for-masq\nadd rule inet ferry ext4-default/web/http/tcp "
           "goto svc4-default/web/http/tcp");
    free(t);
}

static void
test_gen_weights_affinity_ranges(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    f.cl[0].weight = 6; /* 198.18.1.3 */
    f.cl[1].weight = 2; /* 198.18.1.2 */
    f.s.affinity_s = 600;
    f.lbs[0] = ip("198.18.200.1", 0);
    f.s.lb_ips = f.lbs;
    f.s.nlb_ips = 1;
    f.ranges[0] = cidr("198.18.0.0/24");
    f.s.source_ranges = f.ranges;
    f.s.nsource_ranges = 1;
    t = gen(&c, &f.s);
    /* Weights 2 and 6: 1 in 4, then the rest. */
    has(t, "numgen random mod 4 < 1 goto "
           "ep4-default/web/http/tcp/198.18.1.2/8080\n"
           "add rule inet ferry svc4-default/web/http/tcp goto "
           "ep4-default/web/http/tcp/198.18.1.3/8080\n");
    has(t, "add set inet ferry aff4-default/web/http/tcp/198.18.1.2/8080/600s "
           "{ type ipv4_addr; flags dynamic,timeout; timeout 600s; }");
    has(t, "ip saddr @aff4-default/web/http/tcp/198.18.1.2/8080/600s goto "
           "ep4-default/web/http/tcp/198.18.1.2/8080");
    has(t, "update @aff4-default/web/http/tcp/198.18.1.2/8080/600s { ip "
           "saddr }");
    has(t, "add element inet ferry fw4 { 198.18.200.1 . tcp . 80 : goto "
           "fw-default/web/http/tcp }");
    has(t, "add rule inet ferry fw-default/web/http/tcp ip saddr { "
           "198.18.0.0/24 } return\nadd rule inet ferry "
           "fw-default/web/http/tcp drop");
    free(t);
}

/* With affinity, past NFTGEN_VMAP_MIN endpoints, one vmap picks; without,
 * always one map, however many endpoints. */
static void
test_gen_many_endpoints_vmap(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nft_ep eps[NFTGEN_VMAP_MIN + 1];
    struct fix f;
    char *t, ipbuf[32];
    size_t i;

    (void)state;
    fix_init(&f);
    for (i = 0; i < NFTGEN_VMAP_MIN + 1; i++) {
        snprintf(ipbuf, sizeof(ipbuf), "198.18.1.%zu", i + 10);
        eps[i].addr = ip(ipbuf, 8080);
        eps[i].weight = i == 0 ? 2 : 1;
    }
    f.s.cluster_eps = eps;
    f.s.ncluster_eps = NFTGEN_VMAP_MIN + 1;
    t = gen(&c, &f.s);
    /* Weights 2, 1, 1...: 34 shares of 2^24, the first two of them. */
    has(t, "dnat ip to numgen random mod 16777216 map "
           "@em4-default/web/http/tcp\n");
    has(t, "elements = { 0-986894 : 198.18.1.10 . 8080, 986895-1480341 : "
           "198.18.1.11 . 8080, ");
    has(t, ", 16283768-16777215 : 198.18.1.42 . 8080 } }\n");
    hasnt(t, "vmap");
    hasnt(t, "ep4-");
    free(t);
    f.s.affinity_s = 60;
    f.s.ncluster_eps = NFTGEN_VMAP_MIN;
    t = gen(&c, &f.s);
    hasnt(t, "vmap");
    has(t, "numgen random mod 33 < 2 goto");
    free(t);
    f.s.ncluster_eps = NFTGEN_VMAP_MIN + 1;
    t = gen(&c, &f.s);
    has(t, "numgen random mod 34 vmap { 0-1 : goto "
           "ep4-default/web/http/tcp/198.18.1.10/8080, 2 : goto "
           "ep4-default/web/http/tcp/198.18.1.11/8080, ");
    has(t, "33 : goto ep4-default/web/http/tcp/198.18.1.42/8080 }\n"
           "add rule inet ferry svc4-default/web/http/tcp goto "
           "ep4-default/web/http/tcp/198.18.1.10/8080\n");
    free(t);
}

static void
test_gen_dual_stack(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f;
    char *t;

    (void)state;
    fix_init(&f);
    f.cips[1] = ip("2001:2::a", 0);
    f.s.ncluster_ips = 2;
    f.cl[2].addr = ip("2001:2::2", 8080);
    f.cl[2].weight = 1;
    f.s.ncluster_eps = 3;
    f.s.proto = NFT_UDP;
    t = gen(&c, &f.s);
    /* Each family to its own endpoints. */
    has(t, "add element inet ferry svc6 { 2001:2::a . udp . 80 : goto "
           "svc6-default/web/http/udp }");
    has(t, "add rule inet ferry svc6-default/web/http/udp meta l4proto udp "
           "dnat ip6 to numgen random mod 16777216 map "
           "@em6-default/web/http/udp\n");
    has(t, "add map inet ferry em6-default/web/http/udp { typeof numgen "
           "random mod 16777216 : ip6 daddr . udp dport; flags interval; "
           "elements = { 0-16777215 : 2001:2::2 . 8080 } }\n");
    has(t, "add rule inet ferry svc4-default/web/http/udp meta l4proto udp "
           "dnat ip to numgen random mod 16777216 map "
           "@em4-default/web/http/udp\n");
    /* No IPv6 cluster CIDR: no masquerade rule for IPv6 ClusterIPs. */
    hasnt(t, "ip6 daddr {");
    free(t);
}

/* <f>'s service with a second ClusterIP, made again into <g>. */
static void
second_cluster_ip(const struct nft_conf *c, struct fix *f,
                  struct nftgen_group *g)
{
    f->cips[1] = ip("198.18.128.11", 0);
    f->s.ncluster_ips = 2;
    nftgen_group_deinit(g);
    nftgen_group_init(g);
    assert_int_equal(nftgen_service(c, &f->s, g), 0);
}

/* The diff touches only what changed, and orders deletions after the
 * flushes that drop references to them. */
static void
test_diff_incremental(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group a, b;
    struct nftgen_txn t;
    struct fix f;
    char *s;

    (void)state;
    fix_init(&f);
    nftgen_group_init(&a);
    nftgen_group_init(&b);
    assert_int_equal(nftgen_service(&c, &f.s, &a), 0);
    f.s.ncluster_eps = 1; /* 198.18.1.3 leaves */
    assert_int_equal(nftgen_service(&c, &f.s, &b), 0);
    assert_false(nftgen_group_equal(&a, &b));
    /* An endpoint change is the endpoint map's alone: no text, the map
     * for netlink. */
    nftgen_txn_init(&t);
    nftgen_diff(&t, &a, &b);
    assert_true(nftgen_txn_no_text(&t));
    assert_false(nftgen_txn_empty(&t));
    assert_int_equal(t.nepm, 1);
    assert_string_equal(t.epm[0]->name, "em4-default/web/http/tcp");
    assert_string_equal(t.epm[0]->rules, "0-16777215 : 198.18.1.3 . 8080");
    nftgen_txn_deinit(&t);
    /* A second ClusterIP rewrites the chain, which names the map: the map
     * is declared first (the chain's text alone would not do for
     * libnftables without its set cache). */
    second_cluster_ip(&c, &f, &a);
    nftgen_txn_init(&t);
    nftgen_diff(&t, &b, &a);
    assert_int_equal(t.nepm, 0);
    s = nftgen_txn_text(&t);
    assert_non_null(s);
    assert_string_equal(
        s, "add map inet ferry em4-default/web/http/tcp { typeof numgen "
           "random mod 16777216 : ip daddr . tcp dport; flags interval; }\n"
           "flush chain inet ferry svc4-default/web/http/tcp\n"
           "add rule inet ferry svc4-default/web/http/tcp ip daddr { "
           "198.18.128.10, 198.18.128.11 } ip saddr != { 198.18.1.0/24 } "
           "jump mark-for-masq\n"
           "add rule inet ferry svc4-default/web/http/tcp meta l4proto tcp "
           "dnat ip to numgen random mod 16777216 map "
           "@em4-default/web/http/tcp\n"
           "add element inet ferry svc4 { 198.18.128.11 . tcp . 80 : goto "
           "svc4-default/web/http/tcp }\n");
    free(s);
    nftgen_txn_deinit(&t);
    /* Same group: nothing to do. */
    nftgen_txn_init(&t);
    nftgen_diff(&t, &b, &b);
    assert_true(nftgen_txn_empty(&t));
    nftgen_txn_deinit(&t);
    /* Gone: elements deleted before the chains they name. */
    nftgen_txn_init(&t);
    nftgen_diff(&t, &b, NULL);
    s = nftgen_txn_text(&t);
    assert_true(strstr(s, "delete element inet ferry svc4")
                < strstr(s, "delete chain inet ferry svc4-"));
    /* The map after the chain whose rule names it. */
    assert_non_null(strstr(s, "delete map inet ferry em4-"));
    assert_true(strstr(s, "delete chain inet ferry svc4-")
                < strstr(s, "delete map inet ferry em4-"));
    free(s);
    nftgen_txn_deinit(&t);
    nftgen_group_deinit(&a);
    nftgen_group_deinit(&b);
}

/* A change to a service's endpoints, in a lean transaction: the kind
 * libnftables 1.0.6 runs on its table cache alone (nftgen.h), where "add
 * rule" and "add element" made it fetch every set of the table first
 * (tens of milliseconds per change at 10,000 Services). */
static void
test_diff_lean(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group glob, a, b;
    struct nftgen_txn t;
    struct saddr pod;
    struct fix f;
    char *s;

    (void)state;
    fix_init(&f);
    nftgen_group_init(&glob);
    nftgen_group_init(&a);
    nftgen_group_init(&b);
    assert_int_equal(nftgen_global(&c, &glob), 0);
    assert_int_equal(nftgen_service(&c, &f.s, &a), 0);
    f.s.ncluster_eps = 1; /* 198.18.1.2 leaves */
    assert_int_equal(nftgen_service(&c, &f.s, &b), 0);
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    nftgen_diff(&t, &a, &b);
    pod = ip("198.18.1.3", 0);
    nftgen_hairpin(&t, &pod, 1);
    s = nftgen_txn_text(&t);
    /* The endpoint map goes through netlink; the text is the pair. */
    assert_string_equal(s, "add set inet ferry hairpin4 { type ipv4_addr . "
                           "ipv4_addr; elements = { 198.18.1.3 . 198.18.1.3 "
                           "} }\n");
    assert_int_equal(t.nepm, 1);
    assert_true(nftgen_lean_text(s));
    free(s);
    nftgen_txn_deinit(&t);
    /* A rewritten chain that names its endpoint map stays lean: the map is
     * declared in the same transaction. */
    second_cluster_ip(&c, &f, &a);
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    nftgen_diff(&t, &b, &a);
    s = nftgen_txn_text(&t);
    has(s, "add map inet ferry em4-default/web/http/tcp { typeof numgen "
           "random mod 16777216 : ip daddr . tcp dport; flags interval; }\n"
           "flush chain inet ferry svc4-default/web/http/tcp\n"
           "add chain inet ferry svc4-default/web/http/tcp {\n"
           "\tip daddr { 198.18.128.10, 198.18.128.11 } ip saddr != { "
           "198.18.1.0/24 } jump mark-for-masq\n"
           "\tmeta l4proto tcp dnat ip to numgen random mod 16777216 map "
           "@em4-default/web/http/tcp\n}\n");
    assert_true(nftgen_lean_text(s));
    free(s);
    nftgen_txn_deinit(&t);
    /* A new service: its chains and map elements, still lean. */
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    nftgen_diff(&t, NULL, &b);
    pod = ip("198.18.128.10", 0);
    nftgen_add_ip(&t, NFTGEN_CLUSTER_IPS4, &pod);
    s = nftgen_txn_text(&t);
    has(s, "add map inet ferry svc4 { type ipv4_addr . inet_proto . "
           "inet_service : verdict; elements = { 198.18.128.10 . tcp . 80 : "
           "goto svc4-default/web/http/tcp } }\n");
    has(s, "add set inet ferry cluster-ips4 { type ipv4_addr; elements = { "
           "198.18.128.10 } }\n");
    hasnt(s, "add rule");
    hasnt(s, "add element");
    /* Its endpoint map is declared; its elements go through netlink. */
    has(s, "add map inet ferry em4-default/web/http/tcp { typeof numgen ");
    hasnt(s, "elements = { 0-");
    assert_int_equal(t.nepm, 1);
    assert_true(nftgen_lean_text(s));
    free(s);
    nftgen_txn_deinit(&t);
    /* Not lean: a deletion, and anything outside a lean transaction. */
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    nftgen_diff(&t, &b, NULL);
    s = nftgen_txn_text(&t);
    assert_false(nftgen_lean_text(s));
    free(s);
    nftgen_txn_deinit(&t);
    nftgen_txn_init(&t);
    nftgen_diff(&t, &a, &b);
    s = nftgen_txn_text(&t);
    assert_false(nftgen_lean_text(s));
    free(s);
    nftgen_txn_deinit(&t);
    assert_false(nftgen_lean_text("add element inet ferry hairpin4 { 1 }\n"));
    assert_false(nftgen_lean_text("flush set inet ferry cluster-ips4\n"));
    assert_true(nftgen_lean_text(""));
    nftgen_group_deinit(&glob);
    nftgen_group_deinit(&a);
    nftgen_group_deinit(&b);
}

/* An adoption fills what is wanted into a table that holds most of it:
 * chains and endpoint maps the kernel has are not declared again (each
 * declaration is parsed), but their rules are written, base chains are
 * declared with their hooks whatever the kernel has, and what it lacks
 * is declared. */
static void
test_fill_skips_what_exists(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group glob, g;
    struct nftgen_txn t;
    struct smap held = {0};
    struct fix f;
    char *s;

    (void)state;
    fix_init(&f);
    nftgen_group_init(&glob);
    nftgen_group_init(&g);
    assert_int_equal(nftgen_global(&c, &glob), 0);
    assert_int_equal(nftgen_service(&c, &f.s, &g), 0);
    assert_int_equal(smap_put(&held, "svc4-default/web/http/tcp", &held), 0);
    assert_int_equal(smap_put(&held, "em4-default/web/http/tcp", &held), 0);
    assert_int_equal(smap_put(&held, "nat-prerouting", &held), 0);
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    t.existing = &held;
    nftgen_fill(&t, &glob);
    nftgen_fill(&t, &g);
    s = nftgen_txn_text(&t);
    hasnt(s, "add chain inet ferry svc4-default/web/http/tcp\n");
    hasnt(s, "add map inet ferry em4-default/web/http/tcp");
    has(s, "add chain inet ferry svc4-default/web/http/tcp {\n");
    has(s, "add chain inet ferry nat-prerouting { type nat hook prerouting");
    has(s, "add chain inet ferry mark-for-masq\n");
    assert_int_equal(t.nepm, 1);
    free(s);
    nftgen_txn_deinit(&t);
    /* Without the list, everything is declared. */
    nftgen_txn_init(&t);
    nftgen_txn_lean(&t, &glob);
    nftgen_fill(&t, &g);
    s = nftgen_txn_text(&t);
    has(s, "add chain inet ferry svc4-default/web/http/tcp\n");
    has(s, "add map inet ferry em4-default/web/http/tcp { typeof");
    free(s);
    nftgen_txn_deinit(&t);
    smap_deinit(&held);
    nftgen_group_deinit(&glob);
    nftgen_group_deinit(&g);
}

/* <text> as sorted lines, each element added to a map or set on a line
 * of its own ("elem <set> <element>"), whether it came in "add element"
 * or in a lean "add map|set <name> { <spec> elements = { ... } }": the
 * two say the same to the kernel. */
static void
normal_lines(const char *text, char ***out, size_t *n)
{
    static const char *const adds[] = {"add element inet ferry ",
                                       "add map inet ferry ",
                                       "add set inet ferry "};
    const char *p = text;
    size_t cap = 0, i;

    *out = NULL;
    *n = 0;
    while (*p != '\0') {
        const char *nl = strchr(p, '\n'), *list = NULL, *name = NULL;
        size_t len = nl ? (size_t)(nl - p) : strlen(p), nlen = 0;
        char *line = strndup(p, len);

        assert_non_null(line);
        for (i = 0; i < 3 && list == NULL; i++) {
            if (strncmp(line, adds[i], strlen(adds[i])) != 0)
                continue;
            name = line + strlen(adds[i]);
            nlen = strcspn(name, " ");
            list = i == 0 ? strstr(line, " { ") : strstr(line, "elements = { ");
            if (list != NULL)
                list = strchr(list, '{') + 2;
        }
        if (list == NULL) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                *out = realloc(*out, cap * sizeof(**out));
                assert_non_null(*out);
            }
            (*out)[(*n)++] = line;
        } else {
            const char *end = strstr(list, " }");
            while (list < end) {
                size_t el = strcspn(list, ",");
                char *e;
                if (list + el > end)
                    el = (size_t)(end - list);
                assert_true(asprintf(&e, "elem %.*s %.*s", (int)nlen, name,
                                     (int)el, list)
                            > 0);
                if (*n == cap) {
                    cap = cap ? cap * 2 : 64;
                    *out = realloc(*out, cap * sizeof(**out));
                    assert_non_null(*out);
                }
                (*out)[(*n)++] = e;
                list += el;
                while (*list == ',' || *list == ' ')
                    list++;
            }
            free(line);
        }
        p += len + (nl != NULL);
    }
    for (i = 1; i < *n; i++) { /* insertion sort: a few dozen lines */
        char *x = (*out)[i];
        size_t j = i;
        for (; j > 0 && strcmp((*out)[j - 1], x) > 0; j--)
            (*out)[j] = (*out)[j - 1];
        (*out)[j] = x;
    }
}

/* Nonzero when <a> and <b> give the kernel the same commands. */
static int
same_commands(const char *a, const char *b)
{
    char **la, **lb;
    size_t na, nb, i;
    int same;

    normal_lines(a, &la, &na);
    normal_lines(b, &lb, &nb);
    same = na == nb;
    for (i = 0; i < na && same; i++)
        same = strcmp(la[i], lb[i]) == 0;
    for (i = 0; i < na; i++)
        free(la[i]);
    for (i = 0; i < nb; i++)
        free(lb[i]);
    free(la);
    free(lb);
    return same;
}

/* One of the allocations of making a service's group and a lean
 * transaction from another group to it refused: the group says it is
 * incomplete, or the transaction has no text; a text that comes out
 * gives the kernel the commands the text made without any refusal gives
 * (a lean one may come out plain: failalloc.h). A wrong text would
 * program wrong rules into the kernel. */
static void
test_gen_out_of_memory(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group glob, a;
    struct cidr ranges[1];
    struct fix f;
    char *want = NULL;
    long k, refused = 0;

    (void)state;
    fix_init(&f);
    f.s.node_port = 30080;
    f.exts[0] = ip("198.18.9.1", 0);
    f.s.external_ips = f.exts;
    f.s.nexternal_ips = 1;
    f.lbs[0] = ip("198.18.9.2", 0);
    f.s.lb_ips = f.lbs;
    f.s.nlb_ips = 1;
    ranges[0] = cidr("198.18.0.0/16");
    f.s.source_ranges = ranges;
    f.s.nsource_ranges = 1;
    f.cips[1] = ip("2001:2::a", 0);
    f.s.ncluster_ips = 2;
    f.cl[2].addr = ip("2001:2::5", 8080);
    f.cl[2].weight = 3;
    f.s.ncluster_eps = 3;
    f.s.affinity_s = 600;
    assert_int_equal(nft_svc_check(&f.s, NULL), 0);
    nftgen_group_init(&glob);
    nftgen_group_init(&a);
    assert_int_equal(nftgen_global(&c, &glob), 0);
    f.s.ncluster_eps = 2;
    assert_int_equal(nftgen_service(&c, &f.s, &a), 0);
    f.s.ncluster_eps = 3;
    for (k = -1; k < 20000; k++) {
        struct nftgen_group g;
        struct nftgen_txn t;
        char *text = NULL;
        int rc;

        failalloc_at(k);
        nftgen_group_init(&g);
        rc = nftgen_service(&c, &f.s, &g);
        if (rc == 0) {
            nftgen_txn_init(&t);
            nftgen_txn_lean(&t, &glob);
            nftgen_diff(&t, &a, &g);
            text = nftgen_txn_text(&t);
            nftgen_txn_deinit(&t);
        }
        failalloc_at(-1);
        if (k < 0) { /* the text made without refusals */
            assert_int_equal(rc, 0);
            assert_non_null(text);
            want = text;
            nftgen_group_deinit(&g);
            continue;
        }
        assert_true(rc == 0 || g.oom);
        if (text != NULL && !same_commands(text, want))
            fail_msg("step %ld: a different transaction:\n%s\nnot\n%s", k,
                     text, want);
        free(text);
        nftgen_group_deinit(&g);
        if (!failalloc_failed())
            break;
        refused += text == NULL;
    }
    assert_true(k < 20000 && refused > 0);
    free(want);
    nftgen_group_deinit(&a);
    nftgen_group_deinit(&glob);
}

static void
test_gen_global(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group g;
    char *t;

    (void)state;
    nftgen_group_init(&g);
    c.nodeport_addrs[0] = ip("198.18.0.11", 0);
    c.nnodeport_addrs = 1;
    c.service_cidrs[0] = cidr("198.18.128.0/17");
    c.nservice_cidrs = 1;
    assert_int_equal(nftgen_global(&c, &g), 0);
    t = group_text(&g);
    has(t, "add chain inet ferry nat-prerouting { type nat hook prerouting "
           "priority dstnat; policy accept; }");
    /* The conntrack keeper, in every filter base chain. */
    has(t, "add rule inet ferry filter-forward ct state new jump "
           "endpoints-check");
    has(t, "add rule inet ferry services ip daddr { 198.18.0.11 } meta "
           "l4proto . th dport vmap @nodeports4");
    /* A ClusterIP no Service holds any more is refused. */
    has(t, "add rule inet ferry cluster-ips-check ip daddr { 198.18.128.0/17 "
           "} reject");
    hasnt(t, "ip6 daddr {");
    /* NodePort addresses name no IPv6 one: no IPv6 NodePorts. */
    hasnt(t, "@nodeports6");
    has(t, "add rule inet ferry reject-chain meta l4proto tcp reject with tcp "
           "reset");
    has(t, "add set inet ferry layout { type inet_service; comment \"ferry "
           "layout 4\"; }");
    /* Hairpin: one rule per family after DNAT, on a set of pairs. */
    has(t, "add rule inet ferry nat-postrouting ct status dnat ip saddr . "
           "ip daddr @hairpin4 jump mark-for-masq\nadd rule inet ferry "
           "nat-postrouting ct status dnat ip6 saddr . ip6 daddr @hairpin6 "
           "jump mark-for-masq\nadd rule inet ferry nat-postrouting jump "
           "masquerading\n");
    has(t, "add set inet ferry hairpin6 { type ipv6_addr . ipv6_addr; }");
    free(t);
    nftgen_group_deinit(&g);
}

/* ---------------------------------------------------------------- smap */

/* Deletion by backward shift keeps every other key findable, through
 * growth and wrap-around. */
static void
test_smap(void **state)
{
    struct smap m = {0};
    char k[32];
    int i;

    (void)state;
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key%d", i);
        assert_int_equal(smap_put(&m, k, (void *)(intptr_t)(i + 1)), 0);
    }
    assert_int_equal(m.n, 5000);
    for (i = 0; i < 5000; i += 3) {
        snprintf(k, sizeof(k), "key%d", i);
        smap_del(&m, k);
    }
    smap_del(&m, "absent");
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "key%d", i);
        if (i % 3 == 0)
            assert_null(smap_get(&m, k));
        else
            assert_int_equal((intptr_t)smap_get(&m, k), i + 1);
    }
    assert_int_equal(smap_put(&m, "key1", (void *)7), 0);
    assert_int_equal((intptr_t)smap_get(&m, "key1"), 7);
    smap_deinit(&m);
    assert_null(smap_get(&m, "key1"));
}

/* -------------------------------------------------------------- engine */

static void
test_engine_claims(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix f, g;
    struct nft *n;
    struct err e;
    struct nft_stats st;

    (void)state;
    err_clear(&e);
    n = nft_new(&c, &e);
    assert_non_null(n);
    fix_init(&f);
    f.s.node_port = 30080;
    assert_int_equal(nft_svc_put(n, &f.s, &e), 0);
    /* Another service on the same ClusterIP, protocol and port. */
    fix_init(&g);
    g.s.id = "other/web:http";
    err_clear(&e);
    assert_int_equal(nft_svc_put(n, &g.s, &e), -1);
    assert_non_null(strstr(e.msg, "already served by default/web:http|tcp"));
    /* Same IP, another port: fine; but not the same NodePort. */
    g.s.port = 81;
    g.s.node_port = 30080;
    assert_int_equal(nft_svc_put(n, &g.s, &e), -1);
    g.s.node_port = 30081;
    assert_int_equal(nft_svc_put(n, &g.s, &e), 0);
    /* UDP on the same port is another key. */
    f.s.proto = NFT_UDP;
    f.s.node_port = 0;
    assert_int_equal(nft_svc_put(n, &f.s, &e), 0);
    nft_get_stats(n, &st);
    assert_int_equal(st.services, 3);
    /* Once the first lets go, the second may take its address. */
    assert_int_equal(nft_svc_del(n, "default/web:http", NFT_TCP), 0);
    assert_int_equal(nft_svc_del(n, "default/web:http", NFT_TCP), -1);
    g.s.port = 80;
    assert_int_equal(nft_svc_put(n, &g.s, &e), 0);
    assert_true(nft_pending(n));
    nft_get_stats(n, &st);
    assert_int_equal(st.services, 2);
    nft_resync(n);
    assert_true(nft_pending(n));
    /* A bad config is refused. */
    c.masq_mark = 0x3;
    assert_null(nft_new(&c, &e));
    nft_free(n);
}

/* The kernel's table inet ferry as nft lists it; NULL when absent. */
static char *
kernel_table(void)
{
    struct nft_ctx *x = nft_ctx_new(NFT_CTX_DEFAULT);
    char *out = NULL;

    assert_non_null(x);
    assert_int_equal(nft_ctx_buffer_output(x), 0);
    assert_int_equal(nft_ctx_buffer_error(x), 0);
    if (nft_run_cmd_from_buffer(x, "list table inet ferry") == 0)
        out = strdup(nft_ctx_get_output_buffer(x));
    nft_ctx_free(x);
    return out;
}

/* Apply until it works (a retry after a refusal converges), then check
 * the kernel's table against what a full convergence of the same wanted
 * state writes. */
static void
settle_and_compare(struct nft *n, long step)
{
    struct err e;
    char *got, *want;
    int i;

    for (i = 0; i < 3; i++) {
        err_clear(&e);
        if (nft_apply(n, &e) == 0)
            break;
    }
    if (i == 3)
        fail_msg("step %ld: cannot apply: %s", step, e.msg);
    got = kernel_table();
    nft_resync(n);
    assert_int_equal(nft_apply(n, &e), 0);
    want = kernel_table();
    assert_non_null(got);
    assert_non_null(want);
    if (strcmp(got, want) != 0)
        fail_msg("step %ld: the table after a refusal:\n%s\nnot\n%s", step,
                 got, want);
    free(got);
    free(want);
}

/* The engine with one allocation of an apply refused, for each in turn
 * (failalloc.h), against the kernel in a network namespace of the test's
 * own: the apply fails or works, and once it works again the kernel
 * holds what a full convergence writes. The wanted state is never lost:
 * the table names both services when both are wanted. */
static void
test_engine_out_of_memory(void **state)
{
    struct nft_conf c = conf_cidr();
    struct fix a, b;
    struct nft_stats st;
    struct nft *n;
    struct err e;
    long k, refused = 0;
    int home, has_b = 1;
    char *t;

    (void)state;
    if (geteuid() != 0)
        skip();
    home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    assert_true(home >= 0);
    assert_int_equal(unshare(CLONE_NEWNET), 0);
    fix_init(&a);
    fix_init(&b);
    b.s.id = "shop/api:http";
    b.cips[0] = ip("198.18.128.11", 0);
    b.cl[0].addr = ip("198.18.1.7", 9090);
    b.s.node_port = 30081;
    b.s.affinity_s = 60;
    err_clear(&e);
    n = nft_new(&c, &e);
    assert_non_null(n);
    assert_int_equal(nft_svc_put(n, &a.s, &e), 0);
    assert_int_equal(nft_svc_put(n, &b.s, &e), 0);
    assert_int_equal(nft_apply(n, &e), 0);
    for (k = 0; k < 5000; k++) {
        int rc, want_b = k % 3 != 0;

        /* A change to apply: an endpoint of a comes or goes, b comes or
         * goes. A put refused for memory keeps what was there. */
        a.s.ncluster_eps = 1 + (size_t)(k % 2);
        err_clear(&e);
        failalloc_at(k);
        rc = nft_svc_put(n, &a.s, &e);
        if (rc == 0 && want_b)
            rc = nft_svc_put(n, &b.s, &e);
        else if (rc == 0 && nft_svc_del(n, b.s.id, NFT_TCP) == 0)
            has_b = 0;
        if (rc == 0 && want_b)
            has_b = 1;
        if (rc == 0)
            rc = nft_apply(n, &e);
        failalloc_at(-1);
        if (rc < 0) {
            refused++;
            assert_true(failalloc_failed());
            assert_true(e.msg[0] != '\0');
        }
        nft_get_stats(n, &st);
        assert_int_equal(st.services, 1 + (size_t)has_b);
        settle_and_compare(n, k);
        t = kernel_table();
        /* a is a plain service (keys in the shared map), b has ClientIP
         * affinity (chains of its own). */
        assert_non_null(strstr(t, "198.18.128.10 . 80 . 0 : 198.18.1."));
        assert_null(strstr(t, "svc4-default/web/http/tcp"));
        assert_int_equal(strstr(t, "svc4-shop/api/http/tcp") != NULL, has_b);
        free(t);
        if (!failalloc_failed())
            break;
    }
    assert_true(k < 5000 && refused > 0);
    nft_free(n);
    assert_int_equal(setns(home, CLONE_NEWNET), 0);
    close(home);
}

/* The KEYS object of <g> in maps <name> for <key>, or NULL. */
static const struct nftgen_obj *
keys_obj(const struct nftgen_group *g, const char *name, const char *key)
{
    size_t i;

    for (i = 0; i < g->n; i++)
        if (g->v[i].kind == NFTGEN_KEYS && strcmp(g->v[i].name, name) == 0
            && strcmp(g->v[i].key, key) == 0)
            return &g->v[i];
    return NULL;
}

/* Service <s> as a plain one (it must be) into <g>: its group's text. */
static char *
plain_text(const struct nft_conf *c, const struct nft_svc *s,
           struct nftgen_group *g)
{
    assert_int_equal(nftgen_service_keys(c, s, g), 1);
    return group_text(g);
}

/* Layout 4: a plain service is keys in the shared maps (its endpoints by
 * key, weights as numbers of keys) and its ClusterIP's way to the pick
 * chain; anything else it has keeps chains of its own. */
/* Plain service <s>'s keys of map group <name> at <key> name the
 * endpoints <rules>. */
static void
key_rules(const struct nft_conf *c, const struct nft_svc *s,
          const char *name, const char *key, const char *rules)
{
    struct nftgen_group g;
    const struct nftgen_obj *k;

    nftgen_group_init(&g);
    assert_int_equal(nftgen_service_keys(c, s, &g), 1);
    k = keys_obj(&g, name, key);
    assert_non_null(k);
    assert_string_equal(k->rules, rules);
    nftgen_group_deinit(&g);
}

static void
test_gen_plain_keys(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_group g;
    struct fix f;
    const struct nftgen_obj *k;
    char *t;

    (void)state;
    fix_init(&f);
    c.own_chains = 0;
    f.cl[1].weight = 2; /* 198.18.1.2: two keys of three */
    nftgen_group_init(&g);
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 1);
    k = keys_obj(&g, "keys4-tcp", "198.18.128.10 . 80");
    assert_non_null(k);
    assert_string_equal(k->name, "keys4-tcp");
    assert_string_equal(k->key, "198.18.128.10 . 80");
    assert_string_equal(k->spec, "keys4-tcp-3");
    assert_int_equal(k->count, 3);
    assert_string_equal(k->rules, "198.18.1.2 . 8080, 198.18.1.2 . 8080, "
                                  "198.18.1.3 . 8080");
    t = group_text(&g);
    has(t, "svc4 { 198.18.128.10 . tcp . 80 : goto pick4-tcp }");
    hasnt(t, "add chain");
    free(t);
    nftgen_group_deinit(&g);
    /* Addresses are written by hand, as inet_ntop() writes them: the
     * octets' edges, the largest port; IPv6 through inet_ntop(). */
    f.cips[0] = ip("0.10.255.100", 0);
    f.s.port = 65535;
    f.cl[0].addr = ip("255.0.0.9", 65535);
    f.cl[1].addr = ip("100.200.0.1", 0);
    key_rules(&c, &f.s, "keys4-tcp", "0.10.255.100 . 65535",
              "100.200.0.1 . 0, 100.200.0.1 . 0, 255.0.0.9 . 65535");
    f.cips[0] = ip("2001:db8::a", 0);
    f.cl[0].addr = ip("2001:db8:0:1::ff", 8080);
    f.cl[1].addr = ip("::1", 8080);
    f.cl[1].weight = 1;
    key_rules(&c, &f.s, "keys6-tcp", "2001:db8::a . 65535",
              "::1 . 8080, 2001:db8:0:1::ff . 8080");
    fix_init(&f);
    f.cl[1].weight = 2;
    /* No endpoint: refused at once, as with chains of its own. */
    f.s.ncluster_eps = 0;
    t = plain_text(&c, &f.s, &g);
    has(t, "noep4 { 198.18.128.10 . tcp . 80 : goto reject-chain }");
    free(t);
    nftgen_group_deinit(&g);
    f.s.ncluster_eps = 2;
    /* An external address and a NodePort: the address is keyed as a
     * ClusterIP but reached through pickx4 (marked for masquerade), the
     * NodePort by its port alone through pickn4. */
    f.s.node_port = 30080;
    f.exts[0] = ip("198.18.200.1", 0);
    f.s.external_ips = f.exts;
    f.s.nexternal_ips = 1;
    t = plain_text(&c, &f.s, &g);
    has(t, "svc4 { 198.18.200.1 . tcp . 80 : goto pickx4-tcp }");
    has(t, "nodeports4 { tcp . 30080 : goto pickn4-tcp }");
    free(t);
    assert_int_equal(g.n, 6); /* 3 KEYS, 3 ELEM */
    k = keys_obj(&g, "keysn4-tcp", "30080");
    assert_non_null(k);
    assert_string_equal(k->spec, "keysn4-tcp-3");
    assert_string_equal(k->rules, "198.18.1.2 . 8080, 198.18.1.2 . 8080, "
                                  "198.18.1.3 . 8080");
    k = keys_obj(&g, "keys4-tcp", "198.18.200.1 . 80");
    assert_non_null(k);
    assert_string_equal(k->spec, "keys4-tcp-3");
    nftgen_group_deinit(&g);
    /* Without endpoints, each refused. */
    f.s.ncluster_eps = 0;
    t = plain_text(&c, &f.s, &g);
    has(t, "noep4 { 198.18.200.1 . tcp . 80 : goto reject-chain }");
    has(t, "noep-nodeports4 { tcp . 30080 : goto reject-chain }");
    free(t);
    nftgen_group_deinit(&g);
    f.s.ncluster_eps = 2;
    /* externalTrafficPolicy: Local: the external address and the
     * NodePort lead to the Local pick chains, whose own keys are the
     * local endpoints'. */
    f.s.external_local = 1;
    f.lo[0].addr = ip("198.18.1.3", 8080);
    f.lo[0].weight = 1;
    f.s.local_eps = f.lo;
    f.s.nlocal_eps = 1;
    t = plain_text(&c, &f.s, &g);
    has(t, "svc4 { 198.18.200.1 . tcp . 80 : goto pickxl4-tcp }");
    has(t, "nodeports4 { tcp . 30080 : goto pickln4-tcp }");
    free(t);
    assert_int_equal(g.n, 8); /* 5 KEYS, 3 ELEM */
    k = keys_obj(&g, "keysln4-tcp", "30080");
    assert_non_null(k);
    assert_string_equal(k->spec, "keysln4-tcp-1");
    assert_string_equal(k->rules, "198.18.1.3 . 8080");
    nftgen_group_deinit(&g);
    /* Local endpoints but none in the cluster list: outside traffic still
     * reaches them, as a chain of its own does. */
    f.s.ncluster_eps = 0;
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 0);
    f.s.ncluster_eps = 2;
    f.s.external_local = 0;
    f.s.nlocal_eps = 0;
    /* Source ranges: the firewall chain of the Service's own, before the
     * nat hook, as with chains of its own. */
    f.lbs[0] = ip("198.18.200.9", 0);
    f.s.lb_ips = f.lbs;
    f.s.nlb_ips = 1;
    f.ranges[0] = cidr("198.18.9.0/24");
    f.s.source_ranges = f.ranges;
    f.s.nsource_ranges = 1;
    t = plain_text(&c, &f.s, &g);
    has(t, "fw4 { 198.18.200.9 . tcp . 80 : goto fw-default/web/http/tcp }");
    has(t, "add rule inet ferry fw-default/web/http/tcp ip saddr { "
           "198.18.9.0/24 } return\nadd rule inet ferry "
           "fw-default/web/http/tcp drop\n");
    has(t, "svc4 { 198.18.200.9 . tcp . 80 : goto pickx4-tcp }");
    free(t);
    nftgen_group_deinit(&g);
    f.s.nsource_ranges = 0;
    f.s.nlb_ips = 0;
    /* What keeps chains of its own: affinity, a redirect, more keys than
     * NFTGEN_KEYS_MAX, and a config that asks for them. */
    f.s.node_port = 0;
    f.s.nexternal_ips = 0;
    f.s.affinity_s = 60;
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 0);
    f.s.affinity_s = 0;
    f.s.redirect_port = 10263;
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 0);
    f.s.redirect_port = 0;
    f.cl[0].weight = 1;
    f.cl[1].weight = NFTGEN_KEYS_MAX; /* 257 keys */
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 0);
    f.cl[1].weight = NFTGEN_KEYS_MAX - 1;
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 1);
    nftgen_group_deinit(&g);
    c.own_chains = 1;
    assert_int_equal(nftgen_service_keys(&c, &f.s, &g), 0);
    assert_int_equal(g.n, 0);
}

/* The pick chains: the masquerade mark, then a jump per count to a chain
 * of its own whose one rule reads the count's keyed map. */
static void
test_gen_picks(void **state)
{
    struct nft_conf c = conf_cidr();
    struct nftgen_counts k;
    struct nftgen_group g;
    char *t;

    (void)state;
    memset(&k, 0, sizeof(k));
    k.v[0][NFT_TCP][0] = 2;
    k.v[0][NFT_TCP][1] = 25;
    k.n[0][NFT_TCP] = 2;
    k.v[1][NFT_UDP][0] = 1;
    k.n[1][NFT_UDP] = 1;
    k.v[2][NFT_TCP][0] = 3;
    k.n[2][NFT_TCP] = 1;
    k.v[4][NFT_TCP][0] = 2;
    k.n[4][NFT_TCP] = 1;
    k.v[6][NFT_TCP][0] = 1;
    k.n[6][NFT_TCP] = 1;
    nftgen_group_init(&g);
    assert_int_equal(nftgen_picks(&c, &k, &g), 0);
    t = group_text(&g);
    /* NodePorts: any node address, keyed by the port; marked, under
     * Cluster. */
    has(t, "add rule inet ferry pickn4-tcp jump mark-for-masq\nadd rule "
           "inet ferry pickn4-tcp goto picknc4-tcp\n");
    has(t, "add rule inet ferry picknc4-tcp jump pickn4-tcp-3\n");
    hasnt(t, "picknc4-tcp jump mark-for-masq");
    /* Under Local: the cluster's pods and the node itself to every
     * endpoint, the rest to the local ones, or dropped. */
    has(t, "add rule inet ferry pickxl4-tcp ip saddr { 198.18.1.0/24 } goto "
           "pick4-tcp\nadd rule inet ferry pickxl4-tcp fib saddr type local "
           "jump mark-for-masq\nadd rule inet ferry pickxl4-tcp fib saddr "
           "type local goto pick4-tcp\nadd rule inet ferry pickxl4-tcp jump "
           "pickl4-tcp-2\nadd rule inet ferry pickxl4-tcp drop\n");
    has(t, "add rule inet ferry pickl4-tcp-2 dnat ip to ip daddr . tcp dport "
           ". numgen random mod 2 map @keysl4-tcp-2\n");
    has(t, "add rule inet ferry pickln4-tcp ip saddr { 198.18.1.0/24 } goto "
           "picknc4-tcp\n");
    has(t, "add rule inet ferry pickln4-tcp jump pickln4-tcp-1\nadd rule "
           "inet ferry pickln4-tcp drop\n");
    has(t, "add rule inet ferry pickln4-tcp-1 dnat ip to tcp dport . numgen "
           "random mod 1 map @keysln4-tcp-1\n");
    has(t, "add rule inet ferry pickn4-tcp-3 dnat ip to tcp dport . numgen "
           "random mod 3 map @keysn4-tcp-3\n");
    has(t, "add map inet ferry keysn4-tcp-3 { typeof tcp dport . numgen "
           "random mod 1 : ip daddr . tcp dport; }");
    /* External addresses: marked, then as ClusterIPs. */
    has(t, "add rule inet ferry pickx4-tcp jump mark-for-masq\nadd rule "
           "inet ferry pickx4-tcp goto pick4-tcp\n");
    has(t, "add rule inet ferry pick4-tcp ip saddr != { 198.18.1.0/24 } "
           "jump mark-for-masq\nadd rule inet ferry pick4-tcp jump "
           "pick4-tcp-2\nadd rule inet ferry pick4-tcp jump pick4-tcp-25\n");
    has(t, "add rule inet ferry pick4-tcp-25 dnat ip to ip daddr . tcp "
           "dport . numgen random mod 25 map @keys4-tcp-25\n");
    has(t, "add map inet ferry keys4-tcp-25 { typeof ip daddr . tcp dport "
           ". numgen random mod 1 : ip daddr . tcp dport; }");
    has(t, "add rule inet ferry pick6-udp-1 dnat ip6 to ip6 daddr . udp "
           "dport . numgen random mod 1 map @keys6-udp-1\n");
    /* No IPv6 cluster CIDR: nothing to mark. */
    hasnt(t, "pick6-udp ip6 saddr");
    has(t, "add chain inet ferry pick4-sctp\n");
    hasnt(t, "keys4-udp");
    free(t);
    nftgen_group_deinit(&g);
    c.own_chains = 1;
    assert_int_equal(nftgen_picks(&c, &k, &g), 0);
    assert_int_equal(g.n, 0);
}

/* A plain service's keys as text: one family, ports 1 to 65535. */
static void
test_addrs_parse(void **state)
{
    struct saddr a[3];
    uint8_t enc[NFTRULES_DATA_MAX];
    const char *why;

    (void)state;
    assert_int_equal(nftrules_addrs_parse("198.18.1.2 . 8080, 198.18.1.3 . "
                                          "53",
                                          a, 3, &why),
                     2);
    assert_int_equal(saddr_port(&a[1]), 53);
    assert_int_equal(nftrules_addr_port(&a[0], enc), 8);
    assert_memory_equal(enc, "\xc6\x12\x01\x02\x1f\x90\x00\x00", 8);
    assert_int_equal(nftrules_addrs_parse("2001:2::1 . 53", a, 3, &why), 1);
    assert_int_equal(nftrules_addr_port(&a[0], enc), 20);
    assert_int_equal(nftrules_addrs_parse("198.18.1.2 . 8080", a, 0, &why),
                     -1);
    assert_non_null(why);
    static const char *const bad[] = {
        "", "198.18.1.2", "198.18.1.2 . 0", "198.18.1.2 . 65536",
        "198.18.1.2 . 80,198.18.1.3 . 80", "198.18.1.2 . 80, 2001:2::1 . 80",
        "198.18.1.2 . 80, ", "x . 80", "198.18.1.2 .80", "198.18.1.2 . 80 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (nftrules_addrs_parse(bad[i], a, 3, &why) != -1 || why == NULL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

/* ---------------------------------------------------------------- JSON */

static void
test_json_parse(void **state)
{
    static const char good[] =
        "{\"config\": {\"masquerade\": \"none\", \"cluster_cidrs\": "
        "[\"198.18.1.0/24\"], \"nodeport_addresses\": [\"198.18.0.11\"], "
        "\"service_cidrs\": [\"198.18.128.0/17\", \"2001:2:0:80::/64\"]},"
        " \"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"udp\", "
        "\"port\": 53, \"cluster_ips\": [\"198.18.128.53\"], "
        "\"external_traffic_policy\": \"Local\", \"affinity_timeout\": 5, "
        "\"cluster_endpoints\": [{\"ip\": \"198.18.1.2\", \"port\": 53}, "
        "{\"ip\": \"2001:2::2\", \"port\": 53, \"weight\": 0}]}]}";
    static const char *const bad[] = {
        "",
        "[]",
        "{\"services\": 1}",
        "{\"extra\": 1}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"icmp\", "
        "\"port\": 1}]}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"tcp\", "
        "\"port\": 70000}]}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"tcp\", "
        "\"port\": 1, \"cluster_ips\": [\"host.example\"]}]}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"tcp\", "
        "\"port\": 1, \"cluster_endpoints\": [{\"ip\": \"198.18.1.1\"}]}]}",
        "{\"services\": [{\"id\": \"ns/a;p\", \"protocol\": \"tcp\", "
        "\"port\": 1}]}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"tcp\", "
        "\"port\": 1, \"colour\": 1}]}",
        "{\"config\": {\"masquerade\": \"some\"}}",
        "{\"config\": {\"own_chains\": 1}}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"protocol\": \"tcp\", "
        "\"port\": 1, \"cluster_endpoints\": [{\"ip\": \"198.18.1.1\", "
        "\"port\": 80, \"remote\": 1}]}]}",
        "{\"config\": {\"cluster_cidrs\": [\"198.18.1.1/24\"]}}",
        "{\"services\": [{\"id\": \"ns/a:p\", \"id\": \"ns/b:p\"}]}",
        NULL};
    struct nftjson_doc d;
    struct err e;
    size_t i;

    (void)state;
    err_clear(&e);
    assert_int_equal(nftjson_parse(good, strlen(good), &d, &e), 0);
    assert_true(d.has_conf);
    assert_int_equal(d.conf.masq, NFT_MASQ_NONE);
    assert_int_equal(d.conf.nnodeport_addrs, 1);
    assert_int_equal(d.conf.nservice_cidrs, 2);
    assert_int_equal(d.conf.own_chains, 0);
    assert_int_equal(d.nsvcs, 1);
    assert_int_equal(d.svcs[0].proto, NFT_UDP);
    assert_true(d.svcs[0].external_local);
    assert_int_equal(d.svcs[0].ncluster_eps, 2);
    assert_int_equal(d.svcs[0].cluster_eps[1].weight, 0);
    assert_int_equal(d.svcs[0].affinity_s, 5);
    nftjson_free(&d);
    for (i = 0; bad[i]; i++) {
        err_clear(&e);
        if (nftjson_parse(bad[i], strlen(bad[i]), &d, &e) == 0)
            fail_msg("accepted: %s", bad[i]);
        assert_true(e.msg[0] != '\0');
        assert_null(d.svcs);
    }
}

/* ------------------------------------------------------------ listings */

static void
test_listing_parse(void **state)
{
    static const char tbl[] =
        "{\"nftables\": [{\"metainfo\": {}}, {\"table\": {\"family\": \"i"
        "net\", \"name\": \"ferry\"}}, {\"set\": {\"family\": \"inet\", "
        "\"table\": \"ferry\", \"name\": \"layout\", \"comment\": \"ferry"
        " layout 4\"}}, {\"map\": {\"family\": \"inet\", \"table\": \"fer"
        "ry\", \"name\": \"svc4\"}}, {\"chain\": {\"family\": \"inet\", "
        "\"table\": \"ferry\", \"name\": \"services\"}}, {\"chain\": {\"f"
        "amily\": \"inet\", \"table\": \"ferry\", \"name\": \"x\"}}, {\"c"
        "hain\": {\"family\": \"inet\", \"table\": \"firewalld\", \"name"
        "\": \"other\"}}, {\"chain\": {\"family\": \"ip\", \"table\": \"f"
        "erry\", \"name\": \"other\"}}, {\"rule\": {\"family\": \"inet\","
        " \"table\": \"ferry\", \"chain\": \"services\"}}, {\"rule\": {\""
        "family\": \"inet\", \"table\": \"ferry\", \"chain\": \"services"
        "\"}}, {\"rule\": {\"family\": \"inet\", \"table\": \"ferry\", \""
        "chain\": \"x\"}}, {\"rule\": {\"family\": \"inet\", \"table\": "
        "\"ferry\", \"chain\": \"nowhere\"}}, {\"rule\": {\"family\": \"i"
        "net\", \"table\": \"firewalld\", \"chain\": \"x\"}}, {\"chain\":"
        " 7}]}";
    static const char more[] =
        "{\"nftables\": [{\"set\": {\"family\": \"inet\", \"table\": \"fe"
        "rry\", \"name\": \"aff4-x\", \"flags\": [\"timeout\"]}}]}";
    static const char elems[] =
        "{\"nftables\": [{\"map\": {\"family\": \"inet\", \"table\": \"fe"
        "rry\", \"name\": \"svc4\", \"elem\": [1, 2, 3]}}, {\"map\": {\"f"
        "amily\": \"inet\", \"table\": \"ferry\", \"name\": \"svc6\", \"e"
        "lem\": [1]}}, {\"map\": {\"family\": \"inet\", \"table\": \"othe"
        "r\", \"name\": \"svc4\", \"elem\": [1]}}]}";
    struct nftsys_listing l;
    struct err e;
    size_t n;

    (void)state;
    memset(&l, 0, sizeof(l));
    assert_int_equal(nftsys_parse_table(tbl, &l, &e), 0);
    assert_true(l.present);
    assert_true(l.layout_ok);
    /* Other tables' objects are not ferry's. */
    assert_int_equal(l.n, 4);
    assert_string_equal(l.v[2].name, "services");
    assert_int_equal(l.v[2].nrules, 2);
    assert_int_equal(l.v[3].nrules, 1);
    assert_true(l.v[1].is_map);
    /* A second listing adds to the first. */
    assert_int_equal(nftsys_parse_table(more, &l, &e), 0);
    assert_int_equal(l.n, 5);
    assert_string_equal(l.v[4].name, "aff4-x");
    nftsys_listing_free(&l);
    assert_int_equal(nftsys_parse_table("{\"nftables\": [{\"set\": "
                                        "{\"family\": \"inet\", \"table\": "
                                        "\"ferry\", \"name\": \"layout\", "
                                        "\"comment\": \"ferry layout 0\"}}]}",
                                        &l, &e),
                     0);
    assert_int_equal(l.n, 1);
    assert_false(l.layout_ok);
    nftsys_listing_free(&l);
    assert_int_equal(nftsys_parse_table("nope", &l, &e), -1);
    nftsys_listing_free(&l);
    assert_int_equal(nftsys_count_elems(elems, "svc4", &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(nftsys_count_elems(elems, "noep4", &n, &e), 0);
    assert_int_equal(n, 0);
}

/* Legacy iptables entries: a user chain is an ERROR target naming it. */
/* The verify step's counts from nf_tables dump messages: a rule is one,
 * a set's element list counts its entries, anything malformed nothing. */
/* An endpoint map's text, as the netlink writer reads it back: what
 * nftgen writes parses; ranges that leave a gap, overlap, pass the
 * modulus or mix families do not, and neither does a cut or padded
 * text. */
static void
test_epmap_parse(void **state)
{
    static const char *const bad[] = {
        "",
        "0-16777214 : 198.18.1.2 . 8080",               /* short */
        "0-16777216 : 198.18.1.2 . 8080",               /* past */
        "1-16777215 : 198.18.1.2 . 8080",               /* from 1 */
        "0-9 : 198.18.1.2 . 8080, 9-16777215 : 198.18.1.3 . 80",
        "0-9 : 198.18.1.2 . 8080, 11-16777215 : 198.18.1.3 . 80",
        "0-9 : 198.18.1.2 . 8080, 10-16777215 : 2001:2::2 . 80",
        "0-16777215 : 198.18.1.2 . 0",
        "0-16777215 : 198.18.1.2 . 65536",
        "0-16777215 : 198.18.1.256 . 80",
        "0-16777215 : 198.18.1.2 . 80 ",
        "0-16777215 : 198.18.1.2 .  80",
        "0-16777215 : 198.18.1.2",
        "0-16777215 198.18.1.2 . 80",
        "0-99999999999 : 198.18.1.2 . 80",
        "0-9 : 198.18.1.2 . 8080,10-16777215 : 198.18.1.3 . 80",
    };
    struct nftrules_eprange r[3];
    struct nft_conf c = conf_cidr();
    struct nftgen_group g;
    const char *why;
    struct fix f;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (nftrules_epmap_parse(bad[i], NULL, 0, &why) >= 0)
            fail_msg("accepted: \"%s\"", bad[i]);
        assert_non_null(why);
    }
    assert_int_equal(nftrules_epmap_parse("0-9 : 198.18.1.2 . 8080, "
                                          "10-16777215 : 198.18.1.3 . 80",
                                          r, 3, &why),
                     2);
    assert_int_equal(r[1].lo, 10);
    assert_int_equal(r[1].hi, 16777215);
    assert_int_equal(saddr_port(&r[1].ep), 80);
    /* Room for one: an error, nothing written past it. */
    assert_int_equal(nftrules_epmap_parse("0-9 : 198.18.1.2 . 8080, "
                                          "10-16777215 : 198.18.1.3 . 80",
                                          r, 1, &why),
                     -1);
    /* What nftgen writes, weighted, parses whole. */
    fix_init(&f);
    f.cl[0].weight = 3;
    nftgen_group_init(&g);
    assert_int_equal(nftgen_service(&c, &f.s, &g), 0);
    for (i = 0; i < g.n && g.v[i].kind != NFTGEN_EPMAP; i++)
        ;
    assert_true(i < g.n);
    assert_int_equal(nftrules_epmap_parse(g.v[i].rules, r, 3, &why), 2);
    /* Weight 3 against 1: three quarters of the random number. */
    assert_int_equal(r[0].hi - r[0].lo + 1 + r[1].hi - r[1].lo + 1,
                     NFTGEN_EP_MOD);
    assert_true(r[1].hi - r[1].lo + 1 == NFTGEN_EP_MOD / 4
                || r[0].hi - r[0].lo + 1 == NFTGEN_EP_MOD / 4);
    nftgen_group_deinit(&g);
}

/* An empty nf_tables message of <type> for <family> in <buf> (zeroed,
 * <size> bytes), as a dump would deliver it. */
static struct nlmsghdr *
nft_msg(char *buf, size_t size, uint16_t type, uint8_t family)
{
    struct nlmsghdr *nlh;
    struct nfgenmsg *nfg;

    memset(buf, 0, size);
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (uint16_t)((NFNL_SUBSYS_NFTABLES << 8) | type);
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = family;
    return nlh;
}

static void
test_dump_counts(void **state)
{
    char buf[512];
    struct nlmsghdr *nlh;
    struct nlattr *list, *el;
    int i;

    (void)state;
    nlh = nft_msg(buf, sizeof(buf), NFT_MSG_NEWSETELEM, NFPROTO_INET);
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, "ferry");
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, "hairpin4");
    list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
    for (i = 0; i < 3; i++) {
        el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
        mnl_attr_put_u32(nlh, NFTA_SET_ELEM_FLAGS, 0);
        mnl_attr_nest_end(nlh, el);
    }
    mnl_attr_nest_end(nlh, list);
    assert_int_equal(nftrules_msg_count(nlh, nlh->nlmsg_len, 1), 3);
    assert_int_equal(nftrules_msg_count(nlh, nlh->nlmsg_len, 0), 0);
    /* Cut short: the message claims more than there is. */
    assert_int_equal(nftrules_msg_count(nlh, nlh->nlmsg_len - 4, 1), 0);
    assert_int_equal(nftrules_msg_count(nlh, 8, 1), 0);
    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE;
    assert_int_equal(nftrules_msg_count(nlh, nlh->nlmsg_len, 0), 1);
    assert_int_equal(nftrules_msg_count(nlh, nlh->nlmsg_len, 1), 0);
}

/* A set of a set dump, with <flags> and user data <ud> (<udlen> bytes),
 * into <buf>. */
static struct nlmsghdr *
set_msg(char *buf, const char *table, const char *name, uint32_t flags,
        const void *ud, size_t udlen)
{
    struct nlmsghdr *nlh = nft_msg(buf, 512, NFT_MSG_NEWSET, NFPROTO_INET);

    mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table);
    mnl_attr_put_strz(nlh, NFTA_SET_NAME, name);
    mnl_attr_put_u32(nlh, NFTA_SET_FLAGS, htonl(flags));
    if (ud != NULL)
        mnl_attr_put(nlh, NFTA_SET_USERDATA, udlen, ud);
    return nlh;
}

/* The verify step's list of sets from a set dump: ferry's named sets and
 * maps, the layout set's comment read from its user data; another
 * table's sets, anonymous sets and malformed messages add nothing. */
static void
test_dump_sets(void **state)
{
    char buf[512], ud[64], want[32];
    struct nftsys_listing l = {0};
    struct nlmsghdr *nlh;
    int n;

    (void)state;
    nlh = set_msg(buf, "ferry", "svc4", NFT_SET_MAP, NULL, 0);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    nlh = set_msg(buf, "other", "svc4", 0, NULL, 0);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    nlh = set_msg(buf, "ferry", "__map0", NFT_SET_ANONYMOUS | NFT_SET_MAP,
                  NULL, 0);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    nlh = set_msg(buf, "ferry", "", 0, NULL, 0);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    nlh = set_msg(buf, "ferry", "hairpin4", 0, NULL, 0);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len - 4, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.v[0].name, "svc4");
    assert_true(l.v[0].is_map && l.present && !l.layout_ok);
    /* The comment is one entry of the user data, after another (the
     * key's byte order), with its NUL. */
    n = snprintf(want, sizeof(want), "ferry layout %d", NFT_LAYOUT) + 1;
    ud[0] = 0;
    ud[1] = 4;
    memset(ud + 2, 0, 4);
    ud[6] = 7;
    ud[7] = (char)n;
    memcpy(ud + 8, want, (size_t)n);
    nlh = set_msg(buf, "ferry", "layout", 0, ud, 8 + (size_t)n);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    assert_true(l.layout_ok && l.n == 2 && !l.v[1].is_map);
    /* Another layout, or a length past the end: not this layout. */
    l.layout_ok = 0;
    ud[8 + n - 2] ^= 1;
    nlh = set_msg(buf, "ferry", "layout", 0, ud, 8 + (size_t)n);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    assert_false(l.layout_ok);
    ud[8 + n - 2] ^= 1;
    ud[7] = (char)(n + 1);
    nlh = set_msg(buf, "ferry", "layout", 0, ud, 8 + (size_t)n);
    assert_int_equal(nftrules_msg_set(nlh, nlh->nlmsg_len, &l), 0);
    assert_false(l.layout_ok);
    assert_int_equal(l.n, 4);
    nftsys_listing_free(&l);
}

/* nftrules_msg_table_name() of <nlh> as received, into tname with
 * <room> bytes of it. */
static char tname[32];

static int
table_name_of(const struct nlmsghdr *nlh, uint8_t family, size_t room)
{
    memset(tname, 0, sizeof(tname));
    return nftrules_msg_table_name(nlh, nlh->nlmsg_len, family, tname, room);
}

/* A table of the table dump that the kube-proxy check and cleanup read:
 * the name and the family both count; a name cut short, another message
 * or a message past the bytes received do not. */
static void
test_dump_tables(void **state)
{
    char buf[256];
    struct nlmsghdr *nlh;
    uint32_t use = 7;

    (void)state;
    nlh = nft_msg(buf, sizeof(buf), NFT_MSG_NEWTABLE, NFPROTO_IPV4);
    mnl_attr_put_u32(nlh, NFTA_TABLE_FLAGS, 0);
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, "kube-proxy");
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV4,
                                        "kube-proxy", &use),
                     1);
    assert_int_equal(use, 0); /* no use count in the message */
    mnl_attr_put_u32(nlh, NFTA_TABLE_USE, htonl(12345));
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV4,
                                        "kube-proxy", &use),
                     1);
    assert_int_equal(use, 12345);
    use = 7;
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV6,
                                        "kube-proxy", &use),
                     0);
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV4,
                                        "kube-prox", &use),
                     0);
    assert_int_equal(use, 7); /* left as it was */
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len - 4, NFPROTO_IPV4,
                                        "kube-proxy", NULL),
                     0);
    /* Its name, for the kube-proxy check: whole, within the room given. */
    assert_int_equal(table_name_of(nlh, NFPROTO_IPV4, 16), 1);
    assert_string_equal(tname, "kube-proxy");
    assert_int_equal(table_name_of(nlh, NFPROTO_IPV6, 16), 0);
    assert_int_equal(table_name_of(nlh, NFPROTO_IPV4, 10), 0);
    /* A length that is not a multiple of 4, whose last attribute ends in
     * the padding after it (libmnl walks to the rounded length): found
     * by the fuzz target, where the name's NUL lay past the bytes given. */
    nlh = nft_msg(buf, sizeof(buf), NFT_MSG_NEWTABLE, NFPROTO_IPV4);
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, "kube-proxy");
    nlh->nlmsg_len -= 3;
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV4,
                                        "kube-proxy", NULL),
                     0);
    assert_int_equal(table_name_of(nlh, NFPROTO_IPV4, 16), 0);
    nlh->nlmsg_len += 3;
    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN;
    assert_int_equal(nftrules_msg_table(nlh, nlh->nlmsg_len, NFPROTO_IPV4,
                                        "kube-proxy", NULL),
                     0);
}

/* A change whose steps or pieces make no sense is refused before any
 * socket is opened: an op past FLUSH, a key too long, data too long,
 * pieces that end past the steps or go backwards. */
static void
test_write_refuses_bad_steps(void **state)
{
    struct nftrules_writer *w = nftrules_writer_new();
    struct nftrules_elem v[2];
    struct nftrules_change c;
    size_t ends[2];
    struct err e;
    int i;

    (void)state;
    assert_non_null(w);
    for (i = 0; i < 5; i++) {
        memset(v, 0, sizeof(v));
        memset(&c, 0, sizeof(c));
        v[0].set = v[1].set = "keys4-tcp-2";
        v[0].len = v[1].len = 12;
        c.steps = v;
        c.nsteps = 2;
        c.ends = ends;
        c.nends = 1;
        ends[0] = 2;
        if (i == 0)
            v[1].op = NFTRULES_FLUSH + 1;
        else if (i == 1)
            v[0].len = NFTRULES_KEY_MAX + 1;
        else if (i == 2)
            v[1].dlen = NFTRULES_DATA_MAX + 1;
        else if (i == 3)
            ends[0] = 3;
        else {
            ends[0] = 2;
            ends[1] = 1;
            c.nends = 2;
        }
        err_clear(&e);
        assert_int_equal(nftrules_write(w, &c, &e), -1);
        assert_non_null(strstr(e.msg, "nf_tables set elements: bad"));
    }
    nftrules_writer_free(w);
}

/* The acknowledgements of a batch of element changes: the one asked for
 * found by its sequence number, the first error of any kept; a message
 * cut short is not one. */
static void
test_batch_acks(void **state)
{
    char buf[512];
    struct nlmsghdr *nlh;
    struct nlmsgerr *me;
    size_t off = 0;
    int err = 0, i;

    (void)state;
    memset(buf, 0, sizeof(buf));
    for (i = 0; i < 3; i++) {
        nlh = mnl_nlmsg_put_header(buf + off);
        nlh->nlmsg_type = NLMSG_ERROR;
        nlh->nlmsg_seq = 7 + (uint32_t)i;
        me = mnl_nlmsg_put_extra_header(nlh, sizeof(*me));
        me->error = i == 1 ? -ENOENT : i == 2 ? -EBUSY : 0;
        off += nlh->nlmsg_len;
    }
    assert_int_equal(nftrules_ack_of(buf, off, 9, &err), 1);
    assert_int_equal(err, -ENOENT);
    err = 0;
    assert_int_equal(nftrules_ack_of(buf, off, 7, &err), 1);
    assert_int_equal(nftrules_ack_of(buf, off, 10, &err), 0);
    err = 0;
    assert_int_equal(nftrules_ack_of(buf, off - 1, 9, &err), 0);
    assert_int_equal(err, -ENOENT);
    err = 0;
    assert_int_equal(nftrules_ack_of(buf, 3, 7, &err), 0);
    assert_int_equal(err, 0);
}

static void
test_xt_has_chain(void **state)
{
    struct chain_head {
        struct ipt_entry e;
        struct xt_error_target t;
    } v[3];
    size_t i;

    (void)state;
    memset(v, 0, sizeof(v));
    for (i = 0; i < 3; i++) {
        v[i].e.target_offset = sizeof(v[i].e);
        v[i].e.next_offset = sizeof(v[i]);
        v[i].t.target.u.user.target_size = sizeof(v[i].t);
        snprintf(v[i].t.target.u.user.name, sizeof(v[i].t.target.u.user.name),
                 "%s", i == 1 ? XT_ERROR_TARGET : "MARK");
        snprintf(v[i].t.errorname, sizeof(v[i].t.errorname), "%s",
                 "KUBE-SERVICES");
    }
    assert_true(nftsys_xt_has_chain(v, sizeof(v), 0, "KUBE-SERVICES"));
    assert_false(nftsys_xt_has_chain(v, sizeof(v), 0, "KUBE-SERVICE"));
    assert_false(nftsys_xt_has_chain(v, sizeof(v), 0, "KUBE-SERVICES-X"));
    /* Only the first entry fits: no chain head in it. */
    assert_false(nftsys_xt_has_chain(v, sizeof(v[0]), 0, "KUBE-SERVICES"));
    /* Offsets that point past the buffer stop the walk. */
    v[0].e.next_offset = 0xffff;
    assert_false(nftsys_xt_has_chain(v, sizeof(v), 0, "KUBE-SERVICES"));
    v[0].e.next_offset = sizeof(v[0]);
    v[1].t.target.u.user.target_size = 0xffff;
    assert_false(nftsys_xt_has_chain(v, sizeof(v), 0, "KUBE-SERVICES"));
    for (i = 0; i < sizeof(v); i++)
        (void)nftsys_xt_has_chain(v, i, 0, "KUBE-SERVICES");
}

/* ----------------------------------------------------------- conntrack */

static void
put_tuple(struct nlmsghdr *nlh, int type, const char *src, const char *dst,
          uint16_t sport, uint16_t dport)
{
    struct nlattr *t = mnl_attr_nest_start(nlh, (uint16_t)type), *n;
    struct in_addr a;

    n = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    inet_pton(AF_INET, src, &a);
    mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, &a);
    inet_pton(AF_INET, dst, &a);
    mnl_attr_put(nlh, CTA_IP_V4_DST, 4, &a);
    mnl_attr_nest_end(nlh, n);
    n = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_UDP);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(sport));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(dport));
    mnl_attr_nest_end(nlh, n);
    mnl_attr_nest_end(nlh, t);
}

static void
test_ctclean_parse_match(void **state)
{
    static char buf[8192];
    struct nlmsghdr *nlh;
    struct nfgenmsg *nfg;
    struct ctclean_entry en;
    struct ctclean_match m;
    struct saddr dst = ip("198.18.128.53", 53);
    size_t len;

    (void)state;
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = AF_INET;
    /* A client's DNS query to the ClusterIP, NATed to a pod. */
    put_tuple(nlh, CTA_TUPLE_ORIG, "198.18.0.100", "198.18.128.53", 40000, 53);
    put_tuple(nlh, CTA_TUPLE_REPLY, "198.18.1.2", "198.18.0.100", 53, 40000);
    assert_int_equal(ctclean_parse(nlh, nlh->nlmsg_len, &en), 0);
    assert_int_equal(saddr_port(&en.orig.src), 40000);
    assert_int_equal(en.orig.proto, IPPROTO_UDP);
    memset(&m, 0, sizeof(m));
    m.ep = ip("198.18.1.2", 53);
    m.dsts = &dst;
    m.ndsts = 1;
    assert_true(ctclean_matches(&en, &m));
    m.ep = ip("198.18.1.3", 53);
    assert_false(ctclean_matches(&en, &m));
    m.ep = ip("198.18.1.2", 53);
    m.ndsts = 0;
    assert_false(ctclean_matches(&en, &m));
    m.node_port = 53;
    assert_true(ctclean_matches(&en, &m));
    /* Every truncation of the message is refused or parsed, never read
     * past. */
    len = nlh->nlmsg_len;
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1);

        memcpy(copy, buf, cut);
        if (cut >= sizeof(struct nlmsghdr))
            ((struct nlmsghdr *)copy)->nlmsg_len = (uint32_t)cut;
        (void)ctclean_parse(copy, cut, &en);
        free(copy);
    }
    /* Not a conntrack message. */
    nlh->nlmsg_type = 3;
    assert_int_equal(ctclean_parse(nlh, len, &en), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_svc_check),
        cmocka_unit_test(test_gen_redirect),
        cmocka_unit_test(test_gen_cluster_ip),
        cmocka_unit_test(test_gen_masquerade_modes),
        cmocka_unit_test(test_gen_no_endpoints_rejects),
        cmocka_unit_test(test_gen_external_local),
        cmocka_unit_test(test_gen_weights_affinity_ranges),
        cmocka_unit_test(test_gen_many_endpoints_vmap),
        cmocka_unit_test(test_gen_dual_stack),
        cmocka_unit_test(test_diff_incremental),
        cmocka_unit_test(test_diff_lean),
        cmocka_unit_test(test_gen_out_of_memory),
        cmocka_unit_test(test_gen_global),
        cmocka_unit_test(test_gen_plain_keys),
        cmocka_unit_test(test_gen_picks),
        cmocka_unit_test(test_addrs_parse),
        cmocka_unit_test(test_smap),
        cmocka_unit_test(test_engine_claims),
        cmocka_unit_test(test_engine_out_of_memory),
        cmocka_unit_test(test_json_parse),
        cmocka_unit_test(test_listing_parse),
        cmocka_unit_test(test_dump_counts),
        cmocka_unit_test(test_epmap_parse),
        cmocka_unit_test(test_dump_sets),
        cmocka_unit_test(test_dump_tables),
        cmocka_unit_test(test_fill_skips_what_exists),
        cmocka_unit_test(test_batch_acks),
        cmocka_unit_test(test_write_refuses_bad_steps),
        cmocka_unit_test(test_xt_has_chain),
        cmocka_unit_test(test_ctclean_parse_match),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
