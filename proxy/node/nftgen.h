/*
 * nftgen.h - the text of table inet ferry: what each kernel service and
 * the fixed skeleton turn into, and the nft commands that move the kernel
 * from one version of them to another.
 *
 * Pure: no I/O, no log, no clock. A service compiles to a group of
 * objects (sets, chains with their rules, elements of the shared verdict
 * maps); two groups diff into commands. Commands go into a transaction in
 * phases, so that one buffer is always valid whatever it holds: new sets
 * and chains first, then chain flushes, rules, element deletions, element
 * additions, and last the deletion of chains and sets nothing refers to
 * any more.
 *
 * Names are readable and stable across processes (a restart must find the
 * same names to adopt the table): "svc4-<ns>/<name>/<port>/<proto>" and
 * so on, from the service id, which nft_svc_check() restricts to
 * characters nft accepts in a name.
 *
 * Size: a plain service (layout 4, below) has no chain or set of its
 * own, only keys in maps every service shares. Any other
 * service has a chain per family (plus one for external traffic and one
 * for local endpoints where it needs them) whose last rule translates
 * through the service's named endpoint map (below); only a service with
 * ClientIP affinity has a chain per endpoint. Hairpin masquerade is one
 * rule per family on a shared set of endpoint pairs that the engine
 * fills (nftgen_hairpin()). So the table's chains, and the kernel's
 * loop checks over them, grow with the services that are not plain,
 * never with the endpoints.
 */
#ifndef PROXY_NODE_NFTGEN_H
#define PROXY_NODE_NFTGEN_H

#include <stddef.h>
#include <stdint.h>

#include "nft.h"
#include "sbuf.h"

struct smap;

#define NFTGEN_TXN_MAX ((size_t)1 << 30) /* one transaction's text */

/* Endpoints above which a service with affinity picks with one numgen
 * vmap instead of a rule per endpoint (nftgen.c says why). */
#define NFTGEN_VMAP_MIN 32

enum nftgen_kind {
    NFTGEN_SET = 0, /* a set or map: <spec> */
    NFTGEN_CHAIN,   /* a chain: <spec> for base chains, <rules> */
    NFTGEN_ELEM,    /* an element of map <name>: <key> : <val> */
    NFTGEN_EPMAP,   /* a service's endpoint map: <spec>, <rules> its
                     * elements ("lo-hi : ip . port, ...") */
    NFTGEN_KEYS,    /* one address (or the NodePort) of a plain service
                     * in layout 4's keyed maps of <name> ("keys4-tcp",
                     * "keysn4-tcp"): <key> "ip . port" (or "port"),
                     * <rules> the endpoints by key ("ip . port, ..."),
                     * <spec> the map of its count ("keys4-tcp-25"),
                     * <count> how many keys */
};

/*
 * A service's endpoints (without affinity) live in a named interval map
 * of its own, "em4-<base>" (cluster list) or "eml4-<base>" (local list),
 * keyed by "numgen random mod NFTGEN_EP_MOD": each endpoint owns a range
 * of the random number in proportion to its weight. The modulus is fixed,
 * so the chain's rule never names how many endpoints there are: an
 * endpoint change rewrites the map's elements only (nftrules_set_maps(),
 * straight through netlink), which the kernel neither names anew nor
 * checks the table for, where a rewritten rule cost both (bench/RESULTS.md,
 * "What a change costs the kernel"). 2^24 values: an endpoint's share is
 * off by at most one value in 160 at 100,000 endpoints; nft_svc_check()
 * refuses a list whose weights add up to more (every endpoint must own a
 * value).
 */
#define NFTGEN_EPMAP_PREFIX "em"
#define NFTGEN_EP_MOD       16777216u

