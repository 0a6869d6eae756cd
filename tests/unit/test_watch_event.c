/* Line splitter, watch-event decoding and RV rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kcache.h"
#include "linebuf.h"
#include "reflector.h"

struct lines {
    char got[8][256];
    int n;
};

static int
on_line(void *arg, const char *line, size_t len)
{
    struct lines *l = arg;

    assert_true(l->n < 8);
    assert_true(len < 256);
    memcpy(l->got[l->n], line, len);
    l->got[l->n][len] = '\0';
    l->n++;
    return 0;
}

static void
test_split_chunks(void **state)
{
    const char *stream = "{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}\n{\"d\"";
    struct linebuf lb;
    struct lines l = {0};
    size_t i, step;

    (void)state;
    for (step = 1; step <= 7; step++) {
        memset(&l, 0, sizeof(l));
        linebuf_init(&lb, 64);
        for (i = 0; i < strlen(stream); i += step) {
            size_t n = strlen(stream) - i < step ? strlen(stream) - i : step;
            assert_int_equal(linebuf_feed(&lb, stream + i, n, on_line, &l), 0);
        }
        assert_int_equal(l.n, 3);
        assert_string_equal(l.got[0], "{\"a\":1}");
        assert_string_equal(l.got[1], "{\"b\":2}");
        assert_string_equal(l.got[2], "{\"c\":3}");
        assert_int_equal(linebuf_pending(&lb), 4);
        linebuf_deinit(&lb);
    }
}

static void
test_split_cap(void **state)
{
    struct linebuf lb;
    struct lines l = {0};
    char big[100];

    (void)state;
    memset(big, 'x', sizeof(big));
    linebuf_init(&lb, 16);
    /* Oversized line split over chunks, then a good one in the same
     * chunk as the end of the bad one. */
    assert_int_equal(linebuf_feed(&lb, "short1\nxx", 9, on_line, &l), 0);
    assert_int_equal(linebuf_feed(&lb, big, sizeof(big), on_line, &l), 0);
    assert_int_equal(linebuf_feed(&lb, "yy\nok2\n", 7, on_line, &l), 0);
    /* Oversized line whole inside one chunk. */
    assert_int_equal(linebuf_feed(&lb, big, 20, on_line, &l), 0);
    assert_int_equal(linebuf_feed(&lb, "\nok3\n", 5, on_line, &l), 0);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.got[0], "short1");
    assert_string_equal(l.got[1], "ok2");
    assert_string_equal(l.got[2], "ok3");
    assert_int_equal(lb.dropped, 2);
    /* Exactly at the cap is accepted. */
    assert_int_equal(linebuf_feed(&lb, "0123456789abcdef\n", 17, on_line, &l),
                     0);
    assert_int_equal(l.n, 4);
    linebuf_reset(&lb);
    linebuf_deinit(&lb);
}

static int
stop_cb(void *arg, const char *line, size_t len)
{
    (void)line;
    (void)len;
    (*(int *)arg)++;
    return 7;
}

static void
test_split_stop(void **state)
{
    struct linebuf lb;
    int calls = 0;

    (void)state;
    linebuf_init(&lb, 64);
    assert_int_equal(linebuf_feed(&lb, "a\nb\n", 4, stop_cb, &calls), 7);
    assert_int_equal(calls, 1);
    linebuf_deinit(&lb);
}

static int
apply(struct kcache *c, const char *line, struct kcache_event *ev,
      struct err *e)
{
    err_clear(e);
    return kcache_apply_line(c, line, strlen(line), ev, e);
}

#define SVC(type, name, rv)                                                    \
    "{\"type\":\"" type "\",\"object\":{\"kind\":\"Service\",\"metadata\":"    \
    "{\"namespace\":\"shop\",\"name\":\"" name "\",\"resourceVersion\":\"" rv  \
    "\"},\"spec\":{\"clusterIP\":\"198.18.0.10\"}}}"

static void
test_event_types(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;

    (void)state;
    kcache_set_rv(c, "100");
    assert_int_equal(apply(c, SVC("ADDED", "web", "101"), &ev, &e),
                     KCACHE_APPLIED);
    assert_int_equal(ev.type, KCACHE_EV_ADDED);
    assert_string_equal(ev.rv, "101");
    assert_non_null(kcache_find(c, "shop/web"));
    assert_int_equal(apply(c, SVC("MODIFIED", "web", "102"), &ev, &e),
                     KCACHE_APPLIED);
    assert_int_equal(ev.type, KCACHE_EV_MODIFIED);
    assert_int_equal(kcache_size(c), 1);
    assert_int_equal(apply(c, SVC("MODIFIED", "db", "103"), &ev, &e),
                     KCACHE_APPLIED); /* unknown key: added */
    assert_int_equal(kcache_size(c), 2);
    assert_int_equal(apply(c, SVC("DELETED", "web", "104"), &ev, &e),
                     KCACHE_APPLIED);
    assert_null(kcache_find(c, "shop/web"));
    assert_string_equal(kcache_rv(c), "104");
    /* The deleted object, as the event carried it, for the caller. */
    assert_null(ev.obj);
    assert_non_null(ev.gone);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(ev.gone, "metadata"), "name")),
                        "web");
    assert_int_equal(apply(c, SVC("DELETED", "nothere", "105"), &ev, &e),
                     KCACHE_APPLIED);
    assert_int_equal(kcache_size(c), 1);
    kcache_free(c);
}

