/* Unit tests for the admin request parser (proxy/http/httpreq.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "httpreq.h"

static enum httpreq_rc
parse(const char *s, struct httpreq *r)
{
    const char *why = NULL;

    return httpreq_parse(s, strlen(s), r, &why);
}

static void
test_simple_get(void **state)
{
    const char *s = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    struct httpreq r;

    (void)state;
    assert_int_equal(parse(s, &r), HTTPREQ_OK);
    assert_int_equal(r.method, HTTPREQ_GET);
    assert_int_equal(r.minor, 1);
    assert_string_equal(r.path, "/metrics");
    assert_string_equal(r.query, "");
    assert_int_equal(r.length, strlen(s));
}

static void
test_methods_and_bare_lf(void **state)
{
    struct httpreq r;

    (void)state;
    assert_int_equal(parse("HEAD / HTTP/1.0\n\n", &r), HTTPREQ_OK);
    assert_int_equal(r.method, HTTPREQ_HEAD);
    assert_int_equal(r.minor, 0);
    assert_int_equal(parse("DELETE /x HTTP/1.1\r\n\r\n", &r), HTTPREQ_OK);
    assert_int_equal(r.method, HTTPREQ_OTHER);
    assert_int_equal(parse("POST /a HTTP/1.1\r\n\r\n", &r), HTTPREQ_OK);
    assert_int_equal(r.method, HTTPREQ_POST);
}

static void
test_incremental(void **state)
{
    const char *s = "POST /backends/web/web-1/weight?value=3 HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\nContent-Length: 4\r\n\r\nabcd";
    struct httpreq r;
    size_t i, n = strlen(s);
    const char *why;

    (void)state;
    /* Every prefix is "more, please"; the whole is one request. */
    for (i = 0; i < n; i++)
        assert_int_equal(httpreq_parse(s, i, &r, &why), HTTPREQ_AGAIN);
    assert_int_equal(httpreq_parse(s, n, &r, &why), HTTPREQ_OK);
    assert_int_equal(r.length, n);
    assert_string_equal(r.path, "/backends/web/web-1/weight");
    assert_string_equal(r.query, "value=3");
}

static void
test_percent_decoding_and_query(void **state)
{
    struct httpreq r;
    char v[32];

    (void)state;
    assert_int_equal(
        parse("POST /backends/web/%5B%3A%3A1%5D%3A80/drain?a=1&value=x%20y+z"
              "&flag HTTP/1.1\r\n\r\n",
              &r),
        HTTPREQ_OK);
    assert_string_equal(r.path, "/backends/web/[::1]:80/drain");
    assert_int_equal(httpreq_query(&r, "value", v, sizeof(v)), 0);
    assert_string_equal(v, "x y z");
    assert_int_equal(httpreq_query(&r, "a", v, sizeof(v)), 0);
    assert_string_equal(v, "1");
    assert_int_equal(httpreq_query(&r, "flag", v, sizeof(v)), 0);
    assert_string_equal(v, "");
    assert_int_equal(httpreq_query(&r, "missing", v, sizeof(v)), -1);
    assert_int_equal(httpreq_query(&r, "value", v, 3), -1); /* too long */
}

static void
test_malformed(void **state)
{
    static const char *const bad[] = {
        "GET\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\n\r\n",
        "GET /%zz HTTP/1.1\r\n\r\n",
        "GET /%00 HTTP/1.1\r\n\r\n",
        "GET /%0a HTTP/1.1\r\n\r\n",
        "GET /a%2 HTTP/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    };
    struct httpreq r;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &r) != HTTPREQ_BAD)
            fail_msg("accepted bad request #%zu: %s", i, bad[i]);
    }
}

