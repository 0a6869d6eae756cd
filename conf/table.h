/*
 * table.h - the service table: what the data plane must serve.
 *
 * A table is built by one producer (the YAML loader in static mode, the
 * watcher's translator in Kubernetes mode), then frozen and published to
 * the proxy as an immutable, refcounted snapshot. Readers never lock and
 * never see a table change under them; a change is a new table.
 *
 * A service here is one balancing decision: a set of frontends (address
 * and port pairs that accept connections) sharing one backend set and one
 * policy. The Kubernetes translator emits one service per Service port and
 * traffic class (internal, external) because kube-proxy may pick a
 * different endpoint set for each.
 */
#ifndef CONF_TABLE_H
#define CONF_TABLE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "parse.h"
#include "tlshello.h"

#define TBL_NAME_MAX   128
#define TBL_WEIGHT_MAX 256
#define TBL_K8S_NAME_MAX 64 /* a namespace or Service name (DNS label) + NUL */

/* Extra connect attempts a service may ask for: the data plane records
 * each connection's tried backends in a fixed array of this plus one. */
/* Extra connect attempts a service may ask for. A connection records the
 * backends it tried in a set that shares its memory with the relay
 * buffers' bookkeeping (svc.h), so this bounds the connection's size. */
#define TBL_RETRIES_MAX 14

/* The longest drain_timeout a service may set: a day (0 = no limit). */
#define TBL_DRAIN_TIMEOUT_MAX_MS (24u * 3600 * 1000)

enum tbl_balance {
    TBL_BAL_ROUNDROBIN = 0, /* smooth weighted round-robin */
    TBL_BAL_LEASTCONN,      /* fewest active connections, weighted */
    TBL_BAL_RANDOM,         /* weighted random */
    TBL_BAL_P2C,            /* the less loaded of two random picks */
    TBL_BAL_MAGLEV,         /* consistent hash of the client's IP */
    TBL_BAL__COUNT
};

/* The one spelling of each balancer, indexed by enum tbl_balance and ended
 * by NULL (the config decoder's enum table, status, dumps). */
extern const char *const tbl_balance_names[TBL_BAL__COUNT + 1];

/* Endpoint conditions, as EndpointSlices carry them. Static backends are
 * READY|SERVING. */
#define TBL_BE_READY       0x01u
#define TBL_BE_SERVING     0x02u
#define TBL_BE_TERMINATING 0x04u
#define TBL_BE_LOCAL       0x08u /* on this node */
#define TBL_BE_REMOTE      0x10u /* on another node (its slice says which) */

struct tbl_backend {
    struct saddr addr;
    /* For logs and status: the config's name (the address when unnamed),
     * the pod, or the endpoint's IP; at most TBL_NAME_MAX - 1 bytes.
     * Borrowed from whoever built the array; a table's services and
     * kernel services own copies, kept with their arrays (at 250,000
     * endpoints a name in place cost 128 bytes each). Never NULL. */
    const char *name;
    uint32_t weight; /* 0..TBL_WEIGHT_MAX, 0 = no new connections */
    uint32_t flags;  /* TBL_BE_* */
};

/* Why the translator left an endpoint of a Service port out of a
 * service's backends (kube-proxy's selection rules), kept for the admin
 * server's explanations (README: ferry explain). */
enum tbl_excl {
    TBL_EXCL_NOT_READY = 0, /* neither ready nor serving-and-terminating */
    TBL_EXCL_TERMINATING,   /* terminating while ready endpoints exist */
    TBL_EXCL_OTHER_NODE,    /* on another node, under a Local policy */
    TBL_EXCL_TOPOLOGY,      /* topology hints name other zones or nodes */
    TBL_EXCL__COUNT
};

/* The reasons in words, indexed by enum tbl_excl. */
extern const char *const tbl_excl_text[TBL_EXCL__COUNT];

struct tbl_excluded {
    struct saddr addr;
    char name[TBL_K8S_NAME_MAX]; /* the pod (truncated), or the IP */
    uint32_t reason;             /* enum tbl_excl */
};

/* Active health check of a service's backends. */
enum tbl_check_type {
    TBL_CHECK_NONE = 0, /* no active checks: every listed backend is up */
    TBL_CHECK_TCP,      /* a TCP connect must succeed */
    TBL_CHECK_HTTP,     /* GET <path> must answer a status in the range */
    TBL_CHECK__COUNT
};

