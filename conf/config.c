/*
 * config.c - the YAML config loader.
 *
 * The file is loaded with libyaml's document API, so every node keeps its
 * start mark and errors can say FILE:LINE:COL. Decoding is driven by key
 * tables (struct key rows grouped in struct section): one generic decoder
 * walks a mapping, looks each key up in its section's table and stores the
 * value at the row's offset. Values land first in plain "input" structs
 * (root_in, service_in, ...), where numbers left out of the file hold
 * UNSET; once the whole document is decoded, defaults are filled in
 * (services inherit the "defaults:" section wherever it sits in the file),
 * cross-references are checked and the service table is built.
 *
 * To add a section (admin:, health_check:, ...): add its input struct as a
 * member of root_in (or service_in), write its rows, and add one KEY_MAP
 * row pointing at the new section to the parent's table.
 *
 * Every input is bounded: the file size, each list's length, the length of
 * every name, and the number of nodes decoded (aliases let a small document
 * name the same subtree many times; the budget keeps the work linear).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "parse.h"

#define CONF_SERVICES_MAX  4096
#define CONF_LISTEN_MAX    256   /* per service */
#define CONF_BACKENDS_MAX  4096  /* per service */
#define CONF_FRONTENDS_MAX 8192  /* all services; table_add_service is O(n) */
#define CONF_ALIAS_SLACK   65536 /* node visits allowed beyond the node count */
#define SERVICE_NAME_MAX   63
#define SHOW_MAX           48 /* bytes of user text quoted in a message */

#define UNSET UINT64_MAX

/* ---- input structs: what the file said, before defaults ---------------- */

struct pos {
    int line; /* 1-based */
    int col;
};

/* A decoded YAML list; the length is known before anything is stored. */
struct arr {
    void *v;
    struct pos *pos; /* where each element starts */
    size_t n;
};

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
    struct check_in check;
};

struct backend_in {
    struct saddr addr;
    char name[TBL_NAME_MAX];
    uint64_t weight;
};

struct service_in {
    char name[SERVICE_NAME_MAX + 1];
    struct arr listen;   /* struct saddr */
    struct arr backends; /* struct backend_in */
    struct policy_in pol;
};

struct log_in {
    uint64_t level;  /* enum log_level */
    uint64_t format; /* enum log_format */
};

struct relay_in {
    uint64_t splice; /* enum conf_splice */
    uint64_t pipe_budget;
    uint64_t workers; /* 0: one per CPU */
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
    struct arr edge_nodes;  /* struct saddr */
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
    struct arr nodeport_addrs; /* struct saddr, port unused */
    struct saddr healthz;      /* family 0: not given */
};

struct root_in {
    struct log_in log;
    struct relay_in relay;
    struct admin_in admin;
    struct kube_in kube;
    struct node_in node;
    uint64_t drain_timeout_ms;
    struct policy_in defaults;
    struct arr services; /* struct service_in */
};

/* ---- key tables -------------------------------------------------------- */

enum key_type {
    KEY_UINT,     /* uint64_t, decimal, within [min, max] */
    KEY_DURATION, /* uint64_t milliseconds, within [min, max] */
    KEY_ENUM,     /* uint64_t index into sub, a NULL-terminated name list */
    KEY_NAME,     /* char[max + 1]; 1..max chars of the row's charset */
    KEY_ADDR,     /* struct saddr, "IPv4:port" or "[IPv6]:port" */
    KEY_RANGE,    /* uint64_t lo << 16 | hi from "lo-hi" or "n", in [min, max] */
    KEY_PATH,     /* char[max + 1]: "/..." of printable ASCII, no spaces */
    KEY_STRING,   /* char[max + 1]: min..max printable characters */
    KEY_IP,       /* struct saddr, an IP literal without a port */
    KEY_MAP,      /* nested mapping; sub is its struct section */
    KEY_LIST,     /* struct arr of min..max elements; sub is a list_spec */
};

#define KEY_REQUIRED  0x01u /* must be present */
#define KEY_ADDRCHARS 0x02u /* KEY_NAME may also hold ':', '[' and ']' */

struct key {
    const char *name;
    enum key_type type;
    size_t offset;
    uint64_t min, max;
    const char *def; /* default as text, parsed like the file; or NULL */
    const void *sub;
    unsigned flags;
};

struct section {
    const char *what;      /* "service", or "section \"log\"" */
    const char *label_key; /* key naming a list element, or NULL */
    const struct key *keys;
    size_t nkeys; /* at most 64: the decoder tracks them in a bitmask */
};

struct list_spec {
    const char *what; /* noun for "has no ...": "backends" */
    size_t elem_size;
    struct key elem;  /* how to decode one element, at offset 0 */
    int scalar_ok;    /* a lone scalar is a list of one */
};

#define NKEYS(a) (sizeof(a) / sizeof((a)[0]))

static const char *const balance_names[] = {
    [TBL_BAL_ROUNDROBIN] = "roundrobin",
    [TBL_BAL_LEASTCONN] = "leastconn",
    [TBL_BAL_RANDOM] = "random",
    [TBL_BAL__COUNT] = NULL,
};

static const char *const level_names[] = {
    [LOG_DEBUG] = "debug", [LOG_INFO] = "info", [LOG_WARN] = "warn",
    [LOG_ERROR] = "error", NULL,
};

static const char *const format_names[] = {
    [LOG_TEXT] = "text", [LOG_JSON] = "json", NULL,
};

static const char *const check_names[] = {
    [TBL_CHECK_NONE] = "none", [TBL_CHECK_TCP] = "tcp",
    [TBL_CHECK_HTTP] = "http", NULL,
};

static const char *const bool_names[] = {"false", "true", NULL};

