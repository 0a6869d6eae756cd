#include <string.h>
#include <strings.h>

#include "httpreq.h"
#include "util.h"

#define BAD(msg)                                                               \
    do {                                                                       \
        if (why != NULL)                                                       \
            *why = (msg);                                                      \
        return HTTPREQ_BAD;                                                    \
    } while (0)

static int
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || (c != 0 && strchr("!#$%&'*+-.^_`|~", c));
}

/* Percent-decode <n> bytes of <s> into <out> (NUL-terminated). Control
 * bytes, decoded or not, are refused. */
static int
pct_decode(const char *s, size_t n, char *out, size_t outlen, int plus_space)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* Find the end of the line starting at <p> (before <end>). Returns the
 * offset of '\n', or -1 if not there yet. */
static long
line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    return nl ? nl - p : -1;
}

static enum httpreq_rc
parse_request_line(const char *p, size_t n, struct httpreq *out,
                   const char **why)
{
    static const struct {
        const char *name;
        enum httpreq_method m;
    } methods[] = {{"GET", HTTPREQ_GET}, {"HEAD", HTTPREQ_HEAD},
                   {"POST", HTTPREQ_POST}};
    const char *sp1, *sp2, *q, *end = p + n;
    size_t i, ml;

    if (n > 0 && p[n - 1] == '\r')
        end--;
    sp1 = memchr(p, ' ', (size_t)(end - p));
    if (sp1 == NULL || sp1 == p)
        BAD("malformed request line");
    ml = (size_t)(sp1 - p);
    for (i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)p[i]))
            BAD("malformed method");
    out->method = HTTPREQ_OTHER;
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == ml && memcmp(p, methods[i].name, ml) == 0)
            out->method = methods[i].m;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1)
        BAD("malformed request line");
    if (end - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0
        || (sp2[8] != '0' && sp2[8] != '1'))
        BAD("unsupported protocol version");
    out->minor = sp2[8] - '0';
    if (sp1[1] != '/')
        BAD("the target must be a path");
    for (q = sp1 + 1; q < sp2; q++)
        if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
            BAD("bad character in the target");
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    if (q == NULL)
        q = sp2;
    if (pct_decode(sp1 + 1, (size_t)(q - sp1 - 1), out->path,
                   sizeof(out->path), 0)
        < 0)
        BAD("bad path");
    out->query[0] = '\0';
    if (q < sp2) {
        size_t ql = (size_t)(sp2 - q - 1);
        if (ql >= sizeof(out->query))
            BAD("query too long");
        memcpy(out->query, q + 1, ql);
        out->query[ql] = '\0';
    }
    return HTTPREQ_OK;
}

/* One header line (without its line end) of the request starting at
 * <base>. Updates <clen> and records the line in <out>. */
static enum httpreq_rc
parse_header(const char *base, const char *p, size_t n, long *clen,
             struct httpreq *out, const char **why)
{
    struct httpreq_hdr *h;
    const char *colon, *v, *e = p + n;
    size_t i, nl;
    long val = 0;

    if (n > 0 && p[n - 1] == '\r')
        e--;
    if (p < e && (*p == ' ' || *p == '\t'))
        BAD("folded header lines are not accepted");
    colon = memchr(p, ':', (size_t)(e - p));
    if (colon == NULL || colon == p)
        BAD("malformed header line");
    nl = (size_t)(colon - p);
    for (i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)p[i]))
            BAD("malformed header name");
    for (v = colon + 1; v < e; v++)
        if ((unsigned char)*v < 0x20 && *v != '\t')
            BAD("control character in a header");
    v = colon + 1;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    /* Offsets fit: the whole request is at most HTTPREQ_MAX bytes, and
     * the caller counts lines against HTTPREQ_HEADERS_MAX. */
    h = &out->hdrs[out->nhdrs++];
    h->name = (unsigned short)(p - base);
    h->name_len = (unsigned short)nl;
    h->value = (unsigned short)(v - base);
    h->value_len = (unsigned short)(e - v);
    if (nl == 17 && strncasecmp(p, "transfer-encoding", nl) == 0)
        BAD("request bodies must use Content-Length");
    if (nl == 14 && strncasecmp(p, "content-length", nl) == 0) {
        if (v == e)
            BAD("bad Content-Length");
        for (; v < e; v++) {
            if (*v < '0' || *v > '9')
                BAD("bad Content-Length");
            val = val * 10 + (*v - '0');
            if (val > HTTPREQ_MAX)
                val = HTTPREQ_MAX + 1; /* too large either way */
        }
        if (*clen >= 0 && *clen != val)
            BAD("conflicting Content-Length headers");
        *clen = val;
    }
    return HTTPREQ_OK;
}

