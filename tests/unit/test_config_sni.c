/* Unit tests for the config's SNI routing keys (conf/config.c): "sni:" on
 * a service, "listeners:", and the rules for services sharing a listen
 * address (README: SNI routing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* clang-format off: cmocka needs the headers above first */
#include <cmocka.h>
/* clang-format on */

#include "config.h"

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
}

#define SVC(name, sni)                                                         \
    "  - name: " name "\n"                                                     \
    "    listen: 127.0.0.1:8443\n" sni                                         \
    "    backends: [{address: 127.0.0.1:9001}]\n"

static void
test_shared_address(void **state)
{
    const char *yaml = "listeners:\n"
                       "  - listen: 127.0.0.1:8443\n"
                       "    default_service: other\n"
                       "    client_hello_timeout: 250ms\n"
                       "services:\n" SVC("a", "    sni: [A.Example, "
                                              "\"*.b.example\"]\n")
                           SVC("b", "    sni: b.example\n") SVC("other", "");
    const struct tbl_listener *l;
    const struct tbl_service *s;
    struct saddr at;
    const char *why;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    s = table_find(c->table, "a");
    assert_non_null(s);
    assert_int_equal(s->nsni, 2);
    assert_string_equal(s->sni[0].name, "a.example"); /* lower-cased */
    assert_string_equal(s->sni[1].name, "*.b.example");
    assert_int_equal(table_find(c->table, "other")->nsni, 0);
    assert_int_equal(parse_hostport("127.0.0.1:8443", &at, 0, &why), 0);
    /* The first service listed keeps the address in the index. */
    assert_ptr_equal(table_find_frontend(c->table, &at), s);
    l = table_find_listener(c->table, &at);
    assert_non_null(l);
    assert_string_equal(l->default_service, "other");
    assert_int_equal(l->client_hello_timeout_ms, 250);
    conf_free(c);
}

static void
test_defaults_and_alone(void **state)
{
    /* One service with names alone on its address, and a listener entry
     * without a default: its timeout defaults to 5 s. */
    const char *yaml = "listeners: [{listen: 127.0.0.1:8443}]\n"
                       "services:\n" SVC("a", "    sni: a.example\n");
    struct saddr at;
    const char *why;
    struct err e;
    struct conf *c = load(yaml, &e);

    (void)state;
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    assert_int_equal(parse_hostport("127.0.0.1:8443", &at, 0, &why), 0);
    assert_string_equal(table_find_listener(c->table, &at)->default_service,
                        "");
    assert_int_equal(
        table_find_listener(c->table, &at)->client_hello_timeout_ms, 5000);
    conf_free(c);
}

