/*
 * nftsys.h - reading what the kernel holds: nftables' JSON listings
 * (table inet ferry, every table, every chain) and legacy iptables
 * chains, for adoption, verification and finding kube-proxy.
 *
 * The parsers are pure functions of a NUL-terminated buffer (a fuzz
 * target can feed them); only nftsys_legacy_find() does I/O.
 */
#ifndef PROXY_NODE_NFTSYS_H
#define PROXY_NODE_NFTSYS_H

#include <stddef.h>

#include "err.h"

#define NFTSYS_NAME_MAX 256
#define NFTSYS_OBJS_MAX (4u << 20) /* chains and sets in one listing */

enum nftsys_kind {
    NFTSYS_CHAIN = 0,
    NFTSYS_SET,
};

struct nftsys_obj {
    enum nftsys_kind kind;
    int is_map;
    size_t nrules; /* chains */
    char name[NFTSYS_NAME_MAX];
};

struct nftsys_listing {
    int present;   /* the table was listed */
    int layout_ok; /* its layout set says NFT_LAYOUT */
    struct nftsys_obj *v;
    size_t n, cap;
};

/*
 * Add what a JSON listing (`list chains inet`, `list sets inet`, `list
 * maps inet`, `list chain inet ferry X`, `list table inet ferry`) says
 * about table inet ferry to <l> (zeroed before the first call): its
 * chains with the rules listed, its sets and maps; other tables are
 * skipped. Listing every rule of a large table is slow (seconds at
 * thousands of services), so callers list names and count the rules of
 * chosen chains only. Returns 0, or -1 with <e> (not JSON, not a listing,
 * over NFTSYS_OBJS_MAX, out of memory). Free <l> with
 * nftsys_listing_free() either way.
 */
int nftsys_parse_table(const char *json, struct nftsys_listing *l,
                       struct err *e);
void nftsys_listing_free(struct nftsys_listing *l);

/* Append an object named <name> (cut to NFTSYS_NAME_MAX - 1 bytes) to
 * <l>; NULL when <l> holds NFTSYS_OBJS_MAX already or memory runs out. */
struct nftsys_obj *nftsys_listing_add(struct nftsys_listing *l,
                                      enum nftsys_kind kind, const char *name);

/* Elements of set or map <name> of table inet ferry in a listing (`list
 * maps inet`, `list set inet ferry X`, ...) into <n>. Returns 0 or -1
 * with <e>. */
int nftsys_count_elems(const char *json, const char *name, size_t *n,
                       struct err *e);

/*
 * Legacy iptables (x_tables): look for user chain <chain> in the nat and
 * filter tables of both families, only in tables the kernel already has
 * (never loading a module). Returns 1 with "<cmd> -t <table> chain
 * <chain>" in <found>, else 0 (also when not permitted).
 */
int nftsys_legacy_find(const char *chain, char *found, size_t foundlen);

/* Whether the x_tables entries at <entries> (<size> bytes, as
 * IPT_SO_GET_ENTRIES or IP6T_SO_GET_ENTRIES return them; <v6> for the
 * latter) hold user chain <chain>. Pure; bounded by <size> whatever the
 * offsets say. */
int nftsys_xt_has_chain(const void *entries, size_t size, int v6,
                        const char *chain);

#endif
