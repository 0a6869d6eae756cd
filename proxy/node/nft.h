/*
 * nft.h - Kubernetes Services carried by the kernel: one nftables table of
 * ferry's own ("inet ferry"), programmed through libnftables.
 *
 * The caller (the Kubernetes translator, or the test driver) describes
 * what the kernel must do, one "kernel service" per Service port and
 * protocol: its addresses, its NodePort, and the endpoints it already
 * selected the way kube-proxy selects them (a cluster list for internal
 * traffic, a local list for external traffic under
 * externalTrafficPolicy: Local). The engine turns that into rules with
 * kube-proxy's nftables-mode semantics and keeps the kernel converged:
 *
 *   - nft_svc_put()/nft_svc_del() change the wanted state (no I/O);
 *   - nft_apply() writes the changes in one atomic transaction: the first
 *     time (and after any failure) a full convergence that adopts a table
 *     left by an earlier process without flushing it, afterwards only the
 *     chains and map elements of the services that changed;
 *   - nft_verify() notices a table someone flushed, deleted or edited, and
 *     restores it;
 *   - nft_cleanup() deletes the table (ferry cleanup);
 *   - nft_kube_proxy_found() names kube-proxy's tables or chains.
 *
 * Every call is synchronous (libnftables talks netlink and waits for the
 * kernel): control thread only, never from a worker. Nothing here logs
 * except nft_apply() and nft_verify(), which log what they change and the
 * kernel's own error text when a transaction fails.
 */
#ifndef PROXY_NODE_NFT_H
#define PROXY_NODE_NFT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

#define NFT_TABLE  "ferry" /* table inet ferry */
#define NFT_LAYOUT 4       /* bumped when chains or maps change shape */

/* Caps on hostile input (a put over a cap is refused whole). */
#define NFT_ID_MAX     160  /* "namespace/name:port" + NUL */
#define NFT_IPS_MAX    64   /* addresses of one kind in one service */
/* Endpoints in one list: kube-proxy's scale model is one Service of
 * 100,000. A list is one map's elements, written through netlink when it
 * changes; with ClientIP affinity each endpoint is a chain and a set of
 * its own, so fewer there. */
#define NFT_EPS_MAX     131072
#define NFT_AFF_EPS_MAX 4096
#define NFT_RANGES_MAX 256  /* loadBalancerSourceRanges */
#define NFT_CIDRS_MAX  16   /* cluster CIDRs in the config */
#define NFT_SVCS_MAX   100000
#define NFT_WEIGHT_MAX 256
#define NFT_AFFINITY_MAX_S                                                     \
    86400 /* sessionAffinity timeout, Kubernetes' cap                          \
           */

enum nft_proto { NFT_TCP = 0, NFT_UDP, NFT_SCTP, NFT_PROTO__COUNT };

/* "tcp", "udp", "sctp"; "?" out of range. Parse returns 0 or -1. */
const char *nft_proto_name(enum nft_proto p);
int nft_proto_parse(const char *s, enum nft_proto *out);

/* Which traffic gets its source rewritten to the node's address. */
enum nft_masq {
    NFT_MASQ_CIDR =
        0,         /* kube-proxy's rules, "outside" = not in cluster_cidrs */
    NFT_MASQ_ALL,  /* every Service connection (masqueradeAll) */
    NFT_MASQ_NONE, /* never, not even hairpin */
};


/* Parse "198.18.0.0/15" or "2001:2::/48" (host bits must be zero):
 * parse_cidr() without PARSE_CIDR_MASK. */
int nft_cidr_parse(const char *s, struct cidr *out, const char **why);

struct nft_ep {
    struct saddr addr; /* IP and target port */
    uint32_t weight;   /* 1..NFT_WEIGHT_MAX; 0 = takes no new flows */
    /* Nonzero: on another node. Only a pod on this node can reach
     * itself through it, so a remote endpoint needs no hairpin pair
     * (unknown, zero: it gets one). */
    uint32_t remote;
};

struct nft_svc {
    /* "namespace/name:port"; with proto, the key. Borrowed for a call;
     * the engine keeps its own copy. */
    const char *id;
    enum nft_proto proto;
    uint16_t port;             /* the Service port (ClusterIP, external IPs) */
    uint16_t node_port;        /* 0 = none */
    struct saddr *cluster_ips; /* both families; ports ignored */
    size_t ncluster_ips;
    struct saddr *external_ips;
    size_t nexternal_ips;
    struct saddr *lb_ips; /* LoadBalancer ingress IPs */
    size_t nlb_ips;
    struct cidr *source_ranges; /* applied to lb_ips only; none = all */
    size_t nsource_ranges;
    uint32_t affinity_s;        /* ClientIP affinity timeout, 0 = off */
    int external_local;         /* externalTrafficPolicy: Local */
    struct nft_ep *cluster_eps; /* internal traffic (and external, Cluster) */
    size_t ncluster_eps;
    struct nft_ep *local_eps; /* external traffic under Local */
    size_t nlocal_eps;
    /* Nonzero: served by ferry's proxy. New connections to every address
     * of the service are redirected to this local port (TCP only); the
     * endpoint lists are then ignored. */
    uint16_t redirect_port;
};