static void
test_errors(void **state)
{
    (void)state;
    /* Two services without names on one address: as before. */
    expect_error("services:\n" SVC("a", "") SVC("b", ""), 6, 13,
                 "listen address 127.0.0.1:8443 already used by service "
                 "\"a\"");
    /* The one without names named first. */
    expect_error("services:\n" SVC("a", "") SVC("b", "    sni: b.example\n"), 6,
                 13,
                 "listen address 127.0.0.1:8443 is shared by services \"a\" "
                 "and \"b\", but service \"a\" has no \"sni:\"");
    /* One without names that is not the default. */
    expect_error("services:\n" SVC("a", "    sni: a.example\n") SVC("b", ""), 7,
                 13, "but service \"b\" has no \"sni:\"");
    /* Two naming the same server. */
    expect_error("services:\n" SVC("a", "    sni: [x.example, a.example]\n")
                     SVC("b", "    sni: [b.example, A.example]\n"),
                 8, 22,
                 "sni \"a.example\" of service \"b\" is also named by "
                 "service \"a\" on listen 127.0.0.1:8443");
    expect_error("services:\n" SVC("a", "    sni: [a.example, A.Example]\n"), 4,
                 22, "sni \"a.example\" is listed twice in service \"a\"");
    /* Names that are not host names. */
    expect_error("services:\n" SVC("a", "    sni: [a.example, a_b.example]\n"),
                 4, 22, "sni \"a_b.example\" of service \"a\" holds a byte");
    expect_error("services:\n" SVC("a", "    sni: \"*\"\n"), 4, 10,
                 "sni \"*\" of service \"a\"");
    expect_error("services:\n" SVC("a", "    sni: \"*.*.example\"\n"), 4, 10,
                 "sni \"*.*.example\"");
    expect_error("services:\n" SVC("a", "    sni: 10.0.0.1\n"), 4, 10,
                 "is an IP address");
    expect_error("services:\n" SVC("a", "    sni: []\n"), 4, 10,
                 "service \"a\" has no server names");
    /* Services sharing an address must agree on accept_proxy. */
    expect_error("services:\n" SVC("a", "    sni: a.example\n")
                     SVC("b", "    sni: b.example\n    accept_proxy: true\n"),
                 7, 13,
                 "share listen 127.0.0.1:8443 but not their "
                 "accept_proxy");
    /* A wildcard address still overlaps a shared one. */
    expect_error(
        "services:\n" SVC(
            "a",
            "    sni: a.example\n") "  - name: b\n    listen: 0.0.0.0:8443\n"
                                    "    sni: b.example\n"
                                    "    backends: [{address: "
                                    "127.0.0.1:9001}]\n",
        7, 13, "overlaps");
    /* listeners: entries. */
    expect_error("listeners:\n  - listen: 127.0.0.1:8443\n"
                 "    default_service: nope\n"
                 "services:\n" SVC("a", "    sni: a.example\n"),
                 2, 5,
                 "listener 127.0.0.1:8443: default_service \"nope\" "
                 "is not a service");
    expect_error(
        "listeners:\n  - listen: 127.0.0.1:8443\n"
        "    default_service: b\n"
        "services:\n" SVC(
            "a",
            "    sni: a.example\n") "  - name: b\n    listen: 127.0.0.1:8444\n"
                                    "    backends: [{address: "
                                    "127.0.0.1:9001}]\n",
        2, 5,
        "default_service \"b\" does not listen on "
        "127.0.0.1:8443");
    expect_error("listeners:\n  - listen: 127.0.0.1:8444\n"
                 "services:\n" SVC("a", "    sni: a.example\n"),
                 2, 5,
                 "listener 127.0.0.1:8444: no service with \"sni:\" "
                 "listens there");
    expect_error("listeners:\n  - listen: 127.0.0.1:8443\n"
                 "  - listen: 127.0.0.1:8443\n"
                 "services:\n" SVC("a", "    sni: a.example\n"),
                 3, 5, "listener 127.0.0.1:8443 is given twice");
    expect_error("listeners:\n  - listen: 127.0.0.1:8443\n"
                 "    client_hello_timeout: 0s\n"
                 "services:\n" SVC("a", "    sni: a.example\n"),
                 3, 27, "client_hello_timeout");
    expect_error("listeners:\n  - default_service: a\n"
                 "services:\n" SVC("a", "    sni: a.example\n"),
                 2, 5, "listen");
}

/* A service without names, added by hand to the table: kept off an
 * address with named services unless it is the address's default. */
static void
test_table_sharing(void **state)
{
    struct table *t = table_new();
    struct tbl_service s;
    struct tbl_listener l;
    struct tbl_sni names[1] = {{"a.example"}};
    struct saddr fe;
    const char *why;
    struct err e;

    (void)state;
    assert_int_equal(parse_hostport("127.0.0.1:8443", &fe, 0, &why), 0);
    memset(&l, 0, sizeof(l));
    l.addr = fe;
    snprintf(l.default_service, sizeof(l.default_service), "dflt");
    assert_int_equal(table_add_listener(t, &l, &e), 0);
    assert_int_equal(table_add_listener(t, &l, &e), -1);
    memset(&s, 0, sizeof(s));
    s.frontends = &fe;
    s.nfrontends = 1;
    s.name = "plain";
    assert_int_equal(table_add_service(t, &s, &e), 0);
    /* A named one may not join a first one without names that is not
     * the default. */
    s.name = "a";
    s.sni = names;
    s.nsni = 1;
    assert_int_equal(table_add_service(t, &s, &e), -1);
    table_unref(t);

    t = table_new();
    assert_int_equal(table_add_listener(t, &l, &e), 0);
    assert_int_equal(table_add_service(t, &s, &e), 0);
    s.name = "b";
    assert_int_equal(table_add_service(t, &s, &e), 0);
    s.sni = NULL;
    s.nsni = 0;
    s.name = "plain";
    assert_int_equal(table_add_service(t, &s, &e), -1);
    assert_non_null(strstr(e.msg, "already used by service \"a\""));
    s.name = "dflt";
    assert_int_equal(table_add_service(t, &s, &e), 0);
    /* Only one without names, even the default's namesake twice. */
    s.name = "dflt2";
    assert_int_equal(table_add_service(t, &s, &e), -1);
    table_unref(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_address),
        cmocka_unit_test(test_defaults_and_alone),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_table_sharing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
