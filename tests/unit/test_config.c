/*
 * test_config.c - the YAML loader: values, defaults, inheritance, and the
 * exact position and text of every kind of error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* A well-formed service and backend list to build error cases around. */
#define BACKENDS "    backends:\n      - address: 127.0.0.1:9001\n"

static struct conf *
load(const char *yaml, struct err *e)
{
    return conf_load_buf("test.yaml", yaml, strlen(yaml), e);
}

/* Load <yaml>, which must fail at <line>:<col> with <want> in the
 * message. */
static void
expect_error(const char *yaml, int line, int col, const char *want)
{
    struct err e;
    struct conf *c = load(yaml, &e);

    if (c != NULL) {
        conf_free(c);
        fail_msg("loaded, expected error \"%s\"", want);
    }
    if (strstr(e.msg, want) == NULL || e.line != line || e.col != col)
        fail_msg("got %d:%d \"%s\", want %d:%d \"%s\"", e.line, e.col, e.msg,
                 line, col, want);
    assert_string_equal(e.file, "test.yaml");
}

static const struct tbl_service *
find(const struct conf *c, const char *name)
{
    const struct tbl_service *s = table_find(c->table, name);

    assert_non_null(s);
    return s;
}

static void
assert_addr(const struct saddr *a, const char *want)
{
    char buf[SADDR_STR_MAX];

    assert_string_equal(saddr_str(a, buf, sizeof(buf)), want);
}

/* ---- valid files ------------------------------------------------------- */

static const char full_yaml[] =
    "log:\n"
    "  level: debug\n"
    "  format: json\n"
    "drain_timeout: 1.5s\n"
    "relay: {splice: never, pipe_budget: 64, workers: 4}\n"
    "metrics: {per_backend: false}\n"
    "defaults:\n"
    "  balance: leastconn\n"
    "  connect_timeout: 250ms\n"
    "  idle_timeout: 5m\n"
    "  retries: 5\n"
    "  max_connections: 100\n"
    "services:\n"
    "  - name: web\n"
    "    listen:\n"
    "      - 127.0.0.1:8080\n"
    "      - \"[::1]:8080\"\n"
    "    balance: random\n"
    "    retries: 0\n"
    "    idle_timeout: 0.5s\n"
    "    backends:\n"
    "      - address: 127.0.0.1:9001\n"
    "        weight: 2\n"
    "        name: web-1\n"
    "      - address: \"[::1]:9002\"\n"
    "        weight: 0\n"
    "  - name: db\n"
    "    listen: 127.0.0.1:5432\n"
    "    connect_timeout: 1h\n"
    "    max_connections: 10000000\n"
    "    backends:\n"
    "      - {address: 127.0.0.1:9003, weight: 256}\n";

static void
test_full(void **state)
{
    const struct tbl_service *web, *db;
    struct err e;
    struct conf *c = load(full_yaml, &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    assert_int_equal(c->log_level, LOG_DEBUG);
    assert_int_equal(c->log_format, LOG_JSON);
    assert_int_equal(c->drain_timeout_ms, 1500);
    assert_int_equal(c->relay.splice, CONF_SPLICE_NEVER);
    assert_int_equal(c->relay.pipe_budget, 64);
    assert_int_equal(c->relay.workers, 4);
    assert_int_equal(c->metrics.per_backend, CONF_PER_BACKEND_FALSE);
    assert_true(c->table->frozen);
    assert_int_equal(c->table->generation, 0);
    assert_int_equal(c->table->nservices, 2);

    web = find(c, "web");
    assert_int_equal(web->nfrontends, 2);
    assert_addr(&web->frontends[0], "127.0.0.1:8080");
    assert_addr(&web->frontends[1], "[::1]:8080");
    assert_int_equal(web->balance, TBL_BAL_RANDOM);  /* own */
    assert_int_equal(web->retries, 0);               /* own, 0 is a value */
    assert_int_equal(web->idle_timeout_ms, 500);     /* own */
    assert_int_equal(web->connect_timeout_ms, 250);  /* inherited */
    assert_int_equal(web->max_conns, 100);           /* inherited */
    assert_int_equal(web->affinity_timeout_ms, 0);
    assert_int_equal(web->nbackends, 2);
    assert_addr(&web->backends[0].addr, "127.0.0.1:9001");
    assert_string_equal(web->backends[0].name, "web-1");
    assert_int_equal(web->backends[0].weight, 2);
    assert_int_equal(web->backends[0].flags, TBL_BE_READY | TBL_BE_SERVING);
    assert_addr(&web->backends[1].addr, "[::1]:9002");
    assert_string_equal(web->backends[1].name, "[::1]:9002");
    assert_int_equal(web->backends[1].weight, 0);

    db = find(c, "db");
    assert_int_equal(db->nfrontends, 1);
    assert_addr(&db->frontends[0], "127.0.0.1:5432");
    assert_int_equal(db->balance, TBL_BAL_LEASTCONN);
    assert_int_equal(db->connect_timeout_ms, 3600000);
    assert_int_equal(db->idle_timeout_ms, 300000);
    assert_int_equal(db->retries, 5);
    assert_int_equal(db->max_conns, 10000000);
    assert_int_equal(db->nbackends, 1);
    assert_string_equal(db->backends[0].name, "127.0.0.1:9003");
    assert_int_equal(db->backends[0].weight, 256);
    conf_free(c);
}

static void
test_builtin_defaults(void **state)
{
    const char *yaml = "services:\n"
                       "  - name: a\n"
                       "    listen: [127.0.0.1:1]\n" BACKENDS;
    const struct tbl_service *s;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    assert_non_null(c);
    assert_int_equal(c->log_level, LOG_INFO);
    assert_int_equal(c->log_format, LOG_TEXT);
    assert_int_equal(c->drain_timeout_ms, 30000);
    assert_int_equal(c->relay.splice, CONF_SPLICE_AUTO);
    assert_int_equal(c->relay.pipe_budget, 0);
    assert_int_equal(c->relay.workers, 0);
    assert_int_equal(c->metrics.per_backend, CONF_PER_BACKEND_AUTO);
    s = find(c, "a");
    assert_int_equal(s->origin, TBL_ORIGIN_FILE);
    assert_int_equal(s->balance, TBL_BAL_ROUNDROBIN);
    assert_int_equal(s->connect_timeout_ms, 2000);
    assert_int_equal(s->idle_timeout_ms, 3600000);
    assert_int_equal(s->retries, 3);
    assert_int_equal(s->max_conns, 0);
    assert_int_equal(s->backends[0].weight, 1);
    conf_free(c);
}

/* send_proxy, accept_proxy and accept_proxy_timeout: per service, off by
 * default, the timeout bounded. */
static void
test_proxy_protocol_keys(void **state)
{
    const char *yaml = "services:\n"
                       "  - name: a\n"
                       "    listen: [127.0.0.1:1]\n" BACKENDS
                       "  - name: b\n"
                       "    listen: [127.0.0.1:2]\n"
                       "    send_proxy: v2\n"
                       "    accept_proxy: true\n"
                       "    accept_proxy_timeout: 250ms\n" BACKENDS
                       "  - name: c\n"
                       "    listen: [127.0.0.1:3]\n"
                       "    send_proxy: v1\n" BACKENDS;
    const struct tbl_service *s;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    assert_non_null(c);
    s = find(c, "a");
    assert_int_equal(s->send_proxy, TBL_SEND_PROXY_NONE);
    assert_int_equal(s->accept_proxy, 0);
    assert_int_equal(s->accept_proxy_timeout_ms, TBL_ACCEPT_PROXY_TIMEOUT_MS);
    assert_int_equal(TBL_ACCEPT_PROXY_TIMEOUT_MS, 5000);
    s = find(c, "b");
    assert_int_equal(s->send_proxy, TBL_SEND_PROXY_V2);
    assert_int_equal(s->accept_proxy, 1);
    assert_int_equal(s->accept_proxy_timeout_ms, 250);
    assert_int_equal(find(c, "c")->send_proxy, TBL_SEND_PROXY_V1);
    conf_free(c);
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    send_proxy: v3\n" BACKENDS,
                 4, 17, "send_proxy");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    accept_proxy_timeout: 6m\n" BACKENDS,
                 4, 27, "accept_proxy_timeout");
    expect_error("defaults:\n  accept_proxy: true\n"
                 "services:\n  - name: a\n    listen: [127.0.0.1:1]\n" BACKENDS,
                 2, 3, "accept_proxy");
}

