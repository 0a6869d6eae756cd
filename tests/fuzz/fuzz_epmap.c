/*
 * fuzz_epmap.c - libFuzzer target for the text of an endpoint map's
 * elements (proxy/node/nftrules.c, nftrules_epmap_parse()), which the
 * engine turns into netlink elements: "lo-hi : ip . port, ...". What it
 * accepts covers the random number's range exactly once, ascending, in
 * one family with ports that are not 0; written again the same way, it
 * reads back the same. The same input also feeds the parser of a plain
 * service's keys (nftrules_addrs_parse()).
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nftgen.h"
#include "nftrules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The same text as a plain service's keys ("ip . port, ..."):
 * nftrules_addrs_parse() takes at least one address, all of one family,
 * ports not 0; written again, it reads back the same, and each encodes
 * to 8 or 20 bytes. */
static void
addrs_case(const char *text, size_t size)
{
    struct saddr *a, *b;
    uint8_t enc[NFTRULES_DATA_MAX + 8];
    const char *why;
    char *again, ip[INET6_ADDRSTRLEN];
    size_t cap, at = 0;
    long n, i;

    n = nftrules_addrs_parse(text, NULL, 0, &why);
    if (n < 0) {
        if (why == NULL)
            abort();
        return;
    }
    if (n == 0 || (size_t)n > size)
        abort();
    a = calloc((size_t)n, sizeof(*a));
    b = calloc((size_t)n, sizeof(*b));
    cap = (size_t)n * 64 + 1;
    again = malloc(cap);
    if (a == NULL || b == NULL || again == NULL)
        abort();
    if (nftrules_addrs_parse(text, a, (size_t)n, &why) != n)
        abort();
    if (n > 1 && nftrules_addrs_parse(text, b, (size_t)n - 1, &why) >= 0)
        abort();
    again[0] = '\0';
    for (i = 0; i < n; i++) {
        int v6 = a[i].u.sa.sa_family == AF_INET6;
        size_t len = nftrules_addr_port(&a[i], enc);

        if (a[i].u.sa.sa_family != a[0].u.sa.sa_family
            || saddr_port(&a[i]) == 0 || len != (v6 ? 20u : 8u))
            abort();
        inet_ntop(a[i].u.sa.sa_family,
                  v6 ? (const void *)&a[i].u.in6.sin6_addr
                     : (const void *)&a[i].u.in.sin_addr,
                  ip, sizeof(ip));
        at += (size_t)snprintf(again + at, cap - at, "%s%s . %u",
                               i ? ", " : "", ip, (unsigned)saddr_port(&a[i]));
    }
    if (nftrules_addrs_parse(again, b, (size_t)n, &why) != n)
        abort();
    for (i = 0; i < n; i++)
        if (saddr_cmp(&a[i], &b[i]) != 0)
            abort();
    free(again);
    free(a);
    free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nftrules_eprange *r, *r2;
    const char *why;
    char *text, *again;
    long n, m, i;
    size_t at = 0, cap;
    uint32_t next = 0;

    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    addrs_case(text, size);
    n = nftrules_epmap_parse(text, NULL, 0, &why);
    if (n < 0) {
        if (why == NULL)
            abort();
        free(text);
        return 0;
    }
    if (n == 0 || (size_t)n > size)
        abort();
    r = calloc((size_t)n, sizeof(*r));
    r2 = calloc((size_t)n, sizeof(*r2));
    cap = (size_t)n * 80 + 1;
    again = malloc(cap);
    if (r == NULL || r2 == NULL || again == NULL)
        abort();
    if (nftrules_epmap_parse(text, r, (size_t)n, &why) != n)
        abort();
    /* Too little room is an error, not an overflow. */
    if (n > 1 && nftrules_epmap_parse(text, r2, (size_t)n - 1, &why) >= 0)
        abort();
    again[0] = '\0';
    for (i = 0; i < n; i++) {
        char ip[INET6_ADDRSTRLEN];
        int v6 = r[i].ep.u.sa.sa_family == AF_INET6;

        if (r[i].lo != next || r[i].hi < r[i].lo || r[i].hi >= NFTGEN_EP_MOD
            || r[i].ep.u.sa.sa_family != r[0].ep.u.sa.sa_family
            || saddr_port(&r[i].ep) == 0)
            abort();
        next = r[i].hi + 1;
        inet_ntop(r[i].ep.u.sa.sa_family,
                  v6 ? (const void *)&r[i].ep.u.in6.sin6_addr
                     : (const void *)&r[i].ep.u.in.sin_addr,
                  ip, sizeof(ip));
        at += (size_t)snprintf(again + at, cap - at, "%s%u-%u : %s . %u",
                               i ? ", " : "", r[i].lo, r[i].hi, ip,
                               (unsigned)saddr_port(&r[i].ep));
    }
    if (next != NFTGEN_EP_MOD)
        abort();
    m = nftrules_epmap_parse(again, r2, (size_t)n, &why);
    if (m != n)
        abort();
    for (i = 0; i < n; i++)
        if (r2[i].lo != r[i].lo || r2[i].hi != r[i].hi
            || saddr_cmp(&r2[i].ep, &r[i].ep) != 0)
            abort();
    free(again);
    free(r);
    free(r2);
    free(text);
    return 0;
}
