/*
 * nftjson.h - kernel services from a JSON description (the test driver's
 * input; a fuzz target's, later).
 *
 *   {"config": {"masquerade": "cidr" | "all" | "none",
 *               "cluster_cidrs": ["198.18.0.0/15"],
 *               "nodeport_addresses": ["198.18.0.11"],
 *               "service_cidrs": ["198.18.128.0/17"],
 *               "masquerade_mark": 16384,
 *               "own_chains": false},
 *    "services": [{"id": "ns/name:port", "protocol": "tcp", "port": 80,
 *                  "node_port": 30080,
 *                  "cluster_ips": ["198.18.128.10", "2001:2::a"],
 *                  "external_ips": [], "lb_ips": [],
 *                  "source_ranges": ["198.18.0.0/24"],
 *                  "affinity_timeout": 10800,
 *                  "external_traffic_policy": "Cluster" | "Local",
 *                  "cluster_endpoints": [{"ip": "198.18.1.2",
 *                                         "port": 8080, "weight": 1,
 *                                         "remote": false}],
 *                  "local_endpoints": [],
 *                  "redirect_port": 10263}]}
 *
 * Every key but "id", "protocol" and "port" is optional; a weight
 * defaults to 1, "own_chains" (nft_conf.own_chains) and "remote"
 * (nft_ep.remote) to false. Unknown keys, wrong types and values nft_svc_check()
 * refuses are errors naming the service; the document is then refused
 * whole.
 */
#ifndef PROXY_NODE_NFTJSON_H
#define PROXY_NODE_NFTJSON_H

#include <stddef.h>

#include "err.h"
#include "nft.h"

#define NFTJSON_MAX_BYTES ((size_t)64 << 20)

struct nftjson_doc {
    int has_conf;
    struct nft_conf conf;
    struct nft_svc *svcs;
    size_t nsvcs;
};

/*
 * Parse <len> bytes at <buf> (need not be NUL-terminated) into <out>.
 * Returns 0, or -1 with <e> filled; <out> then holds nothing to free.
 * Pure: no I/O, no log.
 */
int nftjson_parse(const char *buf, size_t len, struct nftjson_doc *out,
                  struct err *e);

/* Free what nftjson_parse() put in <d>. */
void nftjson_free(struct nftjson_doc *d);

#endif