/* drain_timeout: 0 (no limit) unless set; in "defaults:" for every
 * service, per service over it; a duration from 0 to 24h, refused where
 * it is written otherwise. */
static void
test_drain_timeout_key(void **state)
{
    const char *yaml = "defaults:\n"
                       "  drain_timeout: 30s\n"
                       "services:\n"
                       "  - name: a\n"
                       "    listen: [127.0.0.1:1]\n" BACKENDS
                       "  - name: b\n"
                       "    listen: [127.0.0.1:2]\n"
                       "    drain_timeout: 1.5s\n" BACKENDS
                       "  - name: c\n"
                       "    listen: [127.0.0.1:3]\n"
                       "    drain_timeout: 0\n" BACKENDS;
    const char *plain = "services:\n"
                        "  - name: a\n"
                        "    listen: [127.0.0.1:1]\n" BACKENDS;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    assert_non_null(c);
    assert_int_equal(find(c, "a")->drain_timeout_ms, 30000); /* defaults */
    assert_int_equal(find(c, "b")->drain_timeout_ms, 1500);
    assert_int_equal(find(c, "c")->drain_timeout_ms, 0);
    assert_int_equal(c->drain_timeout_ms, 30000); /* SIGTERM's, apart */
    conf_free(c);
    c = load(plain, &e);
    assert_non_null(c);
    assert_int_equal(find(c, "a")->drain_timeout_ms, 0);
    conf_free(c);
    c = load("defaults:\n  drain_timeout: 24h\n"
             "services:\n  - name: a\n    listen: [127.0.0.1:1]\n" BACKENDS,
             &e);
    assert_non_null(c);
    assert_int_equal(find(c, "a")->drain_timeout_ms, 24u * 3600 * 1000);
    conf_free(c);
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    drain_timeout: 25h\n" BACKENDS,
                 4, 20, "drain_timeout");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    drain_timeout: 5\n" BACKENDS,
                 4, 20, "duration needs a unit");
    expect_error("defaults:\n  drain_timeout: -1s\n", 2, 18,
                 "drain_timeout");
    expect_error("defaults:\n  drain_timeout: [1s]\n", 2, 18,
                 "drain_timeout");
}

/* UDP services: protocol, udp_idle_timeout, udp_responses and max_flows
 * with their defaults; a UDP and a TCP service on one address and port;
 * keys of the other protocol, bad values and clashes refused where they
 * are written. */
static void
test_udp_keys(void **state)
{
    const char *yaml = "defaults:\n"
                       "  idle_timeout: 5m\n"
                       "services:\n"
                       "  - name: web\n"
                       "    listen: [127.0.0.1:53]\n" BACKENDS
                       "  - name: dns\n"
                       "    protocol: udp\n"
                       "    listen: [127.0.0.1:53]\n" BACKENDS
                       "  - name: q\n"
                       "    protocol: udp\n"
                       "    listen: [0.0.0.0:54]\n"
                       "    udp_idle_timeout: 250ms\n"
                       "    udp_responses: 1\n"
                       "    max_flows: 7\n" BACKENDS;
    const struct tbl_service *s;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    s = find(c, "web");
    assert_int_equal(s->proto, TBL_PROTO_TCP);
    assert_int_equal(s->max_flows, 0);
    s = find(c, "dns");
    assert_int_equal(s->proto, TBL_PROTO_UDP);
    assert_int_equal(s->udp_idle_timeout_ms, 30000);
    assert_int_equal(TBL_UDP_IDLE_TIMEOUT_MS, 30000);
    assert_int_equal(s->udp_responses, 0);
    assert_int_equal(s->max_flows, TBL_UDP_MAX_FLOWS);
    assert_int_equal(TBL_UDP_MAX_FLOWS, 10000);
    s = find(c, "q");
    assert_int_equal(s->udp_idle_timeout_ms, 250);
    assert_int_equal(s->udp_responses, 1);
    assert_int_equal(s->max_flows, 7);
    conf_free(c);
#define UDP_SVC "services:\n  - name: d\n    protocol: udp\n" \
                "    listen: [127.0.0.1:1]\n"
    expect_error(UDP_SVC "    protocol: sctp\n" BACKENDS, 5, 5, "protocol");
    expect_error("services:\n  - name: d\n    protocol: quic\n"
                 "    listen: [127.0.0.1:1]\n" BACKENDS,
                 3, 15, "protocol");
    expect_error(UDP_SVC "    udp_idle_timeout: 0\n" BACKENDS, 5, 23,
                 "udp_idle_timeout");
    expect_error(UDP_SVC "    udp_responses: -1\n" BACKENDS, 5, 20,
                 "udp_responses");
    expect_error(UDP_SVC "    max_flows: 0\n" BACKENDS, 5, 16, "max_flows");
    expect_error(UDP_SVC "    max_flows: 10000001\n" BACKENDS, 5, 16,
                 "max_flows");
    expect_error(UDP_SVC "    send_proxy: v1\n" BACKENDS, 5, 17,
                 "send_proxy applies to TCP services only, and service "
                 "\"d\" is UDP");
    expect_error(UDP_SVC "    accept_proxy: true\n" BACKENDS, 5, 19,
                 "accept_proxy applies to TCP");
    expect_error(UDP_SVC "    idle_timeout: 1s\n" BACKENDS, 5, 19,
                 "udp_idle_timeout");
    expect_error(UDP_SVC "    max_connections: 3\n" BACKENDS, 5, 22,
                 "use max_flows");
    expect_error(UDP_SVC "    retries: 1\n" BACKENDS, 5, 14, "retries");
    expect_error(UDP_SVC "    connect_timeout: 1s\n" BACKENDS, 5, 22,
                 "connect_timeout");
    expect_error(UDP_SVC "    max_connections_per_source: 1\n" BACKENDS, 5,
                 33, "max_connections_per_source");
    expect_error(UDP_SVC "    connection_rate_per_source: 1\n" BACKENDS, 5,
                 33, "connection_rate_per_source");
    expect_error(UDP_SVC "    drain_timeout: 1s\n" BACKENDS, 5, 20,
                 "drain_timeout applies to TCP");
    expect_error(UDP_SVC "    sni: [a.example]\n" BACKENDS, 5, 10,
                 "sni applies to TCP");
    expect_error("services:\n  - name: t\n    listen: [127.0.0.1:1]\n"
                 "    udp_responses: 1\n" BACKENDS,
                 4, 20,
                 "udp_responses applies to UDP services only, and service "
                 "\"t\" is TCP");
    expect_error("services:\n  - name: t\n    protocol: tcp\n"
                 "    listen: [127.0.0.1:1]\n    max_flows: 5\n" BACKENDS,
                 5, 16, "max_flows applies to UDP");
    expect_error("services:\n  - name: t\n    listen: [127.0.0.1:1]\n"
                 "    udp_idle_timeout: 5s\n" BACKENDS,
                 4, 23, "udp_idle_timeout applies to UDP");
    /* Not in "defaults:". */
    expect_error("defaults:\n  max_flows: 5\n"
                 "services:\n  - name: a\n    listen: [127.0.0.1:1]\n" BACKENDS,
                 2, 3, "max_flows");
    /* Two UDP services on one address, or overlapping through a
     * wildcard, clash as TCP ones do. */
    expect_error(UDP_SVC BACKENDS "  - name: e\n    protocol: udp\n"
                                  "    listen: [127.0.0.1:1]\n" BACKENDS,
                 9, 14, "already used by service \"d\"");
    expect_error(UDP_SVC BACKENDS "  - name: e\n    protocol: udp\n"
                                  "    listen: [0.0.0.0:1]\n" BACKENDS,
                 9, 14, "overlaps");
#undef UDP_SVC
}

