/*
 * tlshello.c - the ClientHello's server name (RFC 8446 sections 4.1.2 and
 * 5.1, RFC 6066 section 3), read strictly and within fixed bounds.
 *
 * Two steps. First the handshake message is gathered from the records
 * that carry it (a client may split it over several, and a network over
 * several reads): each record header is checked as soon as its bytes are
 * there, so that garbage is refused at once, and the message's own
 * header gives its length, which is capped. Then the gathered message is
 * walked field by field, each length checked against what holds it.
 */
#include <string.h>

#include "tlshello.h"

#define REC_HDR         5
#define REC_HANDSHAKE   22
#define REC_MAX         16384 /* a record's plaintext, 2^14 */
#define HS_HDR          4
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define SNI_HOST_NAME   0

const char *const tlshello_err_text[TLSHELLO_ERR__COUNT] = {
    [TLSHELLO_ERR_NONE] = "no error",
    [TLSHELLO_ERR_NOT_HANDSHAKE] = "not a TLS handshake record",
    [TLSHELLO_ERR_VERSION] = "not TLS version 3.x",
    [TLSHELLO_ERR_RECORD_LENGTH] = "TLS record of 0 or over 16384 bytes",
    [TLSHELLO_ERR_NOT_HELLO] = "handshake message is not a ClientHello",
    [TLSHELLO_ERR_TOO_LARGE] = "ClientHello larger than 16384 bytes",
    [TLSHELLO_ERR_TRAILING] = "bytes after the ClientHello in its record",
    [TLSHELLO_ERR_TRUNCATED] = "a ClientHello field runs past its end",
    [TLSHELLO_ERR_EXTENSIONS] = "extension lengths do not add up",
    [TLSHELLO_ERR_SNI] = "malformed or repeated server_name extension",
    [TLSHELLO_ERR_NAME] = "server name is not a valid DNS host name",
};

/* A bounded reader over the gathered message. */
struct cur {
    const unsigned char *p;
    size_t n;
};

static int
cur_u8(struct cur *c, size_t *v)
{
    if (c->n < 1)
        return -1;
    *v = c->p[0];
    c->p++;
    c->n--;
    return 0;
}

static int
cur_u16(struct cur *c, size_t *v)
{
    if (c->n < 2)
        return -1;
    *v = (size_t)c->p[0] << 8 | c->p[1];
    c->p += 2;
    c->n -= 2;
    return 0;
}

static int
cur_skip(struct cur *c, size_t k)
{
    if (c->n < k)
        return -1;
    c->p += k;
    c->n -= k;
    return 0;
}

/* A sub-reader of the next <k> bytes, which <c> then skips. */
static int
cur_sub(struct cur *c, size_t k, struct cur *sub)
{
    sub->p = c->p;
    sub->n = k;
    return cur_skip(c, k);
}

static enum tlshello_status
fail(enum tlshello_err *err, enum tlshello_err why)
{
    *err = why;
    return TLSHELLO_ERROR;
}

const char *
tlshello_name_check(const char *name, size_t n)
{
    size_t i, label = 0, last = 0;
    int digits = 1;

    if (n == 0)
        return "empty";
    if (n > TLSHELLO_NAME_MAX)
        return "longer than 253 bytes";
    for (i = 0; i <= n; i++) {
        char ch = i < n ? name[i] : '.';
        if (ch == '.') {
            if (label == 0)
                return i == n ? "ends with a dot" : "has an empty label";
            if (name[i - 1] == '-')
                return "has a label ending with a hyphen";
            last = i - label;
            label = 0;
            digits = 1;
            continue;
        }
        if (label == 0 && ch == '-')
            return "has a label starting with a hyphen";
        if (++label > 63)
            return "has a label longer than 63 bytes";
        if (ch >= '0' && ch <= '9')
            continue;
        digits = 0;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || ch == '-'))
            return "holds a byte other than a letter, digit, hyphen or dot";
    }
    /* The last label is all digits: an address, not a name. */
    for (i = last, digits = 1; i < n && digits; i++)
        digits = name[i] >= '0' && name[i] <= '9';
    return digits ? "is an IP address, not a host name" : NULL;
}

int
tlshello_match(const char *pattern, const char *name)
{
    const char *dot;

    if (strcmp(pattern, name) == 0)
        return 2;
    if (pattern[0] != '*' || pattern[1] != '.')
        return 0;
    /* One label, then the suffix the pattern names after its "*". */
    dot = strchr(name, '.');
    return dot != NULL && dot != name && strcmp(dot, pattern + 1) == 0;
}

/* The server_name extension's body <c>: its host name into <out>. */
static enum tlshello_status
read_sni(struct cur *c, struct tlshello *out, enum tlshello_err *err)
{
    struct cur list;
    size_t n, type, nlen, i;
    int have = 0;

    if (cur_u16(c, &n) < 0 || n != c->n || n == 0)
        return fail(err, TLSHELLO_ERR_SNI);
    cur_sub(c, n, &list);
    while (list.n > 0) {
        const unsigned char *name;
        if (cur_u8(&list, &type) < 0 || cur_u16(&list, &nlen) < 0
            || nlen > list.n)
            return fail(err, TLSHELLO_ERR_SNI);
        name = list.p;
        cur_skip(&list, nlen);
        if (type != SNI_HOST_NAME)
            continue; /* another kind of name: none is defined */
        if (have)
            return fail(err, TLSHELLO_ERR_SNI);
        have = 1;
        if (tlshello_name_check((const char *)name, nlen) != NULL)
            return fail(err, TLSHELLO_ERR_NAME);
        for (i = 0; i < nlen; i++)
            out->name[i] =
                (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a'
                                                        : name[i]);
        out->name[nlen] = '\0';
    }
    return have ? TLSHELLO_NAME : TLSHELLO_NO_SNI;
}

