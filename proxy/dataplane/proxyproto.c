/*
 * proxyproto.c - the PROXY protocol header, versions 1 and 2: parsing
 * what a balancer in front of ferry sends, writing what ferry sends to a
 * backend.
 *
 * Version 1 is one line: "PROXY TCP4 SRC DST SPORT DPORT\r\n" (or TCP6,
 * or "PROXY UNKNOWN" and anything up to the "\r\n"), at most 107 bytes.
 * Version 2 starts with a 12-byte signature that no text protocol can
 * begin with, then a version and command byte, a family and transport
 * byte, and the big-endian length of what follows: the addresses, sized
 * by the family, then type-length-value extensions (TLVs), which ferry
 * reads past without using.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxyproto.h"

const char *const proxyproto_err_text[PROXYPROTO_ERR__COUNT] = {
    [PROXYPROTO_ERR_NONE] = "no error",
    [PROXYPROTO_ERR_SIGNATURE] = "not a PROXY protocol header",
    [PROXYPROTO_ERR_V1_LONG] = "v1 line longer than 107 bytes",
    [PROXYPROTO_ERR_V1_SYNTAX] = "v1 line malformed",
    [PROXYPROTO_ERR_V1_PROTO] = "v1 protocol not TCP4, TCP6 or UNKNOWN",
    [PROXYPROTO_ERR_V1_ADDR] = "v1 address invalid for its protocol",
    [PROXYPROTO_ERR_V1_PORT] = "v1 port invalid",
    [PROXYPROTO_ERR_V2_VERSION] = "v2 version not 2",
    [PROXYPROTO_ERR_V2_COMMAND] = "v2 command not LOCAL or PROXY",
    [PROXYPROTO_ERR_V2_FAMILY] = "v2 address family or transport invalid",
    [PROXYPROTO_ERR_V2_LENGTH] = "v2 length too short for its addresses",
    [PROXYPROTO_ERR_V2_TLV] = "v2 TLV runs past the header",
};

static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN (sizeof(v1_sig) - 1)

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* v2 byte 13: version (high nibble) and command. */
#define V2_VERSION   0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1
/* v2 byte 14: family (high nibble) and transport. */
#define V2_FAM_UNSPEC 0x0
#define V2_FAM_INET   0x1
#define V2_FAM_INET6  0x2
#define V2_FAM_UNIX   0x3
#define V2_TR_STREAM  0x1
#define V2_TR_MAX     0x2 /* DGRAM */

/* Address block sizes by family: two addresses and, but for UNIX, two
 * ports. */
static const uint16_t v2_addr_len[] = {0, 12, 36, 216};

static enum proxyproto_status
fail(enum proxyproto_err *err, enum proxyproto_err why)
{
    *err = why;
    return PROXYPROTO_ERROR;
}

static size_t
min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* ---- version 1 ---------------------------------------------------------- */

/* A field of the line: <n> bytes at <p>. */
struct field {
    const char *p;
    size_t n;
};

static int
field_is(struct field f, const char *s)
{
    return f.n == strlen(s) && memcmp(f.p, s, f.n) == 0;
}

/* Split <line> (<n> bytes, no "\r\n") at single spaces into at most
 * <max> fields. Returns how many, or -1 for an empty field (two spaces,
 * or one at either end) or more than <max>. */
static int
split(const char *line, size_t n, struct field *f, int max)
{
    size_t i, start = 0;
    int k = 0;

    for (i = 0; i <= n; i++) {
        if (i < n && line[i] != ' ')
            continue;
        if (i == start || k == max)
            return -1;
        f[k].p = line + start;
        f[k].n = i - start;
        k++;
        start = i + 1;
    }
    return k;
}

