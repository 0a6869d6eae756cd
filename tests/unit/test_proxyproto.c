/* Unit tests for the PROXY protocol parser and writer
 * (proxy/dataplane/proxyproto.c). */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxyproto.h"

static const unsigned char sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static struct saddr
addr(const char *s, uint16_t port)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip(s, port, &a, &why), 0);
    return a;
}

static const char *
str(const struct saddr *a)
{
    static char buf[4][SADDR_STR_MAX];
    static int k;

    k = (k + 1) % 4;
    return saddr_str(a, buf[k], sizeof(buf[k]));
}

/* Parse <n> bytes from an exact-size heap copy, so that a read past them
 * is caught under ASan. */
static enum proxyproto_status
parse(const void *p, size_t n, struct proxyproto_hdr *h,
      enum proxyproto_err *err)
{
    char *copy = malloc(n ? n : 1);
    enum proxyproto_status st;

    assert_non_null(copy);
    memcpy(copy, p, n);
    st = proxyproto_parse(copy, n, h, err);
    free(copy);
    return st;
}

/* Every proper prefix of a whole header asks for more bytes. */
static void
assert_prefixes_need(const void *p, size_t n)
{
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t i;

    for (i = 0; i < n; i++)
        assert_int_equal(parse(p, i, &h, &err), PROXYPROTO_NEED);
}

static enum proxyproto_err
v1_error(const char *line)
{
    struct proxyproto_hdr h;
    enum proxyproto_err err = PROXYPROTO_ERR_NONE;

    assert_int_equal(parse(line, strlen(line), &h, &err), PROXYPROTO_ERROR);
    assert_int_not_equal(err, PROXYPROTO_ERR_NONE);
    assert_non_null(proxyproto_err_text[err]);
    return err;
}