/* Source rules: allow/deny lists of IPv4 and IPv6 prefixes in file
 * order, the per-source limits off by default; bad prefixes, empty lists
 * and out-of-range limits refused where they are written. */
static void
test_source_rule_keys(void **state)
{
    const char *yaml = "services:\n"
                       "  - name: a\n"
                       "    listen: [127.0.0.1:1]\n" BACKENDS
                       "  - name: b\n"
                       "    listen: [127.0.0.1:2]\n"
                       "    allow: [198.18.0.0/15, \"2001:2::/48\"]\n"
                       "    deny:\n"
                       "      - 198.18.0.7/32\n"
                       "    max_connections_per_source: 10\n"
                       "    connection_rate_per_source: 5\n" BACKENDS
                       "  - name: c\n"
                       "    listen: [127.0.0.1:3]\n"
                       "    deny: ::1/128\n" BACKENDS;
    const struct tbl_service *s;
    char buf[SADDR_STR_MAX];
    struct conf *c = load(yaml, NULL);

    (void)state;
    assert_non_null(c);
    s = find(c, "a");
    assert_int_equal(s->nallow, 0);
    assert_int_equal(s->ndeny, 0);
    assert_int_equal(s->max_conns_per_source, 0);
    assert_int_equal(s->conn_rate_per_source, 0);
    s = find(c, "b");
    assert_int_equal(s->nallow, 2);
    assert_string_equal(saddr_ip_str(&s->allow[0].ip, buf, sizeof(buf)),
                        "198.18.0.0");
    assert_int_equal(s->allow[0].prefix, 15);
    assert_string_equal(saddr_ip_str(&s->allow[1].ip, buf, sizeof(buf)),
                        "2001:2::");
    assert_int_equal(s->allow[1].prefix, 48);
    assert_int_equal(s->ndeny, 1);
    assert_int_equal(s->deny[0].prefix, 32);
    assert_int_equal(s->max_conns_per_source, 10);
    assert_int_equal(s->conn_rate_per_source, 5);
    s = find(c, "c");
    assert_int_equal(s->ndeny, 1);
    assert_int_equal(s->deny[0].prefix, 128);
    conf_free(c);
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    allow: [10.0.0.1/8]\n" BACKENDS,
                 4, 13, "allow");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    deny:\n      - 198.18.0.0/15\n      - 198.18.0.0/33\n"
                 BACKENDS,
                 6, 9, "deny");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    deny: [\"::ffff:127.0.0.1/128\"]\n" BACKENDS,
                 4, 12, "deny");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    allow: []\n" BACKENDS,
                 4, 12, "allow");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    allow: [198.18.0.1]\n" BACKENDS,
                 4, 13, "allow");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    max_connections_per_source: -1\n" BACKENDS,
                 4, 33, "max_connections_per_source");
    expect_error("services:\n  - name: a\n    listen: [127.0.0.1:1]\n"
                 "    connection_rate_per_source: 1000001\n" BACKENDS,
                 4, 33, "connection_rate_per_source");
    expect_error("defaults:\n  deny: [198.18.0.0/15]\n"
                 "services:\n  - name: a\n    listen: [127.0.0.1:1]\n" BACKENDS,
                 2, 3, "deny");
}

#define MINIMAL                                                                \
    "services:\n  - name: web\n    listen: 127.0.0.1:1\n" BACKENDS

/* "access_log:" (README: Access log): off by default, one key turns it
 * on; a file needs its path; bad values are refused. */
static void
test_access_log_keys(void **state)
{
    struct conf *c;
    struct err e;

    (void)state;
    c = load(MINIMAL, &e);
    assert_non_null(c);
    assert_int_equal(c->access_log.enabled, 0);
    assert_int_equal(c->access_log.format, CONF_ACCESS_LOG_TEXT);
    assert_int_equal(c->access_log.target, CONF_ACCESS_LOG_STDERR);
    assert_string_equal(c->access_log.syslog_socket, "/dev/log");
    assert_int_equal(c->access_log.syslog_facility, CONF_SYSLOG_LOCAL0);
    assert_int_equal(c->access_log.buffer, 1024);
    conf_free(c);
    c = load("access_log: {enabled: true}\n" MINIMAL, &e);
    assert_non_null(c);
    assert_int_equal(c->access_log.enabled, 1);
    conf_free(c);
    c = load("access_log: {enabled: true, format: json, target: syslog,\n"
             "  syslog_socket: /run/x.sock, syslog_facility: daemon,\n"
             "  buffer: 8}\n" MINIMAL,
             &e);
    assert_non_null(c);
    assert_int_equal(c->access_log.format, CONF_ACCESS_LOG_JSON);
    assert_int_equal(c->access_log.target, CONF_ACCESS_LOG_SYSLOG);
    assert_string_equal(c->access_log.syslog_socket, "/run/x.sock");
    assert_int_equal(c->access_log.syslog_facility, CONF_SYSLOG_DAEMON);
    assert_int_equal(c->access_log.buffer, 8);
    conf_free(c);
    c = load("access_log: {enabled: true, target: file, path: /var/a.log}\n"
             MINIMAL, &e);
    assert_non_null(c);
    assert_int_equal(c->access_log.target, CONF_ACCESS_LOG_FILE);
    assert_string_equal(c->access_log.path, "/var/a.log");
    conf_free(c);
    expect_error("access_log: {enabled: true, target: file}\n" MINIMAL, 1, 1,
                 "\"target: file\" needs the file's \"path\"");
    expect_error("access_log: {target: kafka}\n" MINIMAL, 1, 22,
                 "kafka");
    expect_error("access_log: {format: xml}\n" MINIMAL, 1, 22, "xml");
    expect_error("access_log: {buffer: 0}\n" MINIMAL, 1, 22, "buffer");
    expect_error("access_log: {path: relative.log}\n" MINIMAL, 1, 20,
                 "path");
    expect_error("access_log: {syslog_facility: mail}\n" MINIMAL, 1, 31,
                 "mail");
    expect_error("access_log: {enabeld: true}\n" MINIMAL, 1, 14,
                 "unknown key \"enabeld\" in section \"access_log\"");
}

static void
test_defaults_after_services(void **state)
{
    const char *yaml = "services:\n"
                       "  - name: a\n"
                       "    listen: 127.0.0.1:1\n"
                       "    retries: 1\n" BACKENDS
                       "defaults:\n"
                       "  retries: 7\n"
                       "  balance: leastconn\n"
                       "log: {level: error}\n"
                       "drain_timeout: 0\n";
    const struct tbl_service *s;
    struct conf *c = load(yaml, NULL);

    (void)state;
    assert_non_null(c);
    s = find(c, "a");
    assert_int_equal(s->retries, 1);
    assert_int_equal(s->balance, TBL_BAL_LEASTCONN);
    assert_int_equal(s->connect_timeout_ms, 2000);
    assert_int_equal(c->log_level, LOG_ERROR);
    assert_int_equal(c->drain_timeout_ms, 0);
    conf_free(c);
}

static void
test_null_sections(void **state)
{
    /* A section whose keys are all commented out is empty, not an error. */
    const char *yaml = "log:\n"
                       "defaults: ~\n"
                       "services:\n"
                       "  - name: a\n"
                       "    listen: 127.0.0.1:1\n" BACKENDS;
    struct conf *c = load(yaml, NULL);

    (void)state;
    assert_non_null(c);
    assert_int_equal(find(c, "a")->retries, 3);
    conf_free(c);
}

