/*
 * nftrules.h - count the rules of chosen chains, and the elements of
 * chosen sets, of table inet ferry straight from the kernel (one nf_tables
 * dump each, filtered by the kernel), for nft_verify(); and add, delete
 * and rewrite set elements the same way, for nft_apply().
 *
 * Why not libnftables' listings: to print one chain it fetches every set
 * of the table with its elements (each service's endpoint map), so
 * listing the dozen fixed chains cost seconds at a thousand services; and
 * it formats every element of a set it lists (2.7 s for the 250,000
 * hairpin pairs of 10,000 Services of 25 endpoints) where a count is all
 * that is needed.
 */
#ifndef PROXY_NODE_NFTRULES_H
#define PROXY_NODE_NFTRULES_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

/*
 * Into <counts>[i] the number of rules of chain <names>[i] of table inet
 * ferry (0 when the chain or the table is absent). Blocks for at most a
 * few seconds (a receive timeout). Returns 0, or -1 with <e> (no socket,
 * the kernel's error, a dump interrupted by a concurrent change).
 */
int nftrules_count(const char *const *names, size_t n, size_t *counts,
                   struct err *e);

/*
 * Elements of each set or map <names>[i] of table inet ferry into
 * <counts>[i] (0 when absent). Same contract as nftrules_count().
 */
int nftrules_count_elems(const char *const *names, size_t n, size_t *counts,
                         struct err *e);

/*
 * What one received message adds to a count: 1 for a rule
 * (NFT_MSG_NEWRULE) when <elems> is 0; the number of elements its
 * element list holds for a set's elements (NFT_MSG_NEWSETELEM) when
 * <elems> is 1; 0 for anything else or a malformed message. <nlh> must
 * lie within <len> bytes. Pure (a fuzz target feeds it).
 */
size_t nftrules_msg_count(const void *nlh, size_t len, int elems);

/*
 * The named sets and maps of table inet ferry into <l> (zeroed before;
 * free it with nftsys_listing_free() either way), as
 * nftsys_parse_table() reads them from `list sets inet` and `list maps
 * inet`: <l>->present when the table has any, <l>->layout_ok from the
 * layout set's comment. One dump of the sets, without their elements:
 * libnftables fetches every element of every set for those listings (15
 * MB at once for the 250,000 hairpin pairs of 10,000 Services of 25
 * endpoints). Returns 0, or -1 with <e> (as nftrules_count()).
 */
struct nftsys_listing;
int nftrules_list_sets(struct nftsys_listing *l, struct err *e);

/*
 * What one message of that dump adds to <l>: a named set of table inet
 * ferry (NFT_MSG_NEWSET), nothing for anything else or a malformed
 * message. <nlh> must lie within <len> bytes. Returns 0, or -1 when <l>
 * is full or memory runs out. Pure (a fuzz target feeds it).
 */
int nftrules_msg_set(const void *nlh, size_t len, struct nftsys_listing *l);

/*
 * Whether the kernel has table <name> of family <family> (NFPROTO_IPV4,
 * NFPROTO_IPV6, NFPROTO_INET...): 1 or 0, or -1 with <e> (as
 * nftrules_count()); when it has and <use> is not NULL, how many chains,
 * sets and objects the kernel counts in it into <*use>. One dump of the
 * family's tables, without their contents: libnftables' "list tables"
 * fetches every rule of every table first (5.8 s and 495 MB with ferry's
 * table at 10,000 Services of 25 endpoints).
 */
int nftrules_table_present(uint8_t family, const char *name, uint32_t *use,
                           struct err *e);

/*
 * The names of family <family>'s tables (NFPROTO_IPV4...), into a new
 * array <*names> of <*n> (free() it; NULL when there are none): one dump,
 * without the tables' contents. At most NFTRULES_TABLES_MAX. Returns 0,
 * or -1 with <e> (as nftrules_count(), or too many tables).
 */
#define NFTRULES_NAME_MAX   256 /* the kernel's NFT_NAME_MAXLEN */
#define NFTRULES_TABLES_MAX 4096
int nftrules_table_names(uint8_t family, char (**names)[NFTRULES_NAME_MAX],
                         size_t *n, struct err *e);

/*
 * Whether one of the <n> tables <tables> of <family> has a chain named
 * <chain>: a lookup by name in each, in turn, on one socket, so the cost
 * does not grow with the tables' chains. 1 with the first such table's
 * index in <*at>, 0 (none; a table gone meanwhile has none), or -1 with
 * <e>.
 */
int nftrules_chain_in(uint8_t family, const char (*tables)[NFTRULES_NAME_MAX],
                      size_t n, const char *chain, size_t *at, struct err *e);

/*
 * The name of table of family <family> that one received message (<len>
 * bytes) describes (NFT_MSG_NEWTABLE), NUL-terminated into <out> (<outlen>
 * bytes): 1, or 0 when it is not such a message or its name is missing,
 * empty or longer than <outlen> - 1. Pure (a fuzz target feeds it).
 */
int nftrules_msg_table_name(const void *nlh, size_t len, uint8_t family,
                            char *out, size_t outlen);

/*
 * Nonzero when one received message (<len> bytes) is table <name> of
 * <family> (NFT_MSG_NEWTABLE); then its use count into <*use> (0 when it
 * has none) unless <use> is NULL. Pure (a fuzz target feeds it).
 */
int nftrules_msg_table(const void *nlh, size_t len, uint8_t family,
                       const char *name, uint32_t *use);

/* One element of a set of table inet ferry, by its key as the kernel
 * stores it (each field of a concatenation padded to 4 bytes). */