/* "none", "tcp", "http", indexed by enum tbl_check_type, ended by NULL. */
extern const char *const tbl_check_type_names[TBL_CHECK__COUNT + 1];

#define TBL_CHECK_PATH_MAX 128

struct tbl_check {
    enum tbl_check_type type;
    uint32_t interval_ms;
    uint32_t timeout_ms;
    uint32_t rise;        /* consecutive successes to come back up */
    uint32_t fall;        /* consecutive failures to go down */
    uint16_t port;        /* 0 = the backend's own port */
    uint16_t status_min;  /* HTTP: accepted status range, inclusive */
    uint16_t status_max;
    /* HTTP: "/healthz", at most TBL_CHECK_PATH_MAX - 1 bytes; NULL or
     * "" otherwise. Owned as the service's name is (in a table, its
     * arrays); a copy kept elsewhere copies it (health.c). */
    const char *path;
};

/* Nonzero if two check specs are the same. */
int tbl_check_equal(const struct tbl_check *a, const struct tbl_check *b);

/* The PROXY protocol header a service sends its backends before the
 * client's bytes (README: PROXY protocol). */
enum tbl_send_proxy {
    TBL_SEND_PROXY_NONE = 0,
    TBL_SEND_PROXY_V1, /* the text line */
    TBL_SEND_PROXY_V2, /* the binary header */
    TBL_SEND_PROXY__COUNT
};

/* "none", "v1", "v2", indexed by enum tbl_send_proxy, ended by NULL. */
extern const char *const tbl_send_proxy_names[TBL_SEND_PROXY__COUNT + 1];

/* How long a client of a service with accept_proxy has to send its whole
 * PROXY header, unless the service says: the config's default, and what
 * the data plane uses for a service that left it at 0. */
#define TBL_ACCEPT_PROXY_TIMEOUT_MS 5000

/* How connections reach a service's frontends. */
enum tbl_reach {
    TBL_REACH_LISTEN = 0, /* ferry listens on each frontend */
    /* Node mode, nftables dataplane: the kernel redirects connections
     * for the frontends to the service of kind DISPATCH, which finds
     * this service by their original destination. Nothing is bound on
     * the frontends and no address is added for them. */
    TBL_REACH_REDIRECT,
    /* The one listening address (per family) those connections arrive
     * on; it has no backends of its own. */
    TBL_REACH_DISPATCH,
};

/* Where a service came from. The admin server's /metrics writes
 * per-backend series for file services only, unless told otherwise
 * (metrics.per_backend). */
enum tbl_origin {
    TBL_ORIGIN_FILE = 0, /* the config file's "services:" */
    TBL_ORIGIN_API,      /* the Kubernetes translator */
};

/* Transport protocol of a service or a Service port. The proxy serves
 * TCP and UDP; the kernel dataplane all three. */
enum tbl_proto { TBL_PROTO_TCP = 0, TBL_PROTO_UDP, TBL_PROTO_SCTP,
                 TBL_PROTO__COUNT };

/* "tcp", "udp", "sctp", indexed by enum tbl_proto, ended by NULL. */
extern const char *const tbl_proto_names[TBL_PROTO__COUNT + 1];

/* UDP services: the defaults of udp_idle_timeout and max_flows. */
#define TBL_UDP_IDLE_TIMEOUT_MS 30000
#define TBL_UDP_MAX_FLOWS       10000

/* A server name a service answers for on a shared listening address
 * (README: SNI routing): a lower-case host name, or "*." and one: any
 * one label followed by that name. */
struct tbl_sni {
    char name[TLSHELLO_NAME_SIZE];
};

/* How long a client on an SNI address has to send its whole ClientHello
 * (and its PROXY header first, with accept_proxy), unless the address's
 * listener entry says. */
#define TBL_CLIENT_HELLO_TIMEOUT_MS 5000

/* Settings of one listening address shared by services with server names
 * (the config's "listeners:"). */
struct tbl_listener {
    struct saddr addr;
    /* The service for clients whose ClientHello names none of the
     * address's services, names none, is malformed or late; "" = none:
     * they are closed. */
    char default_service[TBL_NAME_MAX];
    uint32_t client_hello_timeout_ms; /* 0: TBL_CLIENT_HELLO_TIMEOUT_MS */
};