static void
test_builtin_yaml(void **state)
{
    struct err e;
    struct conf *c = conf_load_buf("builtin", conf_default_yaml,
                                   conf_default_yaml_len, &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    assert_true(c->table->nservices >= 1);
    conf_free(c);
}

static void
test_aliases_allowed(void **state)
{
    /* Two services sharing one backend pool is a fair use of an alias. */
    const char *yaml = "services:\n"
                       "  - name: a\n"
                       "    listen: 127.0.0.1:1\n"
                       "    backends: &pool\n"
                       "      - address: 127.0.0.1:9001\n"
                       "  - name: b\n"
                       "    listen: 127.0.0.1:2\n"
                       "    backends: *pool\n";
    struct conf *c = load(yaml, NULL);

    (void)state;
    assert_non_null(c);
    assert_int_equal(find(c, "b")->nbackends, 1);
    conf_free(c);
}

/* ---- errors ------------------------------------------------------------ */

static void
test_err_syntax(void **state)
{
    (void)state;
    expect_error("services:\n  - name: a: b\n", 2, 12, "YAML syntax error");
    expect_error("services: [a\n", 2, 1, "YAML syntax error");
    /* Reader errors carry an offset only; it is turned into a position. */
    expect_error("log:\n  level: \x01\n", 2, 10, "control characters");
}

static void
test_err_empty(void **state)
{
    (void)state;
    expect_error("", 1, 1, "config is empty");
    expect_error("# nothing but a comment\n", 1, 1, "config is empty");
    expect_error("---\n", 1, 1, "config is empty");
    expect_error("- a\n", 1, 1, "expected a mapping, got a list");
}

static void
test_err_unknown_key(void **state)
{
    (void)state;
    expect_error("servces: []\n", 1, 1,
                 "unknown key \"servces\" at top level (known: log, "
                 "drain_timeout, defaults, services, admin, kubernetes, node, "
                 "relay, metrics, access_log, listeners)");
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n"
                 "    balanse: leastconn\n" BACKENDS,
                 4, 5,
                 "unknown key \"balanse\" in service \"web\" (known: name, "
                 "listen, balance,");
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:9001\n"
                 "        wieght: 2\n",
                 6, 9,
                 "unknown key \"wieght\" in backend #1 of service \"web\"");
    expect_error("log: {level: info, colour: no}\n", 1, 20,
                 "unknown key \"colour\" in section \"log\"");
}

static void
test_health_check_and_admin(void **state)
{
    char tok[] = "/tmp/ferry-test-token-XXXXXX", doc[1024];
    FILE *fp;
    const struct tbl_service *web, *db;
    struct conf *c;
    struct err e;
    char a[SADDR_STR_MAX];

    (void)state;
    c = load("defaults:\n"
             "  health_check:\n"
             "    type: http\n"
             "    path: /healthz?full=1\n"
             "    expect_status: \"200-299\"\n"
             "    interval: 2s\n"
             "    rise: 1\n"
             "services:\n"
             "  - name: web\n"
             "    listen: 127.0.0.1:1\n"
             "    health_check: {fall: 5, port: 8081}\n" BACKENDS
             "  - name: db\n"
             "    listen: 127.0.0.1:2\n"
             "    health_check: {type: tcp, expect_status: 204}\n" BACKENDS,
             &e);
    assert_non_null(c);
    web = find(c, "web");
    assert_int_equal(web->check.type, TBL_CHECK_HTTP);
    assert_string_equal(web->check.path, "/healthz?full=1");
    assert_int_equal(web->check.status_min, 200);
    assert_int_equal(web->check.status_max, 299);
    assert_int_equal(web->check.interval_ms, 2000);
    assert_int_equal(web->check.timeout_ms, 2000);
    assert_int_equal(web->check.rise, 1);
    assert_int_equal(web->check.fall, 5);
    assert_int_equal(web->check.port, 8081);
    db = find(c, "db");
    assert_int_equal(db->check.type, TBL_CHECK_TCP);
    assert_int_equal(db->check.status_min, 204);
    assert_int_equal(db->check.status_max, 204);
    assert_int_equal(db->check.fall, 3);
    assert_false(tbl_check_equal(&web->check, &db->check));
    /* Admin defaults. */
    assert_false(c->admin.enabled);
    assert_string_equal(saddr_str(&c->admin.listen, a, sizeof(a)),
                        CONF_ADMIN_LISTEN_DEFAULT);
    assert_int_equal(c->admin.request_timeout_ms, 5000);
    assert_string_equal(c->admin.token_file, "");
    conf_free(c);

    /* The token is read with the config, without surrounding space. */
    fp = fdopen(mkstemp(tok), "w");
    assert_non_null(fp);
    fputs("  s3cret\n", fp);
    fclose(fp);
    snprintf(doc, sizeof(doc),
             "admin: {enabled: true, listen: \"[::1]:9999\", "
             "request_timeout: 250ms, token_file: %s}\n"
             "services:\n"
             "  - name: web\n"
             "    listen: 127.0.0.1:1\n" BACKENDS,
             tok);
    c = load(doc, &e);
    assert_non_null(c);
    assert_true(c->admin.enabled);
    assert_string_equal(saddr_str(&c->admin.listen, a, sizeof(a)),
                        "[::1]:9999");
    assert_int_equal(c->admin.request_timeout_ms, 250);
    assert_string_equal(c->admin.token_file, tok);
    assert_int_equal(c->admin.token_len, 6);
    assert_memory_equal(c->admin.token, "s3cret", 6);
    /* No health_check anywhere: checks are off. */
    assert_int_equal(find(c, "web")->check.type, TBL_CHECK_NONE);
    conf_free(c);
    /* A token file that cannot be read fails the load. */
    unlink(tok);
    assert_null(load(doc, &e));
    assert_non_null(strstr(e.msg, "cannot open admin.token_file"));

    /* token_file: "" is the default written out: no token. */
    c = load("admin: {token_file: \"\"}\n"
             "services:\n"
             "  - name: web\n"
             "    listen: 127.0.0.1:1\n" BACKENDS,
             &e);
    assert_non_null(c);
    assert_string_equal(c->admin.token_file, "");
    conf_free(c);
}

static void
test_err_health_check(void **state)
{
    (void)state;
    expect_error("defaults: {health_check: {expect_status: 399-200}}\n", 1,
                 42, "\"expect_status\": expected a status or a range");
    expect_error("defaults: {health_check: {expect_status: 700}}\n", 1, 42,
                 "expected a status or a range");
    expect_error("defaults: {health_check: {path: health}}\n", 1, 33,
                 "\"path\": must start with \"/\"");
    expect_error("defaults: {health_check: {type: udp}}\n", 1, 33,
                 "expected one of none, tcp, http");
    expect_error("defaults: {health_check: {rise: 0}}\n", 1, 33,
                 "out of range 1..100");
    expect_error("defaults: {health_check: {intervall: 1s}}\n", 1, 27,
                 "unknown key \"intervall\" in section \"health_check\"");
    expect_error("admin: {enabled: maybe}\n", 1, 18,
                 "expected one of false, true");
    expect_error("admin: {listen: localhost:9990}\n", 1, 17, "\"listen\"");
    expect_error("admin: {token_file: \"a\\tb\"}\n", 1, 21,
                 "\"token_file\": contains a control character");
}

