/*
 * nftrules.h - count the rules of chosen chains of table inet ferry
 * straight from the kernel (one nf_tables rule dump per chain, filtered
 * by table and chain), for nft_verify().
 *
 * Why not libnftables' "list chain": to print one chain it fetches every
 * set of the table with its elements (each service's anonymous map), so
 * listing the dozen fixed chains cost seconds at a thousand services.
 * The kernel filters a rule dump by chain itself; only message types are
 * read, no attribute is parsed.
 */
#ifndef PROXY_NODE_NFTRULES_H
#define PROXY_NODE_NFTRULES_H

#include <stddef.h>

#include "err.h"

/*
 * Into <counts>[i] the number of rules of chain <names>[i] of table inet
 * ferry (0 when the chain or the table is absent). Blocks for at most a
 * few seconds (a receive timeout). Returns 0, or -1 with <e> (no socket,
 * the kernel's error, a dump interrupted by a concurrent change).
 */
int nftrules_count(const char *const *names, size_t n, size_t *counts,
                   struct err *e);

#endif