static int
v1_addr(struct field f, int family, struct saddr *out)
{
    char txt[INET6_ADDRSTRLEN];

    if (f.n >= sizeof(txt))
        return -1;
    memcpy(txt, f.p, f.n);
    txt[f.n] = '\0';
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        out->u.in.sin_family = AF_INET;
        out->len = sizeof(out->u.in);
        return inet_pton(AF_INET, txt, &out->u.in.sin_addr) == 1 ? 0 : -1;
    }
    out->u.in6.sin6_family = AF_INET6;
    out->len = sizeof(out->u.in6);
    return inet_pton(AF_INET6, txt, &out->u.in6.sin6_addr) == 1 ? 0 : -1;
}

/* A port: decimal 0..65535 without leading zeros. */
static int
v1_port(struct field f, struct saddr *a)
{
    unsigned v = 0;
    size_t i;

    if (f.n == 0 || f.n > 5 || (f.p[0] == '0' && f.n > 1))
        return -1;
    for (i = 0; i < f.n; i++) {
        if (f.p[i] < '0' || f.p[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(f.p[i] - '0');
    }
    if (v > 65535)
        return -1;
    saddr_set_port(a, (uint16_t)v);
    return 0;
}

/* The line <line> of <n> bytes, "\r\n" cut off, starting "PROXY ". */
static enum proxyproto_status
v1_line(const char *line, size_t n, struct proxyproto_hdr *out,
        enum proxyproto_err *err)
{
    struct field f[6];
    size_t plen;
    int family, k;

    /* The protocol ends at the next space or the end of the line. */
    for (plen = V1_SIG_LEN; plen < n && line[plen] != ' '; plen++)
        ;
    plen -= V1_SIG_LEN;
    if (plen == 7 && memcmp(line + V1_SIG_LEN, "UNKNOWN", 7) == 0)
        return PROXYPROTO_DONE; /* the rest of the line is ignored */
    k = split(line, n, f, 6);
    if (k < 2)
        return fail(err, PROXYPROTO_ERR_V1_SYNTAX);
    if (field_is(f[1], "TCP4"))
        family = AF_INET;
    else if (field_is(f[1], "TCP6"))
        family = AF_INET6;
    else
        return fail(err, PROXYPROTO_ERR_V1_PROTO);
    if (k != 6)
        return fail(err, PROXYPROTO_ERR_V1_SYNTAX);
    if (v1_addr(f[2], family, &out->src) < 0
        || v1_addr(f[3], family, &out->dst) < 0)
        return fail(err, PROXYPROTO_ERR_V1_ADDR);
    if (v1_port(f[4], &out->src) < 0 || v1_port(f[5], &out->dst) < 0)
        return fail(err, PROXYPROTO_ERR_V1_PORT);
    out->has_addrs = 1;
    return PROXYPROTO_DONE;
}

static enum proxyproto_status
parse_v1(const char *b, size_t len, struct proxyproto_hdr *out,
         enum proxyproto_err *err)
{
    size_t i, lim = min_size(len, PROXYPROTO_V1_MAX);

    if (memcmp(b, v1_sig, min_size(len, V1_SIG_LEN)) != 0)
        return fail(err, PROXYPROTO_ERR_SIGNATURE);
    /* Every byte up to "\r\n" is printable ASCII; a lone CR or LF, a
     * control byte or a byte above 0x7e ends it at once. */
    for (i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\r') {
            if (i + 1 >= PROXYPROTO_V1_MAX)
                return fail(err, PROXYPROTO_ERR_V1_LONG);
            if (i + 1 >= len)
                return PROXYPROTO_NEED;
            if (b[i + 1] != '\n')
                return fail(err, PROXYPROTO_ERR_V1_SYNTAX);
            break;
        }
        if (c < 0x20 || c > 0x7e)
            return fail(err, PROXYPROTO_ERR_V1_SYNTAX);
    }
    if (i == lim)
        return len >= PROXYPROTO_V1_MAX ? fail(err, PROXYPROTO_ERR_V1_LONG)
                                        : PROXYPROTO_NEED;
    if (i < V1_SIG_LEN)
        return fail(err, PROXYPROTO_ERR_V1_SYNTAX);
    out->version = 1;
    out->len = i + 2;
    return v1_line(b, i, out, err);
}

/* ---- version 2 ---------------------------------------------------------- */

static void
v2_addrs(const unsigned char *a, int family, struct proxyproto_hdr *out)
{
    size_t alen = family == AF_INET ? 4 : 16;
    const unsigned char *ports = a + 2 * alen;

    memset(&out->src, 0, sizeof(out->src));
    memset(&out->dst, 0, sizeof(out->dst));
    if (family == AF_INET) {
        out->src.u.in.sin_family = out->dst.u.in.sin_family = AF_INET;
        memcpy(&out->src.u.in.sin_addr, a, 4);
        memcpy(&out->dst.u.in.sin_addr, a + 4, 4);
        out->src.len = out->dst.len = sizeof(struct sockaddr_in);
    } else {
        out->src.u.in6.sin6_family = out->dst.u.in6.sin6_family = AF_INET6;
        memcpy(&out->src.u.in6.sin6_addr, a, 16);
        memcpy(&out->dst.u.in6.sin6_addr, a + 16, 16);
        out->src.len = out->dst.len = sizeof(struct sockaddr_in6);
    }
    saddr_set_port(&out->src, (uint16_t)(ports[0] << 8 | ports[1]));
    saddr_set_port(&out->dst, (uint16_t)(ports[2] << 8 | ports[3]));
    out->has_addrs = 1;
}

static enum proxyproto_status
parse_v2(const unsigned char *b, size_t len, struct proxyproto_hdr *out,
         enum proxyproto_err *err)
{
    unsigned cmd, fam, tr;
    size_t total, off, tlen;

    if (memcmp(b, v2_sig, min_size(len, sizeof(v2_sig))) != 0)
        return fail(err, PROXYPROTO_ERR_SIGNATURE);
    if (len > 12) {
        if (b[12] >> 4 != V2_VERSION)
            return fail(err, PROXYPROTO_ERR_V2_VERSION);
        cmd = b[12] & 0xf;
        if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
            return fail(err, PROXYPROTO_ERR_V2_COMMAND);
    }
    if (len > 13 && (b[13] >> 4 > V2_FAM_UNIX || (b[13] & 0xf) > V2_TR_MAX))
        return fail(err, PROXYPROTO_ERR_V2_FAMILY);
    if (len < PROXYPROTO_V2_FIXED)
        return PROXYPROTO_NEED;
    cmd = b[12] & 0xf;
    fam = b[13] >> 4;
    tr = b[13] & 0xf;
    /* A TCP proxy carries stream addresses only: a PROXY command for
     * IPv4 or IPv6 must say STREAM. */
    if (cmd == V2_CMD_PROXY && (fam == V2_FAM_INET || fam == V2_FAM_INET6)
        && tr != V2_TR_STREAM)
        return fail(err, PROXYPROTO_ERR_V2_FAMILY);
    total = PROXYPROTO_V2_FIXED + ((size_t)b[14] << 8 | b[15]);
    if (total - PROXYPROTO_V2_FIXED < v2_addr_len[fam])
        return fail(err, PROXYPROTO_ERR_V2_LENGTH);
    if (len < total)
        return PROXYPROTO_NEED;
    /* The TLVs: a type byte and a big-endian length, then that many
     * bytes; together they fill the rest of the header exactly. */
    for (off = PROXYPROTO_V2_FIXED + v2_addr_len[fam]; off < total;
         off += 3 + tlen) {
        if (total - off < 3)
            return fail(err, PROXYPROTO_ERR_V2_TLV);
        tlen = (size_t)b[off + 1] << 8 | b[off + 2];
        if (tlen > total - off - 3)
            return fail(err, PROXYPROTO_ERR_V2_TLV);
    }
    out->version = 2;
    out->len = total;
    out->local = cmd == V2_CMD_LOCAL;
    if (cmd == V2_CMD_PROXY && fam == V2_FAM_INET)
        v2_addrs(b + PROXYPROTO_V2_FIXED, AF_INET, out);
    else if (cmd == V2_CMD_PROXY && fam == V2_FAM_INET6)
        v2_addrs(b + PROXYPROTO_V2_FIXED, AF_INET6, out);
    return PROXYPROTO_DONE;
}

enum proxyproto_status
proxyproto_parse(const void *buf, size_t len, struct proxyproto_hdr *out,
                 enum proxyproto_err *err)
{
    const unsigned char *b = buf;

    *err = PROXYPROTO_ERR_NONE;
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return PROXYPROTO_NEED;
    if (b[0] == (unsigned char)v1_sig[0])
        return parse_v1(buf, len, out, err);
    if (b[0] == v2_sig[0])
        return parse_v2(b, len, out, err);
    return fail(err, PROXYPROTO_ERR_SIGNATURE);
}

/* ---- writing ------------------------------------------------------------ */

/* AF_INET or AF_INET6 when <src> and <dst> are both of it, else 0. */
static int
pair_family(const struct saddr *src, const struct saddr *dst)
{
    int f;

    if (src == NULL || dst == NULL)
        return 0;
    f = src->u.sa.sa_family;
    if (f != dst->u.sa.sa_family || (f != AF_INET && f != AF_INET6))
        return 0;
    return f;
}

static size_t
write_v1(int family, const struct saddr *src, const struct saddr *dst,
         char *out, size_t cap)
{
    char s[SADDR_STR_MAX], d[SADDR_STR_MAX];
    int n;

    if (family == 0) {
        n = snprintf(out, cap, "PROXY UNKNOWN\r\n");
    } else {
        saddr_ip_str(src, s, sizeof(s));
        saddr_ip_str(dst, d, sizeof(d));
        n = snprintf(out, cap, "PROXY %s %s %s %u %u\r\n",
                     family == AF_INET ? "TCP4" : "TCP6", s, d, saddr_port(src),
                     saddr_port(dst));
    }
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t
write_v2(int family, const struct saddr *src, const struct saddr *dst,
         char *out, size_t cap)
{
    unsigned char *o = (unsigned char *)out;
    size_t alen = family == AF_INET    ? v2_addr_len[V2_FAM_INET]
                  : family == AF_INET6 ? v2_addr_len[V2_FAM_INET6]
                                       : 0;
    size_t ip = family == AF_INET ? 4 : 16;
    uint16_t sp, dp;

    if (cap < PROXYPROTO_V2_FIXED + alen)
        return 0;
    memcpy(o, v2_sig, sizeof(v2_sig));
    o[12] = V2_VERSION << 4 | V2_CMD_PROXY;
    o[13] = family == AF_INET    ? V2_FAM_INET << 4 | V2_TR_STREAM
            : family == AF_INET6 ? V2_FAM_INET6 << 4 | V2_TR_STREAM
                                 : V2_FAM_UNSPEC << 4;
    o[14] = (unsigned char)(alen >> 8);
    o[15] = (unsigned char)alen;
    if (family == 0)
        return PROXYPROTO_V2_FIXED;
    o += PROXYPROTO_V2_FIXED;
    if (family == AF_INET) {
        memcpy(o, &src->u.in.sin_addr, ip);
        memcpy(o + ip, &dst->u.in.sin_addr, ip);
    } else {
        memcpy(o, &src->u.in6.sin6_addr, ip);
        memcpy(o + ip, &dst->u.in6.sin6_addr, ip);
    }
    sp = saddr_port(src);
    dp = saddr_port(dst);
    o[2 * ip] = (unsigned char)(sp >> 8);
    o[2 * ip + 1] = (unsigned char)sp;
    o[2 * ip + 2] = (unsigned char)(dp >> 8);
    o[2 * ip + 3] = (unsigned char)dp;
    return PROXYPROTO_V2_FIXED + alen;
}

size_t
proxyproto_write(int version, const struct saddr *src, const struct saddr *dst,
                 char *out, size_t cap)
{
    int family = pair_family(src, dst);

    if (version == 1)
        return write_v1(family, src, dst, out, cap);
    if (version == 2)
        return write_v2(family, src, dst, out, cap);
    return 0;
}
