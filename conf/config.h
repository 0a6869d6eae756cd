/*
 * config.h - the daemon's settings, loaded from YAML.
 *
 * A config is accepted whole or rejected whole: conf_load_*() either
 * returns a complete, validated config (with a frozen service table) or
 * NULL with the first error in <e> as FILE:LINE:COL. Every key is decoded
 * through one key table in config.c; unknown keys are errors.
 */
#ifndef CONF_CONFIG_H
#define CONF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "log.h"
#include "table.h"

/* Largest config accepted, file or buffer. */
#define CONF_FILE_MAX (4u << 20)

/* Lists and mappings nested in one another, at most. ferry's schema needs
 * six (services, a service, its backends, a backend, in the top-level
 * mapping); 32 leaves room for new sections and still stops a hostile
 * file after a few dozen bytes. */
#define CONF_DEPTH_MAX 32

#define CONF_ADMIN_LISTEN_DEFAULT "127.0.0.1:9990"
#define CONF_STR_MAX              1023
#define CONF_TOKEN_MAX            4096 /* admin.token_file's token */

/* "admin:", the admin HTTP server. */
struct conf_admin {
    int enabled;                 /* default off: one port per host */
    struct saddr listen;         /* default CONF_ADMIN_LISTEN_DEFAULT */
    uint32_t request_timeout_ms; /* whole request and reply, default 5s */
    uint32_t api_grace_ms;       /* /readyz: API failing longer = not ready */
    /* admin.token_file: "" = no token; otherwise control endpoints need
     * "Authorization: Bearer <the file's contents>". */
    char token_file[CONF_STR_MAX + 1];
    /* Its token, read when the config is loaded: a file that cannot be
     * read, or holds no token, fails the load (and so a reload). */
    char token[CONF_TOKEN_MAX];
    size_t token_len; /* 0: no token */
};

#define CONF_HEALTHZ_LISTEN_DEFAULT "0.0.0.0:10256"
/* kube-proxy's metricsBindAddress default; "off" turns it off. */
#define CONF_METRICS_LISTEN_DEFAULT "127.0.0.1:10249"

enum conf_kube_mode {
    CONF_KUBE_NODE = 0, /* in place of kube-proxy on a node */
    CONF_KUBE_EDGE,     /* outside the cluster: LoadBalancer IPs to pods */
};

/* Edge mode: where connections go. */
enum conf_edge_backends {
    CONF_EDGE_PODS = 0,  /* straight to the ready pods */
    CONF_EDGE_NODEPORTS, /* to kubernetes.edge_nodes at the NodePort */
};

/* "kubernetes:", where the services come from in Kubernetes mode. */
struct conf_kube {
    int enabled;
    enum conf_kube_mode mode;
    enum conf_edge_backends edge_backends;
    struct saddr *edge_nodes; /* owned; node IPs for edge_backends nodeports */
    size_t n_edge_nodes;
    char kubeconfig[CONF_STR_MAX + 1];     /* "" = in-cluster */
    char api_server[CONF_STR_MAX + 1];     /* "" = from kubeconfig/env */
    char sa_dir[CONF_STR_MAX + 1];         /* service-account files */
    int insecure_skip_tls_verify;
    char node_name[CONF_STR_MAX + 1];      /* "" = $NODE_NAME, hostname */
    char service_proxy_name[CONF_STR_MAX + 1];
    char service_selector[CONF_STR_MAX + 1]; /* edge mode: which Services */
};

/* node.dataplane: what carries a node's Service traffic. */
enum conf_dataplane {
    CONF_DATAPLANE_NFTABLES = 0, /* the kernel, through table inet ferry */
    CONF_DATAPLANE_PROXY,        /* ferry's proxy, on the service addresses */
};

/* node.proxy_steering: how Service connections reach the proxy under
 * node.dataplane proxy. */
enum conf_steering {
    CONF_STEER_AUTO = 0, /* redirect when nftables can be used, else listen */
    CONF_STEER_REDIRECT, /* the kernel redirects TCP to node.proxy_port */
    CONF_STEER_LISTEN,   /* a listener on every Service address */
};

/* node.masquerade: whose source the kernel dataplane rewrites. */
enum conf_masquerade {
    CONF_MASQ_AUTO = 0, /* kube-proxy's rules (traffic from outside
                         * cluster_cidrs, external under Cluster policy) */
    CONF_MASQ_ALL,      /* every Service connection (masqueradeAll) */
    CONF_MASQ_NONE,     /* never */
};

/* Names indexed by the enums, ended by NULL. */
extern const char *const conf_dataplane_names[];
extern const char *const conf_masquerade_names[];
extern const char *const conf_steering_names[];

#define CONF_CIDRS_MAX 16

/* "node:", what ferry does to the node it runs on. */
struct conf_node {
    char vip_interface[CONF_STR_MAX + 1]; /* "auto", "none" or a name */
    struct saddr *nodeport_addrs;         /* owned; none = all addresses */
    size_t n_nodeport_addrs;
    struct saddr healthz_listen;          /* kube-proxy's /healthz, /livez */
    struct saddr metrics_listen; /* kube-proxy's /metrics; family 0: off */
    enum conf_dataplane dataplane;        /* default nftables */
    enum conf_masquerade masquerade;      /* default auto */
    enum conf_steering proxy_steering;    /* default auto; read at start */
    uint16_t proxy_port; /* proxied Services' connections are redirected to
                          * this port (default 10263) */
    struct cidr cluster_cidrs[CONF_CIDRS_MAX]; /* pods' addresses */
    size_t n_cluster_cidrs;
    struct cidr service_cidrs[CONF_CIDRS_MAX]; /* ClusterIP ranges */
    size_t n_service_cidrs;
};