static void
test_event_bookmark(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;
    uint64_t ch;

    (void)state;
    kcache_set_rv(c, "900");
    ch = kcache_changes(c);
    assert_int_equal(
        apply(c,
              "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Service\","
              "\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":"
              "\"901\"},\"spec\":{},\"status\":{\"loadBalancer\":{}}}}",
              &ev, &e),
        KCACHE_APPLIED);
    assert_int_equal(ev.type, KCACHE_EV_BOOKMARK);
    assert_int_equal(kcache_size(c), 0);
    assert_int_equal(kcache_changes(c), ch);
    assert_string_equal(kcache_rv(c), "901");
    /* A bookmark at the same RV is fine, an older one is a regression. */
    assert_int_equal(apply(c,
                           "{\"type\":\"BOOKMARK\",\"object\":{"
                           "\"metadata\":{\"resourceVersion\":\"901\"}}}",
                           &ev, &e),
                     KCACHE_APPLIED);
    assert_int_equal(apply(c,
                           "{\"type\":\"BOOKMARK\",\"object\":{"
                           "\"metadata\":{\"resourceVersion\":\"899\"}}}",
                           &ev, &e),
                     KCACHE_REGRESS);
    /* Even a bookmark that names an object is never stored. */
    assert_int_equal(
        apply(c,
              "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"name\":"
              "\"x\",\"namespace\":\"y\",\"resourceVersion\":\"950\"}}}",
              &ev, &e),
        KCACHE_APPLIED);
    assert_int_equal(kcache_size(c), 0);
    assert_int_equal(apply(c, "{\"type\":\"BOOKMARK\",\"object\":{}}", &ev, &e),
                     -1);
    kcache_free(c);
}

static void
test_event_error(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;

    (void)state;
    assert_int_equal(
        apply(c,
              "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\","
              "\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
              "\"message\":\"too old resource version: 700 (812)\","
              "\"reason\":\"Expired\",\"code\":410}}",
              &ev, &e),
        KCACHE_ERROR);
    assert_int_equal(ev.code, 410);
    assert_string_equal(ev.reason, "Expired");
    assert_string_equal(ev.message, "too old resource version: 700 (812)");
    assert_int_equal(apply(c,
                           "{\"type\":\"ERROR\",\"object\":{\"reason\":"
                           "\"Gone\"}}",
                           &ev, &e),
                     KCACHE_ERROR);
    assert_int_equal(ev.code, 410);
    assert_int_equal(apply(c,
                           "{\"type\":\"ERROR\",\"object\":{\"code\":500,"
                           "\"reason\":\"InternalError\"}}",
                           &ev, &e),
                     KCACHE_ERROR);
    assert_int_equal(ev.code, 500);
    assert_int_equal(kcache_size(c), 0);
    kcache_free(c);
}

static void
test_event_malformed(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;

    (void)state;
    assert_int_equal(apply(c, "{\"type\":\"ADDED\",", &ev, &e), -1);
    assert_non_null(strstr(e.msg, "bad JSON"));
    assert_int_equal(ev.skip, SKIP_MALFORMED);
    assert_int_equal(apply(c, "[1,2]", &ev, &e), -1);
    assert_int_equal(apply(c,
                           "{\"type\":\"RENAMED\",\"object\":{"
                           "\"metadata\":{\"namespace\":\"a\",\"name\":"
                           "\"b\"}}}",
                           &ev, &e),
                     -1);
    assert_string_equal(e.obj, "a/b");
    assert_int_equal(apply(c, "{\"type\":\"ADDED\",\"object\":5}", &ev, &e),
                     -1);
    assert_int_equal(apply(c,
                           "{\"type\":\"ADDED\",\"object\":{\"metadata\":"
                           "{\"namespace\":\"a\"}}}",
                           &ev, &e),
                     -1);
    assert_non_null(strstr(e.msg, "metadata.name"));
    assert_int_equal(apply(c,
                           "{\"type\":\"ADDED\",\"object\":{\"metadata\":"
                           "{\"name\":\"n\"}}}",
                           &ev, &e),
                     -1);
    assert_non_null(strstr(e.msg, "metadata.namespace"));
    assert_int_equal(apply(c, "{\"type\":\"ADDED\",\"object\":{}}", &ev, &e),
                     -1);
    assert_int_equal(
        apply(c,
              "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":"
              "{\"namespace\":\"a\",\"name\":\"p\"}}}",
              &ev, &e),
        -1);
    assert_string_equal(e.obj, "a/p");
    assert_int_equal(ev.skip, SKIP_MALFORMED);
    assert_int_equal(kcache_size(c), 0);
    kcache_free(c);
}

