/*
 * test_yamldec.c - the key-table decoder on a small schema of its own
 * (not ferry's): every row type, lists of scalars and of mappings,
 * required keys, defaults, inheritance, and the position and wording of
 * each kind of error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"
#include "yamldec.h"
#include "ydoc.h"

struct opts_in {
    uint64_t mode; /* index into mode_names */
    uint64_t wait_ms;
    uint64_t status; /* lo << 16 | hi */
    char path[32];
};

struct item_in {
    char name[16];
    struct saddr addr;
    uint64_t weight;
};

struct top_in {
    uint64_t count;
    char note[64];
    struct opts_in opts;
    struct opts_in base;
    struct yd_arr items; /* struct item_in */
    struct yd_arr ips;   /* struct saddr */
};

static const char *const mode_names[] = {"off", "on", NULL};

static const struct yd_key opts_keys[] = {
    {"mode", YD_ENUM, offsetof(struct opts_in, mode), 0, 0, "off", mode_names,
     0},
    {"wait", YD_DURATION, offsetof(struct opts_in, wait_ms), 1, 60000, "1s",
     NULL, 0},
    {"status", YD_RANGE, offsetof(struct opts_in, status), 100, 599, NULL, NULL,
     0},
    {"path", YD_PATH, offsetof(struct opts_in, path), 1, 31, NULL, NULL, 0},
};
static const struct yd_section opts_section = {"section \"opts\"", NULL,
                                               opts_keys, YD_NKEYS(opts_keys)};

static const struct yd_key item_keys[] = {
    {"name", YD_NAME, offsetof(struct item_in, name), 1, 15, NULL, NULL,
     YD_REQUIRED},
    {"addr", YD_ADDR, offsetof(struct item_in, addr), 0, 0, NULL, NULL, 0},
    {"weight", YD_UINT, offsetof(struct item_in, weight), 0, 10, "1", NULL, 0},
};
static const struct yd_section item_section = {"item", "name", item_keys,
                                               YD_NKEYS(item_keys)};
static const struct yd_list item_list = {
    "items",
    sizeof(struct item_in),
    {"items", YD_MAP, 0, 0, 0, NULL, &item_section, 0},
    0};
static const struct yd_list ip_list = {"addresses",
                                       sizeof(struct saddr),
                                       {"ips", YD_IP, 0, 0, 0, NULL, NULL, 0},
                                       1};

static const struct yd_key top_keys[] = {
    {"count", YD_UINT, offsetof(struct top_in, count), 0, 100, "7", NULL, 0},
    {"note", YD_STRING, offsetof(struct top_in, note), 0, 63, NULL, NULL, 0},
    {"opts", YD_MAP, offsetof(struct top_in, opts), 0, 0, NULL, &opts_section,
     0},
    {"base", YD_MAP, offsetof(struct top_in, base), 0, 0, NULL, &opts_section,
     0},
    {"items", YD_LIST, offsetof(struct top_in, items), 1, 3, NULL, &item_list,
     YD_REQUIRED},
    {"ips", YD_LIST, offsetof(struct top_in, ips), 0, 2, NULL, &ip_list, 0},
};
static const struct yd_section top_section = {"", NULL, top_keys,
                                              YD_NKEYS(top_keys)};
static const struct yd_key top_key = {"",   YD_MAP,       0, 0, 0,
                                      NULL, &top_section, 0};

static const struct ydoc_limits lim = {16, 1000};

/* Decode <yaml> into <t>: 0 or -1 with <e> set. Free <t> with
 * yamldec_free() either way. */
static int
decode(const char *yaml, struct top_in *t, struct err *e)
{
    struct ydoc *d;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    yamldec_init(&top_key, t);
    err_clear(e);
    d = ydoc_load(yaml, strlen(yaml), &lim, e);
    if (d != NULL)
        rc = yamldec_decode(d, ydoc_root(d), &top_key, t, "test", e);
    ydoc_free(d);
    return rc;
}

static void
expect_error(const char *yaml, int line, int col, const char *want)
{
    struct top_in t;
    struct err e;

    if (decode(yaml, &t, &e) == 0)
        fail_msg("decoded, expected error \"%s\"", want);
    yamldec_free(&top_key, &t);
    if (strstr(e.msg, want) == NULL || e.line != line || e.col != col)
        fail_msg("got %d:%d \"%s\", want %d:%d \"%s\"", e.line, e.col, e.msg,
                 line, col, want);
}

