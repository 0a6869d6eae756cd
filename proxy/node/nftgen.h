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
 * Size: a service has a chain per family (plus one for external traffic
 * and one for local endpoints where it needs them) whose last rule
 * translates through the service's named endpoint map (below); only a
 * service with ClientIP affinity has a chain per endpoint. Hairpin
 * masquerade is one rule per family on a shared set of endpoint pairs
 * that the engine fills (nftgen_hairpin()). So the table's chains, and the kernel's loop
 * checks over them, grow with the services, not with their endpoints.
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


struct nftgen_obj {
    enum nftgen_kind kind;
    int is_map;  /* SET: a map (flush/delete say "map") */
    char *name;  /* set or chain; for ELEM the map */
    char *spec;  /* "{ type ...; }" or NULL */
    char *rules; /* CHAIN: one rule a line, each ending in '\n'; "" none */
    char *key;   /* ELEM */
    char *val;   /* ELEM */
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

struct nftgen_txn {
    struct sbuf ph[NFTGEN_PH__COUNT];
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