static void
test_err_wrong_type(void **state)
{
    (void)state;
    /* A list where a scalar is expected. */
    expect_error("services:\n"
                 "  - name: [a, b]\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS,
                 2, 11, "\"name\": expected a scalar, got a list");
    expect_error("drain_timeout:\n  a: 1\n", 2, 3,
                 "\"drain_timeout\": expected a scalar, got a mapping");
    /* A scalar where a list is expected. */
    expect_error("services: web\n", 1, 11,
                 "\"services\": expected a list, got a scalar");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends: 127.0.0.1:9001\n",
                 4, 15, "\"backends\": expected a list, got a scalar");
    expect_error("log: debug\n", 1, 6, "\"log\": expected a mapping");
    expect_error("services:\n  - 127.0.0.1:1\n", 2, 5,
                 "\"services\": expected a mapping, got a scalar");
    expect_error("? [a]\n: b\n", 1, 3, "expected a key, got a list");
}

static void
test_err_integers(void **state)
{
    (void)state;
    expect_error("defaults:\n  retries: abc\n", 2, 12,
                 "\"retries\": expected a non-negative integer, got \"abc\"");
    expect_error("defaults:\n  retries: 15\n", 2, 12,
                 "\"retries\": 15 is out of range 0..14");
    expect_error("defaults:\n  retries: 99999999999999999999999\n", 2, 12,
                 "is out of range 0..14");
    expect_error("defaults:\n  max_connections: 10000001\n", 2, 20,
                 "out of range 0..10000000");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:9001\n"
                 "        weight: 257\n",
                 6, 17, "\"weight\": 257 is out of range 0..256");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:9001\n"
                 "        weight: -1\n",
                 6, 17,
                 "\"weight\": expected a non-negative integer, got \"-1\"");
}

static void
test_err_enums(void **state)
{
    (void)state;
    expect_error("log: {level: loud}\n", 1, 14,
                 "\"level\": expected one of debug, info, warn, error, got "
                 "\"loud\"");
    expect_error("defaults: {balance: fastest}\n", 1, 21,
                 "expected one of roundrobin, leastconn, random");
    expect_error("metrics: {per_backend: some}\n", 1, 24,
                 "\"per_backend\": expected one of auto, false, true, got "
                 "\"some\"");
}

static void
test_err_addresses(void **state)
{
    (void)state;
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: localhost:80\n" BACKENDS,
                 3, 13, "\"listen\": not an IP address");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:0\n",
                 5, 18, "\"address\": port must be 1-65535, got");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:70000\n",
                 5, 18, "\"address\": port must be 1-65535");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen:\n"
                 "      - 127.0.0.1:1\n"
                 "      - ::1:80\n" BACKENDS,
                 5, 9, "need brackets");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - weight: 1\n",
                 5, 9,
                 "backend #1 of service \"a\": missing required key "
                 "\"address\"");
}

static void
test_err_durations(void **state)
{
    (void)state;
    expect_error("drain_timeout: 5 parsecs\n", 1, 16,
                 "\"drain_timeout\": unknown duration unit");
    expect_error("drain_timeout: -1s\n", 1, 16,
                 "\"drain_timeout\": expected a duration");
    expect_error("defaults:\n  idle_timeout: 10\n", 2, 17,
                 "\"idle_timeout\": duration needs a unit");
    expect_error("defaults:\n  connect_timeout: 0\n", 2, 20,
                 "\"connect_timeout\": must be at least 1ms, got \"0\"");
    expect_error("drain_timeout: 31d\n", 1, 16, "unknown duration unit");
    expect_error("drain_timeout: 800h\n", 1, 16, "too long");
}

static void
test_err_duplicate_listen(void **state)
{
    (void)state;
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen:\n"
                 "      - 127.0.0.1:8080\n"
                 "      - 127.0.0.1:8080\n" BACKENDS,
                 5, 9,
                 "listen address 127.0.0.1:8080 already used by service "
                 "\"a\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:8080\n" BACKENDS
                 "  - name: b\n"
                 "    listen: [127.0.0.1:8081, \"127.0.0.1:8080\"]\n" BACKENDS,
                 7, 30,
                 "listen address 127.0.0.1:8080 already used by service "
                 "\"a\"");
    /* The same address written two ways is still the same address. */
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: \"[::1]:80\"\n" BACKENDS
                 "  - name: b\n"
                 "    listen: \"[0:0::1]:80\"\n" BACKENDS,
                 7, 13, "listen address [::1]:80 already used by service");
}

/* Two services (or one) whose listening sockets would overlap: the same
 * family and port, and the same IP or a wildcard on either side. */
static void
test_err_overlapping_listen(void **state)
{
    struct conf *c;

    (void)state;
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:8080\n" BACKENDS
                 "  - name: b\n"
                 "    listen: 0.0.0.0:8080\n" BACKENDS,
                 7, 13,
                 "listen 0.0.0.0:8080 of service \"b\" overlaps "
                 "127.0.0.1:8080 of service \"a\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 0.0.0.0:8080\n" BACKENDS
                 "  - name: b\n"
                 "    listen: [127.0.0.1:1, 127.0.0.2:8080]\n" BACKENDS,
                 7, 27,
                 "listen 127.0.0.2:8080 of service \"b\" overlaps "
                 "0.0.0.0:8080 of service \"a\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: [\"[::]:53\", 127.0.0.1:53, \"[::1]:53\"]\n"
                 BACKENDS,
                 3, 39,
                 "listen [::1]:53 of service \"a\" overlaps [::]:53 of "
                 "service \"a\"");
    /* The first clash in the file is the one reported. */
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: [127.0.0.1:1, 127.0.0.1:2]\n" BACKENDS
                 "  - name: b\n"
                 "    listen: [0.0.0.0:2, 127.0.0.1:1]\n" BACKENDS,
                 7, 14, "listen 0.0.0.0:2 of service \"b\" overlaps "
                        "127.0.0.1:2 of service \"a\"");
    /* IPv6 listeners are v6-only: [::]:P beside 0.0.0.0:P is fine, and
     * so are different IPs or ports. */
    c = load("services:\n"
             "  - name: a\n"
             "    listen: [0.0.0.0:80, \"[::]:80\", 127.0.0.1:81]\n" BACKENDS
             "  - name: b\n"
             "    listen: [127.0.0.1:82, 127.0.0.2:82, \"[::1]:81\"]\n"
             BACKENDS,
             NULL);
    assert_non_null(c);
    conf_free(c);
}

/* The admin server's address against every service's, when it runs. */
static void
test_err_listen_vs_admin(void **state)
{
    struct conf *c;

    (void)state;
    expect_error("admin: {enabled: true}\n"
                 "services:\n"
                 "  - name: a\n"
                 "    listen: [127.0.0.1:1, 127.0.0.1:9990]\n" BACKENDS,
                 4, 27,
                 "listen 127.0.0.1:9990 of service \"a\" overlaps the admin "
                 "server's listen 127.0.0.1:9990");
    expect_error("admin: {enabled: true, listen: \"[::1]:7000\"}\n"
                 "services:\n"
                 "  - name: a\n"
                 "    listen: \"[::]:7000\"\n" BACKENDS,
                 4, 13,
                 "listen [::]:7000 of service \"a\" overlaps the admin "
                 "server's listen [::1]:7000");
    expect_error("admin: {enabled: true, listen: 0.0.0.0:7000}\n"
                 "services:\n"
                 "  - name: a\n"
                 "    listen: 198.18.0.1:7000\n" BACKENDS,
                 4, 13, "overlaps the admin server's listen 0.0.0.0:7000");
    /* The admin server off: its address is free. */
    c = load("admin: {listen: 127.0.0.1:7000}\n"
             "services:\n"
             "  - name: a\n"
             "    listen: [127.0.0.1:7000, 127.0.0.1:9990]\n" BACKENDS,
             NULL);
    assert_non_null(c);
    conf_free(c);
}

/* node.metrics_listen: kube-proxy's default, "off", an address that
 * must not overlap the other servers' or the services' in node mode. */