static void
test_limits(void **state)
{
    static char big[HTTPREQ_MAX + 64];
    struct httpreq r;
    const char *why;
    size_t n;

    (void)state;
    /* Headers that never end. */
    n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
    memset(big + n, 'a', sizeof(big) - n);
    big[HTTPREQ_MAX / 2] = ':';
    assert_int_equal(httpreq_parse(big, HTTPREQ_MAX, &r, &why),
                     HTTPREQ_TOO_LARGE);
    assert_int_equal(httpreq_parse(big, sizeof(big), &r, &why),
                     HTTPREQ_TOO_LARGE);
    /* A request line that never ends. */
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    assert_int_equal(httpreq_parse(big, HTTPREQ_MAX, &r, &why),
                     HTTPREQ_TOO_LARGE);
    /* A body announced beyond the cap. */
    assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999"
                           "\r\n\r\n",
                           &r),
                     HTTPREQ_TOO_LARGE);
    /* A path longer than the path buffer. */
    n = (size_t)snprintf(big, sizeof(big), "GET /");
    memset(big + n, 'p', HTTPREQ_PATH_MAX + 10);
    n += HTTPREQ_PATH_MAX + 10;
    n += (size_t)snprintf(big + n, sizeof(big) - n, " HTTP/1.1\r\n\r\n");
    assert_int_equal(httpreq_parse(big, n, &r, &why), HTTPREQ_BAD);
    /* Too many header lines. */
    n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
    while (n + 8 < 2000)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "A: b\r\n");
    n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n");
    assert_int_equal(httpreq_parse(big, n, &r, &why), HTTPREQ_BAD);
}

static void
test_headers(void **state)
{
    const char *s = "POST /x HTTP/1.1\r\nHost:  127.0.0.1:9990 \r\n"
                    "x-ferry-control:1\r\nAuthorization: Bearer a b\r\n"
                    "X-Twice: 1\r\nx-twice: 2\r\nEmpty:\r\n\r\n";
    struct httpreq r;
    const char *v;
    size_t n;

    (void)state;
    assert_int_equal(parse(s, &r), HTTPREQ_OK);
    assert_int_equal(httpreq_header(&r, "host", &v, &n), 1);
    assert_int_equal(n, 14); /* trimmed both sides */
    assert_memory_equal(v, "127.0.0.1:9990", 14);
    assert_int_equal(httpreq_header(&r, "X-Ferry-Control", &v, &n), 1);
    assert_memory_equal(v, "1", n);
    assert_int_equal(httpreq_header(&r, "AUTHORIZATION", &v, &n), 1);
    assert_int_equal(n, 10);
    assert_memory_equal(v, "Bearer a b", n);
    assert_int_equal(httpreq_header(&r, "x-twice", &v, &n), 2);
    assert_memory_equal(v, "1", n); /* the first one */
    assert_int_equal(httpreq_header(&r, "empty", &v, &n), 1);
    assert_int_equal(n, 0);
    assert_int_equal(httpreq_header(&r, "origin", NULL, NULL), 0);
    assert_int_equal(httpreq_header(&r, "hos", NULL, NULL), 0);
    /* A request without headers has none. */
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", &r), HTTPREQ_OK);
    assert_int_equal(httpreq_header(&r, "host", NULL, NULL), 0);
}

static void
test_query_only(void **state)
{
    static const char *const value[] = {"value"};
    static const struct {
        const char *target;
        int ok;
    } cases[] = {
        {"/w", 1},
        {"/w?", 1},
        {"/w?value=5", 1},
        {"/w?value", 1},
        {"/w?value=5&value=300", 0},
        {"/w?value=5&value", 0},
        {"/w?value=5&other=1", 0},
        {"/w?other", 0},
        {"/w?value=5&", 0},
        {"/w?&value=5", 0},
        {"/w?valuex=5", 0},
        {"/w?valu=5", 0},
    };
    char req[128];
    struct httpreq r;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\n\r\n", cases[i].target);
        assert_int_equal(parse(req, &r), HTTPREQ_OK);
        if (httpreq_query_only(&r, value, 1) != cases[i].ok)
            fail_msg("%s: expected %d", cases[i].target, cases[i].ok);
    }
    /* No parameter allowed at all. */
    assert_int_equal(parse("POST /d HTTP/1.1\r\n\r\n", &r), HTTPREQ_OK);
    assert_int_equal(httpreq_query_only(&r, NULL, 0), 1);
    assert_int_equal(parse("POST /d?x HTTP/1.1\r\n\r\n", &r), HTTPREQ_OK);
    assert_int_equal(httpreq_query_only(&r, NULL, 0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_methods_and_bare_lf),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_percent_decoding_and_query),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_query_only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