static void
test_values(void **state)
{
    const struct item_in *it;
    const struct saddr *ip;
    struct top_in t;
    struct err e;
    char a[SADDR_STR_MAX];

    (void)state;
    assert_int_equal(decode("count: 3\n"
                            "note: hello, world\n"
                            "opts: {mode: on, status: 200-299}\n"
                            "base: {wait: 250ms, path: /p}\n"
                            "items:\n"
                            "  - {name: a, addr: \"[::1]:80\", weight: 0}\n"
                            "  - name: b\n"
                            "ips: 198.18.0.1\n",
                            &t, &e),
                     0);
    assert_int_equal(t.count, 3);
    assert_string_equal(t.note, "hello, world");
    assert_int_equal(t.opts.mode, 1);
    assert_int_equal(t.opts.status, 200u << 16 | 299);
    /* Left out: unset until defaults or inheritance fill them. */
    assert_int_equal(t.opts.wait_ms, YD_UNSET);
    assert_string_equal(t.opts.path, "");
    yamldec_inherit(&opts_section, &t.opts, &t.base);
    assert_int_equal(t.opts.wait_ms, 250);
    assert_string_equal(t.opts.path, "/p");
    assert_int_equal(t.opts.mode, 1); /* set: not inherited */
    assert_int_equal(yamldec_fill_defaults(&top_key, &t, &e), 0);
    assert_int_equal(t.base.mode, 0);
    assert_int_equal(t.base.status, YD_UNSET); /* no default */
    assert_int_equal(t.items.n, 2);
    it = t.items.v;
    assert_string_equal(it[0].name, "a");
    assert_string_equal(saddr_str(&it[0].addr, a, sizeof(a)), "[::1]:80");
    assert_int_equal(it[0].weight, 0);
    assert_int_equal(it[1].weight, 1); /* default */
    assert_int_equal(t.items.pos[1].line, 7);
    assert_int_equal(t.items.pos[1].col, 5);
    /* A lone scalar is a list of one where the list allows it. */
    assert_int_equal(t.ips.n, 1);
    ip = t.ips.v;
    assert_string_equal(saddr_ip_str(ip, a, sizeof(a)), "198.18.0.1");
    yamldec_free(&top_key, &t);
    assert_null(t.items.v);

    /* Defaults for what is missing, a null section is an empty one, and
     * an alias decodes like what it names. */
    assert_int_equal(decode("opts:\nitems: &i [{name: x}]\nbase: ~\n", &t, &e),
                     0);
    assert_int_equal(yamldec_fill_defaults(&top_key, &t, &e), 0);
    assert_int_equal(t.count, 7);
    assert_int_equal(t.opts.wait_ms, 1000);
    yamldec_free(&top_key, &t);
}

static void
test_errors(void **state)
{
    (void)state;
    expect_error("countt: 1\n", 1, 1,
                 "unknown key \"countt\" at top level (known: count, note, "
                 "opts, base, items, ips)");
    expect_error("count: 1\ncount: 2\n", 2, 1,
                 "duplicate key \"count\" at top level");
    expect_error("count: 101\n", 1, 8, "\"count\": 101 is out of range 0..100");
    expect_error("count: -1\n", 1, 8,
                 "\"count\": expected a non-negative integer, got \"-1\"");
    expect_error("note: \"a\\0b\"\n", 1, 7, "\"note\": value contains a NUL");
    expect_error("opts: {mode: maybe}\n", 1, 14,
                 "\"mode\": expected one of off, on, got \"maybe\" (in section "
                 "\"opts\")");
    expect_error("opts: {wait: 0ms}\n", 1, 14,
                 "\"wait\": must be at least 1ms");
    expect_error("opts: {status: 600}\n", 1, 16,
                 "expected a status or a range like \"100-599\"");
    expect_error("opts: {path: x}\n", 1, 14, "must start with \"/\"");
    expect_error("opts: [1]\n", 1, 7,
                 "\"opts\": expected a mapping, got a list");
    expect_error("count: [1]\n", 1, 8,
                 "\"count\": expected a scalar, got a list");
    expect_error("[a]: 1\n", 1, 1, "expected a key, got a list");
    /* Missing required keys and lists, named by the element at fault. */
    expect_error("count: 1\n", 1, 1, "test has no items");
    expect_error("", 1, 1, "test has no items");
    expect_error("items:\n", 1, 1, "test has no items");
    expect_error("items: []\n", 1, 8, "test has no items");
    expect_error("items: [{name: a}, {addr: \"1.2.3.4:5\"}]\n", 1, 20,
                 "item #2: missing required key \"name\"");
    expect_error("items: [{name: a, weight: 11}]\n", 1, 27,
                 "\"weight\": 11 is out of range 0..10 (in item \"a\")");
    expect_error("items: [{name: a}, {name: b}, {name: c}, {name: d}]\n", 1, 8,
                 "too many items (at most 3)");
    expect_error("items: {name: a}\n", 1, 8,
                 "\"items\": expected a list, got a mapping");
    expect_error("items: [{name: a}]\nips: [1.2.3.4, '::1', '::2']\n", 2, 6,
                 "too many addresses (at most 2)");
    expect_error("items: [{name: a}]\nips: [localhost]\n", 2, 7,
                 "\"ips\": not an IP address");
}

/* A default that does not parse is a bug in the table; it is reported,
 * not stored. */
static void
test_bad_default(void **state)
{
    static const struct yd_key bad = {"n", YD_UINT, 0, 0, 5, "6", NULL, 0};
    uint64_t v = YD_UNSET;
    struct err e;

    (void)state;
    err_clear(&e);
    assert_int_equal(yamldec_fill_defaults(&bad, &v, &e), -1);
    assert_non_null(strstr(e.msg, "bad built-in default for \"n\""));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bad_default),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
