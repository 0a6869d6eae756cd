/* Unit tests for kube-proxy's health endpoints (proxy/node/nodehealth.c):
 * /healthz, /livez, /readyz and the healthCheckNodePort replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "httpreq.h"
#include "nodehealth.h"
#include "sbuf.h"

#define NOW   1700000000.0
#define STALE 60.0

static struct httpreq
req(const char *text)
{
    struct httpreq r;

    assert_int_equal(httpreq_parse(text, strlen(text), &r, NULL), HTTPREQ_OK);
    return r;
}

static int
code(const struct sbuf *b)
{
    int c = 0;

    assert_non_null(b->p);
    assert_int_equal(sscanf(b->p, "HTTP/1.1 %d ", &c), 1);
    return c;
}

static const char *
body(const struct sbuf *b)
{
    static char out[1024];
    const char *p = strstr(b->p, "\r\n\r\n");

    assert_non_null(p);
    snprintf(out, sizeof(out), "%.*s", (int)(b->len - (size_t)(p + 4 - b->p)),
             p + 4);
    return out;
}

static int
node(const struct nodehealth_state *st, const char *path, struct sbuf *b)
{
    char text[256];
    struct httpreq r;

    snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    r = req(text);
    sbuf_deinit(b);
    sbuf_init(b, 4096);
    nodehealth_reply_node(st, STALE, &r, NOW, b);
    return code(b);
}

static void
test_healthz_livez(void **state)
{
    struct nodehealth_state st = {1, 0, 0, 0, NOW - 5};
    struct sbuf b;

    (void)state;
    sbuf_init(&b, 4096);
    assert_int_equal(node(&st, "/healthz", &b), 200);
    assert_non_null(strstr(body(&b), "\"nodeEligible\":true"));
    assert_non_null(strstr(b.p, "Content-Type: application/json"));
    assert_int_equal(node(&st, "/livez", &b), 200);
    assert_null(strstr(body(&b), "nodeEligible"));

    /* A change pending, but not for long: still healthy. */
    st.pending_since = NOW - 30;
    assert_int_equal(node(&st, "/healthz", &b), 200);
    /* Pending longer than the threshold: both fail. */
    st.pending_since = NOW - 61;
    assert_int_equal(node(&st, "/healthz", &b), 503);
    assert_int_equal(node(&st, "/livez", &b), 503);
    st.pending_since = 0;

    /* The node is going away: /healthz fails, /livez does not. */
    st.node_deleting = 1;
    assert_int_equal(node(&st, "/healthz", &b), 503);
    assert_non_null(strstr(body(&b), "\"nodeEligible\":false"));
    assert_int_equal(node(&st, "/livez", &b), 200);
    sbuf_deinit(&b);
}

static void
test_readyz_and_errors(void **state)
{
    struct nodehealth_state st = {0, 0, 0, 0, 0};
    struct sbuf b;
    struct httpreq r;

    (void)state;
    sbuf_init(&b, 4096);
    assert_int_equal(node(&st, "/readyz", &b), 503);
    st.synced = 1;
    assert_int_equal(node(&st, "/readyz", &b), 200);
    assert_string_equal(body(&b), "ready\n");
    st.shutting_down = 1;
    assert_int_equal(node(&st, "/readyz", &b), 503);
    assert_int_equal(node(&st, "/metrics", &b), 404);
    /* Read-only: no control verbs. */
    r = req("POST /readyz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    sbuf_deinit(&b);
    sbuf_init(&b, 4096);
    nodehealth_reply_node(&st, STALE, &r, NOW, &b);
    assert_int_equal(code(&b), 405);
    /* HEAD: headers only. */
    r = req("HEAD /healthz HTTP/1.1\r\n\r\n");
    sbuf_deinit(&b);
    sbuf_init(&b, 4096);
    nodehealth_reply_node(&st, STALE, &r, NOW, &b);
    assert_int_equal(code(&b), 200);
    assert_string_equal(body(&b), "");
    sbuf_deinit(&b);
}

static int
service(const struct nodehealth_state *st, unsigned local, struct sbuf *b)
{
    struct httpreq r = req("GET / HTTP/1.1\r\n\r\n");

    sbuf_deinit(b);
    sbuf_init(b, 4096);
    nodehealth_reply_service(st, STALE, "shop", "web", local, &r, NOW, b);
    return code(b);
}

static void
test_service_health(void **state)
{
    struct nodehealth_state st = {1, 0, 0, 0, NOW};
    struct sbuf b;

    (void)state;
    sbuf_init(&b, 4096);
    assert_int_equal(service(&st, 1, &b), 200);
    assert_string_equal(body(&b),
                        "{\"service\":{\"namespace\":\"shop\",\"name\":"
                        "\"web\"},\"localEndpoints\":1,"
                        "\"serviceProxyHealthy\":true}\n");
    assert_non_null(strstr(b.p, "X-Load-Balancing-Endpoint-Weight: 1\r\n"));
    assert_int_equal(service(&st, 3, &b), 200);
    assert_non_null(strstr(b.p, "X-Load-Balancing-Endpoint-Weight: 3\r\n"));
    /* No local endpoint: the load balancer must send elsewhere. */
    assert_int_equal(service(&st, 0, &b), 503);
    assert_non_null(strstr(body(&b), "\"localEndpoints\":0"));
    /* A proxy that is not healthy fails every service too. */
    st.pending_since = NOW - 100;
    assert_int_equal(service(&st, 2, &b), 503);
    assert_non_null(strstr(body(&b), "\"serviceProxyHealthy\":false"));
    st.pending_since = 0;
    st.node_deleting = 1;
    assert_int_equal(service(&st, 2, &b), 503);
    sbuf_deinit(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz_livez),
        cmocka_unit_test(test_readyz_and_errors),
        cmocka_unit_test(test_service_health),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
