/*
 * srcrules.h - source rules: which client addresses a service takes, and
 * how many connections, and how fast, one address may open.
 *
 * Two parts. srcrules_match() is pure: a client address against a
 * service's allow: and deny: prefixes (deny wins; no allow prefix at all
 * lets in everyone not denied). The per-source table counts, per client
 * IP (the port does not count; an IPv6 client is one address, not its
 * /64), the connections open now and a token bucket of new connections:
 * it holds <connection_rate_per_source> tokens, one per new connection,
 * refilled at that many per second, so a client may open that many at
 * once and that many per second after.
 *
 * The table is bounded: SRCRULES_SLOTS entries, an address living only in
 * a window of SRCRULES_WINDOW slots after its (seeded) hash, as the
 * affinity table does. An entry is free again once it counts nothing: no
 * open connection and a full bucket (it says no more than a new entry
 * would, so expiring it loses nothing). When the whole window of a new
 * address is taken by live entries the connection is let in uncounted
 * (fail open, and counted as such): refusing instead would let whoever
 * owns many addresses lock out every newcomer, while the service's own
 * max_connections still bounds the total.
 *
 * One table per service name, kept with its counters (stats.h) so that a
 * reload keeps counting, and shared by every worker under a mutex taken
 * once at the accept and once at the close of a counted connection, only
 * for services with a per-source limit.
 */
#ifndef PROXY_DATAPLANE_SRCRULES_H
#define PROXY_DATAPLANE_SRCRULES_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"
#include "stats.h"

#define SRCRULES_SLOTS  16384
#define SRCRULES_WINDOW 16

/* The address to match and count for <client>: the IPv4 one when it is
 * IPv4-mapped IPv6 (an IPv4 client of a dual-stack socket), else itself. */
void srcrules_client_ip(const struct saddr *client, struct saddr *out);

/* <client> (after srcrules_client_ip) against <deny> then <allow>.
 * Returns -1 when it may connect, else STATS_SRC_DENY or
 * STATS_SRC_NOT_ALLOWED. Never allocates; any thread. */
int srcrules_match(const struct cidr *allow, size_t nallow,
                   const struct cidr *deny, size_t ndeny,
                   const struct saddr *client);

struct srcrules_table;

/* Returns a new empty table, or NULL (out of memory). */
struct srcrules_table *srcrules_table_new(void);
/* Free <t>; NULL is fine. No connection may be counted in it any more. */
void srcrules_table_free(struct srcrules_table *t);

/* What srcrules_admit() decided. */
enum srcrules_verdict {
    SRCRULES_COUNTED = 0, /* admitted and counted: release it at close */
    SRCRULES_UNCOUNTED,   /* admitted, table window full: nothing to release */
    SRCRULES_MAX,         /* refused: <max> connections open already */
    SRCRULES_RATE,        /* refused: no token left */
};

/* A new connection from <client> at time <now> (seconds, monotonic),
 * under <max> open connections (0: no limit) and <rate> new connections
 * per second (0: no limit) per address. Never allocates; any thread. */
enum srcrules_verdict srcrules_admit(struct srcrules_table *t,
                                     const struct saddr *client, uint32_t max,
                                     uint32_t rate, double now);

/* A connection srcrules_admit() counted for <client> has closed. */
void srcrules_release(struct srcrules_table *t, const struct saddr *client);

/* Entries that still count something at <now> under <rate> (tests). */
size_t srcrules_table_live(struct srcrules_table *t, uint32_t rate, double now);

#endif