struct nft_conf {
    enum nft_masq masq;
    struct cidr cluster_cidrs[NFT_CIDRS_MAX];
    size_t ncluster_cidrs;
    /* NodePorts answer on these addresses; none = every local address of
     * the node but loopback ("fib daddr type local"). */
    struct saddr nodeport_addrs[NFT_IPS_MAX];
    size_t nnodeport_addrs;
    /* ClusterIP ranges: a connection to an address in them that no
     * Service holds (a Service just deleted) is refused at once instead
     * of wandering off along the default route. kube-proxy drops these;
     * none = no such rule. */
    struct cidr service_cidrs[NFT_CIDRS_MAX];
    size_t nservice_cidrs;
    uint32_t masq_mark; /* one bit of the packet mark; 0 = 0x4000 */
    /* The proxy's ports (0: none): each has a fixed chain,
     * "redirect-PORT", that redirects new connections to it, where the
     * addresses of every service redirected to that port lead (at 10,000
     * Services, 10,000 chains fewer). A service redirected to another
     * port gets a chain of its own. */
    uint16_t redirect_ports[2];
    /* Nonzero: every Service gets chains and an endpoint map of its own
     * (layout 3's shape). Zero, the default: a plain Service (no
     * affinity or proxy redirect, few enough endpoints) has no chain of
     * its own (but a firewall for its source ranges), only keys in maps every Service shares
     * (nftgen.h), so that what a change costs the kernel does not grow
     * with the Services. */
    int own_chains;
};

/*
 * Check <s> for everything the engine needs (id syntax, caps, address
 * families, ports, weights, no IPv4-mapped IPv6). Returns 0, or -1 with
 * <e> naming the service and the field. Pure.
 */
int nft_svc_check(const struct nft_svc *s, struct err *e);
int nft_conf_check(const struct nft_conf *c, struct err *e);

struct nft;

/* The engine's counters, for metrics. */
struct nft_stats {
    uint64_t transactions; /* committed */
    uint64_t failures;     /* refused by the kernel or libnftables */
    uint64_t converges;    /* full convergences committed */
    uint64_t restores;     /* nft_verify() found the table changed */
    uint64_t ct_deleted;   /* UDP conntrack entries removed */
    /* Updates committed without libnftables' set cache (nft.c's
     * incremental() says which): at 10,000 Services, the difference
     * between tens of milliseconds of CPU per update and well under one. */
    uint64_t lean;
    /* Endpoint maps whose elements an update rewrote through netlink
     * (nftgen.h's endpoint maps): an endpoint change without a rule. */
    uint64_t epmaps;
    /* Plain services' keys in the shared maps (nftgen.h, layout 4) that
     * an update added, changed or deleted through netlink. */
    uint64_t keyed;
    /* Updates that ran a libnftables transaction (lean or not). */
    uint64_t texts;
    /* Verifies run, and those that listed every set by name (after a
     * change of the table's chains or sets: nft_verify()). */
    uint64_t verifies, verify_lists;
    size_t services;       /* wanted kernel services */
};

/*
 * A new engine for <c> (copied). Touches nothing in the kernel yet: the
 * first nft_apply() adopts or creates the table. Returns NULL with <e>
 * filled on a bad config or when libnftables cannot start.
 */
struct nft *nft_new(const struct nft_conf *c, struct err *e);

/* Forget the engine; the kernel's table stays as it is (a restart adopts
 * it). NULL does nothing. */
void nft_free(struct nft *n);

/*
 * Want <s> (borrowed, copied) in the kernel, replacing the service with
 * the same id and protocol. Refused, with <e> filled and the old state
 * kept, when <s> is invalid or claims an address, protocol and port (or a
 * NodePort) another service holds. Returns 0 or -1. No I/O.
 */
int nft_svc_put(struct nft *n, const struct nft_svc *s, struct err *e);

/* Stop wanting the service <id>/<proto>. Returns 0, or -1 when absent. */
int nft_svc_del(struct nft *n, const char *id, enum nft_proto proto);

/*
 * Make the kernel match the wanted state, in one transaction. Returns 0
 * (also when nothing had to change), or -1 with <e> holding nftables' own
 * message: the kernel is then as it was before the call, and the next
 * nft_apply() retries with a full convergence. After a commit that took a
 * UDP endpoint away, deletes the conntrack entries that still lead to it;
 * after one that left a ClusterIP or a hairpin pair unused, deletes it
 * from its shared set (if that fails, it stays, harmless, until the next
 * convergence, which the next nft_apply() or nft_verify() runs).
 */
int nft_apply(struct nft *n, struct err *e);

/* Nonzero while nft_apply() has something to write. */
int nft_pending(const struct nft *n);

/* Make the next nft_apply() a full convergence (every rule rewritten in
 * one transaction, affinity kept). nft_verify() does not look at the
 * services' own chains and maps (too slow at scale): a caller that wants
 * an edit there undone calls this now and then (kube-proxy resyncs
 * hourly). */
void nft_resync(struct nft *n);

/*
 * Compare the kernel's table with what was last committed (its named sets
 * and maps, the rule counts of the fixed chains, the element counts of
 * the shared maps and sets; a second or so at 10,000 Services of 25
 * endpoints). Returns 0 when intact, 1 when it differed and was restored,
 * -1 when listing or restoring failed (<e> says why; the next nft_apply()
 * converges).
 */
int nft_verify(struct nft *n, struct err *e);

void nft_get_stats(const struct nft *n, struct nft_stats *out);

/*
 * `ferry cleanup`: delete table inet ferry in the current network
 * namespace. Returns 1 when deleted, 0 when there was none, -1 with <e>.
 */
int nft_cleanup(struct err *e);

/*
 * Is kube-proxy programming this node? Looks for nftables tables
 * "ip kube-proxy"/"ip6 kube-proxy" and for KUBE-SERVICES chains of
 * iptables (nft-based or legacy). Returns 1 with <why> naming what was
 * found, 0 when none, -1 with <e> when nothing could be listed.
 */
int nft_kube_proxy_found(char *why, size_t whylen, struct err *e);

#endif
