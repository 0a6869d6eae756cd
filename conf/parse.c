#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

int
parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out,
           const char **why)
{
    unsigned long long v;
    char *end;

    if (s == NULL || *s == '\0' || *s < '0' || *s > '9') {
        *why = "expected a non-negative integer";
        return -1;
    }
    /* One spelling per number: "010" is 8 to a YAML 1.1 reader and 10 to
     * strtoull, so a leading zero is refused rather than guessed at. */
    if (s[0] == '0' && s[1] >= '0' && s[1] <= '9') {
        *why = "write the number without leading zeros";
        return -1;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        *why = "expected a non-negative integer";
        return -1;
    }
    if (v < min || v > max) {
        *why = "out of range";
        return -1;
    }
    *out = v;
    return 0;
}

int
parse_ip(const char *s, uint16_t port, struct saddr *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, s, &out->u.in.sin_addr) == 1) {
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_port = htons(port);
        out->len = sizeof(out->u.in);
        return 0;
    }
    if (inet_pton(AF_INET6, s, &out->u.in6.sin6_addr) == 1) {
        out->u.in6.sin6_family = AF_INET6;
        out->u.in6.sin6_port = htons(port);
        out->len = sizeof(out->u.in6);
        return 0;
    }
    *why = "not an IP address (names are not resolved)";
    return -1;
}

/* The address bytes of <a> and their number of bits; NULL when <a> is of
 * no known family. */
static uint8_t *
ip_bytes(struct saddr *a, unsigned *bits)
{
    if (a->u.sa.sa_family == AF_INET) {
        *bits = 32;
        return (uint8_t *)&a->u.in.sin_addr;
    }
    if (a->u.sa.sa_family == AF_INET6) {
        *bits = 128;
        return (uint8_t *)&a->u.in6.sin6_addr;
    }
    *bits = 0;
    return NULL;
}

int
parse_cidr(const char *s, unsigned flags, struct cidr *out, const char **why)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    uint64_t prefix;
    unsigned bits, i;
    uint8_t *b;

    if (slash == NULL || (size_t)(slash - s) >= sizeof(ip)) {
        *why = "not an address/prefix";
        return -1;
    }
    memcpy(ip, s, (size_t)(slash - s));
    ip[slash - s] = '\0';
    if (parse_ip(ip, 0, &out->ip, why) < 0)
        return -1;
    b = ip_bytes(&out->ip, &bits);
    if (parse_uint(slash + 1, 0, bits, &prefix, why) < 0)
        return -1;
    out->prefix = (unsigned)prefix;
    for (i = out->prefix; i < bits; i++) {
        if (!(b[i / 8] & (0x80u >> (i % 8))))
            continue;
        if (!(flags & PARSE_CIDR_MASK)) {
            *why = "host bits set after the prefix";
            return -1;
        }
        b[i / 8] &= (uint8_t)~(0x80u >> (i % 8));
    }
    return 0;
}

int
cidr_canonical(const struct cidr *c)
{
    struct cidr m = *c;
    unsigned bits, i;
    const uint8_t *b = ip_bytes(&m.ip, &bits);

    for (i = c->prefix; b != NULL && i < bits; i++)
        if (b[i / 8] & (0x80u >> (i % 8)))
            return 0;
    return 1;
}

int
cidr_contains(const struct cidr *c, const struct saddr *a)
{
    struct saddr x = c->ip, y = *a;
    unsigned bits, i;
    const uint8_t *p, *q;

    if (x.u.sa.sa_family != y.u.sa.sa_family)
        return 0;
    p = ip_bytes(&x, &bits);
    q = ip_bytes(&y, &bits);
    if (p == NULL)
        return 0;
    for (i = 0; i < c->prefix; i++)
        if ((p[i / 8] ^ q[i / 8]) & (0x80u >> (i % 8)))
            return 0;
    return 1;
}

int
parse_hostport(const char *s, struct saddr *out, int allow_port0,
               const char **why)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon, *hs, *ps;
    size_t hl;
    uint64_t port;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':') {
            *why = "expected [IPv6]:port";
            return -1;
        }
        hs = s + 1;
        hl = (size_t)(rb - hs);
        ps = rb + 2;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) {
            *why = "missing :port";
            return -1;
        }
        if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
            *why = "IPv6 addresses need brackets: [addr]:port";
            return -1;
        }
        hs = s;
        hl = (size_t)(colon - s);
        ps = colon + 1;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        *why = "missing or overlong IP address";
        return -1;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    /* Digits only, as written in a URL: "09001" would be read as 9001 by
     * some and refused (or read as octal) by others. */
    if (ps[0] == '0' && ps[1] != '\0') {
        *why = "port must be written without leading zeros";
        return -1;
    }
    if (parse_uint(ps, allow_port0 ? 0 : 1, 65535, &port, why) < 0) {
        *why = allow_port0 ? "port must be 0-65535" : "port must be 1-65535";
        return -1;
    }
    if (s[0] == '[' && strchr(host, ':') == NULL) {
        *why = "brackets are only for IPv6 addresses";
        return -1;
    }
    if (parse_ip(host, (uint16_t)port, out, why) < 0)
        return -1;
    if (saddr_is_v4mapped(out)) {
        *why = "an IPv4-mapped IPv6 address: write the IPv4 form "
               "(a.b.c.d:port)";
        return -1;
    }
    return 0;
}