/* The arrays of a service (or kernel service) in a table, reference
 * counted: a table built from another one's services shares them
 * (private to table.c). */
struct tbl_arrays;

struct tbl_service {
    /* Unique within a table, at most TBL_NAME_MAX - 1 bytes. In a table
     * (and in a copy held with tbl_service_hold()) the arrays own it;
     * borrowed in a service being built. Never NULL. (In place, its 128
     * bytes were repeated in every copy: 6 MB at 10,000 Services.) */
    const char *name;
    /* In a table: its position there (table_service(t, pos) is it).
     * Every table holding it holds it at the same position. */
    uint32_t pos;
    enum tbl_origin origin;
    struct saddr *frontends;
    size_t nfrontends;
    struct tbl_backend *backends;
    size_t nbackends;
    enum tbl_balance balance;
    uint32_t connect_timeout_ms;
    uint32_t idle_timeout_ms;
    uint32_t retries;             /* extra attempts on other backends */
    uint32_t max_conns;           /* 0 = no limit */
    uint32_t affinity_timeout_ms; /* ClientIP affinity, 0 = off */
    /* A backend taken away (gone from the table, or drained through the
     * admin server) keeps its open connections this long at most; 0 = no
     * limit. */
    uint32_t drain_timeout_ms;
    struct tbl_check check;       /* active health check (type NONE: off) */
    enum tbl_send_proxy send_proxy; /* header sent to backends */
    uint32_t accept_proxy;          /* 1: clients send a header first */
    uint32_t accept_proxy_timeout_ms; /* ...whole within this; 0: default */
    /* Source rules (README: Source rules), on the client's address (the
     * one its PROXY header names, with accept_proxy). Deny wins over
     * allow; no allow entry lets everyone in who is not denied. */
    struct cidr *allow;
    size_t nallow;
    struct cidr *deny;
    size_t ndeny;
    uint32_t max_conns_per_source; /* open connections per IP, 0 = any */
    uint32_t conn_rate_per_source; /* new connections/s per IP, 0 = any */
    /* Kubernetes LoadBalancer Service with externalTrafficPolicy Local:
     * the node answers load balancers' health checks on this port for
     * the Service its name starts with ("namespace/name:"), counting
     * this service's local ready backends (0 = none; set only on the
     * service whose backends are the node's local set). */
    uint16_t hc_node_port;
    enum tbl_reach reach;
    /* Server names (README: SNI routing): a service that names some may
     * share its frontends with other such services; a connection there
     * goes to the one its ClientHello names. */
    struct tbl_sni *sni;
    size_t nsni;
    /* A frontend is (proto, address, port): a UDP and a TCP service may
     * share an address and port. UDP only: a flow (client address and
     * port) ends this long after its last datagram, or after this many
     * replies (0: any number); at most max_flows at once. */
    enum tbl_proto proto;
    uint32_t udp_idle_timeout_ms;
    uint32_t udp_responses;
    uint32_t max_flows;
    /* API services: the endpoints of the port the translator left out,
     * and why (for explanations only; the data plane ignores them). */
    struct tbl_excluded *excluded;
    size_t nexcluded;
    /* In a table: the owner of the arrays above, shared by every table
     * holding this service unchanged (table_add_service() of a service
     * taken from a table copies no array). NULL in a service being
     * built; leave it as it is in a copy. */
    struct tbl_arrays *arrays;
};

/* struct tbl_ksvc's redirect. */
#define TBL_REDIRECT_PLAIN    1
#define TBL_REDIRECT_AFFINITY 2

/*
 * A Kubernetes Service port carried by the kernel (node.dataplane:
 * nftables) instead of the proxy: what kube-proxy would program for it,
 * with the endpoints already selected by the same rules the proxy's
 * services use. Nothing listens for it and no address is added.
 */
