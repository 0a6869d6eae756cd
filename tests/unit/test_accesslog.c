#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "accesslog.h"

/* 2026-01-02T03:04:05.250Z */
#define T_END 1767323045.25

static struct saddr
addr(const char *s)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_hostport(s, &a, 0, &why), 0);
    return a;
}

static struct accesslog_rec
rec(const struct saddr *client, enum accesslog_cause cause)
{
    struct accesslog_rec r;

    memset(&r, 0, sizeof(r));
    r.start = T_END - 1.5;
    r.end = T_END;
    r.connect = 0.0021;
    r.id = 42;
    r.bytes_up = 100;
    r.bytes_down = 20000;
    r.client = client;
    r.service = "web";
    r.backend = "127.0.0.1:8080";
    r.attempts = 2;
    r.cause = cause;
    return r;
}

static void
test_text_line(void **state)
{
    struct saddr c = addr("127.0.0.1:5555");
    struct accesslog_rec r = rec(&c, ACCESSLOG_SERVER_CLOSE);
    char out[ACCESSLOG_LINE_MAX + 1];
    size_t n;

    (void)state;
    n = accesslog_format(&r, CONF_ACCESS_LOG_TEXT, out);
    out[n] = '\0';
    assert_string_equal(out, "2026-01-02T03:04:05.250Z id=42 "
                             "client=127.0.0.1:5555 service=web "
                             "backend=127.0.0.1:8080 attempts=2 "
                             "connect_ms=2.100 duration_ms=1500.000 "
                             "bytes_up=100 bytes_down=20000 "
                             "cause=server_close\n");
}

static void
test_json_line(void **state)
{
    struct saddr c = addr("[::1]:5555");
    struct accesslog_rec r = rec(&c, ACCESSLOG_IDLE_TIMEOUT);
    char out[ACCESSLOG_LINE_MAX + 1];
    size_t n;

    (void)state;
    n = accesslog_format(&r, CONF_ACCESS_LOG_JSON, out);
    out[n] = '\0';
    assert_string_equal(out, "{\"time\":\"2026-01-02T03:04:05.250Z\","
                             "\"id\":42,\"client\":\"[::1]:5555\","
                             "\"service\":\"web\","
                             "\"backend\":\"127.0.0.1:8080\","
                             "\"attempts\":2,\"connect_ms\":2.100,"
                             "\"duration_ms\":1500.000,\"bytes_up\":100,"
                             "\"bytes_down\":20000,"
                             "\"cause\":\"idle_timeout\"}\n");
}

/* Refused before any backend: no backend, no connect time. */
static void
test_refused_line(void **state)
{
    struct saddr c = addr("127.0.0.1:5555");
    struct accesslog_rec r = rec(&c, ACCESSLOG_LIMIT);
    char out[ACCESSLOG_LINE_MAX + 1];
    size_t n;

    (void)state;
    r.backend = NULL;
    r.connect = -1;
    r.attempts = 0;
    n = accesslog_format(&r, CONF_ACCESS_LOG_TEXT, out);
    out[n] = '\0';
    assert_non_null(strstr(out, " backend=- attempts=0 connect_ms=- "));
    assert_non_null(strstr(out, " cause=limit\n"));
    n = accesslog_format(&r, CONF_ACCESS_LOG_JSON, out);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"backend\":null,"));
    assert_non_null(strstr(out, "\"connect_ms\":null,"));
}

/* Every cause has its own name, in both formats. */
static void
test_every_cause(void **state)
{
    struct saddr c = addr("127.0.0.1:1");
    char out[ACCESSLOG_LINE_MAX + 1], want[128];
    unsigned i, j;
    size_t n;

    (void)state;
    for (i = 0; i < ACCESSLOG__COUNT; i++) {
        struct accesslog_rec r = rec(&c, (enum accesslog_cause)i);
        assert_non_null(accesslog_cause_text[i]);
        for (j = 0; j < i; j++)
            assert_string_not_equal(accesslog_cause_text[i],
                                    accesslog_cause_text[j]);
        n = accesslog_format(&r, CONF_ACCESS_LOG_TEXT, out);
        out[n] = '\0';
        snprintf(want, sizeof(want), " cause=%s\n", accesslog_cause_text[i]);
        assert_non_null(strstr(out, want));
        n = accesslog_format(&r, CONF_ACCESS_LOG_JSON, out);
        out[n] = '\0';
        snprintf(want, sizeof(want), "\"cause\":\"%s\"}\n",
                 accesslog_cause_text[i]);
        assert_non_null(strstr(out, want));
    }
    assert_string_equal(accesslog_cause_text[ACCESSLOG_CLIENT_CLOSE],
                        "client_close");
    assert_string_equal(accesslog_cause_text[ACCESSLOG_DRAIN_RESET],
                        "drain_reset");
}

/* A name with quotes or control bytes stays one valid line; a long one
 * is cut, never overflowing. */
static void
test_escaping_and_cut(void **state)
{
    struct saddr c = addr("127.0.0.1:1");
    struct accesslog_rec r = rec(&c, ACCESSLOG_CLIENT_CLOSE);
    char out[ACCESSLOG_LINE_MAX + 1], name[2048];
    size_t n;

    (void)state;
    r.service = "a\"b\\c\nd";
    n = accesslog_format(&r, CONF_ACCESS_LOG_JSON, out);
    out[n] = '\0';
    assert_non_null(strstr(out, "\"service\":\"a\\\"b\\\\c\\u000ad\""));
    n = accesslog_format(&r, CONF_ACCESS_LOG_TEXT, out);
    out[n] = '\0';
    assert_non_null(strstr(out, "service=a\"b\\c?d "));
    assert_null(memchr(out, '\n', n - 1));
    memset(name, 'x', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    r.service = name;
    r.backend = name;
    n = accesslog_format(&r, CONF_ACCESS_LOG_JSON, out);
    assert_true(n <= ACCESSLOG_LINE_MAX);
    assert_int_equal(out[n - 1], '\n');
}

static void
test_ring(void **state)
{
    struct accesslog_ring *rg = accesslog_ring_new(3);
    const char *line;
    size_t len;
    char *slot;
    int i;

    (void)state;
    assert_non_null(rg);
    assert_null(accesslog_ring_peek(rg, &len));
    for (i = 0; i < 3; i++) {
        slot = accesslog_ring_slot(rg);
        assert_non_null(slot);
        slot[0] = (char)('a' + i);
        accesslog_ring_push(rg, 1);
    }
    assert_null(accesslog_ring_slot(rg)); /* full: the caller drops */
    line = accesslog_ring_peek(rg, &len);
    assert_non_null(line);
    assert_int_equal(len, 1);
    assert_int_equal(line[0], 'a');
    accesslog_ring_pop(rg);
    /* Room for one more, which wraps around. */
    slot = accesslog_ring_slot(rg);
    assert_non_null(slot);
    slot[0] = 'd';
    accesslog_ring_push(rg, 1);
    for (i = 1; i < 4; i++) {
        line = accesslog_ring_peek(rg, &len);
        assert_non_null(line);
        assert_int_equal(line[0], 'a' + i);
        accesslog_ring_pop(rg);
    }
    assert_null(accesslog_ring_peek(rg, &len));
    accesslog_ring_free(rg);
    accesslog_ring_free(NULL);
    assert_null(accesslog_ring_new(0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_line),
        cmocka_unit_test(test_json_line),
        cmocka_unit_test(test_refused_line),
        cmocka_unit_test(test_every_cause),
        cmocka_unit_test(test_escaping_and_cut),
        cmocka_unit_test(test_ring),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