static void
test_metrics_listen(void **state)
{
    struct conf *c;
    struct err e;
    char a[SADDR_STR_MAX];

    (void)state;
    c = load("kubernetes: {enabled: true}\n", &e);
    assert_non_null(c);
    assert_string_equal(saddr_str(&c->node.metrics_listen, a, sizeof(a)),
                        "127.0.0.1:10249");
    conf_free(c);
    c = load("kubernetes: {enabled: true}\nnode: {metrics_listen: off}\n", &e);
    assert_non_null(c);
    assert_int_equal(c->node.metrics_listen.u.sa.sa_family, 0);
    conf_free(c);
    c = load("kubernetes: {enabled: true}\n"
             "node: {metrics_listen: \"[::]:9249\"}\n",
             &e);
    assert_non_null(c);
    assert_string_equal(saddr_str(&c->node.metrics_listen, a, sizeof(a)),
                        "[::]:9249");
    conf_free(c);
    c = load("kubernetes: {enabled: true}\nnode: {metrics_listen: 10249}\n",
             &e);
    assert_null(c);
    assert_non_null(strstr(e.msg, "node.metrics_listen \"10249\": "));
    assert_non_null(strstr(e.msg, "(an address with port, or off)"));
    expect_error("kubernetes: {enabled: true}\n"
                 "node: {metrics_listen: \"\"}\n",
                 2, 24, "\"metrics_listen\": must be 1 to");
    c = load("kubernetes: {enabled: true}\n"
             "node: {metrics_listen: 0.0.0.0:10256}\n",
             &e);
    assert_null(c);
    assert_string_equal(e.msg, "node.healthz_listen 0.0.0.0:10256 overlaps "
                               "node.metrics_listen 0.0.0.0:10256");
    expect_error("kubernetes: {enabled: true}\n"
                 "services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:10249\n" BACKENDS,
                 4, 13,
                 "listen 127.0.0.1:10249 of service \"a\" overlaps "
                 "node.metrics_listen 127.0.0.1:10249");
    /* Off, or not node mode: the address is free. */
    c = load("kubernetes: {enabled: true}\nnode: {metrics_listen: off}\n"
             "services:\n"
             "  - name: a\n"
             "    listen: 127.0.0.1:10249\n" BACKENDS,
             &e);
    assert_non_null(c);
    conf_free(c);
    c = load("services:\n"
             "  - name: a\n"
             "    listen: 127.0.0.1:10249\n" BACKENDS,
             &e);
    assert_non_null(c);
    conf_free(c);
}

/* One spelling per address and port. */
static void
test_err_address_forms(void **state)
{
    (void)state;
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: \"[::ffff:127.0.0.1]:8080\"\n" BACKENDS,
                 3, 13,
                 "\"listen\": an IPv4-mapped IPv6 address: write the IPv4 "
                 "form (a.b.c.d:port), got \"[::ffff:127.0.0.1]:8080\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:00000000000000000009001\n" BACKENDS,
                 3, 13,
                 "\"listen\": port must be written without leading zeros");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends: [{address: 127.0.0.1:080}]\n",
                 4, 26, "port must be written without leading zeros");
    expect_error("node: {node_port_addresses: [\"::ffff:198.18.0.1\"]}\n", 1,
                 30, "an IPv4-mapped IPv6 address: write the IPv4 form");
}

static void
test_err_no_backends(void **state)
{
    (void)state;
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n",
                 2, 5, "service \"web\" has no backends");
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends: []\n",
                 4, 15, "service \"web\" has no backends");
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n",
                 4, 5, "service \"web\" has no backends");
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: []\n" BACKENDS,
                 3, 13, "service \"web\" has no listen addresses");
    expect_error("services: []\n", 1, 11, "config has no services");
    expect_error("log: {level: info}\n", 1, 1, "config has no services");
}

static void
test_err_duplicates(void **state)
{
    (void)state;
    expect_error("services:\n"
                 "  - name: web\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS
                 "  - name: web\n"
                 "    listen: 127.0.0.1:2\n" BACKENDS,
                 6, 5, "duplicate service name \"web\"");
    expect_error("defaults:\n"
                 "  retries: 1\n"
                 "  retries: 2\n",
                 3, 3, "duplicate key \"retries\" in section \"defaults\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - {address: 127.0.0.1:9001, name: x}\n"
                 "      - {address: 127.0.0.1:9002, name: x}\n",
                 6, 9, "duplicate backend name \"x\" in service \"a\"");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n"
                 "    backends:\n"
                 "      - address: 127.0.0.1:9001\n"
                 "      - address: 127.0.0.1:9001\n",
                 6, 9, "backend address 127.0.0.1:9001 is listed twice");
}

static void
test_err_names(void **state)
{
    struct conf *c;
    char yaml[512];

    (void)state;
    snprintf(yaml, sizeof(yaml),
             "services:\n"
             "  - name: %064d\n"
             "    listen: 127.0.0.1:1\n" BACKENDS,
             0);
    expect_error(yaml, 2, 11, "\"name\": must be 1 to 63 characters long");
    snprintf(yaml, sizeof(yaml),
             "services:\n"
             "  - name: %063d\n"
             "    listen: 127.0.0.1:1\n" BACKENDS,
             0);
    c = load(yaml, NULL);
    assert_non_null(c);
    conf_free(c);
    expect_error("services:\n"
                 "  - name: \"\"\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS,
                 2, 11, "must be 1 to 63 characters");
    expect_error("services:\n"
                 "  - name: a b\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS,
                 2, 11, "\"name\": may only contain A-Z a-z 0-9 . _ -");
    expect_error("services:\n"
                 "  - listen: 127.0.0.1:1\n" BACKENDS,
                 2, 5, "service #1: missing required key \"name\"");
    expect_error("services:\n"
                 "  - name: \"a\\0b\"\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS,
                 2, 11, "NUL");
}

static void
test_err_multi_document(void **state)
{
    (void)state;
    expect_error("services: []\n---\nservices: []\n", 1, 11,
                 "has no services");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS "---\n"
                 "log: {}\n",
                 7, 1, "single YAML document");
    expect_error("services:\n"
                 "  - name: a\n"
                 "    listen: 127.0.0.1:1\n" BACKENDS "---\n"
                 "log: [\n",
                 8, 1, "YAML syntax error");
}

/* Aliases let a short file name a big subtree many times over; that must
 * be refused, not expanded. */
static void
test_err_alias_bomb(void **state)
{
    size_t cap = 1 << 20, n = 0;
    char *yaml = malloc(cap);
    struct err e;
    int i;

    (void)state;
    assert_non_null(yaml);
    n += (size_t)snprintf(yaml + n, cap - n,
                          "services:\n  - name: s0\n    listen: 10.0.0.1:1\n"
                          "    backends: &b\n");
    for (i = 0; i < 3000; i++)
        n += (size_t)snprintf(yaml + n, cap - n,
                              "      - address: 10.1.%d.%d:80\n", i / 250,
                              i % 250);
    for (i = 1; i < 3000; i++)
        n += (size_t)snprintf(yaml + n, cap - n,
                              "  - {name: s%d, listen: 10.2.%d.%d:1, "
                              "backends: *b}\n",
                              i, i / 250, i % 250);
    assert_null(conf_load_buf("bomb.yaml", yaml, n, &e));
    assert_non_null(strstr(e.msg, "too many nodes"));
    free(yaml);
}

/* A file nested 100,000 deep (200 KB, well under the size cap) is refused
 * at the level past CONF_DEPTH_MAX, however it nests, instead of making
 * libyaml's scanner walk every open level for each token. */
