/*
 * ipcount.h - a counted set of IP addresses, for the engine's shared
 * kernel sets (the ClusterIPs, the hairpin pairs): how many services want
 * each address, whether the kernel holds it, and which addresses changed
 * since the last commit (what the next transaction adds or deletes).
 *
 * Keys are binary, in two open-addressed tables, one per family: an IPv4
 * entry is 8 bytes. The engine kept these as IP text in string maps
 * before, 9 MB for the 250,000 hairpin addresses of 10,000 Services of
 * 25 endpoints; here they take 4.
 */
#ifndef PROXY_NODE_IPCOUNT_H
#define PROXY_NODE_IPCOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

struct ipcount_tab {
    uint8_t *v;     /* cap entries of klen + 4 bytes; a value of 0 is free */
    size_t cap, n;  /* cap is a power of two (or 0) */
    size_t klen;    /* 4 or 16 */
    uint8_t *touch; /* keys noted since the last commit, ntouch of them */
    size_t ntouch, tcap;
};

struct ipcount {
    struct ipcount_tab t[2]; /* IPv4, IPv6 */
};

void ipcount_init(struct ipcount *c);
void ipcount_deinit(struct ipcount *c);

/* One more (<delta> > 0) or one fewer (never below 0) service wanting the
 * IP of <a>. An address whose wanted state no longer matches the kernel's
 * is noted as touched. Returns 0, or -1 when memory runs out (the count
 * may then be wrong: the caller converges). */
int ipcount_add(struct ipcount *c, const struct saddr *a, int delta);

/* The same for the address <key> (4 bytes, network order, or 16 when
 * <v6>), as struct in_addr and struct in6_addr hold it. */
int ipcount_add_key(struct ipcount *c, int v6, const void *key, int delta);

/* Addresses touched since the last commit. */
size_t ipcount_ntouched(const struct ipcount *c);

/* Touched address <i> (0 .. ipcount_ntouched() - 1) into <a> (port 0),
 * with whether some service wants it (<*want>) and the kernel holds it
 * (<*have>). */
void ipcount_touched(const struct ipcount *c, size_t i, struct saddr *a,
                     int *want, int *have);

/* The kernel now holds exactly the wanted addresses: of every address
 * (<all>), or of the touched ones. Addresses no service wants are
 * forgotten; nothing is touched after. Returns 0, or -1 when memory runs
 * out (then nothing changed: the caller converges). */
int ipcount_commit(struct ipcount *c, int all);

/* The next wanted address from position <*at> on (start at 0) into <a>;
 * <*at> moves past it. Returns 1, or 0 at the end. */
int ipcount_next(const struct ipcount *c, size_t *at, struct saddr *a);

/* The same over the addresses the kernel holds (wanted or not). */
int ipcount_next_held(const struct ipcount *c, size_t *at, struct saddr *a);

/* Addresses of family <v6> (0 or 1) the kernel holds. */
size_t ipcount_held(const struct ipcount *c, int v6);

#endif
