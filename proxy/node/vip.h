/*
 * vip.h - service addresses on a local interface, through netlink.
 *
 * A node proxy receives traffic for a ClusterIP only if the IP is a local
 * address. vip keeps the set of IPs the table asks for on one interface
 * (a dummy "ferry0" where the kernel has the dummy link type, otherwise the
 * one configured, e.g. "lo"), as /32 and /128 host addresses.
 *
 * Every address ferry adds carries IFA_PROTO = VIP_PROTO, so ferry can tell
 * its own addresses from everyone else's across restarts: at start it
 * keeps those still wanted (no traffic blip) and removes the others, and
 * it never touches an address it did not add. Netlink I/O is non-blocking
 * on the loop, requests are matched to replies by sequence number, and a
 * notification socket triggers a resync when someone else changes the
 * interface (or when notifications were lost: ENOBUFS).
 */
#ifndef PROXY_NODE_VIP_H
#define PROXY_NODE_VIP_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"

#define VIP_PROTO      0x66 /* IFA_PROTO value marking ferry's addresses */
#define VIP_DUMMY_NAME "ferry0"

struct vip;

/*
 * Manage addresses on <ifname>; "auto" creates the dummy interface
 * VIP_DUMMY_NAME and falls back to "lo" when the kernel has no dummy link
 * type. Returns a new vip or NULL with <e> filled (no such interface,
 * netlink unavailable, no CAP_NET_ADMIN). Call at start-up.
 */
struct vip *vip_new(struct ev_loop *loop, const char *ifname, struct err *e);
void vip_free(struct vip *v);

/* Make <ips> (ports ignored; copied) the wanted set; reconciles in the
 * background. Returns 0, or -1 when out of memory (the wanted set is
 * then partial; the next call starts over). */
int vip_set(struct vip *v, const struct saddr *ips, size_t n);

/* Nonzero once the kernel state matched the wanted set at the last
 * reconciliation and no request is outstanding. */
int vip_in_sync(const struct vip *v);

/* Its counters (changes, errors, resyncs, addresses held) are in the
 * data plane's stats_proc (stats.h), exposed as ferry_node_address_*. */

/*
 * `ferry cleanup`: remove every address carrying VIP_PROTO from every
 * interface, and the dummy interface if ferry created it. Blocking; not
 * for use inside the loop. Returns the number of addresses removed, or -1
 * with <e> filled.
 */
int vip_cleanup(struct err *e);

/*
 * Parse one netlink address message (a dump entry or a notification):
 * fills <ifindex>, <ip>, <prefixlen> and <proto> (0 when absent). Returns
 * 0, or -1 if it is not a usable RTM_NEWADDR/RTM_DELADDR. Pure; exposed for
 * tests and the fuzz target.
 */
int vip_parse_addr(const void *nlh, size_t len, unsigned *ifindex,
                   struct saddr *ip, unsigned *prefixlen, unsigned *proto);


#endif