static void
test_err_nesting(void **state)
{
    static const struct {
        const char *head, *unit;
        int line, col;
    } cases[] = {
        /* The top-level mapping is level 1. */
        {"services: ", "[", 1, 11 + CONF_DEPTH_MAX - 1},
        {"services: ", "{", 1, 11 + CONF_DEPTH_MAX - 1},
        {"services: ", "[{", 1, 11 + CONF_DEPTH_MAX - 1},
        {"services:\n", "- ", 2, 1 + 2 * (CONF_DEPTH_MAX - 1)},
    };
    size_t i, j, cap = 300000, n;
    char *yaml = malloc(cap);
    struct err e;

    (void)state;
    assert_non_null(yaml);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t u = strlen(cases[i].unit);
        n = (size_t)snprintf(yaml, cap, "%s", cases[i].head);
        for (j = 0; j < 100000 && n + u < cap; j++, n += u)
            memcpy(yaml + n, cases[i].unit, u);
        assert_null(conf_load_buf("deep.yaml", yaml, n, &e));
        if (e.line != cases[i].line || e.col != cases[i].col
            || strstr(e.msg, "lists and mappings nested too deeply (max 32)")
                   == NULL)
            fail_msg("%s: got %d:%d %s", cases[i].unit, e.line, e.col, e.msg);
    }
    /* Block mappings, one more indent per line: refused on line 33. */
    for (n = 0, i = 0; i < 2000 && n + i + 8 < cap; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "%*sa:\n", (int)i, "");
    assert_null(conf_load_buf("deep.yaml", yaml, n, &e));
    assert_int_equal(e.line, CONF_DEPTH_MAX + 1);
    assert_int_equal(e.col, CONF_DEPTH_MAX + 1);
    assert_non_null(strstr(e.msg, "nested too deeply"));
    /* 32 levels are YAML the loader takes; the schema then says no. */
    n = (size_t)snprintf(yaml, cap, "services: ");
    for (j = 0; j < CONF_DEPTH_MAX - 1; j++)
        yaml[n++] = '[';
    for (j = 0; j < CONF_DEPTH_MAX - 1; j++)
        yaml[n++] = ']';
    assert_null(conf_load_buf("deep.yaml", yaml, n, &e));
    assert_non_null(strstr(e.msg, "expected a mapping, got a list"));
    free(yaml);
}

/* Many anchors, and directives past the limit, are refused or decoded
 * without the loader comparing each with all the others. */
static void
test_err_anchors_directives(void **state)
{
    size_t cap = 4 << 20, n = 0;
    char *yaml = malloc(cap);
    struct err e;
    int i;

    (void)state;
    assert_non_null(yaml);
    n += (size_t)snprintf(yaml + n, cap - n, "x: [");
    for (i = 0; i < 200000; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "&a%d v, ", i);
    n += (size_t)snprintf(yaml + n, cap - n, "*a199999]\n");
    assert_null(conf_load_buf("anchors.yaml", yaml, n, &e));
    assert_int_equal(e.line, 1);
    assert_int_equal(e.col, 1);
    assert_non_null(strstr(e.msg, "unknown key \"x\""));
    expect_error("x: [&a 1, &a 2]\n", 1, 11, "anchor &a is defined twice");
    for (n = 0, i = 0; i < 100000; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "%%TAG !t%d! tag:x:\n", i);
    n += (size_t)snprintf(yaml + n, cap - n, "---\nlog: {}\n");
    assert_null(conf_load_buf("tags.yaml", yaml, n, &e));
    assert_int_equal(e.line, 17);
    assert_int_equal(e.col, 1);
    assert_non_null(strstr(e.msg, "too many YAML directives (max 16)"));
    free(yaml);
}

/* Aliases may add exactly 65,536 nodes to those written: 256 aliases of
 * a 256-node list load (and fail later, on the unknown key), 257 do not. */
static void
test_err_alias_limit(void **state)
{
    size_t cap = 1 << 16, n;
    char *yaml = malloc(cap);
    struct err e;
    int i, aliases;

    (void)state;
    assert_non_null(yaml);
    for (aliases = 256; aliases <= 257; aliases++) {
        n = (size_t)snprintf(yaml, cap, "x: &a [");
        for (i = 0; i < 255; i++)
            n += (size_t)snprintf(yaml + n, cap - n, "1, ");
        n += (size_t)snprintf(yaml + n, cap - n, "]\ny: [");
        for (i = 0; i < aliases; i++)
            n += (size_t)snprintf(yaml + n, cap - n, "*a, ");
        n += (size_t)snprintf(yaml + n, cap - n, "]\n");
        assert_null(conf_load_buf("aliases.yaml", yaml, n, &e));
        if (aliases == 256)
            assert_non_null(strstr(e.msg, "unknown key \"x\""));
        else
            assert_non_null(strstr(e.msg, "aliases expand the document to "
                                          "too many nodes (more than 65536 "
                                          "beyond"));
    }
    free(yaml);
}

static void
test_err_too_many(void **state)
{
    size_t cap = 1 << 20, n = 0;
    char *yaml = malloc(cap);
    struct err e;
    int i;

    (void)state;
    assert_non_null(yaml);
    n += (size_t)snprintf(yaml + n, cap - n,
                          "services:\n  - name: s\n    listen:\n");
    for (i = 0; i < 257; i++)
        n += (size_t)snprintf(yaml + n, cap - n, "      - 10.0.0.1:%d\n",
                              i + 1);
    n += (size_t)snprintf(yaml + n, cap - n, BACKENDS);
    assert_null(conf_load_buf("many.yaml", yaml, n, &e));
    assert_int_equal(e.line, 4);
    assert_int_equal(e.col, 7);
    assert_non_null(strstr(e.msg, "too many listen addresses"));
    free(yaml);
}

/* ---- files ------------------------------------------------------------- */