/* Why a line or list item was refused, for the skip counters. */
static void
test_skip_reasons(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    enum skip_reason why = SKIP__COUNT;
    struct err e;
    char line[2048], name[600];

    (void)state;
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(line, sizeof(line),
             "{\"type\":\"ADDED\",\"object\":{\"metadata\":{"
             "\"namespace\":\"a\",\"name\":\"%s\"}}}",
             name);
    assert_int_equal(apply(c, line, &ev, &e), -1);
    assert_int_equal(ev.skip, SKIP_NAME_TOO_LONG);
    assert_int_equal(apply(c, "{\"type\":\"ADDED\",\"object\":{}}", &ev, &e),
                     -1);
    assert_int_equal(ev.skip, SKIP_MALFORMED);
    assert_int_equal(apply(c, "{\"type\":\"NOPE\",\"object\":{}}", &ev, &e),
                     -1);
    assert_int_equal(ev.skip, SKIP_MALFORMED);
    /* List items go through kcache_put_why(). */
    err_clear(&e);
    assert_int_equal(
        kcache_put_why(c, json_pack("{s:{s:s}}", "metadata", "name", "x"), &why,
                       &e),
        -1);
    assert_int_equal(why, SKIP_MALFORMED);
    assert_non_null(strstr(e.msg, "metadata.namespace"));
    why = SKIP__COUNT;
    assert_int_equal(kcache_put_why(c,
                                    json_pack("{s:{s:s,s:s}}", "metadata",
                                              "name", "x", "namespace", "y"),
                                    &why, &e),
                     0);
    assert_int_equal(kcache_size(c), 1);
    kcache_free(c);
}

struct deep {
    struct kcache *c;
    int lines, refused, applied;
    struct err e;
    struct kcache_event ev;
};

static int
deep_line(void *arg, const char *line, size_t len)
{
    struct deep *d = arg;
    struct kcache_event ev;
    struct err e;
    int rc;

    err_clear(&e);
    rc = kcache_apply_line(d->c, line, len, &ev, &e);
    d->lines++;
    if (rc < 0) {
        d->refused++;
        d->e = e;
        d->ev = ev;
    } else if (rc == KCACHE_APPLIED) {
        d->applied++;
    }
    return 0;
}

/* Nesting beyond jansson's JSON_PARSER_MAX_DEPTH in a watch line, as a
 * server could send it: refused by the parser after depth+1 bytes, with
 * a clear message, however long the line (no stack exhaustion, no
 * quadratic work), and the next line in the same chunk is decoded. */
static void
test_deep_nesting(void **state)
{
    static const char *const opens[] = {
        "[", "{\"a\":", "{\"type\":\"ADDED\",\"object\":["};
    const size_t mib = 1u << 20;
    size_t k;

    (void)state;
    for (k = 0; k < sizeof(opens) / sizeof(opens[0]); k++) {
        const char *good = "\n" SVC("ADDED", "web", "5") "\n";
        size_t ol = strlen(opens[k]), n = 0;
        char *buf = malloc(mib + strlen(good) + ol);
        struct linebuf lb;
        struct deep d;

        assert_non_null(buf);
        while (n + ol <= mib) {
            memcpy(buf + n, opens[k], ol);
            n += ol;
        }
        memcpy(buf + n, good, strlen(good));
        n += strlen(good);
        memset(&d, 0, sizeof(d));
        d.c = kcache_new("Service", 1);
        linebuf_init(&lb, REFLECTOR_LINE_MAX);
        assert_int_equal(linebuf_feed(&lb, buf, n, deep_line, &d), 0);
        assert_int_equal(d.lines, 2);
        assert_int_equal(d.refused, 1);
        assert_int_equal(d.ev.skip, SKIP_MALFORMED);
        assert_non_null(strstr(d.e.msg, "bad JSON"));
        assert_non_null(strstr(d.e.msg, "maximum parsing depth"));
        /* The parser stopped at the depth cap, not at the end. */
        assert_true(d.e.line == 1);
        assert_true((size_t)d.e.col <= (JSON_PARSER_MAX_DEPTH + 1) * ol);
        assert_int_equal(d.applied, 1);
        assert_non_null(kcache_find(d.c, "shop/web"));
        linebuf_deinit(&lb);
        kcache_free(d.c);
        free(buf);
    }
}