enum httpreq_rc
httpreq_parse(const char *buf, size_t len, struct httpreq *out,
              const char **why)
{
    const char *p = buf, *end;
    size_t scan = len > HTTPREQ_MAX ? HTTPREQ_MAX : len;
    long n, clen = -1;
    int nheaders = 0;
    enum httpreq_rc rc;

    end = buf + scan;
    out->buf = buf;
    out->nhdrs = 0;
    n = line_end(p, end);
    if (n < 0)
        return len >= HTTPREQ_MAX ? HTTPREQ_TOO_LARGE : HTTPREQ_AGAIN;
    rc = parse_request_line(p, (size_t)n, out, why);
    if (rc != HTTPREQ_OK)
        return rc;
    p += n + 1;
    for (;;) {
        n = line_end(p, end);
        if (n < 0)
            return len >= HTTPREQ_MAX ? HTTPREQ_TOO_LARGE : HTTPREQ_AGAIN;
        if (n == 0 || (n == 1 && p[0] == '\r'))
            break;
        if (++nheaders > HTTPREQ_HEADERS_MAX)
            BAD("too many header lines");
        rc = parse_header(buf, p, (size_t)n, &clen, out, why);
        if (rc != HTTPREQ_OK)
            return rc;
        p += n + 1;
    }
    p += n + 1;
    if (clen < 0)
        clen = 0;
    if ((size_t)(p - buf) + (size_t)clen > HTTPREQ_MAX)
        return HTTPREQ_TOO_LARGE;
    if ((size_t)(p - buf) + (size_t)clen > len)
        return HTTPREQ_AGAIN;
    out->length = (size_t)(p - buf) + (size_t)clen;
    return HTTPREQ_OK;
}

int
httpreq_query(const struct httpreq *r, const char *key, char *out,
              size_t outlen)
{
    const char *p = r->query, *amp, *eq;
    size_t kl = strlen(key);

    while (*p != '\0') {
        amp = strchr(p, '&');
        if (amp == NULL)
            amp = p + strlen(p);
        eq = memchr(p, '=', (size_t)(amp - p));
        if (eq != NULL && (size_t)(eq - p) == kl && memcmp(p, key, kl) == 0)
            return pct_decode(eq + 1, (size_t)(amp - eq - 1), out, outlen, 1);
        if (eq == NULL && (size_t)(amp - p) == kl && memcmp(p, key, kl) == 0)
            return pct_decode("", 0, out, outlen, 1);
        p = *amp ? amp + 1 : amp;
    }
    return -1;
}

/* The next parameter of a query at <p>: its key in <key>/<klen>. Returns
 * where the one after starts. */
static const char *
query_next(const char *p, const char **key, size_t *klen)
{
    const char *amp = strchr(p, '&'), *eq;

    if (amp == NULL)
        amp = p + strlen(p);
    eq = memchr(p, '=', (size_t)(amp - p));
    *key = p;
    *klen = (size_t)((eq != NULL ? eq : amp) - p);
    return *amp != '\0' ? amp + 1 : amp;
}

int
httpreq_query_only(const struct httpreq *r, const char *const *keys,
                   size_t nkeys)
{
    const char *p = r->query, *q, *k, *k2;
    size_t kl, kl2, i, n = strlen(p);

    if (n > 0 && p[n - 1] == '&')
        return 0; /* an empty parameter, as "&&" or "&x" are */
    while (*p != '\0') {
        p = query_next(p, &k, &kl);
        for (i = 0; i < nkeys; i++)
            if (strlen(keys[i]) == kl && memcmp(keys[i], k, kl) == 0)
                break;
        if (i == nkeys)
            return 0;
        for (q = p; *q != '\0';) {
            q = query_next(q, &k2, &kl2);
            if (kl2 == kl && memcmp(k, k2, kl) == 0)
                return 0;
        }
    }
    return 1;
}

unsigned
httpreq_header(const struct httpreq *r, const char *name, const char **val,
               size_t *len)
{
    size_t nl = strlen(name);
    unsigned i, found = 0;

    for (i = 0; i < r->nhdrs; i++) {
        const struct httpreq_hdr *h = &r->hdrs[i];
        if (h->name_len != nl || strncasecmp(r->buf + h->name, name, nl) != 0)
            continue;
        if (found++ == 0) {
            if (val != NULL)
                *val = r->buf + h->value;
            if (len != NULL)
                *len = h->value_len;
        }
    }
    return found;
}