static void
test_v1_tcp4(void **state)
{
    const char *in = "PROXY TCP4 198.18.0.1 198.18.0.2 56324 443\r\nGET /";
    struct proxyproto_hdr h;
    enum proxyproto_err err;

    (void)state;
    assert_int_equal(parse(in, strlen(in), &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.len, strlen(in) - 5); /* the client's bytes stay */
    assert_true(h.has_addrs);
    assert_string_equal(str(&h.src), "198.18.0.1:56324");
    assert_string_equal(str(&h.dst), "198.18.0.2:443");
    assert_prefixes_need(in, h.len);
}

static void
test_v1_tcp6(void **state)
{
    const char *in = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
    struct proxyproto_hdr h;
    enum proxyproto_err err;

    (void)state;
    assert_int_equal(parse(in, strlen(in), &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, strlen(in));
    assert_true(h.has_addrs);
    assert_string_equal(str(&h.src), "[2001:db8::1]:0");
    assert_string_equal(str(&h.dst), "[::1]:65535");
}

static void
test_v1_unknown(void **state)
{
    /* The longest line the protocol allows: 107 bytes with "\r\n". */
    const char *longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:"
                          "ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "65535 65535\r\n";
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    char over[120];

    (void)state;
    assert_int_equal(strlen(longest), PROXYPROTO_V1_MAX);
    assert_int_equal(parse("PROXY UNKNOWN\r\n", 15, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, 15);
    assert_false(h.has_addrs);
    assert_int_equal(parse(longest, strlen(longest), &h, &err),
                     PROXYPROTO_DONE);
    assert_int_equal(h.len, PROXYPROTO_V1_MAX);
    assert_false(h.has_addrs);
    /* One byte more and the line is too long, whatever follows. */
    snprintf(over, sizeof(over), "PROXY UNKNOWN x%s", longest + 14);
    assert_int_equal(parse(over, strlen(over), &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V1_LONG);
    memset(over, 'x', sizeof(over));
    memcpy(over, "PROXY ", 6);
    assert_int_equal(parse(over, PROXYPROTO_V1_MAX - 1, &h, &err),
                     PROXYPROTO_NEED);
    assert_int_equal(parse(over, PROXYPROTO_V1_MAX, &h, &err),
                     PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V1_LONG);
}

static void
test_v1_strict(void **state)
{
    (void)state;
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1 2\n"),
                     PROXYPROTO_ERR_V1_SYNTAX); /* LF without CR */
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1 2\rX"),
                     PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY TCP4  198.18.0.1 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_SYNTAX); /* two spaces */
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1 2 \r\n"),
                     PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1\r\n"),
                     PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1 2 3\r\n"),
                     PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY \r\n"), PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY\t"), PROXYPROTO_ERR_SIGNATURE);
    assert_int_equal(v1_error("PROXY UDP4 198.18.0.1 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_PROTO);
    assert_int_equal(v1_error("PROXY tcp4 198.18.0.1 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_PROTO);
    assert_int_equal(v1_error("PROXY UNKNOWNX\r\n"), PROXYPROTO_ERR_V1_PROTO);
    /* An address of the other family, or not in its one spelling. */
    assert_int_equal(v1_error("PROXY TCP4 ::1 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_ADDR);
    assert_int_equal(v1_error("PROXY TCP6 198.18.0.1 ::1 1 2\r\n"),
                     PROXYPROTO_ERR_V1_ADDR);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.01 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_ADDR);
    assert_int_equal(v1_error("PROXY TCP4 host 198.18.0.2 1 2\r\n"),
                     PROXYPROTO_ERR_V1_ADDR);
    assert_int_equal(v1_error("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
                     PROXYPROTO_ERR_V1_ADDR);
    /* Ports: decimal, 0..65535, no leading zeros, no sign. */
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 65536 2\r\n"),
                     PROXYPROTO_ERR_V1_PORT);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 01 2\r\n"),
                     PROXYPROTO_ERR_V1_PORT);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 +1 2\r\n"),
                     PROXYPROTO_ERR_V1_PORT);
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1 198.18.0.2 1 999999\r\n"),
                     PROXYPROTO_ERR_V1_PORT);
    /* A control byte or a byte above ASCII is refused before the end. */
    assert_int_equal(v1_error("PROXY TCP4 198.18.0.1\x01"),
                     PROXYPROTO_ERR_V1_SYNTAX);
    assert_int_equal(v1_error("PROXY TCP4 \xc3\xa9"), PROXYPROTO_ERR_V1_SYNTAX);
}

static void
test_garbage_refused_at_once(void **state)
{
    struct proxyproto_hdr h;
    enum proxyproto_err err;

    (void)state;
    assert_int_equal(parse("G", 1, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_SIGNATURE);
    assert_int_equal(parse("GET / HTTP/1.1\r\n", 16, &h, &err),
                     PROXYPROTO_ERROR);
    assert_int_equal(parse("PROXX", 5, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_SIGNATURE);
    assert_int_equal(parse("\r\n\r\n\x01", 5, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_SIGNATURE);
    /* Nothing yet, or a beginning of either signature: wait. */
    assert_int_equal(parse("", 0, &h, &err), PROXYPROTO_NEED);
    assert_int_equal(parse("PROX", 4, &h, &err), PROXYPROTO_NEED);
    assert_int_equal(parse(sig, 11, &h, &err), PROXYPROTO_NEED);
}

/* A v2 header: the signature, <vc>, <ft>, then <n> bytes of <body>. */
static size_t
v2(unsigned char *out, unsigned vc, unsigned ft, const void *body, size_t n)
{
    memcpy(out, sig, 12);
    out[12] = (unsigned char)vc;
    out[13] = (unsigned char)ft;
    out[14] = (unsigned char)(n >> 8);
    out[15] = (unsigned char)n;
    if (n > 0)
        memcpy(out + 16, body, n);
    return 16 + n;
}

static void
test_v2_inet_with_tlvs(void **state)
{
    /* 198.18.0.1:56324 -> 198.18.0.2:443, then an ALPN TLV, a NOOP of
     * zero bytes and an authority TLV. */
    unsigned char body[] = {198,  18,   0,    1,    198,  18,   0,   2,   0xdc,
                            0x04, 0x01, 0xbb, 0x01, 0x00, 0x02, 'h', '2', 0x04,
                            0x00, 0x00, 0x02, 0x00, 0x03, 'a',  '.', 'b'};
    unsigned char buf[256];
    size_t n = v2(buf, 0x21, 0x11, body, sizeof(body));
    struct proxyproto_hdr h;
    enum proxyproto_err err;

    (void)state;
    memcpy(buf + n, "data", 4);
    assert_int_equal(parse(buf, n + 4, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.len, n);
    assert_true(h.has_addrs);
    assert_false(h.local);
    assert_string_equal(str(&h.src), "198.18.0.1:56324");
    assert_string_equal(str(&h.dst), "198.18.0.2:443");
    assert_prefixes_need(buf, n);
}

static void
test_v2_inet6(void **state)
{
    unsigned char body[36] = {0x20, 0x01, 0x0d, 0xb8};
    unsigned char buf[128];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n;

    (void)state;
    body[15] = 1;                     /* 2001:db8::1 */
    body[31] = 1;                     /* ::1 */
    body[32] = 0x30, body[33] = 0x39; /* 12345 */
    body[34] = 0x00, body[35] = 0x50; /* 80 */
    n = v2(buf, 0x21, 0x21, body, sizeof(body));
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, 52);
    assert_string_equal(str(&h.src), "[2001:db8::1]:12345");
    assert_string_equal(str(&h.dst), "[::1]:80");
}

static void
test_v2_without_addresses(void **state)
{
    unsigned char unix_body[216] = {0};
    unsigned char inet[12] = {198, 18, 0, 1, 198, 18, 0, 2, 0, 1, 0, 2};
    unsigned char buf[300];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n;

    (void)state;
    /* LOCAL: the balancer's own connection (a health check). */
    n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, 16);
    assert_true(h.local);
    assert_false(h.has_addrs);
    /* LOCAL with addresses: they are skipped, not used. */
    n = v2(buf, 0x20, 0x11, inet, sizeof(inet));
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_false(h.has_addrs);
    /* PROXY with UNSPEC, or with UNIX addresses: none usable. */
    n = v2(buf, 0x21, 0x00, NULL, 0);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_false(h.has_addrs);
    assert_false(h.local);
    n = v2(buf, 0x21, 0x31, unix_body, sizeof(unix_body));
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, 16 + 216);
    assert_false(h.has_addrs);
}

static void
test_v2_strict(void **state)
{
    unsigned char inet[12] = {198, 18, 0, 1, 198, 18, 0, 2, 0, 1, 0, 2};
    unsigned char buf[64];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n;

    (void)state;
    /* Version and command are refused at their byte, before the rest. */
    v2(buf, 0x11, 0x11, inet, sizeof(inet));
    assert_int_equal(parse(buf, 13, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_VERSION);
    v2(buf, 0x22, 0x11, inet, sizeof(inet));
    assert_int_equal(parse(buf, 13, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_COMMAND);
    v2(buf, 0x21, 0x41, inet, sizeof(inet));
    assert_int_equal(parse(buf, 14, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_FAMILY);
    v2(buf, 0x21, 0x13, inet, sizeof(inet));
    assert_int_equal(parse(buf, 14, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_FAMILY);
    /* A PROXY command for TCP's families must say STREAM. */
    n = v2(buf, 0x21, 0x12, inet, sizeof(inet));
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_FAMILY);
    /* Shorter than its addresses: refused once the length is read. */
    n = v2(buf, 0x21, 0x11, inet, 11);
    assert_int_equal(parse(buf, 16, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_LENGTH);
    n = v2(buf, 0x21, 0x21, inet, sizeof(inet));
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_LENGTH);
}

static void
test_v2_tlv_bounds(void **state)
{
    unsigned char body[32] = {198, 18, 0, 1, 198, 18, 0, 2, 0, 1, 0, 2};
    unsigned char buf[64];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n;

    (void)state;
    /* A TLV claiming one byte more than is left. */
    body[12] = 0x05, body[13] = 0x00, body[14] = 0x03;
    body[15] = 'a', body[16] = 'b';
    n = v2(buf, 0x21, 0x11, body, 17);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_TLV);
    /* A TLV claiming 65535 bytes. */
    body[13] = 0xff, body[14] = 0xff;
    n = v2(buf, 0x21, 0x11, body, 17);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_TLV);
    /* One or two bytes left: not even a TLV's head. */
    n = v2(buf, 0x21, 0x11, body, 13);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_TLV);
    n = v2(buf, 0x21, 0x11, body, 14);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_ERROR);
    assert_int_equal(err, PROXYPROTO_ERR_V2_TLV);
    /* Exactly filling: fine. */
    body[13] = 0x00, body[14] = 0x02;
    n = v2(buf, 0x21, 0x11, body, 17);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, n);
}

static void
test_v2_largest(void **state)
{
    /* 16 + 65535 bytes: a LOCAL header of one long TLV. */
    size_t n = PROXYPROTO_V2_MAX;
    unsigned char *buf = calloc(1, n);
    struct proxyproto_hdr h;
    enum proxyproto_err err;

    (void)state;
    assert_non_null(buf);
    memcpy(buf, sig, 12);
    buf[12] = 0x20;
    buf[14] = buf[15] = 0xff;
    buf[16] = 0x04;
    buf[17] = (65535 - 3) >> 8;
    buf[18] = (65535 - 3) & 0xff;
    assert_int_equal(parse(buf, n - 1, &h, &err), PROXYPROTO_NEED);
    assert_int_equal(parse(buf, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, n);
    free(buf);
}

/* What the writer writes, the parser reads back the same. */
static void
round_trip(int version, const struct saddr *src, const struct saddr *dst,
           size_t want_len)
{
    char out[PROXYPROTO_WRITE_MAX];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n = proxyproto_write(version, src, dst, out, sizeof(out));

    assert_int_equal(n, want_len);
    assert_int_equal(parse(out, n, &h, &err), PROXYPROTO_DONE);
    assert_int_equal(h.len, n);
    assert_int_equal(h.version, version);
    assert_true(h.has_addrs);
    assert_int_equal(saddr_cmp(&h.src, src), 0);
    assert_int_equal(saddr_cmp(&h.dst, dst), 0);
    /* Too little room: nothing. */
    assert_int_equal(proxyproto_write(version, src, dst, out, n - 1), 0);
}

static void
test_write(void **state)
{
    struct saddr c4 = addr("198.18.0.1", 56324), s4 = addr("198.18.0.2", 443);
    struct saddr c6 = addr("2001:db8::1", 1), s6 = addr("::1", 65535);
    struct saddr w6 = addr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    char out[PROXYPROTO_WRITE_MAX];
    struct proxyproto_hdr h;
    enum proxyproto_err err;
    size_t n;

    (void)state;
    n = proxyproto_write(1, &c4, &s4, out, sizeof(out));
    assert_int_equal(n, strlen("PROXY TCP4 198.18.0.1 198.18.0.2 56324 "
                               "443\r\n"));
    assert_memory_equal(out, "PROXY TCP4 198.18.0.1 198.18.0.2 56324 443\r\n",
                        n);
    round_trip(1, &c4, &s4, n);
    round_trip(1, &c6, &s6, strlen("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"));
    /* The longest v1 line ferry can write fits. */
    round_trip(1, &w6, &w6, 104);
    round_trip(2, &c4, &s4, 16 + 12);
    round_trip(2, &c6, &s6, 16 + 36);
    /* Mixed or missing families: no addresses. */
    n = proxyproto_write(1, &c4, &s6, out, sizeof(out));
    assert_memory_equal(out, "PROXY UNKNOWN\r\n", n);
    n = proxyproto_write(2, &c4, NULL, out, sizeof(out));
    assert_int_equal(n, 16);
    assert_int_equal(parse(out, n, &h, &err), PROXYPROTO_DONE);
    assert_false(h.has_addrs);
    assert_false(h.local);
    assert_int_equal(proxyproto_write(3, &c4, &s4, out, sizeof(out)), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown),
        cmocka_unit_test(test_v1_strict),
        cmocka_unit_test(test_garbage_refused_at_once),
        cmocka_unit_test(test_v2_inet_with_tlvs),
        cmocka_unit_test(test_v2_inet6),
        cmocka_unit_test(test_v2_without_addresses),
        cmocka_unit_test(test_v2_strict),
        cmocka_unit_test(test_v2_tlv_bounds),
        cmocka_unit_test(test_v2_largest),
        cmocka_unit_test(test_write),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