/*
 * Layout 4: plain services share their maps (nft_conf.own_chains 0).
 * Until the nat hook translates it, a packet's destination is the
 * Service's address and port, so that is the key that tells the
 * services apart, and no rule has to name a service:
 *   - "keys4-tcp-N" (per family, protocol and count N of keys in use),
 *     typeof "ip daddr . tcp dport . numgen random mod 1 : ip daddr .
 *     tcp dport": a service of N keys holds "address . port . i" ->
 *     endpoint for i < N, for each of its ClusterIPs, external IPs and
 *     load-balancer IPs;
 *   - chain "pick4-tcp-N": one rule, "dnat ip to ip daddr . tcp dport .
 *     numgen random mod N map @keys4-tcp-N", which a service of another
 *     count does not match (its address is not in the map);
 *   - chain "pick4-tcp": the masquerade mark, then "jump pick4-tcp-N"
 *     for each count in use, ascending; "pickx4-tcp", for external
 *     addresses, marks for masquerade and goes there;
 *   - a NodePort reaches any node address, so its keys are the port
 *     alone: "keysn4-tcp-N" ("tcp dport . numgen random mod 1 : ip daddr
 *     . tcp dport") and chains "pickn4-tcp" and "pickn4-tcp-N";
 *   - the service's addresses in "svc4" go to "pick4-tcp" or
 *     "pickx4-tcp", its NodePort in "nodeports4" to "pickn4-tcp";
 *   - under externalTrafficPolicy: Local, external addresses and the
 *     NodePort go to "pickxl4-tcp" and "pickln4-tcp" instead, which send
 *     the pod ranges and the node itself to every endpoint and the rest
 *     to the local ones, keys of their own ("keysl4-tcp-N",
 *     "keysln4-tcp-N"), or drop it.
 * An endpoint change is then elements only (its keys, moved to another
 * count's map when the count changes), written through netlink in one
 * transaction, and no chain or set of the table grows with the services.
 * A count gets a map and a chain of its own because the kernel checks
 * every element of a map against a rule that binds it: a rule for a new
 * count on one map of 250,000 keys took 53 ms. Weights are numbers of
 * keys (an endpoint of weight 2 holds two keys, over the weights' common
 * factor). loadBalancerSourceRanges add the service's firewall chain
 * (checked before the nat hook) in either layout. A service with ClientIP
 * affinity, a proxy redirect or more than NFTGEN_KEYS_MAX keys keeps
 * chains of its own (nftgen_service()); so
 * does one whose count has no rule free (NFTGEN_COUNTS_MAX per kind of
 * key, family and protocol: a connection's first packet tries the
 * counts in turn).
 */
#define NFTGEN_KEYS_PREFIX  "keys"
#define NFTGEN_PICK_PREFIX  "pick"
#define NFTGEN_KEYS_MAX     256
#define NFTGEN_COUNTS_MAX   48


struct nftgen_obj {
    enum nftgen_kind kind;
    int is_map;  /* SET: a map (flush/delete say "map") */
    char *name;  /* set or chain; for ELEM the map */
    char *spec;  /* "{ type ...; }" or NULL */
    char *rules; /* CHAIN: one rule a line, each ending in '\n'; "" none */
    char *key;   /* ELEM, KEYS */
    char *val;   /* ELEM */
    uint32_t count; /* KEYS: keys (the N of its map's name) */
};

struct nftgen_group {
    struct nftgen_obj *v;
    size_t n, cap;
    int oom; /* an allocation failed: the group is incomplete */
};

void nftgen_group_init(struct nftgen_group *g);
void nftgen_group_deinit(struct nftgen_group *g);

/* Nonzero when <a> and <b> hold the same objects (both sorted). NULL is
 * an empty group. */
int nftgen_group_equal(const struct nftgen_group *a,
                       const struct nftgen_group *b);

/* Number of rules in a CHAIN object (lines of <rules>). */
size_t nftgen_rule_count(const struct nftgen_obj *o);

/* The fixed part: base chains, dispatch chains, shared maps and sets,
 * for config <c>. Sorted. Returns 0 or -1 (out of memory). */
int nftgen_global(const struct nft_conf *c, struct nftgen_group *g);

/* Service <s> (already passed nft_svc_check()) under config <c>. Sorted.
 * Returns 0 or -1 (out of memory). */
int nftgen_service(const struct nft_conf *c, const struct nft_svc *s,
                   struct nftgen_group *g);

