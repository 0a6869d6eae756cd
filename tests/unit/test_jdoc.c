/*
 * test_jdoc.c - jdoc_parse() against jansson on texts each side of every
 * rule, and the readers.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jdoc.h"

/* Parse <text> with both; they must agree, and on the value. Returns
 * whether it was accepted. */
static int
same_as_jansson(const char *text, size_t len)
{
    struct jdoc d = {0};
    json_error_t je;
    json_t *want = json_loadb(text, len, 0, &je), *got;
    char *buf = malloc(len + 1);
    struct err e;
    int rc;

    assert_non_null(buf);
    memcpy(buf, text, len);
    rc = jdoc_parse(&d, buf, len, &e);
    if ((want != NULL) != (rc == 0))
        fail_msg("jansson %s, jdoc %s: %.*s (%s)",
                 want ? "accepts" : "refuses", rc == 0 ? "accepts" : "refuses",
                 (int)len, text, rc == 0 ? je.text : e.msg);
    if (rc == 0) {
        got = jdoc_to_json(&d, 0);
        assert_non_null(got);
        assert_true(json_equal(want, got));
        json_decref(got);
    }
    json_decref(want);
    jdoc_free(&d);
    free(buf);
    return rc == 0;
}

#define ACCEPTED(s) assert_true(same_as_jansson((s), strlen(s)))
#define REFUSED(s)  assert_false(same_as_jansson((s), strlen(s)))

static void
test_agrees_with_jansson(void **state)
{
    static const char *const ok[] = {
        "{}", "[]", " \t\r\n[ ] \n", "{\"a\":1}", "[1,2,3]",
        "[0,-0,-1,9223372036854775807,-9223372036854775808]",
        "[0.5,-1.25e+3,1E-2,2e-4]",
        "[1e-400]", "[true,false,null]",
        "{\"a\":{\"b\":[{\"c\":\"d\"},[]]},\"e\":{}}",
        "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
        "[\"\\u00e9\\u20ac\\ud83d\\ude00\"]", "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]",
        "{\"k\":1,\"k\":2}", "[\"a\\u0041b\"]"};
    static const char *const bad[] = {
        "", "  ", "1", "\"s\"", "null", "{", "[", "[1,]", "{\"a\":1,}", "[1 2]",
        "{\"a\" 1}", "{1:2}", "[01]", "[1.]", "[.5]", "[-]", "[+1]", "[1e]",
        "[1e+]", "[9223372036854775808]", "[-9223372036854775809]",
        "[1e400]", "[2e400000000000000000000000000000]", "[tru]", "[truex]", "[nul]", "[\"a]", "[\"\\x\"]",
        "[\"\\u12\"]", "[\"\\u0000\"]", "[\"\\ud800\"]", "[\"\\udc00\"]",
        "[\"\\ud800\\u0041\"]", "[\"\x01\"]", "[\"\xc0\xaf\"]",
        "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\xff\"]",
        "[\"\xe2\x82\"]", "[] []", "[]x", "{\"a\":1}}", "[\xc3\xa9]"};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ACCEPTED(ok[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        REFUSED(bad[i]);
    /* A NUL byte inside the text, in a string and outside. */
    assert_false(same_as_jansson("[\"a\0b\"]", 7));
    assert_false(same_as_jansson("[]\0", 3));
}

/* jdoc refuses a NUL byte anywhere. jansson does too, except right after
 * a number, where it skips one ("[1\0]" is [1] to it); no API server
 * sends one. */
static void
test_nul_refused(void **state)
{
    char text[] = "[1\0]";
    struct jdoc d = {0};
    struct err e;

    (void)state;
    assert_int_equal(jdoc_parse(&d, text, 4, &e), -1);
    jdoc_free(&d);
}

/* 2,048 levels are taken, one more is not (jansson's limit). */
static void
test_depth(void **state)
{
    enum { N = JDOC_DEPTH + 1 };
    char *s = malloc(2 * N + 1);
    size_t i;

    (void)state;
    assert_non_null(s);
    for (i = 0; i < N - 1; i++)
        s[i] = '[';
    for (i = 0; i < N - 1; i++)
        s[N - 1 + i] = ']';
    assert_true(same_as_jansson(s, 2 * (N - 1)));
    for (i = 0; i < N; i++)
        s[i] = '[';
    for (i = 0; i < N; i++)
        s[N + i] = ']';
    assert_false(same_as_jansson(s, 2 * N));
    free(s);
}

static void
test_readers(void **state)
{
    char text[] = "{\"metadata\":{\"name\":\"web\\u002d1\",\"labels\":{}},"
                  "\"ports\":[{\"port\":80},{\"port\":\"x\"},{}],"
                  "\"n\":-12,\"r\":1.5,\"k\":\"first\",\"k\":\"last\"}";
    struct jdoc d = {0};
    struct err e;
    int md, ports, p, n = 0;
    long long sum = 0;

    (void)state;
    assert_int_equal(jdoc_parse(&d, text, strlen(text), &e), 0);
    md = jdoc_get(&d, 0, "metadata");
    assert_int_equal(jdoc_type(&d, md), JD_OBJ);
    assert_string_equal(jdoc_gets(&d, md, "name"), "web-1");
    assert_null(jdoc_gets(&d, md, "labels"));
    assert_int_equal(jdoc_get(&d, md, "namespace"), -1);
    assert_int_equal(jdoc_get(&d, -1, "name"), -1);
    assert_null(jdoc_gets(&d, -1, "name"));
    assert_string_equal(jdoc_gets(&d, 0, "k"), "last");
    ports = jdoc_get(&d, 0, "ports");
    assert_int_equal(jdoc_size(&d, ports), 3);
    assert_int_equal(jdoc_size(&d, md), 0);
    jdoc_foreach(&d, ports, p)
    {
        sum += jdoc_int(&d, jdoc_get(&d, p, "port"));
        n++;
    }
    assert_int_equal(n, 3);
    assert_int_equal(sum, 80);
    assert_int_equal(jdoc_int(&d, jdoc_get(&d, 0, "n")), -12);
    assert_int_equal(jdoc_int(&d, jdoc_get(&d, 0, "r")), 0);
    assert_int_equal(jdoc_first(&d, md), -1);
    jdoc_foreach(&d, jdoc_get(&d, md, "labels"), p) fail();
    jdoc_free(&d);
}

/* An error says where, by line and column, and what. */
static void
test_error_position(void **state)
{
    char text[] = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    struct jdoc d = {0};
    struct err e;

    (void)state;
    err_clear(&e);
    assert_int_equal(jdoc_parse(&d, text, strlen(text), &e), -1);
    assert_int_equal(e.line, 3);
    assert_int_equal(e.col, 8);
    assert_non_null(strstr(e.msg, "invalid token"));
    jdoc_free(&d);
}

/* The same document parsed twice into one jdoc reuses its array. */
static void
test_reuse(void **state)
{
    char a[] = "[1,[2,3],{\"x\":[4]}]", b[] = "{\"y\":[]}";
    struct jdoc d = {0};
    struct err e;

    (void)state;
    assert_int_equal(jdoc_parse(&d, a, strlen(a), &e), 0);
    assert_int_equal(d.n, 9);
    assert_int_equal(jdoc_parse(&d, b, strlen(b), &e), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(jdoc_size(&d, jdoc_get(&d, 0, "y")), 0);
    jdoc_free(&d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agrees_with_jansson),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_readers),
        cmocka_unit_test(test_error_position),
        cmocka_unit_test(test_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