int
saddr_is_v4mapped(const struct saddr *a)
{
    return a->u.sa.sa_family == AF_INET6
           && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr);
}

int
saddr_is_any(const struct saddr *a)
{
    if (a->u.sa.sa_family == AF_INET)
        return a->u.in.sin_addr.s_addr == htonl(INADDR_ANY);
    return a->u.sa.sa_family == AF_INET6
           && IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr);
}

int
parse_duration_ms(const char *s, uint64_t *ms, const char **why)
{
    static const struct {
        const char *name;
        double mult;
    } units[] = {
        {"ms", 1.0}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3},
    };
    char *end;
    double v;
    size_t i;

    if (s == NULL || ((*s < '0' || *s > '9') && *s != '.')) {
        *why = "expected a duration like 250ms, 2s, 5m or 1h";
        return -1;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v) || v < 0) {
        *why = "expected a duration like 250ms, 2s, 5m or 1h";
        return -1;
    }
    if (*end == '\0') {
        if (v == 0) {
            *ms = 0;
            return 0;
        }
        *why = "duration needs a unit (ms, s, m or h)";
        return -1;
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].name) == 0) {
            double r = v * units[i].mult;
            if (r > 30.0 * 24 * 3600e3) {
                *why = "duration too long (at most 30 days)";
                return -1;
            }
            *ms = (uint64_t)(r + 0.5);
            return 0;
        }
    }
    *why = "unknown duration unit (use ms, s, m or h)";
    return -1;
}

/* IPv4 as inet_ntop() writes it, by hand: glibc's formats it with
 * sprintf(), and the translator and the kernel dataplane's engine name
 * every endpoint (250,000 at a first sync of 10,000 × 25). <out> has
 * room for INET_ADDRSTRLEN. */
static void
ip4_text(const struct in_addr *in, char *out)
{
    const unsigned char *b = (const unsigned char *)&in->s_addr;
    int i;

    for (i = 0; i < 4; i++) {
        unsigned v = b[i];

        if (i > 0)
            *out++ = '.';
        if (v >= 100)
            *out++ = (char)('0' + v / 100);
        if (v >= 10)
            *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
    }
    *out = '\0';
}

const char *
saddr_ip_str(const struct saddr *a, char *out, size_t outlen)
{
    if (a->u.sa.sa_family == AF_INET && outlen >= INET_ADDRSTRLEN)
        ip4_text(&a->u.in.sin_addr, out);
    else if (a->u.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &a->u.in.sin_addr, out, (socklen_t)outlen);
    else if (a->u.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, out, (socklen_t)outlen);
    else
        snprintf(out, outlen, "?");
    return out;
}

const char *
saddr_str(const struct saddr *a, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    saddr_ip_str(a, ip, sizeof(ip));
    if (a->u.sa.sa_family == AF_INET6)
        snprintf(out, outlen, "[%s]:%u", ip, saddr_port(a));
    else
        snprintf(out, outlen, "%s:%u", ip, saddr_port(a));
    return out;
}

uint16_t
saddr_port(const struct saddr *a)
{
    if (a->u.sa.sa_family == AF_INET)
        return ntohs(a->u.in.sin_port);
    if (a->u.sa.sa_family == AF_INET6)
        return ntohs(a->u.in6.sin6_port);
    return 0;
}

void
saddr_set_port(struct saddr *a, uint16_t port)
{
    if (a->u.sa.sa_family == AF_INET)
        a->u.in.sin_port = htons(port);
    else if (a->u.sa.sa_family == AF_INET6)
        a->u.in6.sin6_port = htons(port);
}

int
saddr_cmp(const struct saddr *a, const struct saddr *b)
{
    int fa = a->u.sa.sa_family, fb = b->u.sa.sa_family;
    int c;

    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (fa == AF_INET)
        c = memcmp(&a->u.in.sin_addr, &b->u.in.sin_addr, 4);
    else if (fa == AF_INET6)
        c = memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16);
    else
        c = 0;
    if (c != 0)
        return c;
    if (saddr_port(a) != saddr_port(b))
        return saddr_port(a) < saddr_port(b) ? -1 : 1;
    return 0;
}