/* Service <s> (already passed nft_svc_check()) as a plain service of
 * layout 4 (above) under config <c>, when it is one: returns 1 with <g>
 * filled and sorted, 0 when it needs chains of its own (<g> untouched:
 * nftgen_service()), -1 when memory ran out. */
int nftgen_service_keys(const struct nft_conf *c, const struct nft_svc *s,
                        struct nftgen_group *g);

/* The counts with a rule in the pick chains: ascending, per slot and
 * protocol. A slot is a kind of key and a family: 0 and 1, addresses of
 * IPv4 and IPv6; 2 and 3, NodePorts of IPv4 and IPv6; 4 to 7 the same
 * for the local endpoints of externalTrafficPolicy: Local. */
#define NFTGEN_KEYS_SLOTS 8
struct nftgen_counts {
    uint32_t v[NFTGEN_KEYS_SLOTS][NFT_PROTO__COUNT][NFTGEN_COUNTS_MAX];
    size_t n[NFTGEN_KEYS_SLOTS][NFT_PROTO__COUNT];
};

/* The pick chains and keyed maps for <k> under config <c> (none when
 * c->own_chains). Sorted. Returns 0 or -1 (out of memory). */
int nftgen_picks(const struct nft_conf *c, const struct nftgen_counts *k,
                 struct nftgen_group *g);

/* "keys4-tcp-25" (slot 0), "keysn6-udp-3" (slot 3), "keysl4-tcp-2"
 * (slot 4), "keysln4-tcp-2" (slot 6) for <slot>, <proto>,
 * <count> into <out> (NFTGEN_KEYS_NAME_MAX); without a count,
 * "keys4-tcp", the name of the KEYS objects. */
#define NFTGEN_KEYS_NAME_MAX 32
void nftgen_keys_name(int slot, enum nft_proto proto, uint32_t count,
                      char *out);

/* "<id with ':' as '/'>/<proto>" into <out> (NFTGEN_BASE_MAX). */
#define NFTGEN_BASE_MAX (NFT_ID_MAX + 8)
void nftgen_base(const struct nft_svc *s, char *out);

enum nftgen_phase {
    NFTGEN_PH_ADD = 0, /* add table, sets, chains */
    NFTGEN_PH_FLUSH,   /* flush chains and sets */
    NFTGEN_PH_RULES,   /* add rule */
    NFTGEN_PH_EDEL,    /* delete element */
    NFTGEN_PH_EADD,    /* add element */
    NFTGEN_PH_DEL,     /* delete chain, set */
    NFTGEN_PH__COUNT
};

/* The elements a lean transaction adds to one shared set. */
struct nftgen_bucket {
    const struct nftgen_obj *set; /* the set's object in <shared> */
    struct sbuf elems;            /* "key : value, key : value" */
};

/* A plain service's keys in one shared map that a transaction changes:
 * <old> and <new> are KEYS objects (borrowed), either NULL (added,
 * removed). Written through netlink, not by the text. */
struct nftgen_keychange {
    const struct nftgen_obj *old, *new;
};

struct nftgen_txn {
    struct sbuf ph[NFTGEN_PH__COUNT];
    struct nftgen_keychange *keys;
    size_t nkeys;
    /* Endpoint maps whose elements changed (the new objects, borrowed):
     * written through netlink after the text, not by it. */
    const struct nftgen_obj **epm;
    unsigned char *epm_fresh; /* [i]: created by this text, empty */
    size_t nepm;
    /* Created endpoint maps' elements through netlink too (as in a lean
     * transaction), not in the text. */
    int epm_netlink;
    const struct nftgen_group *shared; /* lean when set */
    /* Names of the chains and sets the kernel holds (an adoption), or
     * NULL: nftgen_fill() does not declare those again, but base chains
     * (libnftables parses each declaration: 40 MB at 10,000 Services). */
    const struct smap *existing;
    struct nftgen_bucket *bk;
    size_t nbk;
    int oom;
};

void nftgen_txn_init(struct nftgen_txn *t);
void nftgen_txn_deinit(struct nftgen_txn *t);