struct tbl_ksvc {
    /* "namespace/name:port"; unique with proto; owned as a service's. */
    const char *name;
    enum tbl_proto proto;
    uint16_t port;      /* the Service port */
    uint16_t node_port; /* 0 = none */
    struct saddr *cluster_ips; /* ports unused, in every array below */
    size_t ncluster_ips;
    struct saddr *external_ips;
    size_t nexternal_ips;
    struct saddr *lb_ips; /* status.loadBalancer.ingress */
    size_t nlb_ips;
    struct cidr *source_ranges; /* loadBalancerSourceRanges; none = all */
    size_t nsource_ranges;
    uint32_t affinity_s;        /* ClientIP affinity timeout, 0 = off */
    int external_local;         /* externalTrafficPolicy: Local */
    /* Internal traffic (and external under Cluster): the endpoints the
     * ClusterIP frontends of the proxy would get. */
    struct tbl_backend *cluster_eps;
    size_t ncluster_eps;
    /* External traffic under externalTrafficPolicy: Local. */
    struct tbl_backend *local_eps;
    size_t nlocal_eps;
    /* The endpoints each set left out, and why (for explanations only;
     * the kernel's rules ignore them). */
    struct tbl_excluded *cluster_excluded;
    size_t ncluster_excluded;
    struct tbl_excluded *local_excluded;
    size_t nlocal_excluded;
    /* Active health check of the endpoints (ferry.dev/health-check): an
     * endpoint it finds down leaves both lists; type NONE: off. */
    struct tbl_check check;
    /* Served by ferry's proxy (ferry.dev/dataplane: proxy): the kernel
     * redirects its addresses to the proxy's port; no endpoints. 0: not
     * redirected; TBL_REDIRECT_PLAIN to the port every worker serves,
     * TBL_REDIRECT_AFFINITY (a Service with ClientIP affinity, served by
     * worker 0 alone) to the port next to it. */
    int redirect;
    /* As in struct tbl_service: the LoadBalancer health check port. */
    uint16_t hc_node_port;
    struct tbl_arrays *arrays; /* as in struct tbl_service */
};

/* A table's services and kernel services are kept in chunks of
 * TBL_CHUNK entries, and the chunks in pages of TBL_PAGE chunk pointers,
 * both reference counted: a table made from another one
 * (table_derive(), table_add_services_of()) shares its pages, and copies
 * only a page and a chunk it changes. Making one then costs a reference
 * per page (ten at 10,000 Services), not per chunk. Read them with
 * table_service() and table_ksvc(). */
#define TBL_CHUNK 32
#define TBL_PAGE  32

/* What every chunk starts with (private to table.c). */
struct tbl_chunk {
    /* Aligned as the entries after it, so that a pointer to a chunk's
     * head is one to the chunk. */
    _Alignas(void *) atomic_uint refs;
    uint32_t n; /* entries filled */
};

struct tbl_schunk {
    struct tbl_chunk h;
    struct tbl_service v[TBL_CHUNK];
};

struct tbl_kchunk {
    struct tbl_chunk h;
    struct tbl_ksvc v[TBL_CHUNK];
};

struct tbl_page {
    atomic_uint refs;
    uint32_t n; /* chunks filled */
    struct tbl_chunk *c[TBL_PAGE];
};

struct table {
    atomic_uint refs;
    uint64_t generation;
    int frozen;
    /* This table's number, unique in the process (table_new()). */
    uint64_t serial;
    /* A table made by table_derive() is the table numbered <base> with
     * the services at positions <dsvcs> and the kernel services at
     * positions <dksvcs> replaced (table_replace_service(),
     * table_replace_ksvc()): every other entry is the same, with the same
     * arrays, at the same position. A reader that kept the table <base>
     * can then look at the changed entries only. 0: not known, compare
     * everything. */
    uint64_t base;
    size_t *dsvcs;
    size_t ndsvcs, dscap;
    size_t *dksvcs;
    size_t ndksvcs, dkcap;
    /* What the data plane's apply looks for, kept as services are added
     * and replaced, so that it need not look at every service: the
     * positions of the services that are not REDIRECT (they listen, or
     * dispatch), and how many services have ClientIP affinity, are
     * DISPATCH or have server names. */
    size_t *lpos;
    size_t nlpos, lcap_pos;
    size_t naffinity, ndispatch, nsnisvcs;
    struct tbl_page **spages; /* of struct tbl_schunk: table_service() */
    size_t nservices;
    size_t cap; /* page pointers */
    /* Service IPs (ClusterIPs, externalIPs, LoadBalancer IPs) that must be
     * local addresses of this node for the frontends to receive traffic;
     * port unused. Empty in static mode. */
    struct saddr *vips;
    size_t nvips;
    size_t vipcap;
    /* Indexes by service name and by frontend (private to table.c), so
     * that building a table of N services costs O(N), not O(N^2): the
     * watcher builds a table for every change. */
    struct tbl_index *by_name;
    struct tbl_index *by_frontend;
    struct tbl_index *by_vip; /* vips, so that adding one is O(1) */
    /* Service ports for the kernel dataplane, in the translator's order
     * (table_ksvc()). */
    struct tbl_page **kpages; /* of struct tbl_kchunk */
    size_t nksvcs;
    size_t kcap; /* page pointers */
    /* Settings of addresses shared by services with server names. */
    struct tbl_listener *listeners;
    size_t nlisteners;
    size_t lcap;
    /* The table whose kernel services the node's kernel dataplane serves
     * beside this one's (a reference, or NULL), for status pages: node
     * mode's merged table points at the API's. */
    struct table *kernel;
};