static char *
temp_file(const void *data, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path;
    int fd;

    if (dir == NULL || dir[0] == '\0')
        dir = P_tmpdir;
    assert_true(asprintf(&path, "%s/ferry-test-config-XXXXXX", dir) > 0);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static void
test_file(void **state)
{
    char *path = temp_file(full_yaml, strlen(full_yaml));
    struct err e;
    struct conf *c;

    (void)state;
    c = conf_load_file(path, &e);
    assert_non_null(c);
    assert_int_equal(c->table->nservices, 2);
    conf_free(c);
    unlink(path);

    assert_null(conf_load_file(path, &e));
    assert_string_equal(e.file, path);
    assert_int_equal(e.line, 0);
    assert_non_null(strstr(e.msg, "cannot open"));
    free(path);
}

static void
test_file_errors_name_the_file(void **state)
{
    static const char bad[] = "log:\n  level: loud\n";
    char *path = temp_file(bad, strlen(bad));
    struct err e;

    (void)state;
    assert_null(conf_load_file(path, &e));
    assert_string_equal(e.file, path);
    assert_int_equal(e.line, 2);
    assert_int_equal(e.col, 10);
    unlink(path);
    free(path);
}

static void
test_file_too_large(void **state)
{
    size_t len = CONF_FILE_MAX + 1;
    char *big = malloc(len), *path;
    struct err e;

    (void)state;
    assert_non_null(big);
    memset(big, '#', len);
    path = temp_file(big, len);
    assert_null(conf_load_file(path, &e));
    assert_non_null(strstr(e.msg, "too large"));
    assert_null(conf_load_buf("big", big, len, &e));
    assert_non_null(strstr(e.msg, "too large"));
    unlink(path);
    free(path);
    free(big);
}

static void
test_kubernetes_and_node(void **state)
{
    struct conf *c;
    struct err e;
    char ip[64];

    (void)state;
    /* Kubernetes mode needs no static services. */
    c = load("kubernetes:\n"
             "  enabled: true\n"
             "  kubeconfig: /etc/ferry/kubeconfig\n"
             "  api_server: https://198.18.0.1:6443\n"
             "  node_name: node1\n"
             "  service_selector: edge=true,tier in (web)\n"
             "node:\n"
             "  vip_interface: lo\n"
             "  node_port_addresses: [198.18.0.11, \"2001:2::11\"]\n"
             "  healthz_listen: 127.0.0.1:10256\n",
             &e);
    assert_non_null(c);
    assert_true(c->kube.enabled);
    assert_string_equal(c->kube.kubeconfig, "/etc/ferry/kubeconfig");
    assert_string_equal(c->kube.api_server, "https://198.18.0.1:6443");
    assert_string_equal(c->kube.node_name, "node1");
    assert_string_equal(c->kube.service_selector, "edge=true,tier in (web)");
    assert_string_equal(c->kube.sa_dir,
                        "/var/run/secrets/kubernetes.io/serviceaccount");
    assert_false(c->kube.insecure_skip_tls_verify);
    assert_string_equal(c->node.vip_interface, "lo");
    assert_int_equal(c->node.n_nodeport_addrs, 2);
    assert_string_equal(saddr_ip_str(&c->node.nodeport_addrs[1], ip,
                                     sizeof(ip)),
                        "2001:2::11");
    assert_int_equal(saddr_port(&c->node.healthz_listen), 10256);
    assert_int_equal(c->table->nservices, 0);
    conf_free(c);

    /* Defaults when the sections are absent. */
    c = load("services: [{name: a, listen: 127.0.0.1:1, backends: "
             "[{address: 127.0.0.1:2}]}]\n",
             &e);
    assert_non_null(c);
    assert_false(c->kube.enabled);
    assert_string_equal(c->node.vip_interface, "auto");
    assert_int_equal(c->node.n_nodeport_addrs, 0);
    assert_int_equal(saddr_port(&c->node.healthz_listen), 10256);
    conf_free(c);

    expect_error("kubernetes: {enabled: false}\n", 1, 1,
                 "config has no services");
    c = load("kubernetes: {enabled: true, mode: edge, edge_backends: nodeports,"
             " edge_nodes: [198.18.0.11, 198.18.0.12]}\n",
             &e);
    assert_non_null(c);
    assert_int_equal(c->kube.mode, CONF_KUBE_EDGE);
    assert_int_equal(c->kube.edge_backends, CONF_EDGE_NODEPORTS);
    assert_int_equal(c->kube.n_edge_nodes, 2);
    conf_free(c);
    expect_error("kubernetes: {enabled: true, mode: edge, "
                 "edge_backends: nodeports}\n",
                 1, 1, "needs the nodes' addresses");
    expect_error("kubernetes: {enabled: true}\nnode:\n"
                 "  node_port_addresses: [198.18.0.11:80]\n",
                 3, 25, "\"node_port_addresses\": not an IP address");
    expect_error("kubernetes: {enabled: maybe}\n", 1, 23, "\"enabled\"");
    expect_error("kubernetes: {api_server: \"\"}\n", 1, 26,
                 "must be 1 to 1023 characters long");
    expect_error("kubernetes: {enabled: true, nodename: x}\n", 1, 29,
                 "unknown key \"nodename\" in section \"kubernetes\"");

    /* The dataplane: nftables unless told, with kube-proxy's masquerade
     * rule; the ranges as written. */
    c = load("kubernetes: {enabled: true}\n", &e);
    assert_non_null(c);
    assert_int_equal(c->node.dataplane, CONF_DATAPLANE_NFTABLES);
    assert_int_equal(c->node.masquerade, CONF_MASQ_AUTO);
    assert_int_equal(c->node.n_cluster_cidrs, 0);
    assert_int_equal(c->node.n_service_cidrs, 0);
    assert_int_equal(c->node.proxy_port, 10263);
    assert_int_equal(c->node.proxy_steering, CONF_STEER_AUTO);
    conf_free(c);
    c = load("kubernetes: {enabled: true}\nnode:\n  dataplane: proxy\n"
             "  masquerade: all\n  proxy_steering: listen\n"
             "  cluster_cidrs: [198.18.0.0/16, \"2001:2::/48\"]\n"
             "  service_cidrs: 198.19.0.0/16\n",
             &e);
    assert_non_null(c);
    assert_int_equal(c->node.dataplane, CONF_DATAPLANE_PROXY);
    assert_int_equal(c->node.masquerade, CONF_MASQ_ALL);
    assert_int_equal(c->node.proxy_steering, CONF_STEER_LISTEN);
    assert_int_equal(c->node.n_cluster_cidrs, 2);
    assert_int_equal(c->node.cluster_cidrs[1].prefix, 48);
    assert_string_equal(saddr_ip_str(&c->node.cluster_cidrs[1].ip, ip,
                                     sizeof(ip)),
                        "2001:2::");
    assert_int_equal(c->node.n_service_cidrs, 1);
    assert_int_equal(c->node.service_cidrs[0].prefix, 16);
    conf_free(c);
    expect_error("kubernetes: {enabled: true}\nnode: {dataplane: ipvs}\n", 2,
                 19, "\"dataplane\"");
    expect_error("kubernetes: {enabled: true}\nnode: {proxy_port: 0}\n", 2,
                 20, "\"proxy_port\"");
    expect_error("kubernetes: {enabled: true}\nnode: {masquerade: some}\n",
                 2, 20, "\"masquerade\"");
    expect_error("kubernetes: {enabled: true}\nnode: {proxy_steering: tproxy}"
                 "\n",
                 2, 24, "\"proxy_steering\"");
    expect_error("kubernetes: {enabled: true}\n"
                 "node: {cluster_cidrs: [198.18.0.1/16]}\n",
                 2, 24, "host bits set after the prefix");
    expect_error("kubernetes: {enabled: true}\n"
                 "node: {cluster_cidrs: [198.18.0.0/33]}\n",
                 2, 24, "\"cluster_cidrs\"");
    expect_error("kubernetes: {enabled: true}\n"
                 "node: {service_cidrs: [198.18.0.0]}\n",
                 2, 24, "not an address/prefix");
    expect_error("kubernetes: {enabled: true}\n"
                 "node: {service_cidrs: [\"::ffff:198.18.0.0/112\"]}\n",
                 2, 24, "IPv4-mapped");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_builtin_defaults),
        cmocka_unit_test(test_proxy_protocol_keys),
        cmocka_unit_test(test_drain_timeout_key),
        cmocka_unit_test(test_source_rule_keys),
        cmocka_unit_test(test_udp_keys),
        cmocka_unit_test(test_access_log_keys),
        cmocka_unit_test(test_defaults_after_services),
        cmocka_unit_test(test_null_sections),
        cmocka_unit_test(test_builtin_yaml),
        cmocka_unit_test(test_aliases_allowed),
        cmocka_unit_test(test_err_syntax),
        cmocka_unit_test(test_err_empty),
        cmocka_unit_test(test_err_unknown_key),
        cmocka_unit_test(test_health_check_and_admin),
        cmocka_unit_test(test_kubernetes_and_node),
        cmocka_unit_test(test_err_health_check),
        cmocka_unit_test(test_err_wrong_type),
        cmocka_unit_test(test_err_integers),
        cmocka_unit_test(test_err_enums),
        cmocka_unit_test(test_err_addresses),
        cmocka_unit_test(test_err_durations),
        cmocka_unit_test(test_err_duplicate_listen),
        cmocka_unit_test(test_err_overlapping_listen),
        cmocka_unit_test(test_err_listen_vs_admin),
        cmocka_unit_test(test_metrics_listen),
        cmocka_unit_test(test_err_address_forms),
        cmocka_unit_test(test_err_no_backends),
        cmocka_unit_test(test_err_duplicates),
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_err_multi_document),
        cmocka_unit_test(test_err_alias_bomb),
        cmocka_unit_test(test_err_alias_limit),
        cmocka_unit_test(test_err_too_many),
        cmocka_unit_test(test_err_nesting),
        cmocka_unit_test(test_err_anchors_directives),
        cmocka_unit_test(test_file),
        cmocka_unit_test(test_file_errors_name_the_file),
        cmocka_unit_test(test_file_too_large),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
