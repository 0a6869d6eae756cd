/* Unit tests for the ClientHello reader and the host name rules
 * (conf/tlshello.c). Every ClientHello here is built byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off: cmocka needs the headers above first */
#include <cmocka.h>
/* clang-format on */

#include "tlshello.h"

#define BUF_MAX (3 * TLSHELLO_MAX)

struct bytes {
    unsigned char b[BUF_MAX];
    size_t n;
};

static void
put8(struct bytes *o, unsigned v)
{
    assert_true(o->n < BUF_MAX);
    o->b[o->n++] = (unsigned char)v;
}

static void
put16(struct bytes *o, size_t v)
{
    put8(o, (unsigned)(v >> 8) & 0xff);
    put8(o, (unsigned)v & 0xff);
}

static void
put24(struct bytes *o, size_t v)
{
    put8(o, (unsigned)(v >> 16) & 0xff);
    put16(o, v & 0xffff);
}

static void
putn(struct bytes *o, const void *p, size_t n)
{
    assert_true(o->n + n <= BUF_MAX);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void
putfill(struct bytes *o, unsigned v, size_t n)
{
    while (n-- > 0)
        put8(o, v);
}

/* An extension of <type> with body <body>. */
static void
put_ext(struct bytes *o, unsigned type, const struct bytes *body)
{
    put16(o, type);
    put16(o, body->n);
    putn(o, body->b, body->n);
}

/* A server_name extension's body with one entry per name. */
static void
sni_body(struct bytes *o, const char *const *names, size_t n)
{
    struct bytes list = {.n = 0};
    size_t i;

    for (i = 0; i < n; i++) {
        put8(&list, 0);
        put16(&list, strlen(names[i]));
        putn(&list, names[i], strlen(names[i]));
    }
    o->n = 0;
    put16(o, list.n);
    putn(o, list.b, list.n);
}

/* A client_hello body: version 3.3, a random, a 32-byte session id, two
 * cipher suites, the null compression method, then <exts> (NULL: no
 * extensions block at all). */
static void
hello_body(struct bytes *o, const struct bytes *exts)
{
    o->n = 0;
    put16(o, 0x0303);
    putfill(o, 0xab, 32);
    put8(o, 32);
    putfill(o, 0x11, 32);
    put16(o, 4);
    put16(o, 0x1301);
    put16(o, 0xc02f);
    put8(o, 1);
    put8(o, 0);
    if (exts != NULL) {
        put16(o, exts->n);
        putn(o, exts->b, exts->n);
    }
}

/* The handshake message around a body. */
static void
handshake(struct bytes *o, unsigned type, const struct bytes *body)
{
    o->n = 0;
    put8(o, type);
    put24(o, body->n);
    putn(o, body->b, body->n);
}

/* <msg> in records of at most <chunk> bytes each. */
static void
records(struct bytes *o, const struct bytes *msg, size_t chunk)
{
    size_t off, k;

    o->n = 0;
    for (off = 0; off < msg->n; off += k) {
        k = msg->n - off < chunk ? msg->n - off : chunk;
        put8(o, 22);
        put16(o, 0x0301);
        put16(o, k);
        putn(o, msg->b + off, k);
    }
}

/* A whole ClientHello naming <name> (NULL: no server_name extension),
 * with a supported_groups extension before it, in records of <chunk>. */
static void
client_hello(struct bytes *o, const char *name, size_t chunk)
{
    static struct bytes exts, ext, body, msg;
    const char *names[1] = {name};

    exts.n = 0;
    ext.n = 0;
    put16(&ext, 2);
    put16(&ext, 0x001d);
    put_ext(&exts, 0x000a, &ext);
    if (name != NULL) {
        sni_body(&ext, names, 1);
        put_ext(&exts, 0, &ext);
    }
    hello_body(&body, &exts);
    handshake(&msg, 1, &body);
    records(o, &msg, chunk);
}

/* Parse from an exact-size heap copy, so that ASan catches a read past
 * the bytes given. */
static enum tlshello_status
parse(const void *p, size_t n, struct tlshello *h, enum tlshello_err *err)
{
    unsigned char *copy = malloc(n ? n : 1);
    enum tlshello_status st;

    assert_non_null(copy);
    memcpy(copy, p, n);
    st = tlshello_parse(copy, n, h, err);
    free(copy);
    return st;
}

static enum tlshello_err
parse_err(const void *p, size_t n)
{
    struct tlshello h;
    enum tlshello_err err = TLSHELLO_ERR_NONE;

    assert_int_equal(parse(p, n, &h, &err), TLSHELLO_ERROR);
    assert_non_null(tlshello_err_text[err]);
    return err;
}

static void
assert_prefixes_need(const struct bytes *o)
{
    struct tlshello h;
    enum tlshello_err err;
    size_t i;

    for (i = 0; i < o->n; i++)
        assert_int_equal(parse(o->b, i, &h, &err), TLSHELLO_NEED);
}

static void
test_name_lower_cased(void **state)
{
    static struct bytes o;
    struct tlshello h;
    enum tlshello_err err;

    (void)state;
    client_hello(&o, "Www.Example.COM", 16384);
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NAME);
    assert_string_equal(h.name, "www.example.com");
    assert_int_equal(h.len, o.n);
    assert_prefixes_need(&o);
}