/* Returns a new empty, unfrozen table with one reference, or NULL. */
struct table *table_new(void);

/* The service at position <i> (< t->nservices), and the kernel service
 * at position <i> (< t->nksvcs). */
static inline const struct tbl_service *
table_service(const struct table *t, size_t i)
{
    return &((const struct tbl_schunk *)t->spages[i / (TBL_CHUNK * TBL_PAGE)]
                 ->c[i / TBL_CHUNK % TBL_PAGE])
                ->v[i % TBL_CHUNK];
}

static inline const struct tbl_ksvc *
table_ksvc(const struct table *t, size_t i)
{
    return &((const struct tbl_kchunk *)t->kpages[i / (TBL_CHUNK * TBL_PAGE)]
                 ->c[i / TBL_CHUNK % TBL_PAGE])
                ->v[i % TBL_CHUNK];
}

/* Add a copy of <svc> (the caller keeps ownership of <svc>). Its arrays
 * are copied, unless <svc> is a service of a table (or a copy of one
 * whose arrays were left as they were): they are then shared, and adding
 * costs the same for 1 backend as for 10,000. Fails, filling <e>, if the table is frozen, the
 * name is empty or taken, or a frontend is already used by a service and
 * the two cannot share it: services with server names (sni) may share a
 * frontend with each other and with the one service without that the
 * address's listener entry names its default_service. Returns 0 or -1. */
int table_add_service(struct table *t, const struct tbl_service *svc,
                      struct err *e);

/* Add a copy of <l>, before the services it speaks of (its
 * default_service may share their address only once it is known). Fails,
 * filling <e>, if the table is frozen or the address already has one.
 * Returns 0 or -1. */
int table_add_listener(struct table *t, const struct tbl_listener *l,
                       struct err *e);

/* The listener settings of address <a>, or NULL. */
const struct tbl_listener *table_find_listener(const struct table *t,
                                               const struct saddr *a);

/* Make <dst> a copy of <src> that holds its arrays as a table's service
 * does (shared with <src> when <src> holds them), outside any table: a
 * table_add_service() of <dst> then copies no array. Returns 0, or -1
 * when memory runs out (<dst> untouched). Release with
 * tbl_service_release(). The same for kernel services. */
int tbl_service_hold(struct tbl_service *dst, const struct tbl_service *src);
void tbl_service_release(struct tbl_service *s);
int tbl_ksvc_hold(struct tbl_ksvc *dst, const struct tbl_ksvc *src);
void tbl_ksvc_release(struct tbl_ksvc *k);

/* Another reference to a table service's arrays (which stay as they
 * are while it is held), and its release; NULL is passed through. */
struct tbl_arrays *tbl_arrays_ref(struct tbl_arrays *a);
void tbl_arrays_unref(struct tbl_arrays *a);

/* Add a copy of <k>, its arrays shared as table_add_service() shares a
 * service's. Fails, filling <e>, if the table is frozen or
 * the name is empty (the translator keeps names and protocols unique).
 * Returns 0 or -1. */
int table_add_ksvc(struct table *t, const struct tbl_ksvc *k, struct err *e);

/* Nonzero if two kernel services are the same in every field. */
int tbl_ksvc_equal(const struct tbl_ksvc *a, const struct tbl_ksvc *b);

