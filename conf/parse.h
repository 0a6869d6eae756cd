/*
 * parse.h - parsers for the scalar types the config and the API share:
 * socket addresses, durations, bounded integers.
 *
 * All functions take a NUL-terminated string, never allocate, and return
 * 0 on success or -1 with a reason in <why> (a static string).
 */
#ifndef CONF_PARSE_H
#define CONF_PARSE_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

/* A socket address, IPv4 or IPv6, with its length. */
struct saddr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    socklen_t len;
};

#define SADDR_STR_MAX 64 /* "[ffff:...:ffff%iface]:65535" fits */

/* Parse "1.2.3.4:80" or "[::1]:80". The port is decimal without leading
 * zeros; with <allow_port0> a port of 0 is accepted. Hostnames are
 * refused (ferry never resolves names), and so are IPv4-mapped IPv6
 * addresses ("[::ffff:1.2.3.4]:80"): the IPv4 form names the same thing
 * without a second spelling. */
int parse_hostport(const char *s, struct saddr *out, int allow_port0,
                   const char **why);

/* Parse a bare IP literal "1.2.3.4" or "::1" (no brackets) and set
 * <port>. */
int parse_ip(const char *s, uint16_t port, struct saddr *out,
             const char **why);

/* Parse a duration: a non-negative number followed by a unit of ms, s, m
 * or h ("250ms", "2s", "1h", "1.5s"); a bare "0" is 0. Result in
 * milliseconds, at most 30 days. */
int parse_duration_ms(const char *s, uint64_t *ms, const char **why);

/* Parse a decimal unsigned integer within [min, max], written without
 * leading zeros ("0" itself is fine). */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out,
               const char **why);

/* An address prefix: "198.18.0.0/15", "2001:2::/48" (port unused). */
struct cidr {
    struct saddr ip;
    unsigned prefix; /* 0..32 or 0..128 */
};

#define PARSE_CIDR_MASK 0x1 /* clear host bits instead of refusing them */

/* Parse "IP/prefix". Host bits after the prefix are refused, or with
 * PARSE_CIDR_MASK cleared (Kubernetes accepts "10.0.0.1/8" in some
 * fields and means 10.0.0.0/8). */
int parse_cidr(const char *s, unsigned flags, struct cidr *out,
               const char **why);

/* Nonzero if no host bit of <c> is set after its prefix. */
int cidr_canonical(const struct cidr *c);

/* Nonzero if the IP of <a> lies in <c> (same family only). */
int cidr_contains(const struct cidr *c, const struct saddr *a);

/* Format <a> as "1.2.3.4:80" or "[::1]:80" into <out> (SADDR_STR_MAX). */
const char *saddr_str(const struct saddr *a, char *out, size_t outlen);

/* Format only the IP of <a>. */
const char *saddr_ip_str(const struct saddr *a, char *out, size_t outlen);

/* Nonzero if <a> is an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
int saddr_is_v4mapped(const struct saddr *a);

/* Nonzero if <a> is the wildcard address, 0.0.0.0 or ::. */
int saddr_is_any(const struct saddr *a);

/* Compare two addresses (family, IP, port). Returns 0 when equal. */
int saddr_cmp(const struct saddr *a, const struct saddr *b);

/* Port of <a> in host order. */
uint16_t saddr_port(const struct saddr *a);

/* Set the port of <a> (host order); an address of no known family is
 * left as it is. */
void saddr_set_port(struct saddr *a, uint16_t port);

#endif