/* "relay:", how bytes move between client and backend. */
enum conf_splice {
    CONF_SPLICE_AUTO,   /* copy, splice() once a direction moves bulk data */
    CONF_SPLICE_ALWAYS, /* splice() from the first byte */
    CONF_SPLICE_NEVER,  /* always copy */
};

/* relay.engine: what moves a relaying connection's bytes. */
enum conf_engine {
    CONF_ENGINE_EPOLL,    /* readiness (libev's epoll), recv/send/splice */
    CONF_ENGINE_IO_URING, /* completions on an io_uring ring (ring.h) */
};

extern const char *const conf_engine_names[];

#define CONF_WORKERS_MAX 64

struct conf_relay {
    enum conf_splice splice; /* relay.splice, default auto */
    enum conf_engine engine; /* relay.engine, default io_uring */
    uint32_t pipe_budget;    /* relay.pipe_budget: descriptors pipes may
                              * hold; 0 = an eighth of the limit */
    uint32_t workers;        /* relay.workers: data-plane threads; 0 = one
                              * per CPU the process may run on. Read at
                              * start only. */
};

/* "metrics:", what the admin server's /metrics writes. */
enum conf_per_backend {
    CONF_PER_BACKEND_AUTO = 0, /* for services from the file, not the API */
    CONF_PER_BACKEND_FALSE,    /* for no service */
    CONF_PER_BACKEND_TRUE,     /* for every service */
};

/* "auto", "false", "true", indexed by enum conf_per_backend, ended by
 * NULL. */
extern const char *const conf_per_backend_names[];

struct conf_metrics {
    enum conf_per_backend per_backend; /* metrics.per_backend, default auto */
};

/* "access_log:", one line per connection at its close (README: Access
 * log). */
enum conf_access_log_format {
    CONF_ACCESS_LOG_TEXT = 0,
    CONF_ACCESS_LOG_JSON,
};

enum conf_access_log_target {
    CONF_ACCESS_LOG_STDERR = 0,
    CONF_ACCESS_LOG_FILE,
    CONF_ACCESS_LOG_SYSLOG, /* RFC 5424 over a Unix datagram socket */
};

enum conf_syslog_facility {
    CONF_SYSLOG_USER = 0,
    CONF_SYSLOG_DAEMON,
    CONF_SYSLOG_LOCAL0,
    CONF_SYSLOG_LOCAL1,
    CONF_SYSLOG_LOCAL2,
    CONF_SYSLOG_LOCAL3,
    CONF_SYSLOG_LOCAL4,
    CONF_SYSLOG_LOCAL5,
    CONF_SYSLOG_LOCAL6,
    CONF_SYSLOG_LOCAL7,
};

#define CONF_ACCESS_LOG_SOCKET_DEFAULT "/dev/log"
#define CONF_ACCESS_LOG_BUFFER_MAX     1048576

struct conf_access_log {
    int enabled;                         /* default off */
    enum conf_access_log_format format;  /* default text */
    enum conf_access_log_target target;  /* default stderr */
    char path[CONF_STR_MAX + 1];         /* target file: required */
    char syslog_socket[CONF_STR_MAX + 1]; /* default /dev/log */
    enum conf_syslog_facility syslog_facility; /* default local0 */
    uint32_t buffer; /* lines per worker waiting for the writer (1024);
                      * read when the access log first starts */
};

struct conf {
    enum log_level log_level; /* log.level, default info */
    enum log_format log_format; /* log.format, default text */
    uint64_t drain_timeout_ms;  /* drain_timeout, default 30s */
    struct conf_admin admin;
    struct conf_kube kube;
    struct conf_node node;
    struct conf_relay relay;
    struct conf_metrics metrics;
    struct conf_access_log access_log;
    /* The "defaults:" policy (no name, frontends or backends), for the
     * services the Kubernetes watcher generates. */
    struct tbl_service defaults;
    char defaults_check_path[TBL_CHECK_PATH_MAX]; /* defaults.check.path */
    struct table *table;        /* owned reference, frozen, generation 0 */
};

/* Load <path>. Returns a new config (free with conf_free()) or NULL with
 * <e> filled; <e>->file is <path>. Reads the file with blocking I/O: call
 * it only at start-up or on reload. */
struct conf *conf_load_file(const char *path, struct err *e);

/* Same, from a buffer; <name> is used as the file name in errors. */
struct conf *conf_load_buf(const char *name, const char *buf, size_t len,
                           struct err *e);

/* Free <c>; conf_free(NULL) does nothing. */
void conf_free(struct conf *c);

/* The built-in default configuration (conf/examples/demo.yaml, embedded
 * at build time) and its length. */
extern const char conf_default_yaml[];
extern const size_t conf_default_yaml_len;

#endif