/* The bytes of text <t> holds so far (its commands and elements). */
size_t nftgen_txn_bytes(const struct nftgen_txn *t);

/*
 * Make <t> lean: shaped so that libnftables (1.0.6) runs it without
 * fetching its set cache first. Before a batch it works out what to fetch
 * from the commands: "add rule", "add element", every "delete" and
 * "flush set" make it dump every set of every table, and at 10,000
 * Services those are 10,000 endpoint maps, tens of milliseconds per
 * transaction however small; "add chain", "add set", "add map" and
 * "flush chain" need only the list of tables. So in a lean transaction
 *   - the rules of a chain without a hook whose rules name no set ('@')
 *     go in one "add chain <name> { rule ... }";
 *   - the elements added to a set of <shared> (the fixed part, borrowed
 *     until the text is made) go in one "add set|map <name> { <spec>
 *     elements = { ... } }", which creates nothing new when the set
 *     exists with that spec.
 * Anything else keeps its usual command (and the fetch it costs):
 * nftgen_lean_text() tells a transaction that stayed lean.
 */
void nftgen_txn_lean(struct nftgen_txn *t, const struct nftgen_group *shared);

/* Nonzero when <text> holds no command that makes libnftables 1.0.6
 * fetch its set cache (see nftgen_txn_lean()). Pure, for tests and the
 * engine's counter. */
int nftgen_lean_text(const char *text);

/* Nonzero when nothing was added (text or endpoint maps). */
int nftgen_txn_empty(const struct nftgen_txn *t);

/* Nonzero when <t> holds no text (its endpoint maps aside). */
int nftgen_txn_no_text(const struct nftgen_txn *t);

/* The phases joined into one new NUL-terminated buffer (free() it), or
 * NULL when a phase overflowed NFTGEN_TXN_MAX or memory ran out. */
char *nftgen_txn_text(const struct nftgen_txn *t);

/* Commands taking the kernel from <old> to <new> (either may be NULL:
 * create, or remove, everything in the group). Both sorted. */
void nftgen_diff(struct nftgen_txn *t, const struct nftgen_group *old,
                 const struct nftgen_group *new);

/* Single commands, for convergence. <comment> of the table, or NULL. */
void nftgen_add_table(struct nftgen_txn *t, const char *comment);
void nftgen_delete_table(struct nftgen_txn *t);
/* Every rule of the table (not the sets' elements). */
void nftgen_flush_table(struct nftgen_txn *t);
void nftgen_flush_chain(struct nftgen_txn *t, const char *name);
void nftgen_flush_set(struct nftgen_txn *t, const char *name, int is_map);
void nftgen_delete_chain(struct nftgen_txn *t, const char *name);
void nftgen_delete_set(struct nftgen_txn *t, const char *name, int is_map);
/* Add every rule and element of <g>, and its sets and chains (creating
 * those that exist already is harmless). */
void nftgen_fill(struct nftgen_txn *t, const struct nftgen_group *g);
/* Element <ip> (port ignored) into, or out of, set <name>. */
void nftgen_add_ip(struct nftgen_txn *t, const char *name,
                   const struct saddr *ip);
void nftgen_del_ip(struct nftgen_txn *t, const char *name,
                   const struct saddr *ip);

/* Pair "<ip> . <ip>" in the hairpin set of <ip>'s family: added (<add>
 * nonzero) or deleted. */
void nftgen_hairpin(struct nftgen_txn *t, const struct saddr *ip, int add);

/* The shared sets of endpoint pairs whose connections are masqueraded
 * (a pod reaching itself), per family. */
#define NFTGEN_HAIRPIN4 "hairpin4"
#define NFTGEN_HAIRPIN6 "hairpin6"

/* The shared sets of ClusterIPs, per family. */
#define NFTGEN_CLUSTER_IPS4 "cluster-ips4"
#define NFTGEN_CLUSTER_IPS6 "cluster-ips6"
#define NFTGEN_LAYOUT_SET   "layout"

/* Names of affinity sets start with this (their elements are the kernel's
 * own, never flushed by a convergence). */
#define NFTGEN_AFF_PREFIX "aff"

#endif