/* Ask for the IP of <a> to be a local address (de-duplicated). Returns 0,
 * or -1 when frozen or out of memory. */
int table_add_vip(struct table *t, const struct saddr *a, struct err *e);

/* Freeze <t> and stamp its generation. After this it must not change. */
void table_freeze(struct table *t, uint64_t generation);

/* Room for <nservices> services in all, so that a table whose size is
 * known grows once. Returns -1 when out of memory (nothing changed). */
int table_reserve(struct table *t, size_t nservices);

/* The same for kernel services. */
int table_reserve_ksvcs(struct table *t, size_t nksvcs);

/* Every service of <src> (frozen) into <t>, which has no service and no
 * listener yet: the same services in the same order, sharing their
 * arrays, and <src>'s indexes copied whole instead of rebuilt; a merge
 * with nothing else to add is a copy (kube.c). The services checked
 * against each other when they entered <src>. Returns 0, or -1 with <e>
 * filled and <t> still empty. */
int table_add_services_of(struct table *t, const struct table *src,
                          struct err *e);

/* A new unfrozen table equal to <src> (frozen): its services, kernel
 * services, service IPs and listeners, their arrays and indexes shared
 * or copied, with <base> set to src's serial and no change noted yet.
 * O(N) in copying, but no service is looked at. NULL when memory runs
 * out. */
struct table *table_derive(const struct table *src);

/* In a table from table_derive(), put a copy of <svc> in place of the
 * service at position <i> and note the position. <svc> must have the
 * same name, protocol, reach and frontends, and no server names (neither may
 * the one it replaces), so that the indexes stay right; otherwise, or
 * when memory runs out, fails with <e> filled and the table unchanged.
 * Returns 0 or -1. The same for the kernel service at position <i>,
 * which must have the same name and protocol. */
int table_replace_service(struct table *t, size_t i,
                          const struct tbl_service *svc, struct err *e);
int table_replace_ksvc(struct table *t, size_t i, const struct tbl_ksvc *k,
                       struct err *e);

/* Append position <i> to <*v> (<*n> of them, room for <*cap>, grown as
 * needed): a list of a table's positions. Returns 0, or -1 when out of
 * memory (nothing changed). */
int table_pos_push(size_t **v, size_t *n, size_t *cap, size_t i);

/* Take and drop references. table_unref(NULL) does nothing. Both are
 * thread-safe. */
struct table *table_ref(struct table *t);
void table_unref(struct table *t);

/* Find a service by name; NULL if absent. */
const struct tbl_service *table_find(const struct table *t, const char *name);

/* Find the TCP service owning frontend <a>: the first added of those
 * sharing it (services with server names). */
const struct tbl_service *table_find_frontend(const struct table *t,
                                              const struct saddr *a);
/* Find the service of protocol <proto> owning frontend <a>. */
const struct tbl_service *table_find_frontend_proto(const struct table *t,
                                                    enum tbl_proto proto,
                                                    const struct saddr *a);

/* Nonzero if two services would be served identically (same frontends,
 * backends, policy). */
int tbl_service_equal(const struct tbl_service *a,
                      const struct tbl_service *b);

/* Nonzero if two services have the same name and policy: every field but
 * the frontend and backend lists. The one list of policy fields, shared
 * by tbl_service_equal() and the data plane's test for keeping a runtime
 * service across a table change. */
int tbl_service_policy_equal(const struct tbl_service *a,
                             const struct tbl_service *b);

/* Nonzero if the address arrays are the same, in order. */
int tbl_saddrs_equal(const struct saddr *a, size_t na, const struct saddr *b,
                     size_t nb);

/* Nonzero if the <na> prefixes of <a> are the <nb> of <b>, in order. */
int tbl_cidrs_equal(const struct cidr *a, size_t na, const struct cidr *b,
                    size_t nb);

/* Nonzero if two backends are the same (address, name, weight,
 * conditions). */
int tbl_backend_equal(const struct tbl_backend *a,
                      const struct tbl_backend *b);

/* Names of the enums, "?" when out of range; parse returns 0 or -1. */
const char *tbl_balance_name(enum tbl_balance b);
int tbl_balance_parse(const char *s, enum tbl_balance *out);
const char *tbl_check_type_name(enum tbl_check_type t);

#endif