static void
test_split_over_records(void **state)
{
    static struct bytes o;
    struct tlshello h;
    enum tlshello_err err;
    size_t chunk;

    (void)state;
    /* 1, 2 and 3 bytes per record split even the message's header. */
    for (chunk = 1; chunk < 40; chunk += chunk < 4 ? 1 : 17) {
        client_hello(&o, "a.example", chunk);
        assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NAME);
        assert_string_equal(h.name, "a.example");
        assert_int_equal(h.len, o.n);
    }
    client_hello(&o, "a.example", 50);
    assert_prefixes_need(&o);
}

static void
test_bytes_after_are_not_read(void **state)
{
    static struct bytes o;
    struct tlshello h;
    enum tlshello_err err;
    size_t n;

    (void)state;
    client_hello(&o, "x.example", 100);
    n = o.n;
    putn(&o, "\x17\x03\x03\x00\x01Z", 6); /* early application data */
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NAME);
    assert_int_equal(h.len, n);
}

static void
test_no_sni(void **state)
{
    static struct bytes o, body, msg;
    struct tlshello h;
    enum tlshello_err err;

    (void)state;
    client_hello(&o, NULL, 16384);
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NO_SNI);
    assert_string_equal(h.name, "");
    assert_int_equal(h.len, o.n);
    /* No extensions block at all (an old client). */
    hello_body(&body, NULL);
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NO_SNI);
}

static void
test_garbage_at_first_byte(void **state)
{
    (void)state;
    assert_int_equal(parse_err("G", 1), TLSHELLO_ERR_NOT_HANDSHAKE);
    assert_int_equal(parse_err("GET / HTTP/1.1\r\n", 16),
                     TLSHELLO_ERR_NOT_HANDSHAKE);
    /* An SSLv2-style hello, and TLS alerts, are not handshake records. */
    assert_int_equal(parse_err("\x80\x2e\x01", 3), TLSHELLO_ERR_NOT_HANDSHAKE);
    assert_int_equal(parse_err("\x15\x03\x01\x00\x02", 5),
                     TLSHELLO_ERR_NOT_HANDSHAKE);
    assert_int_equal(parse_err("\x16\x02", 2), TLSHELLO_ERR_VERSION);
}

static void
test_record_lengths(void **state)
{
    (void)state;
    assert_int_equal(parse_err("\x16\x03\x01\x00\x00", 5),
                     TLSHELLO_ERR_RECORD_LENGTH);
    assert_int_equal(parse_err("\x16\x03\x01\x40\x01", 5),
                     TLSHELLO_ERR_RECORD_LENGTH);
}

static void
test_not_a_client_hello(void **state)
{
    (void)state;
    /* A ServerHello, refused at the message's first byte. */
    assert_int_equal(parse_err("\x16\x03\x03\x00\x30\x02", 6),
                     TLSHELLO_ERR_NOT_HELLO);
}

static void
test_too_large(void **state)
{
    static struct bytes o, exts, ext, body, msg;
    struct tlshello h;
    enum tlshello_err err;
    const char *names[1] = {"big.example"};

    (void)state;
    /* Told by the message's header alone, before its bytes come. */
    assert_int_equal(parse_err("\x16\x03\x01\x40\x00\x01\x00\x3f\xfd", 9),
                     TLSHELLO_ERR_TOO_LARGE);
    /* A hello of exactly the cap, padded, over two records: read. */
    sni_body(&ext, names, 1);
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    hello_body(&body, &exts);
    ext.n = 0;
    putfill(&ext, 0, TLSHELLO_MAX - 4 - body.n - 4);
    put_ext(&exts, 21, &ext);
    hello_body(&body, &exts);
    handshake(&msg, 1, &body);
    assert_int_equal(msg.n, TLSHELLO_MAX);
    records(&o, &msg, 10000);
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_NAME);
    assert_string_equal(h.name, "big.example");
    /* One padding byte more, and it is refused. */
    exts.n -= ext.n + 4;
    put8(&ext, 0);
    put_ext(&exts, 21, &ext);
    hello_body(&body, &exts);
    handshake(&msg, 1, &body);
    assert_true(msg.n > TLSHELLO_MAX);
    records(&o, &msg, 10000);
    assert_int_equal(parse(o.b, o.n, &h, &err), TLSHELLO_ERROR);
    assert_int_equal(err, TLSHELLO_ERR_TOO_LARGE);
}

