/*
 * test_ydoc.c - the bounded YAML loader: the tree it builds, positions,
 * and each bound (nesting, directives, aliases, anchors) refused where it
 * is crossed, with the message that says so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ydoc.h"

static const struct ydoc_limits lim = {8, 100};

static struct ydoc *
load(const char *yaml, struct err *e)
{
    err_clear(e);
    return ydoc_load(yaml, strlen(yaml), &lim, e);
}

/* <yaml> must fail at <line>:<col> with <want> in the message. */
static void
expect_error(const char *yaml, size_t len, int line, int col, const char *want)
{
    struct ydoc *d;
    struct err e;

    err_clear(&e);
    d = ydoc_load(yaml, len, &lim, &e);
    if (d != NULL) {
        ydoc_free(d);
        fail_msg("loaded, expected error \"%s\"", want);
    }
    if (strstr(e.msg, want) == NULL || e.line != line || e.col != col)
        fail_msg("got %d:%d \"%s\", want %d:%d \"%s\"", e.line, e.col, e.msg,
                 line, col, want);
}

/* A string of <n> copies of <unit> (freed by the caller). */
static char *
repeat(const char *unit, size_t n)
{
    size_t u = strlen(unit), i;
    char *s = malloc(u * n + 1);

    assert_non_null(s);
    for (i = 0; i < n; i++)
        memcpy(s + i * u, unit, u);
    s[u * n] = '\0';
    return s;
}

static void
test_tree(void **state)
{
    const struct ydoc_node *root, *list, *n;
    struct ydoc *d;
    struct err e;

    (void)state;
    d = load("a: 1\n"
             "b: [x, 'y', \"\\0z\"]\n"
             "c:\n"
             "d: ~\n"
             "a: 2\n",
             &e);
    assert_non_null(d);
    root = ydoc_root(d);
    assert_non_null(root);
    assert_int_equal(root->type, YDOC_MAP);
    assert_int_equal(root->len, 5);
    assert_string_equal(ydoc_kind(root), "a mapping");
    /* The first of two equal keys wins in ydoc_get. */
    assert_string_equal(ydoc_str(d, ydoc_get(d, root, "a")), "1");
    assert_null(ydoc_get(d, root, "e"));
    assert_null(ydoc_get(d, NULL, "a"));
    list = ydoc_get(d, root, "b");
    assert_int_equal(list->type, YDOC_LIST);
    assert_int_equal(list->len, 3);
    assert_int_equal(list->pos.line, 2);
    assert_int_equal(list->pos.col, 4);
    n = ydoc_item(d, list, 0);
    assert_true(n->plain);
    n = ydoc_item(d, list, 1);
    assert_false(n->plain);
    assert_int_equal(n->pos.col, 8);
    n = ydoc_item(d, list, 2);
    assert_int_equal(n->len, 2);
    assert_int_equal(strlen(ydoc_str(d, n)), 0); /* an embedded NUL */
    assert_true(ydoc_is_null(d, ydoc_get(d, root, "c")));
    assert_true(ydoc_is_null(d, ydoc_get(d, root, "d")));
    assert_false(ydoc_is_null(d, ydoc_item(d, list, 1)));
    assert_string_equal(ydoc_str(d, ydoc_key(d, root, 4)), "a");
    assert_string_equal(ydoc_str(d, ydoc_value(d, root, 4)), "2");
    assert_int_equal(ydoc_next(d, &(struct ydoc_pos){0, 0}, &e), 0);
    ydoc_free(d);
    ydoc_free(NULL);

    /* An empty stream has no root. */
    d = load("# only a comment\n", &e);
    assert_non_null(d);
    assert_null(ydoc_root(d));
    ydoc_free(d);
}

static void
test_aliases(void **state)
{
    const struct ydoc_node *root, *a, *b;
    struct ydoc *d;
    struct err e;

    (void)state;
    d = load("a: &x {k: v}\nb: *x\n", &e);
    assert_non_null(d);
    root = ydoc_root(d);
    a = ydoc_get(d, root, "a");
    b = ydoc_get(d, root, "b");
    /* An alias is the node it names, position included. */
    assert_ptr_equal(a, b);
    assert_int_equal(b->pos.line, 1);
    assert_int_equal(b->pos.col, 4);
    ydoc_free(d);

    expect_error("a: *x\n", 6, 1, 4, "alias *x names no anchor before it");
    expect_error("a: &x [1, *x]\n", 14, 1, 11,
                 "alias *x is inside the node it names");
    expect_error("a: &x 1\nb: &x 2\n", 16, 2, 4,
                 "anchor &x is defined twice (first at 1:4)");
    /* Anchors belong to their document. */
    d = load("a: &x 1\n---\nb: *x\n", &e);
    assert_non_null(d);
    assert_int_equal(ydoc_next(d, &(struct ydoc_pos){0, 0}, &e), -1);
    assert_non_null(strstr(e.msg, "names no anchor"));
    ydoc_free(d);
}