/* "health_check:" rows. Numbers inherit from "defaults:" one by one (see
 * inherit_policy), so a service may change only its path. */
static const struct key check_keys[] = {
    {"type", KEY_ENUM, offsetof(struct check_in, type), 0, 0, "none",
     check_names, 0},
    {"path", KEY_PATH, offsetof(struct check_in, path), 1,
     TBL_CHECK_PATH_MAX - 1, NULL, NULL, 0},
    {"expect_status", KEY_RANGE, offsetof(struct check_in, expect), 100, 599,
     "200-399", NULL, 0},
    {"interval", KEY_DURATION, offsetof(struct check_in, interval_ms), 10,
     3600000, "5s", NULL, 0},
    {"timeout", KEY_DURATION, offsetof(struct check_in, timeout_ms), 1,
     3600000, "2s", NULL, 0},
    {"rise", KEY_UINT, offsetof(struct check_in, rise), 1, 100, "2", NULL, 0},
    {"fall", KEY_UINT, offsetof(struct check_in, fall), 1, 100, "3", NULL, 0},
    {"port", KEY_UINT, offsetof(struct check_in, port), 0, 65535, "0", NULL,
     0},
};
static const struct section check_section = {
    "section \"health_check\"", NULL, check_keys, NKEYS(check_keys)};

static const struct key admin_keys[] = {
    {"enabled", KEY_ENUM, offsetof(struct admin_in, enabled), 0, 0, "false",
     bool_names, 0},
    {"listen", KEY_ADDR, offsetof(struct admin_in, listen), 0, 0, NULL, NULL,
     0},
    {"request_timeout", KEY_DURATION,
     offsetof(struct admin_in, request_timeout_ms), 10, 3600000, "5s", NULL,
     0},
    {"api_failure_grace", KEY_DURATION,
     offsetof(struct admin_in, api_grace_ms), 0, UINT32_MAX, "60s", NULL, 0},
    /* A path like kubernetes.kubeconfig, but "" is allowed: no token. */
    {"token_file", KEY_STRING, offsetof(struct admin_in, token_file), 0,
     CONF_STR_MAX, NULL, NULL, 0},
};
static const struct section admin_section = {
    "section \"admin\"", NULL, admin_keys, NKEYS(admin_keys)};

#define STR_KEY(name, st, field, def)                                          \
    {name, KEY_STRING, offsetof(st, field), 1, CONF_STR_MAX, def, NULL, 0}

static const char *const kube_mode_names[] = {
    [CONF_KUBE_NODE] = "node", [CONF_KUBE_EDGE] = "edge", NULL,
};

static const char *const edge_backend_names[] = {
    [CONF_EDGE_PODS] = "pods", [CONF_EDGE_NODEPORTS] = "nodeports", NULL,
};