static void
test_trailing_bytes_in_record(void **state)
{
    static struct bytes o, body, msg;

    (void)state;
    hello_body(&body, NULL);
    handshake(&msg, 1, &body);
    put8(&msg, 0); /* one byte past the message, in the same record */
    records(&o, &msg, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_TRAILING);
}

/* A hello with extensions block <exts> given whole. */
static enum tlshello_err
exts_err(const struct bytes *exts)
{
    static struct bytes o, body, msg;

    hello_body(&body, exts);
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    return parse_err(o.b, o.n);
}

static void
test_bad_extensions(void **state)
{
    static struct bytes exts, ext, o, body, msg;
    const char *one[1] = {"a.example"}, *two[2] = {"a.example", "b.example"};

    (void)state;
    /* An extension running past the block. */
    exts.n = 0;
    put16(&exts, 0x000a);
    put16(&exts, 10);
    put16(&exts, 0);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_EXTENSIONS);
    /* Two server_name extensions. */
    sni_body(&ext, one, 1);
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    put_ext(&exts, 0, &ext);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_SNI);
    /* Two host names in one. */
    sni_body(&ext, two, 2);
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_SNI);
    /* An empty one (what a server sends back). */
    ext.n = 0;
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_SNI);
    /* A name list length that does not match the extension's. */
    sni_body(&ext, one, 1);
    ext.b[1]++;
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_SNI);
    /* A name running past the list. */
    sni_body(&ext, one, 1);
    ext.b[4]++;
    exts.n = 0;
    put_ext(&exts, 0, &ext);
    assert_int_equal(exts_err(&exts), TLSHELLO_ERR_SNI);
    /* The block's length one more than its extensions. */
    hello_body(&body, NULL);
    put16(&body, 1);
    put8(&body, 0);
    put8(&body, 0);
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_EXTENSIONS);
}

static void
test_bad_fixed_fields(void **state)
{
    static struct bytes o, body, msg;

    (void)state;
    hello_body(&body, NULL);
    body.b[34] = 33; /* session id longer than 32 */
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_TRUNCATED);
    hello_body(&body, NULL);
    body.b[0] = 2; /* hello version 2.x */
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_VERSION);
    hello_body(&body, NULL);
    body.n -= 2; /* no compression methods */
    handshake(&msg, 1, &body);
    records(&o, &msg, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_TRUNCATED);
}

static void
test_bad_names(void **state)
{
    static const char *const bad[] = {
        "a..example",  "-a.example",  "a-.example",
        "a_b.example", "a.example.",  ".example",
        "1.2.3.4",     "a b.example", "caf\xc3\xa9.example",
    };
    static struct bytes o;
    char label[80];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        client_hello(&o, bad[i], 16384);
        assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_NAME);
    }
    memset(label, 'a', 64);
    memcpy(label + 64, ".example", 9);
    client_hello(&o, label, 16384);
    assert_int_equal(parse_err(o.b, o.n), TLSHELLO_ERR_NAME);
}

static void
test_name_check(void **state)
{
    char name[300];

    (void)state;
    assert_null(tlshello_name_check("example", 7));
    assert_null(tlshello_name_check("a-1.b2.example", 14));
    assert_null(tlshello_name_check("1.2.3.example", 13));
    assert_null(tlshello_name_check("x.123a", 6));
    assert_non_null(tlshello_name_check("", 0));
    assert_non_null(tlshello_name_check("123", 3));
    assert_non_null(tlshello_name_check("*.example", 9));
    /* 253 bytes is the most: labels of 63, dots between. */
    memset(name, 'a', sizeof(name));
    name[63] = name[127] = name[191] = '.';
    assert_null(tlshello_name_check(name, 253));
    assert_non_null(tlshello_name_check(name, 254));
}

static void
test_match(void **state)
{
    (void)state;
    assert_int_equal(tlshello_match("a.example", "a.example"), 2);
    assert_int_equal(tlshello_match("*.example", "a.example"), 1);
    assert_int_equal(tlshello_match("*.example", "b.a.example"), 0);
    assert_int_equal(tlshello_match("*.example", "example"), 0);
    assert_int_equal(tlshello_match("*.example", "xexample"), 0);
    assert_int_equal(tlshello_match("*.a.example", "b.a.example"), 1);
    assert_int_equal(tlshello_match("a.example", "b.example"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_lower_cased),
        cmocka_unit_test(test_split_over_records),
        cmocka_unit_test(test_bytes_after_are_not_read),
        cmocka_unit_test(test_no_sni),
        cmocka_unit_test(test_garbage_at_first_byte),
        cmocka_unit_test(test_record_lengths),
        cmocka_unit_test(test_not_a_client_hello),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_trailing_bytes_in_record),
        cmocka_unit_test(test_bad_extensions),
        cmocka_unit_test(test_bad_fixed_fields),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_name_check),
        cmocka_unit_test(test_match),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