/* Aliases may add at most alias_slack nodes to those written: ten
 * aliases of a ten-node list add exactly the 100 allowed, an eleventh is
 * refused where it stands. */
static void
test_alias_expansion(void **state)
{
    static const char ok[] = "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
                             "b: [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n";
    static const char over[] =
        "a: &x [1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
        "b: [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\n";
    struct ydoc *d;
    struct err e;

    (void)state;
    d = load(ok, &e);
    assert_non_null(d);
    assert_int_equal(ydoc_get(d, ydoc_root(d), "b")->len, 10);
    ydoc_free(d);
    expect_error(over, sizeof(over) - 1, 2, 45,
                 "aliases expand the document to too many nodes");
}

/* Aliases of aliases multiply; the running total still stops them. */
static void
test_alias_bomb(void **state)
{
    static const char bomb[] = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                               "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                               "c: [*b, *b]\n";

    (void)state;
    /* b's aliases add 90 of the 100 allowed; the first *b adds 91. */
    expect_error(bomb, sizeof(bomb) - 1, 3, 5,
                 "aliases expand the document to too many nodes (more than "
                 "100 beyond");
}

static void
test_nesting(void **state)
{
    static const char *const units[] = {"[", "{", "[{", "{a: ", "- "};
    char *s, *ok;
    struct ydoc *d;
    struct err e;
    size_t i;

    (void)state;
    /* 8 levels load, the 9th is refused where it opens. */
    ok = repeat("[", 8);
    s = malloc(strlen(ok) + 9);
    assert_non_null(s);
    snprintf(s, strlen(ok) + 9, "%s]]]]]]]]", ok);
    d = load(s, &e);
    assert_non_null(d);
    ydoc_free(d);
    free(s);
    free(ok);
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t u = strlen(units[i]);
        /* 100,000 levels: refused at the 9th, however it is written. */
        s = repeat(units[i], 100000);
        expect_error(s, strlen(s), 1,
                     units[i][0] == '[' && u == 2 ? 9 : (int)(8 * u + 1),
                     "lists and mappings nested too deeply (max 8)");
        free(s);
    }
    /* Block mappings, one more indent per line. */
    s = malloc(100 * 105);
    assert_non_null(s);
    s[0] = '\0';
    for (i = 0; i < 100; i++)
        snprintf(s + strlen(s), 105, "%*sa:\n", (int)i, "");
    expect_error(s, strlen(s), 9, 9, "nested too deeply (max 8)");
    free(s);
}

static void
test_directives(void **state)
{
    static char tags[17 * 32 + 16];
    size_t n;
    struct ydoc *d;
    struct err e;
    int i;

    (void)state;
    for (n = 0, i = 0; i < 16; i++)
        n += (size_t)snprintf(tags + n, sizeof(tags) - n,
                              "%%TAG !t%d! tag:x:\n", i);
    snprintf(tags + n, sizeof(tags) - n, "---\na: 1\n");
    d = load(tags, &e);
    assert_non_null(d);
    ydoc_free(d);
    for (n = 0, i = 0; i < 17; i++)
        n += (size_t)snprintf(tags + n, sizeof(tags) - n,
                              "%%TAG !t%d! tag:x:\n", i);
    snprintf(tags + n, sizeof(tags) - n, "---\na: 1\n");
    expect_error(tags, strlen(tags), 17, 1,
                 "too many YAML directives (max 16)");
    /* Many '%' elsewhere are fine. */
    d = load("a: '%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%'\n", &e);
    assert_non_null(d);
    ydoc_free(d);
}

static void
test_errors(void **state)
{
    (void)state;
    expect_error("a: [b\n", 6, 2, 1, "YAML syntax error: did not find");
    /* A reader error has only an offset: it becomes a position. */
    expect_error("a:\n  b: \x01\n", 9, 2, 6, "control characters");
    expect_error("a: b: c\n", 8, 1, 5, "YAML syntax error");
}

static void
test_next(void **state)
{
    struct ydoc_pos pos = {0, 0};
    struct ydoc *d;
    struct err e;

    (void)state;
    d = load("a: 1\n---\n  b: 2\n", &e);
    assert_non_null(d);
    assert_int_equal(ydoc_next(d, &pos, &e), 1);
    assert_int_equal(pos.line, 3);
    assert_int_equal(pos.col, 3);
    assert_int_equal(ydoc_next(d, &pos, &e), 0);
    ydoc_free(d);

    d = load("a: 1\n---\nb: [\n", &e);
    assert_non_null(d);
    assert_int_equal(ydoc_next(d, &pos, &e), -1);
    assert_int_equal(e.line, 4);
    ydoc_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_alias_expansion),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_directives),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_next),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
