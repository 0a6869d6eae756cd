/*
 * config.c - ferry's configuration schema: what each section of the YAML
 * file may hold, how the sections relate, and how the result becomes a
 * struct conf and a service table.
 *
 * The file is read by ydoc (a bounded YAML loader) and decoded by yamldec
 * through the key tables below: one row per key (name, type, offsetof,
 * bounds, default). Values land first in plain "input" structs (root_in,
 * service_in, ...), where numbers left out of the file hold YD_UNSET;
 * once the whole document is decoded, defaults are filled in (services
 * inherit the "defaults:" section wherever it sits in the file),
 * cross-references are checked and the service table is built.
 *
 * To add a section (admin:, health_check:, ...): add its input struct as a
 * member of root_in (or service_in), write its rows, and add one YD_MAP
 * row pointing at the new section to the parent's table.
 *
 * Every input is bounded: the file size, the nesting depth, what aliases
 * may add, each list's length and the length of every name, so that a
 * file is accepted or refused in time linear in its size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "parse.h"
#include "tlshello.h"
#include "yamldec.h"
#include "ydoc.h"

#define CONF_SERVICES_MAX  4096
#define CONF_LISTEN_MAX    256   /* per service */
#define CONF_BACKENDS_MAX  4096  /* per service */
#define CONF_FRONTENDS_MAX 8192  /* all services; table_add_service is O(n) */
#define CONF_ALIAS_SLACK   65536 /* nodes aliases may add to those written */
#define SERVICE_NAME_MAX   63
#define CONF_SRC_RULES_MAX 1024  /* prefixes per allow: or deny: list */
#define CONF_SNI_MAX       256   /* server names per service */
#define CONF_LISTENERS_MAX 1024  /* entries of "listeners:" */

/* ---- input structs: what the file said, before defaults ---------------- */

/* "health_check:", in "defaults:" and in each service. */
struct check_in {
    uint64_t type;   /* enum tbl_check_type */
    uint64_t expect; /* status range, min << 16 | max */
    uint64_t interval_ms;
    uint64_t timeout_ms;
    uint64_t rise;
    uint64_t fall;
    uint64_t port;
    char path[TBL_CHECK_PATH_MAX]; /* "" = inherit, then "/" */
};

/* The keys shared by "defaults:" and every service. */
struct policy_in {
    uint64_t balance; /* enum tbl_balance */
    uint64_t connect_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t retries;
    uint64_t max_conns;
    uint64_t drain_timeout_ms; /* 0: no limit */
    struct check_in check;
};

struct backend_in {
    struct saddr addr;
    char name[TBL_NAME_MAX];
    uint64_t weight;
};

struct service_in {
    char name[SERVICE_NAME_MAX + 1];
    struct yd_arr listen;   /* struct saddr */
    struct yd_arr backends; /* struct backend_in */
    struct policy_in pol;
    uint64_t send_proxy;   /* enum tbl_send_proxy */
    uint64_t accept_proxy; /* 0 false, 1 true */
    uint64_t accept_proxy_timeout_ms;
    struct yd_arr allow; /* struct cidr */
    struct yd_arr deny;  /* struct cidr */
    uint64_t max_per_source;
    uint64_t rate_per_source;
    uint64_t protocol; /* enum tbl_proto: TCP or UDP */
    uint64_t udp_idle_timeout_ms;
    uint64_t udp_responses;
    uint64_t max_flows;
    struct yd_arr sni; /* struct tbl_sni */
};

/* "listeners:", settings of an address services share (README: SNI
 * routing). */
struct listener_in {
    struct saddr listen;
    char default_service[SERVICE_NAME_MAX + 1];
    uint64_t hello_timeout_ms;
};

struct log_in {
    uint64_t level;  /* enum log_level */
    uint64_t format; /* enum log_format */
};

struct relay_in {
    uint64_t splice; /* enum conf_splice */
    uint64_t engine; /* enum conf_engine */
    uint64_t pipe_budget;
    uint64_t workers; /* 0: one per CPU */
};

struct metrics_in {
    uint64_t per_backend; /* enum conf_per_backend */
};

/* "access_log:" (README: Access log). */
struct access_log_in {
    uint64_t enabled; /* 0 false, 1 true */
    uint64_t format;  /* enum conf_access_log_format */
    uint64_t target;  /* enum conf_access_log_target */
    char path[CONF_STR_MAX + 1];
    char syslog_socket[CONF_STR_MAX + 1];
    uint64_t facility; /* enum conf_syslog_facility */
    uint64_t buffer;
};

struct admin_in {
    uint64_t enabled; /* 0 false, 1 true */
    struct saddr listen; /* family 0: not given */
    uint64_t request_timeout_ms;
    uint64_t api_grace_ms;
    char token_file[CONF_STR_MAX + 1]; /* "" = no token */
};

/* "kubernetes:", the API connection (README: Kubernetes mode). */
struct kube_in {
    uint64_t enabled;
    uint64_t mode; /* enum conf_kube_mode */
    uint64_t edge_backends; /* enum conf_edge_backends */
    struct yd_arr edge_nodes;  /* struct saddr */
    char kubeconfig[CONF_STR_MAX + 1];
    char api_server[CONF_STR_MAX + 1];
    char sa_dir[CONF_STR_MAX + 1];
    uint64_t insecure;
    char node_name[CONF_STR_MAX + 1];
    char proxy_name[CONF_STR_MAX + 1];
    char selector[CONF_STR_MAX + 1];
};

/* "node:", what a node proxy does to its host. */
struct node_in {
    char vip_interface[CONF_STR_MAX + 1];
    struct yd_arr nodeport_addrs; /* struct saddr, port unused */
    struct saddr healthz;      /* family 0: not given */
    char metrics[CONF_STR_MAX + 1]; /* an address with port, or "off" */
    uint64_t dataplane;        /* enum conf_dataplane */
    uint64_t proxy_port;
    uint64_t masquerade;       /* enum conf_masquerade */
    uint64_t steering;         /* enum conf_steering */
    struct yd_arr cluster_cidrs; /* struct cidr */
    struct yd_arr service_cidrs; /* struct cidr */
};

struct root_in {
    struct log_in log;
    struct relay_in relay;
    struct metrics_in metrics;
    struct access_log_in access_log;
    struct admin_in admin;
    struct kube_in kube;
    struct node_in node;
    uint64_t drain_timeout_ms;
    struct policy_in defaults;
    struct yd_arr services; /* struct service_in */
    struct yd_arr listeners; /* struct listener_in */
};

/* ---- key tables -------------------------------------------------------- */


static const char *const bool_names[] = {"false", "true", NULL};

/* "health_check:" rows. Numbers inherit from "defaults:" one by one (see
 * inherit_policy), so a service may change only its path. */
static const struct yd_key check_keys[] = {
    {"type", YD_ENUM, offsetof(struct check_in, type), 0, 0, "none",
     tbl_check_type_names, 0},
    {"path", YD_PATH, offsetof(struct check_in, path), 1,
     TBL_CHECK_PATH_MAX - 1, NULL, NULL, 0},
    {"expect_status", YD_RANGE, offsetof(struct check_in, expect), 100, 599,
     "200-399", NULL, 0},
    {"interval", YD_DURATION, offsetof(struct check_in, interval_ms), 10,
     3600000, "5s", NULL, 0},
    {"timeout", YD_DURATION, offsetof(struct check_in, timeout_ms), 1,
     3600000, "2s", NULL, 0},
    {"rise", YD_UINT, offsetof(struct check_in, rise), 1, 100, "2", NULL, 0},
    {"fall", YD_UINT, offsetof(struct check_in, fall), 1, 100, "3", NULL, 0},
    {"port", YD_UINT, offsetof(struct check_in, port), 0, 65535, "0", NULL,
     0},
};
static const struct yd_section check_section = {
    "section \"health_check\"", NULL, check_keys, YD_NKEYS(check_keys)};

static const struct yd_key admin_keys[] = {
    {"enabled", YD_ENUM, offsetof(struct admin_in, enabled), 0, 0, "false",
     bool_names, 0},
    {"listen", YD_ADDR, offsetof(struct admin_in, listen), 0, 0, NULL, NULL,
     0},
    {"request_timeout", YD_DURATION,
     offsetof(struct admin_in, request_timeout_ms), 10, 3600000, "5s", NULL,
     0},
    {"api_failure_grace", YD_DURATION,
     offsetof(struct admin_in, api_grace_ms), 0, UINT32_MAX, "60s", NULL, 0},
    /* A path like kubernetes.kubeconfig, but "" is allowed: no token. */
    {"token_file", YD_STRING, offsetof(struct admin_in, token_file), 0,
     CONF_STR_MAX, NULL, NULL, 0},
};
static const struct yd_section admin_section = {
    "section \"admin\"", NULL, admin_keys, YD_NKEYS(admin_keys)};

