/*
 * ctclean.h - delete the UDP conntrack entries that still send a
 * Service's clients to an endpoint that went away.
 *
 * UDP has no connection to reset: a DNS client that keeps its source port
 * keeps hitting the conntrack entry NATed to the old pod until the entry
 * times out (120 s for a stream), so the engine deletes those entries as
 * soon as the rules no longer name the endpoint. Done over ctnetlink with
 * libmnl (already ferry's netlink library): one dump of the table, the
 * matching entries deleted by their original tuple.
 *
 * Blocking, bounded by a receive timeout: control thread only.
 */
#ifndef PROXY_NODE_CTCLEAN_H
#define PROXY_NODE_CTCLEAN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

/* Caps: entries examined in one dump, entries deleted in one call. */
#define CTCLEAN_SCAN_MAX   (4u << 20)
#define CTCLEAN_DELETE_MAX 65536u

/*
 * An endpoint that went away: entries whose reply comes from <ep> (IP and
 * port) and whose original destination is one of <dsts> (the Service's
 * IP:port pairs; borrowed) or, when <node_port> is set, any address on
 * that port, are deleted.
 */
struct ctclean_match {
    struct saddr ep;
    const struct saddr *dsts;
    size_t ndsts;
    uint16_t node_port;
};

/*
 * Delete the UDP entries that match any of <m> (<n> of them) in this
 * network namespace. Returns 0 with the number deleted in <deleted> (may
 * be NULL), or -1 with <e> filled (no CAP_NET_ADMIN, no conntrack, a
 * kernel that does not answer).
 */
int ctclean_udp(const struct ctclean_match *m, size_t n, uint64_t *deleted,
                struct err *e);

struct ctclean_tuple {
    struct saddr src, dst; /* IPs and ports */
    uint8_t proto;         /* IPPROTO_* */
};

struct ctclean_entry {
    struct ctclean_tuple orig, reply;
    uint16_t zone;
};

/*
 * Parse one ctnetlink message (<len> bytes at <msg>, a dump entry): fills
 * <out>. Returns 0, or -1 if it is not a conntrack entry with both tuples
 * and ports. Pure; exposed for tests and a fuzz target.
 */
int ctclean_parse(const void *msg, size_t len, struct ctclean_entry *out);

/* Nonzero when <en> is a UDP entry <m> asks to delete. Pure. */
int ctclean_matches(const struct ctclean_entry *en,
                    const struct ctclean_match *m);

#endif