static const struct list_spec edge_node_list = {
    "edge nodes", sizeof(struct saddr),
    {"edge_nodes", KEY_IP, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct key kube_keys[] = {
    {"enabled", KEY_ENUM, offsetof(struct kube_in, enabled), 0, 0, "false",
     bool_names, 0},
    {"mode", KEY_ENUM, offsetof(struct kube_in, mode), 0, 0, "node",
     kube_mode_names, 0},
    {"edge_backends", KEY_ENUM, offsetof(struct kube_in, edge_backends), 0, 0,
     "pods", edge_backend_names, 0},
    {"edge_nodes", KEY_LIST, offsetof(struct kube_in, edge_nodes), 1, 1024,
     NULL, &edge_node_list, 0},
    STR_KEY("kubeconfig", struct kube_in, kubeconfig, NULL),
    STR_KEY("api_server", struct kube_in, api_server, NULL),
    STR_KEY("serviceaccount_dir", struct kube_in, sa_dir,
            "/var/run/secrets/kubernetes.io/serviceaccount"),
    {"insecure_skip_tls_verify", KEY_ENUM, offsetof(struct kube_in, insecure),
     0, 0, "false", bool_names, 0},
    STR_KEY("node_name", struct kube_in, node_name, NULL),
    STR_KEY("service_proxy_name", struct kube_in, proxy_name, NULL),
    STR_KEY("service_selector", struct kube_in, selector, NULL),
};
static const struct section kube_section = {
    "section \"kubernetes\"", NULL, kube_keys, NKEYS(kube_keys)};

static const struct list_spec ip_list = {
    "addresses", sizeof(struct saddr),
    {"node_port_addresses", KEY_IP, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct key node_keys[] = {
    STR_KEY("vip_interface", struct node_in, vip_interface, "auto"),
    {"node_port_addresses", KEY_LIST, offsetof(struct node_in, nodeport_addrs),
     1, 256, NULL, &ip_list, 0},
    {"healthz_listen", KEY_ADDR, offsetof(struct node_in, healthz), 0, 0, NULL,
     NULL, 0},
};
static const struct section node_section = {
    "section \"node\"", NULL, node_keys, NKEYS(node_keys)};

/* The policy rows, placed at <base> inside the struct being decoded, so
 * that "defaults:" and each service share one definition. Timeouts are
 * stored in uint32_t milliseconds later; parse_duration_ms caps at 30
 * days, which fits. */
#define POLICY_KEYS(base)                                                      \
    {"balance", KEY_ENUM, (base) + offsetof(struct policy_in, balance), 0, 0,  \
     "roundrobin", balance_names, 0},                                          \
    {"connect_timeout", KEY_DURATION,                                          \
     (base) + offsetof(struct policy_in, connect_timeout_ms), 1, UINT32_MAX,   \
     "2s", NULL, 0},                                                           \
    {"idle_timeout", KEY_DURATION,                                             \
     (base) + offsetof(struct policy_in, idle_timeout_ms), 1, UINT32_MAX,      \
     "1h", NULL, 0},                                                           \
    {"retries", KEY_UINT, (base) + offsetof(struct policy_in, retries), 0, 32, \
     "3", NULL, 0},                                                            \
    {"max_connections", KEY_UINT,                                              \
     (base) + offsetof(struct policy_in, max_conns), 0, 10000000, "0", NULL, 0}, \
    {"health_check", KEY_MAP, (base) + offsetof(struct policy_in, check), 0,   \
     0, NULL, &check_section, 0}

static const struct key policy_keys[] = {POLICY_KEYS(0)};
static const struct section defaults_section = {
    "section \"defaults\"", NULL, policy_keys, NKEYS(policy_keys)};

static const struct key log_keys[] = {
    {"level", KEY_ENUM, offsetof(struct log_in, level), 0, 0, "info",
     level_names, 0},
    {"format", KEY_ENUM, offsetof(struct log_in, format), 0, 0, "text",
     format_names, 0},
};
static const struct section log_section = {"section \"log\"", NULL, log_keys,
                                           NKEYS(log_keys)};

static const char *const splice_names[] = {
    [CONF_SPLICE_AUTO] = "auto", [CONF_SPLICE_ALWAYS] = "always",
    [CONF_SPLICE_NEVER] = "never", NULL,
};

static const struct key relay_keys[] = {
    {"splice", KEY_ENUM, offsetof(struct relay_in, splice), 0, 0, "auto",
     splice_names, 0},
    {"pipe_budget", KEY_UINT, offsetof(struct relay_in, pipe_budget), 0,
     1000000, "0", NULL, 0},
    {"workers", KEY_UINT, offsetof(struct relay_in, workers), 0,
     CONF_WORKERS_MAX, "0", NULL, 0},
};
static const struct section relay_section = {
    "section \"relay\"", NULL, relay_keys, NKEYS(relay_keys)};

static const struct key backend_keys[] = {
    {"address", KEY_ADDR, offsetof(struct backend_in, addr), 0, 0, NULL, NULL,
     KEY_REQUIRED},
    {"weight", KEY_UINT, offsetof(struct backend_in, weight), 0,
     TBL_WEIGHT_MAX, "1", NULL, 0},
    {"name", KEY_NAME, offsetof(struct backend_in, name), 1, TBL_NAME_MAX - 1,
     NULL, NULL, KEY_ADDRCHARS},
};
static const struct section backend_section = {
    "backend", "name", backend_keys, NKEYS(backend_keys)};

static const struct list_spec listen_list = {
    "listen addresses", sizeof(struct saddr),
    {"listen", KEY_ADDR, 0, 0, 0, NULL, NULL, 0}, 1};

static const struct list_spec backend_list = {
    "backends", sizeof(struct backend_in),
    {"backends", KEY_MAP, 0, 0, 0, NULL, &backend_section, 0}, 0};

static const struct key service_keys[] = {
    {"name", KEY_NAME, offsetof(struct service_in, name), 1, SERVICE_NAME_MAX,
     NULL, NULL, KEY_REQUIRED},
    {"listen", KEY_LIST, offsetof(struct service_in, listen), 1,
     CONF_LISTEN_MAX, NULL, &listen_list, KEY_REQUIRED},
    POLICY_KEYS(offsetof(struct service_in, pol)),
    {"backends", KEY_LIST, offsetof(struct service_in, backends), 1,
     CONF_BACKENDS_MAX, NULL, &backend_list, KEY_REQUIRED},
};
static const struct section service_section = {
    "service", "name", service_keys, NKEYS(service_keys)};

static const struct list_spec service_list = {
    "services", sizeof(struct service_in),
    {"services", KEY_MAP, 0, 0, 0, NULL, &service_section, 0}, 0};

static const struct key root_keys[] = {
    {"log", KEY_MAP, offsetof(struct root_in, log), 0, 0, NULL, &log_section,
     0},
    {"drain_timeout", KEY_DURATION, offsetof(struct root_in, drain_timeout_ms),
     0, UINT64_MAX, "30s", NULL, 0},
    {"defaults", KEY_MAP, offsetof(struct root_in, defaults), 0, 0, NULL,
     &defaults_section, 0},
    {"services", KEY_LIST, offsetof(struct root_in, services), 1,
     CONF_SERVICES_MAX, NULL, &service_list, 0},
    {"admin", KEY_MAP, offsetof(struct root_in, admin), 0, 0, NULL,
     &admin_section, 0},
    {"kubernetes", KEY_MAP, offsetof(struct root_in, kube), 0, 0, NULL,
     &kube_section, 0},
    {"node", KEY_MAP, offsetof(struct root_in, node), 0, 0, NULL,
     &node_section, 0},
    {"relay", KEY_MAP, offsetof(struct root_in, relay), 0, 0, NULL,
     &relay_section, 0},
};
static const struct section root_section = {"", NULL, root_keys,
                                            NKEYS(root_keys)};

/* ---- decoder state and messages ---------------------------------------- */

struct dec {
    yaml_document_t *doc;
    struct err *e;
    size_t visits, max_visits;
    const yaml_node_t *key; /* key of the value being decoded, if any */
    char ctx[160]; /* 'service "web"', or "" at top level */
};

/* Copy at most SHOW_MAX bytes of <s> into <out> with control bytes
 * replaced, so that any user text is safe and short inside a message. */
static const char *
show(const char *s, char *out, size_t outlen)
{
    size_t i, n = 0;

    for (i = 0; s[i] != '\0' && n + 4 < outlen && i < SHOW_MAX; i++)
        out[n++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i] != '\0' && n + 4 <= outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static int
fail_at(struct dec *d, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail_at(struct dec *d, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;

    d->e->line = (int)n->start_mark.line + 1;
    d->e->col = (int)n->start_mark.column + 1;
    va_start(ap, fmt);
    vsnprintf(d->e->msg, sizeof(d->e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

static int
fail_pos(struct err *e, struct pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail_pos(struct err *e, struct pos p, const char *fmt, ...)
{
    va_list ap;

    e->line = p.line;
    e->col = p.col;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

/* " (in service "web")", or "" at top level. */
static const char *
where(const struct dec *d, char *out, size_t outlen)
{
    if (d->ctx[0] == '\0')
        out[0] = '\0';
    else
        snprintf(out, outlen, " (in %s)", d->ctx);
    return out;
}

static const char *
node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static const char *
scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* "", "~" and "null" written plainly mean "no value" in YAML. */
static int
is_null(const yaml_node_t *n)
{
    const char *s;

    if (n->type != YAML_SCALAR_NODE
        || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    s = scalar(n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0
           || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int
pos_cmp(struct pos a, struct pos b)
{
    if (a.line != b.line)
        return a.line < b.line ? -1 : 1;
    return a.col < b.col ? -1 : a.col > b.col;
}

static struct pos
node_pos(const yaml_node_t *n)
{
    struct pos p = {(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};

    return p;
}

/* ---- scalar values ----------------------------------------------------- */

static int
name_char_ok(char c, unsigned flags)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
        return 1;
    return (flags & KEY_ADDRCHARS) && (c == ':' || c == '[' || c == ']');
}

static int
parse_name(const struct key *k, const char *s, char *dst, char *msg,
           size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max) {
        snprintf(msg, msglen, "must be %llu to %llu characters long",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!name_char_ok(s[i], k->flags)) {
            snprintf(msg, msglen, "may only contain %s",
                     (k->flags & KEY_ADDRCHARS) ? "A-Z a-z 0-9 . _ - : [ ]"
                                                : "A-Z a-z 0-9 . _ -");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

static int
parse_enum(const struct key *k, const char *s, uint64_t *dst, char *msg,
           size_t msglen)
{
    const char *const *names = k->sub;
    size_t i, n = 0;

    for (i = 0; names[i] != NULL; i++) {
        if (strcmp(s, names[i]) == 0) {
            *dst = i;
            return 0;
        }
    }
    n = (size_t)snprintf(msg, msglen, "expected one of");
    for (i = 0; names[i] != NULL && n < msglen; i++)
        n += (size_t)snprintf(msg + n, msglen - n, "%s %s", i ? "," : "",
                              names[i]);
    return -1;
}

static int
parse_number(const struct key *k, const char *s, uint64_t *dst, char *msg,
             size_t msglen)
{
    const char *why = NULL;
    uint64_t v;

    if (k->type == KEY_UINT) {
        /* parse_uint reports overflow as "not an integer"; an all-digit
         * string is a range problem, so check the range ourselves. */
        if (parse_uint(s, 0, UINT64_MAX, &v, &why) < 0
            && strspn(s, "0123456789") != strlen(s))
            return snprintf(msg, msglen, "%s", why), -1;
        if (why != NULL || v < k->min || v > k->max) {
            snprintf(msg, msglen, "%s is out of range %llu..%llu", s,
                     (unsigned long long)k->min, (unsigned long long)k->max);
            return -1;
        }
    } else {
        if (parse_duration_ms(s, &v, &why) < 0)
            return snprintf(msg, msglen, "%s", why), -1;
        if (v < k->min)
            return snprintf(msg, msglen, "must be at least %llums",
                            (unsigned long long)k->min),
                   -1;
        if (v > k->max)
            return snprintf(msg, msglen, "is too long"), -1;
    }
    *dst = v;
    return 0;
}

/* "200-399" or "200", both ends within the row's [min, max]. */
static int
parse_range(const struct key *k, const char *s, uint64_t *dst, char *msg,
            size_t msglen)
{
    char lo_s[8], *dash = strchr(s, '-');
    const char *why = NULL, *hi_s = s;
    uint64_t lo, hi;
    size_t n = dash ? (size_t)(dash - s) : strlen(s);

    if (n == 0 || n >= sizeof(lo_s))
        goto bad;
    memcpy(lo_s, s, n);
    lo_s[n] = '\0';
    if (dash != NULL)
        hi_s = dash + 1;
    if (parse_uint(lo_s, k->min, k->max, &lo, &why) < 0
        || parse_uint(hi_s, k->min, k->max, &hi, &why) < 0 || hi < lo)
        goto bad;
    *dst = lo << 16 | hi;
    return 0;
bad:
    snprintf(msg, msglen, "expected a status or a range like \"%llu-%llu\"",
             (unsigned long long)k->min, (unsigned long long)k->max);
    return -1;
}

/* An HTTP path for a request line: "/" first, then printable ASCII
 * without spaces, quotes or '#'. */
static int
parse_path(const struct key *k, const char *s, char *dst, char *msg,
           size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max || s[0] != '/') {
        snprintf(msg, msglen, "must start with \"/\" and be at most %llu "
                              "characters long",
                 (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '#' || c == '\\') {
            snprintf(msg, msglen, "may only contain printable ASCII without "
                                  "spaces, quotes, '#' or '\\'");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* Free text for paths, URLs and selectors: printable, bounded. */
static int
parse_string(const struct key *k, const char *s, char *dst, char *msg,
             size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max) {
        snprintf(msg, msglen, "must be %llu to %llu characters long",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(msg, msglen, "contains a control character");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* Parse text <s> for scalar row <k> into <dst> (the field itself). On
 * failure, a reason without the key name goes to <msg>. */
static int
parse_value(const struct key *k, const char *s, void *dst, char *msg,
            size_t msglen)
{
    const char *why = NULL;

    switch (k->type) {
    case KEY_UINT:
    case KEY_DURATION:
        return parse_number(k, s, dst, msg, msglen);
    case KEY_ENUM:
        return parse_enum(k, s, dst, msg, msglen);
    case KEY_NAME:
        return parse_name(k, s, dst, msg, msglen);
    case KEY_ADDR:
        if (parse_hostport(s, dst, 0, &why) == 0)
            return 0;
        snprintf(msg, msglen, "%s", why);
        return -1;
    case KEY_RANGE:
        return parse_range(k, s, dst, msg, msglen);
    case KEY_PATH:
        return parse_path(k, s, dst, msg, msglen);
    case KEY_STRING:
        return parse_string(k, s, dst, msg, msglen);
    case KEY_IP:
        if (parse_ip(s, 0, dst, &why) == 0)
            return 0;
        snprintf(msg, msglen, "%s", why);
        return -1;
    default:
        snprintf(msg, msglen, "not a scalar key");
        return -1;
    }
}

static int
decode_scalar(struct dec *d, const yaml_node_t *n, const struct key *k,
              void *base)
{
    char msg[ERR_MSG_MAX], txt[SHOW_MAX + 8], in[sizeof(d->ctx) + 8];
    const char *s;

    if (n->type != YAML_SCALAR_NODE)
        return fail_at(d, n, "\"%s\": expected a scalar, got %s%s", k->name,
                       node_kind(n), where(d, in, sizeof(in)));
    s = scalar(n);
    if (strlen(s) != n->data.scalar.length)
        return fail_at(d, n, "\"%s\": value contains a NUL character%s",
                       k->name, where(d, in, sizeof(in)));
    if (parse_value(k, s, (char *)base + k->offset, msg, sizeof(msg)) == 0)
        return 0;
    /* A range message already quotes the value. */
    if (strstr(msg, "out of range") != NULL)
        return fail_at(d, n, "\"%s\": %s%s", k->name, msg,
                       where(d, in, sizeof(in)));
    return fail_at(d, n, "\"%s\": %s, got \"%s\"%s", k->name, msg,
                   show(s, txt, sizeof(txt)), where(d, in, sizeof(in)));
}

/* ---- mappings and lists ------------------------------------------------ */

static int decode_value(struct dec *d, const yaml_node_t *n,
                        const struct key *k, void *base, size_t index);

/* Rows stored as a uint64_t, where UNSET means "not in the file". */
static int
key_is_number(const struct key *k)
{
    return k->type == KEY_UINT || k->type == KEY_DURATION
           || k->type == KEY_ENUM || k->type == KEY_RANGE;
}

/* Bytes a scalar row occupies, for copying a value as it is. */
static size_t
key_size(const struct key *k)
{
    if (k->type == KEY_NAME || k->type == KEY_PATH || k->type == KEY_STRING)
        return k->max + 1;
    if (k->type == KEY_ADDR || k->type == KEY_IP)
        return sizeof(struct saddr);
    return sizeof(uint64_t);
}

/* Nonzero if scalar row <k> was not given: UNSET for a number, "" for a
 * string, no address family for an address. */
static int
key_is_unset(const struct key *k, const void *p)
{
    if (key_is_number(k))
        return *(const uint64_t *)p == UNSET;
    if (k->type == KEY_ADDR || k->type == KEY_IP)
        return ((const struct saddr *)p)->u.sa.sa_family == 0;
    return *(const char *)p == '\0';
}

/* Mark every number under row <k> of <base> as not given, so that
 * defaults and inheritance can tell "absent" from "0". */
static void
init_unset(const struct key *k, void *base)
{
    const struct section *sec = k->sub;
    void *p = (char *)base + k->offset;
    size_t i;

    if (key_is_number(k))
        *(uint64_t *)p = UNSET;
    else if (k->type == KEY_MAP)
        for (i = 0; i < sec->nkeys; i++)
            init_unset(&sec->keys[i], p);
}

static yaml_node_t *
child(struct dec *d, int id)
{
    return yaml_document_get_node(d->doc, id);
}

static int
find_key(const struct section *sec, const char *name)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int
unknown_key(struct dec *d, const yaml_node_t *kn, const struct section *sec)
{
    char known[160], txt[SHOW_MAX + 8];
    size_t i, n = 0;

    known[0] = '\0';
    for (i = 0; i < sec->nkeys && n < sizeof(known); i++)
        n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s",
                              i ? ", " : "", sec->keys[i].name);
    return fail_at(d, kn, "unknown key \"%s\" %s%s (known: %s)",
                   show(scalar(kn), txt, sizeof(txt)),
                   d->ctx[0] ? "in " : "at top level", d->ctx, known);
}

/* Name the mapping <n> about to be decoded as an element of <sec>, for
 * messages: 'service "web"' or 'backend #2 of service "web"'. */
static void
enter(struct dec *d, const yaml_node_t *n, const struct section *sec,
      size_t index)
{
    char old[sizeof(d->ctx)], txt[SHOW_MAX + 8];
    int trunc = 0;
    const char *label = NULL;
    yaml_node_pair_t *p;

    memcpy(old, d->ctx, sizeof(old));
    if (sec->label_key != NULL && n->type == YAML_MAPPING_NODE) {
        for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *kn = child(d, p->key), *vn = child(d, p->value);
            if (kn->type == YAML_SCALAR_NODE && vn->type == YAML_SCALAR_NODE
                && strcmp(scalar(kn), sec->label_key) == 0)
                label = show(scalar(vn), txt, sizeof(txt));
        }
    }
    if (sec->label_key == NULL)
        snprintf(d->ctx, sizeof(d->ctx), "%s", sec->what);
    else if (label != NULL)
        /* A long nesting path is cut short; the position says the rest. */
        trunc = snprintf(d->ctx, sizeof(d->ctx), "%s \"%s\"%s%s", sec->what,
                         label, old[0] ? " of " : "", old);
    else
        trunc = snprintf(d->ctx, sizeof(d->ctx), "%s #%zu%s%s", sec->what,
                         index + 1, old[0] ? " of " : "", old);
    (void)trunc;
}

static int
check_required(struct dec *d, const yaml_node_t *n, const struct section *sec,
               uint64_t seen)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++) {
        const struct key *k = &sec->keys[i];

        if (!(k->flags & KEY_REQUIRED) || (seen & (1ull << i)))
            continue;
        if (k->type == KEY_LIST) {
            const struct list_spec *ls = k->sub;
            return fail_at(d, n, "%s has no %s", d->ctx[0] ? d->ctx : "config",
                           ls->what);
        }
        return fail_at(d, n, "%s: missing required key \"%s\"",
                       d->ctx[0] ? d->ctx : "config", k->name);
    }
    return 0;
}

static int
decode_pairs(struct dec *d, const yaml_node_t *n, const struct section *sec,
             void *base)
{
    char txt[SHOW_MAX + 8];
    yaml_node_pair_t *p;
    uint64_t seen = 0;

    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = child(d, p->key), *vn = child(d, p->value);
        int i;

        if (kn->type != YAML_SCALAR_NODE)
            return fail_at(d, kn, "expected a key, got %s", node_kind(kn));
        i = find_key(sec, scalar(kn));
        if (i < 0)
            return unknown_key(d, kn, sec);
        if (seen & (1ull << i))
            return fail_at(d, kn, "duplicate key \"%s\"%s%s",
                           show(scalar(kn), txt, sizeof(txt)),
                           d->ctx[0] ? " in " : " at top level", d->ctx);
        seen |= 1ull << i;
        d->key = kn;
        if (decode_value(d, vn, &sec->keys[i], base, 0) < 0)
            return -1;
    }
    return check_required(d, n, sec, seen);
}

/* Decode mapping <n> through <sec> into <base>. A null value (a key with
 * nothing after it) is an empty mapping. */
static int
decode_map(struct dec *d, const yaml_node_t *n, const struct key *k,
           void *base, size_t index)
{
    const struct section *sec = k->sub;
    char old[sizeof(d->ctx)], in[sizeof(d->ctx) + 8];
    static const yaml_node_t empty = {.type = YAML_MAPPING_NODE};
    yaml_node_t nn;
    int rc;

    if (is_null(n)) {
        nn = empty;
        nn.start_mark = n->start_mark;
        n = &nn;
    }
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(d, n, "\"%s\": expected a mapping, got %s%s", k->name,
                       node_kind(n), where(d, in, sizeof(in)));
    memcpy(old, d->ctx, sizeof(old));
    enter(d, n, sec, index);
    rc = decode_pairs(d, n, sec, (char *)base + k->offset);
    memcpy(d->ctx, old, sizeof(old));
    return rc;
}

static int
decode_list(struct dec *d, const yaml_node_t *n, const struct key *k,
            void *base)
{
    const struct list_spec *ls = k->sub;
    struct arr *a = (void *)((char *)base + k->offset);
    char in[sizeof(d->ctx) + 8];
    const yaml_node_item_t *items = NULL;
    size_t i, count = 0;
    int one = 0;

    if (n->type == YAML_SEQUENCE_NODE) {
        items = n->data.sequence.items.start;
        count = (size_t)(n->data.sequence.items.top - items);
    } else if (n->type == YAML_SCALAR_NODE && !is_null(n) && ls->scalar_ok) {
        one = 1;
        count = 1;
    } else if (!is_null(n)) {
        return fail_at(d, n, "\"%s\": expected a list, got %s%s", k->name,
                       node_kind(n), where(d, in, sizeof(in)));
    }
    if (count < k->min)
        return fail_at(d, is_null(n) && d->key != NULL ? d->key : n, "%s has no %s", d->ctx[0] ? d->ctx : "config",
                       ls->what);
    if (count > k->max)
        return fail_at(d, n, "too many %s%s (at most %llu)", ls->what,
                       where(d, in, sizeof(in)), (unsigned long long)k->max);
    a->v = calloc(count, ls->elem_size);
    a->pos = calloc(count, sizeof(*a->pos));
    if (a->v == NULL || a->pos == NULL)
        return fail_at(d, n, "out of memory");
    for (i = 0; i < count; i++) {
        const yaml_node_t *en = one ? n : child(d, items[i]);
        void *elem = (char *)a->v + i * ls->elem_size;

        a->n = i + 1; /* so that a failure still frees what was decoded */
        a->pos[i] = node_pos(en);
        init_unset(&ls->elem, elem);
        if (decode_value(d, en, &ls->elem, elem, i) < 0)
            return -1;
    }
    return 0;
}

static int
decode_value(struct dec *d, const yaml_node_t *n, const struct key *k,
             void *base, size_t index)
{
    if (++d->visits > d->max_visits)
        return fail_at(d, n, "config expands to too many nodes (aliases?)");
    switch (k->type) {
    case KEY_MAP:
        return decode_map(d, n, k, base, index);
    case KEY_LIST:
        return decode_list(d, n, k, base);
    default:
        return decode_scalar(d, n, k, base);
    }
}

/* ---- after decoding: defaults, inheritance, cleanup -------------------- */

/* Fill every number under row <k> that the file left out with the row's
 * default. Defaults go through the same parser as the file, so a bad
 * default is caught by the unit tests rather than trusted. */
static int
fill_defaults(const struct key *k, void *base, struct err *e)
{
    void *p = (char *)base + k->offset;
    char msg[ERR_MSG_MAX];
    size_t i;

    if (k->type == KEY_MAP) {
        const struct section *sec = k->sub;
        for (i = 0; i < sec->nkeys; i++)
            if (fill_defaults(&sec->keys[i], p, e) < 0)
                return -1;
    } else if (k->type == KEY_LIST) {
        const struct list_spec *ls = k->sub;
        const struct arr *a = p;
        for (i = 0; i < a->n; i++)
            if (fill_defaults(&ls->elem, (char *)a->v + i * ls->elem_size, e)
                < 0)
                return -1;
    } else if (k->def != NULL && key_is_unset(k, p)) {
        if (parse_value(k, k->def, p, msg, sizeof(msg)) < 0)
            return err_set(e, "bad built-in default for \"%s\": %s", k->name,
                           msg);
    }
    return 0;
}

/* Copy every value of section <sec> that <dst> leaves unset from
 * <src>. */
static void
inherit_section(const struct section *sec, void *dst, const void *src)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++) {
        const struct key *k = &sec->keys[i];
        char *d = (char *)dst + k->offset;
        const char *s = (const char *)src + k->offset;

        if (k->type == KEY_MAP)
            inherit_section(k->sub, d, s);
        else if (k->type != KEY_LIST && key_is_unset(k, d))
            memcpy(d, s, key_size(k));
    }
}

/* A service inherits each policy key it does not set from "defaults:". */
static void
inherit_policy(struct policy_in *svc, const struct policy_in *defaults)
{
    inherit_section(&defaults_section, svc, defaults);
}

static void
free_value(const struct key *k, void *base)
{
    void *p = (char *)base + k->offset;
    size_t i;

    if (k->type == KEY_MAP) {
        const struct section *sec = k->sub;
        for (i = 0; i < sec->nkeys; i++)
            free_value(&sec->keys[i], p);
    } else if (k->type == KEY_LIST) {
        const struct list_spec *ls = k->sub;
        struct arr *a = p;
        for (i = 0; i < a->n; i++)
            free_value(&ls->elem, (char *)a->v + i * ls->elem_size);
        free(a->v);
        free(a->pos);
        memset(a, 0, sizeof(*a));
    }
}

static const struct key root_key = {"", KEY_MAP, 0, 0, 0, NULL,
                                    &root_section, 0};

/* ---- cross-checks ------------------------------------------------------ */

/* An element of a flattened list, for duplicate searches. */
struct ref {
    const void *item;
    size_t idx;     /* order in the file */
    size_t owner;   /* service index */
    struct pos pos; /* where the item is written */
};

typedef int item_cmp_fn(const void *a, const void *b);

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

static int
check_listen(const struct root_in *r, struct err *e)
{
    const struct service_in *svc = r->services.v;
    char txt[SADDR_STR_MAX];
    struct ref *refs;
    size_t i, j, n = 0, orig = 0;
    long dup;

    for (i = 0; i < r->services.n; i++)
        n += svc[i].listen.n;
    if (n > CONF_FRONTENDS_MAX)
        return fail_pos(e, r->services.pos[0],
                        "too many listen addresses in all (%zu, at most %d)",
                        n, CONF_FRONTENDS_MAX);
    refs = calloc(n, sizeof(*refs));
    if (refs == NULL)
        return err_set(e, "out of memory");
    for (n = 0, i = 0; i < r->services.n; i++) {
        for (j = 0; j < svc[i].listen.n; j++, n++) {
            struct ref rf = {(const struct saddr *)svc[i].listen.v + j, n, i,
                             svc[i].listen.pos[j]};
            refs[n] = rf;
        }
    }
    dup = find_dup(refs, n, addr_item_cmp, &orig);
    if (dup >= 0)
        fail_pos(e, refs[dup].pos, "listen address %s already used by "
                                   "service \"%s\"",
                 saddr_str(refs[dup].item, txt, sizeof(txt)),
                 svc[refs[orig].owner].name);
    free(refs);
    return dup >= 0 ? -1 : 0;
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
            fail_pos(e, refs[dup].pos,
                     "backend address %s is listed twice in service \"%s\"",
                     saddr_str(refs[dup].item, txt, sizeof(txt)), svc->name);
        else if (dup >= 0)
            fail_pos(e, refs[dup].pos,
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
        fail_pos(e, refs[dup].pos, "duplicate service name \"%s\"",
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
        if (check_backends(&svc[i], e) < 0)
            return -1;
    }
    return check_listen(r, e);
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
    snprintf(c->path, sizeof(c->path), "%s", in->path[0] ? in->path : "/");
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
    build_check(&s->check, &pol->check);
}

static int
add_service(struct table *t, const struct service_in *in, struct pos pos,
            struct err *e)
{
    const struct backend_in *be = in->backends.v;
    struct tbl_service s;
    size_t i;
    int rc;

    memset(&s, 0, sizeof(s));
    snprintf(s.name, sizeof(s.name), "%s", in->name);
    s.frontends = in->listen.v;
    s.nfrontends = in->listen.n;
    s.nbackends = in->backends.n;
    s.backends = calloc(s.nbackends, sizeof(*s.backends));
    if (s.backends == NULL)
        return err_set(e, "out of memory");
    for (i = 0; i < s.nbackends; i++) {
        s.backends[i].addr = be[i].addr;
        memcpy(s.backends[i].name, be[i].name, sizeof(s.backends[i].name));
        s.backends[i].weight = (uint32_t)be[i].weight;
        s.backends[i].flags = TBL_BE_READY | TBL_BE_SERVING;
    }
    policy_to_tbl(&in->pol, &s);
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
    c->relay.pipe_budget = (uint32_t)r->relay.pipe_budget;
    c->relay.workers = (uint32_t)r->relay.workers;
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
    policy_to_tbl(&r->defaults, &c->defaults);
    if (build_kube(c, r, e) < 0) {
        conf_free(c);
        return NULL;
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

    if (fill_defaults(&root_keys[find_key(&root_section, "defaults")], r,
                      e)
        < 0)
        return NULL;
    for (i = 0; i < r->services.n; i++)
        inherit_policy(&svc[i].pol, &r->defaults);
    if (fill_defaults(&root_key, r, e) < 0 || check_services(r, e) < 0)
        return NULL;
    /* Services come from the file, the API, or both; never from neither. */
    if (r->services.n == 0 && r->kube.enabled != 1) {
        struct pos top = {1, 1};
        return fail_pos(e, top, "config has no services (add a \"services:\" "
                                "list, or enable \"kubernetes:\")"),
               NULL;
    }
    if (r->kube.edge_backends == CONF_EDGE_NODEPORTS
        && r->kube.edge_nodes.n == 0) {
        struct pos top = {1, 1};
        return fail_pos(e, top, "kubernetes: \"edge_backends: nodeports\" "
                                "needs the nodes' addresses in "
                                "\"edge_nodes\""),
               NULL;
    }
    return build(r, e);
}

/* ---- YAML documents ---------------------------------------------------- */

/* Turn a byte offset (libyaml's reader errors carry no line) into a
 * position. */
static struct pos
offset_pos(const char *buf, size_t len, size_t off)
{
    struct pos p = {1, 1};
    size_t i;

    for (i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            p.line++;
            p.col = 1;
        } else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
            p.col++;
        }
    }
    return p;
}

static int
yaml_fail(const yaml_parser_t *p, const char *buf, size_t len, struct err *e)
{
    struct pos pos = {(int)p->problem_mark.line + 1,
                      (int)p->problem_mark.column + 1};
    const char *problem = p->problem ? p->problem : "unknown error";

    if (p->error == YAML_MEMORY_ERROR)
        return err_set(e, "out of memory while parsing YAML");
    if (p->error == YAML_READER_ERROR)
        pos = offset_pos(buf, len, p->problem_offset);
    if (p->context != NULL)
        return fail_pos(e, pos, "YAML syntax error: %s (%s)", problem,
                        p->context);
    return fail_pos(e, pos, "YAML syntax error: %s", problem);
}

/* Load the first document of <p>'s input into <doc>. Returns 0, or -1
 * with <e> set (and nothing to free). */
static int
load_doc(yaml_parser_t *p, const char *buf, size_t len, yaml_document_t *doc,
         struct err *e)
{
    yaml_node_t *root;
    struct pos one = {1, 1};

    if (!yaml_parser_load(p, doc))
        return yaml_fail(p, buf, len, e);
    root = yaml_document_get_root_node(doc);
    if (root == NULL || is_null(root)) {
        yaml_document_delete(doc);
        return fail_pos(e, one, "config is empty (expected a mapping with "
                                "a \"services\" list)");
    }
    return 0;
}

/* A second document would be ignored silently; refuse it instead. Called
 * once the first one is fully checked, so that its errors come first. */
static int
check_no_more_docs(yaml_parser_t *p, const char *buf, size_t len,
                   struct err *e)
{
    yaml_document_t extra;
    yaml_node_t *root;
    int rc = 0;

    if (!yaml_parser_load(p, &extra))
        return yaml_fail(p, buf, len, e);
    root = yaml_document_get_root_node(&extra);
    if (root != NULL)
        rc = fail_pos(e, node_pos(root),
                      "config must be a single YAML document");
    yaml_document_delete(&extra);
    return rc;
}

static struct conf *
decode_doc(yaml_document_t *doc, struct err *e)
{
    struct conf *c = NULL;
    struct root_in r;
    struct dec d;

    memset(&d, 0, sizeof(d));
    d.doc = doc;
    d.e = e;
    d.max_visits = (size_t)(doc->nodes.top - doc->nodes.start)
                   + CONF_ALIAS_SLACK;
    memset(&r, 0, sizeof(r));
    init_unset(&root_key, &r);
    if (decode_value(&d, yaml_document_get_root_node(doc), &root_key, &r, 0)
        == 0)
        c = finish(&r, e);
    free_value(&root_key, &r);
    return c;
}

struct conf *
conf_load_buf(const char *name, const char *buf, size_t len, struct err *e)
{
    struct conf *c = NULL;
    yaml_document_t doc;
    yaml_parser_t p;
    struct err local;

    if (e == NULL)
        e = &local;
    err_clear(e);
    snprintf(e->file, sizeof(e->file), "%s", name ? name : "");
    if (len > CONF_FILE_MAX) {
        err_set(e, "config is too large (%zu bytes, at most 4 MiB)", len);
        return NULL;
    }
    if (buf == NULL)
        buf = "", len = 0;
    if (!yaml_parser_initialize(&p)) {
        err_set(e, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    if (load_doc(&p, buf, len, &doc, e) == 0) {
        c = decode_doc(&doc, e);
        yaml_document_delete(&doc);
        if (c != NULL && check_no_more_docs(&p, buf, len, e) < 0) {
            conf_free(c);
            c = NULL;
        }
    }
    yaml_parser_delete(&p);
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