#define STR_KEY(name, st, field, def)                                          \
    {name, YD_STRING, offsetof(st, field), 1, CONF_STR_MAX, def, NULL, 0}

static const char *const kube_mode_names[] = {
    [CONF_KUBE_NODE] = "node", [CONF_KUBE_EDGE] = "edge", NULL,
};

static const char *const edge_backend_names[] = {
    [CONF_EDGE_PODS] = "pods", [CONF_EDGE_NODEPORTS] = "nodeports", NULL,
};

static const struct yd_list edge_node_list = {
    "edge nodes", sizeof(struct saddr),
    {"edge_nodes", YD_IP, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct yd_key kube_keys[] = {
    {"enabled", YD_ENUM, offsetof(struct kube_in, enabled), 0, 0, "false",
     bool_names, 0},
    {"mode", YD_ENUM, offsetof(struct kube_in, mode), 0, 0, "node",
     kube_mode_names, 0},
    {"edge_backends", YD_ENUM, offsetof(struct kube_in, edge_backends), 0, 0,
     "pods", edge_backend_names, 0},
    {"edge_nodes", YD_LIST, offsetof(struct kube_in, edge_nodes), 1, 1024,
     NULL, &edge_node_list, 0},
    STR_KEY("kubeconfig", struct kube_in, kubeconfig, NULL),
    STR_KEY("api_server", struct kube_in, api_server, NULL),
    STR_KEY("serviceaccount_dir", struct kube_in, sa_dir,
            "/var/run/secrets/kubernetes.io/serviceaccount"),
    {"insecure_skip_tls_verify", YD_ENUM, offsetof(struct kube_in, insecure),
     0, 0, "false", bool_names, 0},
    STR_KEY("node_name", struct kube_in, node_name, NULL),
    STR_KEY("service_proxy_name", struct kube_in, proxy_name, NULL),
    STR_KEY("service_selector", struct kube_in, selector, NULL),
};
static const struct yd_section kube_section = {
    "section \"kubernetes\"", NULL, kube_keys, YD_NKEYS(kube_keys)};

static const struct yd_list ip_list = {
    "addresses", sizeof(struct saddr),
    {"node_port_addresses", YD_IP, 0, 0, 0, NULL, NULL, 0}, 1};

const char *const conf_dataplane_names[] = {
    [CONF_DATAPLANE_NFTABLES] = "nftables",
    [CONF_DATAPLANE_PROXY] = "proxy",
    NULL,
};

const char *const conf_steering_names[] = {
    [CONF_STEER_AUTO] = "auto",
    [CONF_STEER_REDIRECT] = "redirect",
    [CONF_STEER_LISTEN] = "listen",
    NULL,
};

const char *const conf_masquerade_names[] = {
    [CONF_MASQ_AUTO] = "auto",
    [CONF_MASQ_ALL] = "all",
    [CONF_MASQ_NONE] = "none",
    NULL,
};

static const struct yd_list cluster_cidr_list = {
    "prefixes", sizeof(struct cidr),
    {"cluster_cidrs", YD_CIDR, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct yd_list service_cidr_list = {
    "prefixes", sizeof(struct cidr),
    {"service_cidrs", YD_CIDR, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct yd_key node_keys[] = {
    STR_KEY("vip_interface", struct node_in, vip_interface, "auto"),
    {"node_port_addresses", YD_LIST, offsetof(struct node_in, nodeport_addrs),
     1, 256, NULL, &ip_list, 0},
    {"healthz_listen", YD_ADDR, offsetof(struct node_in, healthz), 0, 0, NULL,
     NULL, 0},
    STR_KEY("metrics_listen", struct node_in, metrics,
            CONF_METRICS_LISTEN_DEFAULT),
    {"dataplane", YD_ENUM, offsetof(struct node_in, dataplane), 0, 0,
     "nftables", conf_dataplane_names, 0},
    {"masquerade", YD_ENUM, offsetof(struct node_in, masquerade), 0, 0,
     "auto", conf_masquerade_names, 0},
    {"proxy_port", YD_UINT, offsetof(struct node_in, proxy_port), 1, 65535,
     "10263", NULL, 0},
    {"proxy_steering", YD_ENUM, offsetof(struct node_in, steering), 0, 0,
     "auto", conf_steering_names, 0},
    {"cluster_cidrs", YD_LIST, offsetof(struct node_in, cluster_cidrs), 1,
     CONF_CIDRS_MAX, NULL, &cluster_cidr_list, 0},
    {"service_cidrs", YD_LIST, offsetof(struct node_in, service_cidrs), 1,
     CONF_CIDRS_MAX, NULL, &service_cidr_list, 0},
};
static const struct yd_section node_section = {
    "section \"node\"", NULL, node_keys, YD_NKEYS(node_keys)};

/* The policy rows, placed at <base> inside the struct being decoded, so
 * that "defaults:" and each service share one definition. Timeouts are
 * stored in uint32_t milliseconds later; parse_duration_ms caps at 30
 * days, which fits. */
#define POLICY_KEYS(base)                                                      \
    {"balance", YD_ENUM, (base) + offsetof(struct policy_in, balance), 0, 0,  \
     "roundrobin", tbl_balance_names, 0},                                     \
    {"connect_timeout", YD_DURATION,                                          \
     (base) + offsetof(struct policy_in, connect_timeout_ms), 1, UINT32_MAX,   \
     "2s", NULL, 0},                                                           \
    {"idle_timeout", YD_DURATION,                                             \
     (base) + offsetof(struct policy_in, idle_timeout_ms), 1, UINT32_MAX,      \
     "1h", NULL, 0},                                                           \
    {"retries", YD_UINT, (base) + offsetof(struct policy_in, retries), 0,     \
     TBL_RETRIES_MAX, "3", NULL, 0},                                           \
    {"max_connections", YD_UINT,                                              \
     (base) + offsetof(struct policy_in, max_conns), 0, 10000000, "0", NULL, 0}, \
    {"drain_timeout", YD_DURATION,                                            \
     (base) + offsetof(struct policy_in, drain_timeout_ms), 0,                \
     TBL_DRAIN_TIMEOUT_MAX_MS, "0", NULL, 0},                                 \
    {"health_check", YD_MAP, (base) + offsetof(struct policy_in, check), 0,   \
     0, NULL, &check_section, 0}

static const struct yd_key policy_keys[] = {POLICY_KEYS(0)};
static const struct yd_section defaults_section = {
    "section \"defaults\"", NULL, policy_keys, YD_NKEYS(policy_keys)};

static const struct yd_key log_keys[] = {
    {"level", YD_ENUM, offsetof(struct log_in, level), 0, 0, "info",
     log_level_names, 0},
    {"format", YD_ENUM, offsetof(struct log_in, format), 0, 0, "text",
     log_format_names, 0},
};
static const struct yd_section log_section = {"section \"log\"", NULL, log_keys,
                                           YD_NKEYS(log_keys)};

static const char *const splice_names[] = {
    [CONF_SPLICE_AUTO] = "auto", [CONF_SPLICE_ALWAYS] = "always",
    [CONF_SPLICE_NEVER] = "never", NULL,
};

const char *const conf_engine_names[] = {
    [CONF_ENGINE_EPOLL] = "epoll", [CONF_ENGINE_IO_URING] = "io_uring", NULL,
};

static const struct yd_key relay_keys[] = {
    {"engine", YD_ENUM, offsetof(struct relay_in, engine), 0, 0, "io_uring",
     conf_engine_names, 0},
    {"splice", YD_ENUM, offsetof(struct relay_in, splice), 0, 0, "auto",
     splice_names, 0},
    {"pipe_budget", YD_UINT, offsetof(struct relay_in, pipe_budget), 0,
     1000000, "0", NULL, 0},
    {"workers", YD_UINT, offsetof(struct relay_in, workers), 0,
     CONF_WORKERS_MAX, "0", NULL, 0},
};
static const struct yd_section relay_section = {
    "section \"relay\"", NULL, relay_keys, YD_NKEYS(relay_keys)};

const char *const conf_per_backend_names[] = {
    [CONF_PER_BACKEND_AUTO] = "auto", [CONF_PER_BACKEND_FALSE] = "false",
    [CONF_PER_BACKEND_TRUE] = "true", NULL,
};

static const struct yd_key metrics_keys[] = {
    {"per_backend", YD_ENUM, offsetof(struct metrics_in, per_backend), 0, 0,
     "auto", conf_per_backend_names, 0},
};
static const struct yd_section metrics_section = {
    "section \"metrics\"", NULL, metrics_keys, YD_NKEYS(metrics_keys)};

static const char *const access_log_format_names[] = {
    [CONF_ACCESS_LOG_TEXT] = "text", [CONF_ACCESS_LOG_JSON] = "json", NULL,
};

static const char *const access_log_target_names[] = {
    [CONF_ACCESS_LOG_STDERR] = "stderr", [CONF_ACCESS_LOG_FILE] = "file",
    [CONF_ACCESS_LOG_SYSLOG] = "syslog", NULL,
};

static const char *const syslog_facility_names[] = {
    [CONF_SYSLOG_USER] = "user",     [CONF_SYSLOG_DAEMON] = "daemon",
    [CONF_SYSLOG_LOCAL0] = "local0", [CONF_SYSLOG_LOCAL1] = "local1",
    [CONF_SYSLOG_LOCAL2] = "local2", [CONF_SYSLOG_LOCAL3] = "local3",
    [CONF_SYSLOG_LOCAL4] = "local4", [CONF_SYSLOG_LOCAL5] = "local5",
    [CONF_SYSLOG_LOCAL6] = "local6", [CONF_SYSLOG_LOCAL7] = "local7",
    NULL,
};

/* A Unix socket's path fits in sun_path (108 bytes with its NUL). */
#define ACCESS_LOG_SOCKET_MAX 107

static const struct yd_key access_log_keys[] = {
    {"enabled", YD_ENUM, offsetof(struct access_log_in, enabled), 0, 0,
     "false", bool_names, 0},
    {"format", YD_ENUM, offsetof(struct access_log_in, format), 0, 0, "text",
     access_log_format_names, 0},
    {"target", YD_ENUM, offsetof(struct access_log_in, target), 0, 0,
     "stderr", access_log_target_names, 0},
    {"path", YD_PATH, offsetof(struct access_log_in, path), 2, CONF_STR_MAX,
     NULL, NULL, 0},
    {"syslog_socket", YD_PATH, offsetof(struct access_log_in, syslog_socket),
     2, ACCESS_LOG_SOCKET_MAX, CONF_ACCESS_LOG_SOCKET_DEFAULT, NULL, 0},
    {"syslog_facility", YD_ENUM, offsetof(struct access_log_in, facility), 0,
     0, "local0", syslog_facility_names, 0},
    {"buffer", YD_UINT, offsetof(struct access_log_in, buffer), 1,
     CONF_ACCESS_LOG_BUFFER_MAX, "1024", NULL, 0},
};
static const struct yd_section access_log_section = {
    "section \"access_log\"", NULL, access_log_keys,
    YD_NKEYS(access_log_keys)};

static const struct yd_key backend_keys[] = {
    {"address", YD_ADDR, offsetof(struct backend_in, addr), 0, 0, NULL, NULL,
     YD_REQUIRED},
    {"weight", YD_UINT, offsetof(struct backend_in, weight), 0,
     TBL_WEIGHT_MAX, "1", NULL, 0},
    {"name", YD_NAME, offsetof(struct backend_in, name), 1, TBL_NAME_MAX - 1,
     NULL, NULL, YD_ADDRCHARS},
};
static const struct yd_section backend_section = {
    "backend", "name", backend_keys, YD_NKEYS(backend_keys)};

static const struct yd_list listen_list = {
    "listen addresses", sizeof(struct saddr),
    {"listen", YD_ADDR, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct yd_list backend_list = {
    "backends", sizeof(struct backend_in),
    {"backends", YD_MAP, 0, 0, 0, NULL, &backend_section, 0}, 0};

static const struct yd_list allow_list = {
    "allow prefixes", sizeof(struct cidr),
    {"allow", YD_CIDR, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct yd_list deny_list = {
    "deny prefixes", sizeof(struct cidr),
    {"deny", YD_CIDR, 0, 0, 0, NULL, NULL, 0}, 1};

/* What a service in the file may be (the kernel dataplane's SCTP is not
 * proxied). */
static const char *const protocol_names[] = {
    [TBL_PROTO_TCP] = "tcp", [TBL_PROTO_UDP] = "udp", NULL,
};

static const struct yd_list sni_list = {
    "server names", sizeof(struct tbl_sni),
    {"sni", YD_STRING, 0, 1, TLSHELLO_NAME_MAX, NULL, NULL, 0}, 1};

static const struct yd_key service_keys[] = {
    {"name", YD_NAME, offsetof(struct service_in, name), 1, SERVICE_NAME_MAX,
     NULL, NULL, YD_REQUIRED},
    {"listen", YD_LIST, offsetof(struct service_in, listen), 1,
     CONF_LISTEN_MAX, NULL, &listen_list, YD_REQUIRED},
    POLICY_KEYS(offsetof(struct service_in, pol)),
    /* Per service, not in "defaults:": a PROXY header is a contract with
     * particular backends or a particular balancer in front. */
    {"send_proxy", YD_ENUM, offsetof(struct service_in, send_proxy), 0, 0,
     "none", tbl_send_proxy_names, 0},
    {"accept_proxy", YD_ENUM, offsetof(struct service_in, accept_proxy), 0,
     0, "false", bool_names, 0},
    {"accept_proxy_timeout", YD_DURATION,
     offsetof(struct service_in, accept_proxy_timeout_ms), 1, 300000, "5s",
     NULL, 0},
    /* Source rules, per service too: who may reach a service is part of
     * what it is. An empty list is refused rather than read as "all" or
     * "none": leave the key out for everyone. */
    {"allow", YD_LIST, offsetof(struct service_in, allow), 1,
     CONF_SRC_RULES_MAX, NULL, &allow_list, 0},
    {"deny", YD_LIST, offsetof(struct service_in, deny), 1,
     CONF_SRC_RULES_MAX, NULL, &deny_list, 0},
    {"max_connections_per_source", YD_UINT,
     offsetof(struct service_in, max_per_source), 0, 10000000, "0", NULL, 0},
    {"connection_rate_per_source", YD_UINT,
     offsetof(struct service_in, rate_per_source), 0, 1000000, "0", NULL, 0},
    {"backends", YD_LIST, offsetof(struct service_in, backends), 1,
     CONF_BACKENDS_MAX, NULL, &backend_list, YD_REQUIRED},
    /* UDP (README: UDP services). Per service only: a flow's life is
     * the application's (DNS, syslog, a game), not the site's. */
    {"protocol", YD_ENUM, offsetof(struct service_in, protocol), 0, 0, "tcp",
     protocol_names, 0},
    {"udp_idle_timeout", YD_DURATION,
     offsetof(struct service_in, udp_idle_timeout_ms), 1, UINT32_MAX, "30s",
     NULL, 0},
    {"udp_responses", YD_UINT, offsetof(struct service_in, udp_responses), 0,
     1000000, "0", NULL, 0},
    {"max_flows", YD_UINT, offsetof(struct service_in, max_flows), 1,
     10000000, "10000", NULL, 0},
    {"sni", YD_LIST, offsetof(struct service_in, sni), 1, CONF_SNI_MAX, NULL,
     &sni_list, 0},
};
static const struct yd_section service_section = {
    "service", "name", service_keys, YD_NKEYS(service_keys)};

static const struct yd_list service_list = {
    "services", sizeof(struct service_in),
    {"services", YD_MAP, 0, 0, 0, NULL, &service_section, 0}, 0};

static const struct yd_key listener_keys[] = {
    {"listen", YD_ADDR, offsetof(struct listener_in, listen), 0, 0, NULL,
     NULL, YD_REQUIRED},
    {"default_service", YD_NAME, offsetof(struct listener_in, default_service),
     1, SERVICE_NAME_MAX, NULL, NULL, 0},
    {"client_hello_timeout", YD_DURATION,
     offsetof(struct listener_in, hello_timeout_ms), 1, 300000, "5s", NULL,
     0},
};
static const struct yd_section listener_section = {
    "listener", NULL, listener_keys, YD_NKEYS(listener_keys)};

static const struct yd_list listener_list = {
    "listeners", sizeof(struct listener_in),
    {"listeners", YD_MAP, 0, 0, 0, NULL, &listener_section, 0}, 0};

static const struct yd_key root_keys[] = {
    {"log", YD_MAP, offsetof(struct root_in, log), 0, 0, NULL, &log_section,
     0},
    {"drain_timeout", YD_DURATION, offsetof(struct root_in, drain_timeout_ms),
     0, UINT64_MAX, "30s", NULL, 0},
    {"defaults", YD_MAP, offsetof(struct root_in, defaults), 0, 0, NULL,
     &defaults_section, 0},
    {"services", YD_LIST, offsetof(struct root_in, services), 1,
     CONF_SERVICES_MAX, NULL, &service_list, 0},
    {"admin", YD_MAP, offsetof(struct root_in, admin), 0, 0, NULL,
     &admin_section, 0},
    {"kubernetes", YD_MAP, offsetof(struct root_in, kube), 0, 0, NULL,
     &kube_section, 0},
    {"node", YD_MAP, offsetof(struct root_in, node), 0, 0, NULL,
     &node_section, 0},
    {"relay", YD_MAP, offsetof(struct root_in, relay), 0, 0, NULL,
     &relay_section, 0},
    {"metrics", YD_MAP, offsetof(struct root_in, metrics), 0, 0, NULL,
     &metrics_section, 0},
    {"access_log", YD_MAP, offsetof(struct root_in, access_log), 0, 0, NULL,
     &access_log_section, 0},
    {"listeners", YD_LIST, offsetof(struct root_in, listeners), 1,
     CONF_LISTENERS_MAX, NULL, &listener_list, 0},
};
static const struct yd_section root_section = {"", NULL, root_keys,
                                               YD_NKEYS(root_keys)};

/* ---- after decoding: inheritance -------------------------------------- */

/* A service inherits each policy key it does not set from "defaults:". */
static void
inherit_policy(struct policy_in *svc, const struct policy_in *defaults)
{
    yamldec_inherit(&defaults_section, svc, defaults);
}

static const struct yd_key root_key = {"", YD_MAP, 0, 0, 0, NULL,
                                       &root_section, 0};

/* Row <name> of the top level. */
static const struct yd_key *
root_row(const char *name)
{
    size_t i;

    for (i = 0; i < YD_NKEYS(root_keys); i++)
        if (strcmp(root_keys[i].name, name) == 0)
            break;
    return &root_keys[i];
}

/* ---- cross-checks ------------------------------------------------------ */

/* An element of a flattened list, for duplicate searches. */
struct ref {
    const void *item;
    size_t idx;          /* order in the file */
    size_t owner;        /* service index */
    struct ydoc_pos pos; /* where the item is written */
};

typedef int item_cmp_fn(const void *a, const void *b);

static int
pos_cmp(struct ydoc_pos a, struct ydoc_pos b)
{
    if (a.line != b.line)
        return a.line < b.line ? -1 : 1;
    return a.col < b.col ? -1 : a.col > b.col;
}

static int
ref_cmp(const void *a, const void *b, void *arg)
{
    const struct ref *x = a, *y = b;
    item_cmp_fn *cmp = *(item_cmp_fn **)arg;
    int c = cmp(x->item, y->item);

    if (c != 0)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Find the first duplicate in file order among <refs> (sorted in place,
 * O(n log n) so that big lists stay cheap). Returns the index in <refs>
 * of the duplicate and sets <*orig> to the first item it repeats, or
 * returns -1. */
static long
find_dup(struct ref *refs, size_t n, item_cmp_fn *cmp, size_t *orig)
{
    size_t i, start = 0;
    long best = -1;

    qsort_r(refs, n, sizeof(*refs), ref_cmp, &cmp);
    for (i = 1; i <= n; i++) {
        if (i < n && cmp(refs[i].item, refs[start].item) == 0)
            continue;
        /* refs[start..i) are equal and in file order: the second repeats
         * the first. */
        if (i - start > 1
            && (best < 0 || pos_cmp(refs[start + 1].pos, refs[best].pos) < 0)) {
            best = (long)(start + 1);
            *orig = start;
        }
        start = i;
    }
    return best;
}

static int
addr_item_cmp(const void *a, const void *b)
{
    return saddr_cmp(a, b);
}

static int
name_item_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Family, then port: listen addresses that may overlap sort together. */
static int
port_item_cmp(const void *a, const void *b)
{
    const struct saddr *x = a, *y = b;
    int fx = x->u.sa.sa_family, fy = y->u.sa.sa_family;

    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (saddr_port(x) != saddr_port(y))
        return saddr_port(x) < saddr_port(y) ? -1 : 1;
    return 0;
}

/* Two listening sockets overlap when one would take connections meant
 * for the other: the same family and port, and the same IP or either one
 * the wildcard. IPv6 listeners are v6-only (conf/sock.c), so [::]:P and
 * 0.0.0.0:P do not overlap. */
static int
listen_overlaps(const struct saddr *a, const struct saddr *b)
{
    return port_item_cmp(a, b) == 0
           && (saddr_is_any(a) || saddr_is_any(b) || saddr_cmp(a, b) == 0);
}

/* A listen address and the earlier one it overlaps. */
struct clash {
    struct ref at, with;
    int exact; /* the same address */
};

/* Keep in <best> whichever clash comes first in the file. */
static void
keep_first(struct clash *best, int *have, const struct clash *c)
{
    if (!*have || pos_cmp(c->at.pos, best->at.pos) < 0) {
        *best = *c;
        *have = 1;
    }
}

/* Wildcard overlaps, with <refs> sorted by family, port and file order:
 * in each group of one family and port, the first address overlaps
 * nothing before it; then, if it is a wildcard, the second overlaps it,
 * else the group's first wildcard does. */
static void
find_wildcard_clash(const struct ref *refs, size_t n, struct clash *best,
                    int *have)
{
    size_t i, start = 0, k;

    for (i = 1; i <= n; i++) {
        if (i < n && port_item_cmp(refs[i].item, refs[start].item) == 0)
            continue;
        k = start + 1;
        if (!saddr_is_any(refs[start].item))
            while (k < i && !saddr_is_any(refs[k].item))
                k++;
        if (k < i) {
            struct clash c = {refs[k], refs[start], 0};
            keep_first(best, have, &c);
        }
        start = i;
    }
}

/* node.metrics_listen into <out>: family 0 for "off". Returns 0, or -1
 * with *why set. */
static int
metrics_listen(const struct node_in *n, struct saddr *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (strcmp(n->metrics, "off") == 0)
        return 0;
    return parse_hostport(n->metrics, out, 0, why);
}

#define SERVER_LISTENS_MAX 3

/* The listeners of ferry's own servers that a configuration turns on:
 * the admin server, and kube-proxy's health endpoints and metrics in
 * node mode. Returns how many were put in <out> (room for
 * SERVER_LISTENS_MAX). */
struct server_listen {
    const char *what;
    struct saddr addr;
};

static size_t
server_listens(const struct root_in *r, struct server_listen *out)
{
    const char *why;
    size_t n = 0;

    if (r->admin.enabled == 1) {
        out[n].what = "the admin server's listen";
        out[n].addr = r->admin.listen;
        if (out[n].addr.u.sa.sa_family == 0)
            parse_hostport(CONF_ADMIN_LISTEN_DEFAULT, &out[n].addr, 0, &why);
        n++;
    }
    if (r->kube.enabled == 1 && r->kube.mode == CONF_KUBE_NODE) {
        out[n].what = "node.healthz_listen";
        out[n].addr = r->node.healthz;
        if (out[n].addr.u.sa.sa_family == 0)
            parse_hostport(CONF_HEALTHZ_LISTEN_DEFAULT, &out[n].addr, 0,
                           &why);
        n++;
        out[n].what = "node.metrics_listen";
        if (metrics_listen(&r->node, &out[n].addr, &why) == 0
            && out[n].addr.u.sa.sa_family != 0)
            n++;
    }
    return n;
}

/* ---- shared listen addresses (README: SNI routing) -------------------- */

/* The "listeners:" entry of <a>, or NULL. */
static const struct listener_in *
listener_of(const struct root_in *r, const struct saddr *a)
{
    const struct listener_in *l = r->listeners.v;
    size_t i;

    for (i = 0; i < r->listeners.n; i++)
        if (saddr_cmp(&l[i].listen, a) == 0)
            return &l[i];
    return NULL;
}

/* One service's "sni:" list: host names or "*." and one, lower-cased
 * here, each once. */
static int
check_sni(struct service_in *svc, struct err *e)
{
    struct tbl_sni *v = svc->sni.v;
    struct ref *refs;
    size_t i, j, orig = 0;
    const char *why;
    long dup;

    for (i = 0; i < svc->sni.n; i++) {
        char *n = v[i].name;
        for (j = 0; n[j] != '\0'; j++)
            if (n[j] >= 'A' && n[j] <= 'Z')
                n[j] = (char)(n[j] - 'A' + 'a');
        if (n[0] == '*' && n[1] == '.')
            n += 2;
        if ((why = tlshello_name_check(n, strlen(n))) != NULL)
            return yamldec_fail(e, svc->sni.pos[i],
                                "sni \"%s\" of service \"%s\" %s (a host "
                                "name, or \"*.\" and one)",
                                v[i].name, svc->name, why);
    }
    refs = calloc(svc->sni.n, sizeof(*refs));
    if (refs == NULL)
        return err_set(e, "out of memory");
    for (i = 0; i < svc->sni.n; i++) {
        struct ref rf = {v[i].name, i, 0, svc->sni.pos[i]};
        refs[i] = rf;
    }
    dup = find_dup(refs, svc->sni.n, name_item_cmp, &orig);
    if (dup >= 0)
        yamldec_fail(e, refs[dup].pos, "sni \"%s\" is listed twice in "
                                       "service \"%s\"",
                     (const char *)refs[dup].item, svc->name);
    free(refs);
    return dup >= 0 ? -1 : 0;
}

/* No server name is named by two of the services <g> (<n> of them, in
 * file order) sharing an address. */
static int
check_sni_overlap(const struct root_in *r, const struct ref *g, size_t n,
                  struct err *e)
{
    const struct service_in *svc = r->services.v;
    char at[SADDR_STR_MAX];
    struct ref *refs;
    size_t i, j, k = 0, orig = 0;
    long dup;

    for (i = 0; i < n; i++)
        k += svc[g[i].owner].sni.n;
    if ((refs = calloc(k ? k : 1, sizeof(*refs))) == NULL)
        return err_set(e, "out of memory");
    for (k = 0, i = 0; i < n; i++) {
        const struct service_in *s = &svc[g[i].owner];
        for (j = 0; j < s->sni.n; j++, k++) {
            struct ref rf = {((const struct tbl_sni *)s->sni.v)[j].name, k,
                             g[i].owner, s->sni.pos[j]};
            refs[k] = rf;
        }
    }
    dup = find_dup(refs, k, name_item_cmp, &orig);
    if (dup >= 0)
        yamldec_fail(e, refs[dup].pos,
                     "sni \"%s\" of service \"%s\" is also named by "
                     "service \"%s\" on listen %s",
                     (const char *)refs[dup].item, svc[refs[dup].owner].name,
                     svc[refs[orig].owner].name,
                     saddr_str(g[0].item, at, sizeof(at)));
    free(refs);
    return dup >= 0 ? -1 : 0;
}

/* The <n> services <g> (file order) list one address. That is allowed
 * when each names servers (sni), but the address's default_service, they
 * agree on accept_proxy and no name is named twice. Returns 0 when
 * allowed, 1 when a service lists it twice (find_dup reports that), -1
 * with <e> filled otherwise. */
static int
check_shared(const struct root_in *r, const struct ref *g, size_t n,
             struct err *e)
{
    const struct service_in *svc = r->services.v;
    const struct listener_in *l = listener_of(r, g[0].item);
    char at[SADDR_STR_MAX];
    size_t i;

    int named = 0;

    for (i = 1; i < n; i++)
        if (g[i].owner == g[i - 1].owner)
            return 1;
    for (i = 0; i < n; i++)
        named |= svc[g[i].owner].sni.n > 0;
    if (!named)
        return 1; /* no server names: a plain clash */
    for (i = 0; i < n; i++) {
        const struct service_in *s = &svc[g[i].owner];
        if (s->sni.n == 0
            && (l == NULL || strcmp(l->default_service, s->name) != 0))
            return yamldec_fail(
                e, g[i > 0 ? i : 1].pos,
                "listen address %s is shared by services \"%s\" and "
                "\"%s\", but service \"%s\" has no \"sni:\" (only "
                "services with server names may share an address, and the "
                "address's default_service in \"listeners:\")",
                saddr_str(g[0].item, at, sizeof(at)), svc[g[0].owner].name,
                svc[g[i > 0 ? i : 1].owner].name, s->name);
        if (s->accept_proxy != svc[g[0].owner].accept_proxy)
            return yamldec_fail(e, g[i].pos,
                                "services \"%s\" and \"%s\" share listen "
                                "%s but not their accept_proxy",
                                svc[g[0].owner].name, s->name,
                                saddr_str(g[0].item, at, sizeof(at)));
    }
    return check_sni_overlap(r, g, n, e);
}

/* Services sharing an address through server names count once in the
 * overlap checks that follow: their groups in <refs> shrink to their
 * first entry. Returns the new count, or -1 with <e> filled. */
static long
collapse_shared(const struct root_in *r, struct ref *refs, size_t n,
                struct err *e)
{
    size_t i, start = 0, out = 0;
    int rc;

    qsort_r(refs, n, sizeof(*refs), ref_cmp, &(item_cmp_fn *){addr_item_cmp});
    for (i = 1; i <= n; i++) {
        if (i < n && saddr_cmp(refs[i].item, refs[start].item) == 0)
            continue;
        rc = i - start > 1 ? check_shared(r, refs + start, i - start, e) : 1;
        if (rc < 0)
            return -1;
        if (rc == 0)
            refs[out++] = refs[start];
        else
            while (start < i)
                refs[out++] = refs[start++];
        start = i;
    }
    return (long)out;
}

/* Each "listeners:" entry names an address where a service with server
 * names listens, once, and a default_service that exists and listens
 * there. */
static int
check_listeners(const struct root_in *r, struct err *e)
{
    const struct listener_in *l = r->listeners.v;
    const struct service_in *svc = r->services.v;
    char at[SADDR_STR_MAX];
    size_t k, i, j;

    for (k = 0; k < r->listeners.n; k++) {
        const struct service_in *def = NULL;
        int named = 0, there = 0;
        saddr_str(&l[k].listen, at, sizeof(at));
        if (listener_of(r, &l[k].listen) != &l[k])
            return yamldec_fail(e, r->listeners.pos[k],
                                "listener %s is given twice", at);
        for (i = 0; i < r->services.n; i++) {
            const struct saddr *a = svc[i].listen.v;
            int here = 0;
            for (j = 0; j < svc[i].listen.n && !here; j++)
                here = saddr_cmp(&a[j], &l[k].listen) == 0;
            named |= here && svc[i].sni.n > 0;
            if (strcmp(svc[i].name, l[k].default_service) == 0) {
                def = &svc[i];
                there = here;
            }
        }
        if (!named)
            return yamldec_fail(e, r->listeners.pos[k],
                                "listener %s: no service with \"sni:\" "
                                "listens there",
                                at);
        if (l[k].default_service[0] != '\0' && def == NULL)
            return yamldec_fail(e, r->listeners.pos[k],
                                "listener %s: default_service \"%s\" is not "
                                "a service",
                                at, l[k].default_service);
        if (def != NULL && !there)
            return yamldec_fail(e, r->listeners.pos[k],
                                "listener %s: default_service \"%s\" does "
                                "not listen on %s",
                                at, def->name, at);
    }
    return 0;
}

/* Every listen address of every service, and those of ferry's servers: none
 * may overlap another (a reload would refuse the second socket, or worse,
 * share the port and split the connections). */
static int
check_listen(const struct root_in *r, enum tbl_proto proto, struct err *e)
{
    const struct service_in *svc = r->services.v;
    char at[SADDR_STR_MAX], with[SADDR_STR_MAX];
    struct server_listen srv[SERVER_LISTENS_MAX];
    struct clash best;
    struct ref *refs;
    size_t i, j, k, n = 0, orig = 0, nsrv, which = 0;
    int have = 0;
    long dup;

    for (i = 0; i < r->services.n; i++)
        n += svc[i].listen.n;
    /* All protocols together; the overlaps are per protocol. */
    if (n > CONF_FRONTENDS_MAX)
        return yamldec_fail(e, r->services.pos[0],
                            "too many listen addresses in all (%zu, at most "
                            "%d)",
                            n, CONF_FRONTENDS_MAX);
    memset(&best, 0, sizeof(best));
    refs = calloc(n, sizeof(*refs));
    if (refs == NULL)
        return err_set(e, "out of memory");
    for (n = 0, i = 0; i < r->services.n; i++) {
        if (svc[i].protocol != proto)
            continue;
        for (j = 0; j < svc[i].listen.n; j++, n++) {
            struct ref rf = {(const struct saddr *)svc[i].listen.v + j, n, i,
                             svc[i].listen.pos[j]};
            refs[n] = rf;
        }
    }
    if ((dup = collapse_shared(r, refs, n, e)) < 0) {
        free(refs);
        return -1;
    }
    n = (size_t)dup;
    dup = find_dup(refs, n, addr_item_cmp, &orig);
    if (dup >= 0) {
        struct clash c = {refs[dup], refs[orig], 1};
        keep_first(&best, &have, &c);
    }
    qsort_r(refs, n, sizeof(*refs), ref_cmp, &(item_cmp_fn *){port_item_cmp});
    find_wildcard_clash(refs, n, &best, &have);
    /* ferry's own servers are TCP. */
    if (!have && proto == TBL_PROTO_TCP
        && (nsrv = server_listens(r, srv)) > 0) {
        for (k = 0; k < nsrv; k++) {
            for (i = 0; i < n; i++) {
                if (listen_overlaps(refs[i].item, &srv[k].addr)
                    && (!have || pos_cmp(refs[i].pos, best.at.pos) < 0)) {
                    best.at = refs[i];
                    which = k;
                    have = 1;
                }
            }
        }
        if (have)
            yamldec_fail(e, best.at.pos,
                         "listen %s of service \"%s\" overlaps %s %s",
                         saddr_str(best.at.item, at, sizeof(at)),
                         svc[best.at.owner].name, srv[which].what,
                         saddr_str(&srv[which].addr, with, sizeof(with)));
        for (i = 0; !have && i < nsrv; i++)
            for (k = i + 1; !have && k < nsrv; k++)
                if (listen_overlaps(&srv[i].addr, &srv[k].addr))
                    have = 1, err_set(e, "%s %s overlaps %s %s", srv[i].what,
                                      saddr_str(&srv[i].addr, at, sizeof(at)),
                                      srv[k].what,
                                      saddr_str(&srv[k].addr, with,
                                                sizeof(with)));
    } else if (have && best.exact) {
        yamldec_fail(e, best.at.pos,
                     "listen address %s already used by service \"%s\"",
                     saddr_str(best.at.item, at, sizeof(at)),
                     svc[best.with.owner].name);
    } else if (have) {
        yamldec_fail(e, best.at.pos,
                     "listen %s of service \"%s\" overlaps %s of service "
                     "\"%s\"",
                     saddr_str(best.at.item, at, sizeof(at)),
                     svc[best.at.owner].name,
                     saddr_str(best.with.item, with, sizeof(with)),
                     svc[best.with.owner].name);
    }
    free(refs);
    return have ? -1 : 0;
}

/* Backends of one service: an address listed twice would share one live
 * state (it is keyed by address), and names must tell backends apart. */
static int
check_backends(const struct service_in *svc, struct err *e)
{
    const struct backend_in *be = svc->backends.v;
    char txt[SADDR_STR_MAX];
    struct ref *refs;
    size_t i, n = svc->backends.n, orig = 0;
    long dup;
    int pass;

    refs = calloc(n, sizeof(*refs));
    if (refs == NULL)
        return err_set(e, "out of memory");
    for (pass = 0; pass < 2; pass++) {
        for (i = 0; i < n; i++) {
            struct ref rf = {pass ? (const void *)be[i].name
                                  : (const void *)&be[i].addr,
                             i, 0, svc->backends.pos[i]};
            refs[i] = rf;
        }
        dup = find_dup(refs, n, pass ? name_item_cmp : addr_item_cmp, &orig);
        if (dup >= 0 && pass == 0)
            yamldec_fail(e, refs[dup].pos,
                         "backend address %s is listed twice in service "
                         "\"%s\"",
                         saddr_str(refs[dup].item, txt, sizeof(txt)),
                         svc->name);
        else if (dup >= 0)
            yamldec_fail(e, refs[dup].pos,
                         "duplicate backend name \"%s\" in service \"%s\"",
                         (const char *)refs[dup].item, svc->name);
        if (dup >= 0)
            break;
    }
    free(refs);
    return dup >= 0 ? -1 : 0;
}

static int
check_services(struct root_in *r, struct err *e)
{
    struct service_in *svc = r->services.v;
    struct saddr probe;
    const char *why;
    struct ref *refs;
    size_t i, j, orig = 0;
    long dup;

    refs = calloc(r->services.n, sizeof(*refs));
    if (refs == NULL)
        return err_set(e, "out of memory");
    for (i = 0; i < r->services.n; i++) {
        struct ref rf = {svc[i].name, i, i, r->services.pos[i]};
        refs[i] = rf;
    }
    dup = find_dup(refs, r->services.n, name_item_cmp, &orig);
    if (dup >= 0)
        yamldec_fail(e, refs[dup].pos, "duplicate service name \"%s\"",
                     (const char *)refs[dup].item);
    free(refs);
    if (dup >= 0)
        return -1;
    for (i = 0; i < r->services.n; i++) {
        struct backend_in *be = svc[i].backends.v;
        /* An unnamed backend is called by its address. */
        for (j = 0; j < svc[i].backends.n; j++)
            if (be[j].name[0] == '\0')
                saddr_str(&be[j].addr, be[j].name, sizeof(be[j].name));
        if (check_backends(&svc[i], e) < 0 || check_sni(&svc[i], e) < 0)
            return -1;
    }
    if (metrics_listen(&r->node, &probe, &why) < 0)
        return err_set(e, "node.metrics_listen \"%s\": %s (an address with "
                          "port, or off)",
                       r->node.metrics, why);
    if (check_listen(r, TBL_PROTO_TCP, e) < 0
        || check_listen(r, TBL_PROTO_UDP, e) < 0)
        return -1;
    return check_listeners(r, e);
}

/* ---- building the table ------------------------------------------------ */

static void
build_check(struct tbl_check *c, const struct check_in *in)
{
    c->type = (enum tbl_check_type)in->type;
    c->interval_ms = (uint32_t)in->interval_ms;
    c->timeout_ms = (uint32_t)in->timeout_ms;
    c->rise = (uint32_t)in->rise;
    c->fall = (uint32_t)in->fall;
    c->port = (uint16_t)in->port;
    c->status_min = (uint16_t)(in->expect >> 16);
    c->status_max = (uint16_t)(in->expect & 0xffff);
    /* Borrowed from <in>: a table copies it, and so does conf_load()
     * for the defaults. */
    c->path = in->path[0] ? in->path : "/";
}

/* The policy fields of a table service from a "defaults:" or service
 * policy. */
static void
policy_to_tbl(const struct policy_in *pol, struct tbl_service *s)
{
    s->balance = (enum tbl_balance)pol->balance;
    s->connect_timeout_ms = (uint32_t)pol->connect_timeout_ms;
    s->idle_timeout_ms = (uint32_t)pol->idle_timeout_ms;
    s->retries = (uint32_t)pol->retries;
    s->max_conns = (uint32_t)pol->max_conns;
    s->drain_timeout_ms = (uint32_t)pol->drain_timeout_ms;
    build_check(&s->check, &pol->check);
}

static int
add_service(struct table *t, const struct service_in *in, struct ydoc_pos pos,
            struct err *e)
{
    const struct backend_in *be = in->backends.v;
    char name[TBL_NAME_MAX];
    struct tbl_service s;
    size_t i;
    int rc;

    memset(&s, 0, sizeof(s));
    snprintf(name, sizeof(name), "%s", in->name);
    s.name = name; /* copied by the table */
    s.frontends = in->listen.v;
    s.nfrontends = in->listen.n;
    s.nbackends = in->backends.n;
    s.backends = calloc(s.nbackends, sizeof(*s.backends));
    if (s.backends == NULL)
        return err_set(e, "out of memory");
    for (i = 0; i < s.nbackends; i++) {
        s.backends[i].addr = be[i].addr;
        s.backends[i].name = be[i].name; /* copied by the table */
        s.backends[i].weight = (uint32_t)be[i].weight;
        s.backends[i].flags = TBL_BE_READY | TBL_BE_SERVING;
    }
    policy_to_tbl(&in->pol, &s);
    s.send_proxy = (enum tbl_send_proxy)in->send_proxy;
    s.accept_proxy = in->accept_proxy == 1;
    s.accept_proxy_timeout_ms = (uint32_t)in->accept_proxy_timeout_ms;
    s.allow = in->allow.v;
    s.nallow = in->allow.n;
    s.deny = in->deny.v;
    s.ndeny = in->deny.n;
    s.max_conns_per_source = (uint32_t)in->max_per_source;
    s.conn_rate_per_source = (uint32_t)in->rate_per_source;
    s.proto = (enum tbl_proto)in->protocol;
    if (s.proto == TBL_PROTO_UDP) {
        s.udp_idle_timeout_ms = (uint32_t)in->udp_idle_timeout_ms;
        s.udp_responses = (uint32_t)in->udp_responses;
        s.max_flows = (uint32_t)in->max_flows;
    }
    s.sni = in->sni.v;
    s.nsni = in->sni.n;
    rc = table_add_service(t, &s, e);
    free(s.backends);
    if (rc < 0) {
        e->line = pos.line;
        e->col = pos.col;
    }
    return rc;
}

static int
build_kube(struct conf *c, const struct root_in *r, struct err *e)
{
    const struct saddr *ips = r->node.nodeport_addrs.v;
    const char *why;
    size_t i;

    c->kube.enabled = r->kube.enabled == 1;
    c->kube.mode = (enum conf_kube_mode)r->kube.mode;
    c->kube.edge_backends = (enum conf_edge_backends)r->kube.edge_backends;
    if (r->kube.edge_nodes.n > 0) {
        c->kube.edge_nodes = calloc(r->kube.edge_nodes.n, sizeof(struct saddr));
        if (c->kube.edge_nodes == NULL)
            return err_set(e, "out of memory");
        memcpy(c->kube.edge_nodes, r->kube.edge_nodes.v,
               r->kube.edge_nodes.n * sizeof(struct saddr));
        c->kube.n_edge_nodes = r->kube.edge_nodes.n;
    }
    memcpy(c->kube.kubeconfig, r->kube.kubeconfig, sizeof(c->kube.kubeconfig));
    memcpy(c->kube.api_server, r->kube.api_server, sizeof(c->kube.api_server));
    memcpy(c->kube.sa_dir, r->kube.sa_dir, sizeof(c->kube.sa_dir));
    memcpy(c->kube.node_name, r->kube.node_name, sizeof(c->kube.node_name));
    memcpy(c->kube.service_proxy_name, r->kube.proxy_name,
           sizeof(c->kube.service_proxy_name));
    memcpy(c->kube.service_selector, r->kube.selector,
           sizeof(c->kube.service_selector));
    c->kube.insecure_skip_tls_verify = r->kube.insecure == 1;
    memcpy(c->node.vip_interface, r->node.vip_interface,
           sizeof(c->node.vip_interface));
    c->node.healthz_listen = r->node.healthz;
    if (c->node.healthz_listen.u.sa.sa_family == 0)
        parse_hostport(CONF_HEALTHZ_LISTEN_DEFAULT, &c->node.healthz_listen, 0,
                       &why);
    (void)metrics_listen(&r->node, &c->node.metrics_listen, &why);
    c->node.dataplane = (enum conf_dataplane)r->node.dataplane;
    c->node.masquerade = (enum conf_masquerade)r->node.masquerade;
    c->node.proxy_port = (uint16_t)r->node.proxy_port;
    c->node.proxy_steering = (enum conf_steering)r->node.steering;
    c->node.n_cluster_cidrs = r->node.cluster_cidrs.n;
    if (c->node.n_cluster_cidrs > 0)
        memcpy(c->node.cluster_cidrs, r->node.cluster_cidrs.v,
               c->node.n_cluster_cidrs * sizeof(struct cidr));
    c->node.n_service_cidrs = r->node.service_cidrs.n;
    if (c->node.n_service_cidrs > 0)
        memcpy(c->node.service_cidrs, r->node.service_cidrs.v,
               c->node.n_service_cidrs * sizeof(struct cidr));
    c->node.n_nodeport_addrs = r->node.nodeport_addrs.n;
    if (c->node.n_nodeport_addrs > 0) {
        c->node.nodeport_addrs =
            calloc(c->node.n_nodeport_addrs, sizeof(struct saddr));
        if (c->node.nodeport_addrs == NULL)
            return err_set(e, "out of memory");
        for (i = 0; i < c->node.n_nodeport_addrs; i++)
            c->node.nodeport_addrs[i] = ips[i];
    }
    return 0;
}

/* Read the token of admin.token_file <path>: the file's contents without
 * surrounding white space, visible ASCII only. Returns 0, or -1 with <e>
 * filled. */
static int
read_token(const char *path, char *tok, size_t *len, struct err *e)
{
    char buf[CONF_TOKEN_MAX + 256];
    size_t n = 0, i, b, end;
    ssize_t got;
    int fd, err;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return err_set(e, "cannot open admin.token_file %s: %s", path,
                       strerror(errno));
    while (n < sizeof(buf)
           && (got = read(fd, buf + n, sizeof(buf) - n)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            err = errno;
            close(fd);
            return err_set(e, "cannot read admin.token_file %s: %s", path,
                           strerror(err));
        }
        n += (size_t)got;
    }
    close(fd);
    for (b = 0; b < n && strchr(" \t\r\n", buf[b]) != NULL; b++)
        ;
    for (end = n; end > b && strchr(" \t\r\n", buf[end - 1]) != NULL; end--)
        ;
    if (end == b)
        return err_set(e, "admin.token_file %s is empty", path);
    if (n == sizeof(buf) || end - b > CONF_TOKEN_MAX)
        return err_set(e, "admin.token_file %s: the token is longer than %d "
                          "bytes",
                       path, CONF_TOKEN_MAX);
    for (i = b; i < end; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            return err_set(e, "admin.token_file %s: the token holds a space "
                              "or a byte that is not visible ASCII",
                           path);
    memcpy(tok, buf + b, end - b);
    *len = end - b;
    return 0;
}

static void
build_access_log(struct conf_access_log *a, const struct access_log_in *in)
{
    a->enabled = in->enabled == 1;
    a->format = (enum conf_access_log_format)in->format;
    a->target = (enum conf_access_log_target)in->target;
    memcpy(a->path, in->path, sizeof(a->path));
    memcpy(a->syslog_socket, in->syslog_socket, sizeof(a->syslog_socket));
    a->syslog_facility = (enum conf_syslog_facility)in->facility;
    a->buffer = (uint32_t)in->buffer;
}

/* FERRY_RELAY_ENGINE, when set, overrides relay.engine: an engine is
 * tried on a host, or a whole test suite run on it, with no config
 * edited. */
static int
env_engine(enum conf_engine *engine, struct err *e)
{
    const char *v = getenv("FERRY_RELAY_ENGINE");
    size_t i;

    if (v == NULL || *v == '\0')
        return 0;
    for (i = 0; conf_engine_names[i] != NULL; i++)
        if (strcmp(v, conf_engine_names[i]) == 0) {
            *engine = (enum conf_engine)i;
            return 0;
        }
    return err_set(e, "FERRY_RELAY_ENGINE: \"%.32s\" is not an engine "
                      "(epoll, io_uring)",
                   v);
}

static struct conf *
build(struct root_in *r, struct err *e)
{
    const struct service_in *svc = r->services.v;
    struct conf *c;
    size_t i;

    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->table = table_new()) == NULL) {
        free(c);
        err_set(e, "out of memory");
        return NULL;
    }
    c->log_level = (enum log_level)r->log.level;
    c->log_format = (enum log_format)r->log.format;
    c->drain_timeout_ms = r->drain_timeout_ms;
    c->relay.splice = (enum conf_splice)r->relay.splice;
    c->relay.engine = (enum conf_engine)r->relay.engine;
    if (env_engine(&c->relay.engine, e) < 0) {
        conf_free(c);
        return NULL;
    }
    c->relay.pipe_budget = (uint32_t)r->relay.pipe_budget;
    c->relay.workers = (uint32_t)r->relay.workers;
    c->metrics.per_backend = (enum conf_per_backend)r->metrics.per_backend;
    build_access_log(&c->access_log, &r->access_log);
    c->admin.enabled = r->admin.enabled == 1;
    c->admin.listen = r->admin.listen;
    if (c->admin.listen.u.sa.sa_family == 0) {
        const char *why;
        parse_hostport(CONF_ADMIN_LISTEN_DEFAULT, &c->admin.listen, 0, &why);
    }
    c->admin.request_timeout_ms = (uint32_t)r->admin.request_timeout_ms;
    c->admin.api_grace_ms = (uint32_t)r->admin.api_grace_ms;
    memcpy(c->admin.token_file, r->admin.token_file,
           sizeof(c->admin.token_file));
    if (c->admin.enabled && c->admin.token_file[0] != '\0'
        && read_token(c->admin.token_file, c->admin.token,
                      &c->admin.token_len, e) < 0) {
        conf_free(c);
        return NULL;
    }
    policy_to_tbl(&r->defaults, &c->defaults);
    snprintf(c->defaults_check_path, sizeof(c->defaults_check_path), "%s",
             c->defaults.check.path);
    c->defaults.check.path = c->defaults_check_path;
    if (build_kube(c, r, e) < 0) {
        conf_free(c);
        return NULL;
    }
    /* Listener entries first: the table lets a default_service share
     * an address once it knows it is one. */
    for (i = 0; i < r->listeners.n; i++) {
        const struct listener_in *l = (const struct listener_in *)
                                          r->listeners.v + i;
        struct tbl_listener tl;
        memset(&tl, 0, sizeof(tl));
        tl.addr = l->listen;
        memcpy(tl.default_service, l->default_service,
               sizeof(l->default_service));
        tl.client_hello_timeout_ms = (uint32_t)l->hello_timeout_ms;
        if (table_add_listener(c->table, &tl, e) < 0) {
            conf_free(c);
            return NULL;
        }
    }
    for (i = 0; i < r->services.n; i++) {
        if (add_service(c->table, &svc[i], r->services.pos[i], e) < 0) {
            conf_free(c);
            return NULL;
        }
    }
    table_freeze(c->table, 0);
    return c;
}

/* Defaults, inheritance and cross-checks, once the whole file is read:
 * "defaults:" may come after "services:". */
static struct conf *
finish(struct root_in *r, struct err *e)
{
    struct service_in *svc = r->services.v;
    size_t i;

    if (yamldec_fill_defaults(root_row("defaults"), r, e) < 0)
        return NULL;
    for (i = 0; i < r->services.n; i++)
        inherit_policy(&svc[i].pol, &r->defaults);
    if (yamldec_fill_defaults(&root_key, r, e) < 0 || check_services(r, e) < 0)
        return NULL;
    /* Services come from the file, the API, or both; never from neither. */
    if (r->services.n == 0 && r->kube.enabled != 1) {
        struct ydoc_pos top = {1, 1};
        return yamldec_fail(e, top, "config has no services (add a "
                                    "\"services:\" list, or enable "
                                    "\"kubernetes:\")"),
               NULL;
    }
    if (r->access_log.target == CONF_ACCESS_LOG_FILE
        && r->access_log.path[0] == '\0') {
        struct ydoc_pos top = {1, 1};
        return yamldec_fail(e, top, "access_log: \"target: file\" needs "
                                    "the file's \"path\""),
               NULL;
    }
    if (r->kube.edge_backends == CONF_EDGE_NODEPORTS
        && r->kube.edge_nodes.n == 0) {
        struct ydoc_pos top = {1, 1};
        return yamldec_fail(e, top, "kubernetes: \"edge_backends: "
                                    "nodeports\" needs the nodes' addresses "
                                    "in \"edge_nodes\""),
               NULL;
    }
    return build(r, e);
}

/* ---- keys of one protocol --------------------------------------------- */

/* A key written in a service of the other protocol, and why it does not
 * apply there. */
struct proto_key {
    const char *name;
    const char *hint;
};

static const struct proto_key tcp_only_keys[] = {
    {"connect_timeout", ""},
    {"idle_timeout", " (a flow ends after udp_idle_timeout)"},
    {"retries", ""},
    {"max_connections", " (use max_flows)"},
    {"send_proxy", ""},
    {"accept_proxy", ""},
    {"accept_proxy_timeout", ""},
    {"max_connections_per_source", ""},
    {"connection_rate_per_source", ""},
    {"drain_timeout", " (a flow keeps its backend until it ends)"},
    {"sni", ""},
};

static const struct proto_key udp_only_keys[] = {
    {"udp_idle_timeout", ""},
    {"udp_responses", ""},
    {"max_flows", ""},
};

/* Refuse, at its line and column, a key a service sets that its protocol
 * has no use for: a TCP setting on a UDP service or the reverse. Keys
 * inherited from "defaults:" are not written in the service and pass. */
static int
check_protocol_keys(const struct ydoc *doc, const struct ydoc_node *root,
                    const struct root_in *r, struct err *e)
{
    const struct ydoc_node *list = ydoc_get(doc, root, "services");
    const struct service_in *svc = r->services.v;
    size_t i, k, nk;

    if (list == NULL || list->type != YDOC_LIST)
        return 0;
    for (i = 0; i < r->services.n && i < list->len; i++) {
        const struct ydoc_node *item = ydoc_item(doc, list, i);
        int udp = svc[i].protocol == TBL_PROTO_UDP;
        const struct proto_key *keys = udp ? tcp_only_keys : udp_only_keys;
        nk = udp ? YD_NKEYS(tcp_only_keys) : YD_NKEYS(udp_only_keys);
        for (k = 0; item != NULL && k < nk; k++) {
            const struct ydoc_node *v = ydoc_get(doc, item, keys[k].name);
            if (v == NULL)
                continue;
            return yamldec_fail(e, v->pos,
                                "%s applies to %s services only, and service "
                                "\"%s\" is %s%s",
                                keys[k].name, udp ? "TCP" : "UDP",
                                svc[i].name, udp ? "UDP" : "TCP",
                                keys[k].hint);
        }
    }
    return 0;
}

/* ---- loading ---------------------------------------------------------- */

static const struct ydoc_limits conf_limits = {CONF_DEPTH_MAX,
                                               CONF_ALIAS_SLACK};

static struct conf *
decode(const struct ydoc *doc, struct err *e)
{
    const struct ydoc_node *root = ydoc_root(doc);
    struct ydoc_pos one = {1, 1};
    struct conf *c = NULL;
    struct root_in r;

    if (root == NULL || ydoc_is_null(doc, root))
        return yamldec_fail(e, one, "config is empty (expected a mapping "
                                    "with a \"services\" list)"),
               NULL;
    memset(&r, 0, sizeof(r));
    yamldec_init(&root_key, &r);
    if (yamldec_decode(doc, root, &root_key, &r, "config", e) == 0
        && check_protocol_keys(doc, root, &r, e) == 0)
        c = finish(&r, e);
    yamldec_free(&root_key, &r);
    return c;
}

struct conf *
conf_load_buf(const char *name, const char *buf, size_t len, struct err *e)
{
    struct conf *c = NULL;
    struct ydoc_pos pos;
    struct ydoc *doc;
    struct err local;

    if (e == NULL)
        e = &local;
    err_clear(e);
    snprintf(e->file, sizeof(e->file), "%s", name ? name : "");
    if (len > CONF_FILE_MAX) {
        err_set(e, "config is too large (%zu bytes, at most 4 MiB)", len);
        return NULL;
    }
    doc = ydoc_load(buf, len, &conf_limits, e);
    if (doc == NULL)
        return NULL;
    c = decode(doc, e);
    /* A second document would be ignored silently; refuse it instead,
     * once the first one is checked so that its errors come first. */
    if (c != NULL) {
        int more = ydoc_next(doc, &pos, e);
        if (more > 0)
            yamldec_fail(e, pos, "config must be a single YAML document");
        if (more != 0) {
            conf_free(c);
            c = NULL;
        }
    }
    ydoc_free(doc);
    return c;
}

/* Read all of <fd> into a new buffer. Reads until EOF rather than
 * trusting fstat, so pipes and /proc files work too; one byte more than
 * the limit tells a file that is too large. */
static char *
read_all(int fd, size_t *lenp, struct err *e)
{
    char *buf = malloc(CONF_FILE_MAX + 1);
    size_t len = 0;
    ssize_t n;

    if (buf == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    while (len <= CONF_FILE_MAX) {
        n = read(fd, buf + len, CONF_FILE_MAX + 1 - len);
        if (n == 0)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_set(e, "cannot read: %s", strerror(errno));
            free(buf);
            return NULL;
        }
        len += (size_t)n;
    }
    if (len > CONF_FILE_MAX) {
        err_set(e, "config file is too large (more than 4 MiB)");
        free(buf);
        return NULL;
    }
    *lenp = len;
    return buf;
}

struct conf *
conf_load_file(const char *path, struct err *e)
{
    struct err local;
    struct conf *c;
    struct stat st;
    size_t len = 0;
    char *buf;
    int fd;

    if (e == NULL)
        e = &local;
    err_clear(e);
    snprintf(e->file, sizeof(e->file), "%s", path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(e, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > CONF_FILE_MAX) {
        err_set(e, "config file is too large (%lld bytes, at most 4 MiB)",
                (long long)st.st_size);
        close(fd);
        return NULL;
    }
    buf = read_all(fd, &len, e);
    close(fd);
    if (buf == NULL)
        return NULL;
    c = conf_load_buf(path, buf, len, e);
    free(buf);
    return c;
}

void
conf_free(struct conf *c)
{
    if (c == NULL)
        return;
    table_unref(c->table);
    free(c->node.nodeport_addrs);
    free(c->kube.edge_nodes);
    free(c);
}