/* The client_hello message's body <c>, whole. */
static enum tlshello_status
read_hello(struct cur *c, struct tlshello *out, enum tlshello_err *err)
{
    enum tlshello_status st = TLSHELLO_NO_SNI;
    struct cur exts, body;
    size_t v, n, type;
    int seen = 0;

    if (cur_u8(c, &v) < 0 || cur_skip(c, 1) < 0)
        return fail(err, TLSHELLO_ERR_TRUNCATED);
    if (v != 3)
        return fail(err, TLSHELLO_ERR_VERSION);
    /* random; session id (at most 32 bytes); cipher suites (pairs, at
     * least one); compression methods (at least one). */
    if (cur_skip(c, 32) < 0 || cur_u8(c, &n) < 0)
        return fail(err, TLSHELLO_ERR_TRUNCATED);
    if (n > 32 || cur_skip(c, n) < 0 || cur_u16(c, &n) < 0 || n < 2
        || n % 2 != 0 || cur_skip(c, n) < 0 || cur_u8(c, &n) < 0 || n < 1
        || cur_skip(c, n) < 0)
        return fail(err, TLSHELLO_ERR_TRUNCATED);
    if (c->n == 0)
        return TLSHELLO_NO_SNI; /* no extensions at all */
    if (cur_u16(c, &n) < 0 || n != c->n)
        return fail(err, TLSHELLO_ERR_EXTENSIONS);
    cur_sub(c, n, &exts);
    while (exts.n > 0) {
        if (cur_u16(&exts, &type) < 0 || cur_u16(&exts, &n) < 0
            || cur_sub(&exts, n, &body) < 0)
            return fail(err, TLSHELLO_ERR_EXTENSIONS);
        if (type != EXT_SERVER_NAME)
            continue;
        if (seen++)
            return fail(err, TLSHELLO_ERR_SNI);
        if ((st = read_sni(&body, out, err)) == TLSHELLO_ERROR)
            return st;
    }
    return st;
}

/* Check the record header of <avail> bytes (1 to 5) at <r>; 0 if it may
 * still be a handshake record, else -1 with <err> set. On 5 bytes,
 * <*rlen> is its length. */
static int
check_record(const unsigned char *r, size_t avail, size_t *rlen,
             enum tlshello_err *err)
{
    if (r[0] != REC_HANDSHAKE)
        return *err = TLSHELLO_ERR_NOT_HANDSHAKE, -1;
    if (avail >= 2 && r[1] != 3)
        return *err = TLSHELLO_ERR_VERSION, -1;
    if (avail < REC_HDR)
        return 0;
    *rlen = (size_t)r[3] << 8 | r[4];
    if (*rlen == 0 || *rlen > REC_MAX)
        return *err = TLSHELLO_ERR_RECORD_LENGTH, -1;
    return 0;
}

enum tlshello_status
tlshello_parse(const void *buf, size_t len, struct tlshello *out,
               enum tlshello_err *err)
{
    const unsigned char *p = buf;
    unsigned char msg[TLSHELLO_MAX];
    size_t pos = 0, have = 0, want = 0, rlen = 0, avail, take;
    struct cur c;

    *err = TLSHELLO_ERR_NONE;
    out->len = 0;
    out->name[0] = '\0';
    for (;;) {
        if (pos >= len)
            return TLSHELLO_NEED;
        if (check_record(p + pos, len - pos, &rlen, err) < 0)
            return TLSHELLO_ERROR;
        if (len - pos < REC_HDR)
            return TLSHELLO_NEED;
        pos += REC_HDR;
        avail = rlen < len - pos ? rlen : len - pos;
        /* Only what fits: a message longer than <msg> is refused below
         * by its length, before any byte past <msg> matters. */
        take = avail < sizeof(msg) - have ? avail : sizeof(msg) - have;
        memcpy(msg + have, p + pos, take);
        have += take;
        if (have >= 1 && msg[0] != HS_CLIENT_HELLO)
            return fail(err, TLSHELLO_ERR_NOT_HELLO);
        if (have >= HS_HDR) {
            want =
                HS_HDR + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]);
            if (want > TLSHELLO_MAX)
                return fail(err, TLSHELLO_ERR_TOO_LARGE);
            if (have + (avail - take) > want)
                return fail(err, TLSHELLO_ERR_TRAILING);
        }
        if (avail < rlen)
            return TLSHELLO_NEED; /* this record is not all there */
        pos += rlen;
        if (have >= HS_HDR && have == want)
            break;
    }
    out->len = pos;
    c.p = msg + HS_HDR;
    c.n = want - HS_HDR;
    return read_hello(&c, out, err);
}