#define NFTRULES_KEY_MAX  32
#define NFTRULES_DATA_MAX 20 /* an IPv6 address and a port */
enum nftrules_op { NFTRULES_ADD = 0, NFTRULES_DEL, NFTRULES_FLUSH };
struct nftrules_elem {
    const char *set;
    uint8_t key[NFTRULES_KEY_MAX];
    size_t len;
    uint8_t data[NFTRULES_DATA_MAX]; /* a map's element: its data */
    uint8_t dlen;                    /* 0: none */
    uint8_t op; /* nftrules_change.steps only; FLUSH: <set> alone */
};

/*
 * "ip . port" as the kernel stores it in a concatenation: the address,
 * then the port in the first two bytes of a 4-byte field, into <out>
 * (room for NFTRULES_DATA_MAX). Returns the bytes written: 8 or 20.
 */
size_t nftrules_addr_port(const struct saddr *a, uint8_t *out);

/*
 * Parse "ip . port, ip . port, ..." (nftgen.h's KEYS objects: a plain
 * service's endpoints by key, or with <max> 1 its key) into <out> (at most
 * <max>; NULL to count): one family, ports 1 to 65535. Returns how many
 * (at least one), or -1 with a reason in <*why>. Pure (a fuzz target
 * feeds it).
 */
long nftrules_addrs_parse(const char *text, struct saddr *out, size_t max,
                          const char **why);

/* One range of an endpoint map, as nftrules_epmap_parse() reads it. */
struct nftrules_eprange {
    uint32_t lo, hi; /* inclusive, hi < NFTGEN_EP_MOD */
    struct saddr ep; /* address and port */
};

/*
 * Parse the elements of an endpoint map's object (nftgen.h: <rules>,
 * "lo-hi : ip . port, ..." as nftgen writes them) into <out> (at most
 * <max>; NULL to count). The ranges must be ascending, adjacent, cover 0
 * to NFTGEN_EP_MOD - 1 and share one family. Returns how many, or -1 with
 * a reason in <*why>. Pure (a fuzz target feeds it).
 */
long nftrules_epmap_parse(const char *rules, struct nftrules_eprange *out,
                          size_t max, const char **why);

/*
 * A netlink socket and buffers that nftrules_write() keeps from one call
 * to the next: opening the socket, setting it up, closing it and mapping
 * a fresh 256 KB buffer cost about a third of ferry's part of an endpoint
 * change (0.2 ms on the development machine). The socket belongs
 * to the network namespace of the first write; any error closes it, and
 * the next write opens another. NULL when memory runs out. Free with
 * nftrules_writer_free() (NULL is fine).
 */
struct nftrules_writer;
struct nftrules_writer *nftrules_writer_new(void);
void nftrules_writer_free(struct nftrules_writer *w);

/*
 * One change of set elements, in this order:
 *   - <add>: elements added to their sets;
 *   - <steps>: elements added (with their data, in a map) or deleted, or
 *     whole sets flushed, each as its op says, in pieces that each commit
 *     whole: steps[ends[i - 1]] to steps[ends[i] - 1] (a plain service's
 *     keys, out of its old count's map and into its new one's, so that a
 *     packet finds the old keys or the new, never neither);
 *   - <maps>[i]: endpoint maps flushed and refilled with <elems>[i] (an
 *     endpoint map object's text: nftgen.h; not flushed when <fresh>[i]
 *     is nonzero: a map just created, whose flush would cost the kernel
 *     one more walk of the table's sets);
 *   - <del>: elements deleted.
 * In <add> and <del>, the same set's next to each other.
 */
struct nftrules_change {
    const struct nftrules_elem *add;
    size_t nadd;
    const struct nftrules_elem *steps;
    size_t nsteps;
    const size_t *ends;
    size_t nends;
    const char *const *maps;
    const char *const *elems;
    const unsigned char *fresh;
    size_t nmaps;
    const struct nftrules_elem *del;
    size_t ndel;
};

/*
 * Write change <c> straight through netlink on <w>'s socket (opened at
 * the first write, or again after an error). One transaction while it
 * fits NFTRULES_SET_BATCH bytes (a map's flush and refill, and a piece
 * of steps, always share one, so that a lookup finds the old elements
 * or the new, never neither), several in that order past it.
 * libnftables would fetch every set of every table first, to check the
 * types (nft.h's lean transactions say why that matters), and each
 * transaction makes the kernel walk every chain of the table at commit.
 * Returns 0, or -1 with <e> (a map's text that does not parse, no
 * socket, the kernel's error: the transaction it was in changed
 * nothing, those before it hold; an element to delete already gone
 * fails its transaction).
 */
#define NFTRULES_SET_BATCH ((size_t)256 << 10)
int nftrules_write(struct nftrules_writer *w, const struct nftrules_change *c,
                   struct err *e);

/*
 * Whether every element <v>[0..n) (all of one set) is in its set: 1 yes,
 * 0 when one is not or the set itself is gone (the kernel answers both
 * with ENOENT; either way the table needs restoring), or -1 with <e> (no
 * socket, any other error of the kernel). One lookup of each key, where
 * counting a hash set's elements takes a dump whose every part walks
 * past the elements sent before it (the verify step's 250,000 hairpin pairs, at 10,000 Services
 * of 25 endpoints, blocked changes for about 100 ms every 10 s).
 */
int nftrules_has_elems(const struct nftrules_elem *v, size_t n,
                       struct err *e);

/*
 * Whether a received buffer (<len> bytes) holds the acknowledgement of
 * the message with sequence number <seq>; the first nonzero error code
 * of any acknowledgement in it (a negative errno) into <*err>, left as
 * it was when all are 0. Pure (a fuzz target feeds it).
 */
int nftrules_ack_of(const void *buf, size_t len, uint32_t seq, int *err);


#endif