/* Nesting up to the cap inside an object is legal JSON: stored, and
 * freed without trouble. */
static void
test_deep_but_legal(void **state)
{
    const char *head = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{"
                       "\"namespace\":\"a\",\"name\":\"deep\"},\"x\":";
    size_t depth = JSON_PARSER_MAX_DEPTH - 3, n = 0, i;
    char *buf = malloc(strlen(head) + 2 * depth + 8);
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;

    (void)state;
    assert_non_null(buf);
    memcpy(buf, head, strlen(head));
    n = strlen(head);
    for (i = 0; i < depth; i++)
        buf[n++] = '[';
    for (i = 0; i < depth; i++)
        buf[n++] = ']';
    memcpy(buf + n, "}}", 2);
    n += 2;
    err_clear(&e);
    assert_int_equal(kcache_apply_line(c, buf, n, &ev, &e), KCACHE_APPLIED);
    assert_non_null(kcache_find(c, "a/deep"));
    kcache_free(c);
    free(buf);
}

static void
test_rv_cmp(void **state)
{
    int cmp = 99;

    (void)state;
    assert_int_equal(kcache_rv_cmp("812", "812", &cmp), 0);
    assert_int_equal(cmp, 0);
    assert_int_equal(kcache_rv_cmp("99", "100", &cmp), 0);
    assert_int_equal(cmp, -1); /* longer is larger, not lexical */
    assert_int_equal(kcache_rv_cmp("1000", "999", &cmp), 0);
    assert_int_equal(cmp, 1);
    assert_int_equal(kcache_rv_cmp("123", "124", &cmp), 0);
    assert_int_equal(cmp, -1);
    assert_int_equal(kcache_rv_cmp("0", "1", &cmp), 0);
    assert_int_equal(kcache_rv_cmp("012", "12", &cmp), -1);
    assert_int_equal(kcache_rv_cmp("", "12", &cmp), -1);
    assert_int_equal(kcache_rv_cmp("12a", "12", &cmp), -1);
    assert_int_equal(kcache_rv_cmp("-1", "12", &cmp), -1);
}

static void
test_rv_regression(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;

    (void)state;
    kcache_set_rv(c, "812");
    assert_int_equal(apply(c, SVC("ADDED", "web", "812"), &ev, &e),
                     KCACHE_REGRESS);
    assert_int_equal(apply(c, SVC("ADDED", "web", "99"), &ev, &e),
                     KCACHE_REGRESS);
    assert_int_equal(kcache_size(c), 0);
    assert_int_equal(apply(c, SVC("ADDED", "web", "1000"), &ev, &e),
                     KCACHE_APPLIED);
    assert_string_equal(kcache_rv(c), "1000");
    /* Opaque RVs cannot be compared: let them through. */
    assert_int_equal(apply(c, SVC("MODIFIED", "web", "abc"), &ev, &e),
                     KCACHE_APPLIED);
    kcache_free(c);
}

static void
test_replace(void **state)
{
    struct kcache *c = kcache_new("Service", 1);
    struct kcache *n = kcache_new("Service", 1);
    struct kcache_event ev;
    struct err e;
    uint64_t ch;

    (void)state;
    apply(c, SVC("ADDED", "a", "1"), &ev, &e);
    apply(c, SVC("ADDED", "b", "2"), &ev, &e);
    apply(n, SVC("ADDED", "b", "2"), &ev, &e);
    apply(n, SVC("ADDED", "c", "3"), &ev, &e);
    kcache_set_rv(n, "7");
    ch = kcache_changes(c);
    assert_int_equal(kcache_replace(c, n), 1);
    assert_true(kcache_changes(c) > ch);
    assert_null(kcache_find(c, "shop/a"));
    assert_non_null(kcache_find(c, "shop/c"));
    assert_string_equal(kcache_rv(c), "7");
    assert_int_equal(kcache_size(n), 0);
    /* Replacing by identical content is not a change. */
    apply(n, SVC("ADDED", "b", "2"), &ev, &e);
    apply(n, SVC("ADDED", "c", "3"), &ev, &e);
    ch = kcache_changes(c);
    assert_int_equal(kcache_replace(c, n), 0);
    assert_int_equal(kcache_changes(c), ch);
    kcache_free(c);
    kcache_free(n);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_chunks),
        cmocka_unit_test(test_split_cap),
        cmocka_unit_test(test_split_stop),
        cmocka_unit_test(test_event_types),
        cmocka_unit_test(test_event_bookmark),
        cmocka_unit_test(test_event_error),
        cmocka_unit_test(test_event_malformed),
        cmocka_unit_test(test_skip_reasons),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_deep_but_legal),
        cmocka_unit_test(test_rv_cmp),
        cmocka_unit_test(test_rv_regression),
        cmocka_unit_test(test_replace),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
