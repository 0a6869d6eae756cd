/*
 * clienthash.h - a client's IP as a fixed 16-byte key (IPv4 as
 * IPv4-mapped), and a seeded hash of it, for the tables keyed by client
 * (session affinity, source rules). Each table draws its own seed, so a
 * client cannot aim at one window of it.
 */
#ifndef PROXY_DATAPLANE_CLIENTHASH_H
#define PROXY_DATAPLANE_CLIENTHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "parse.h"

static inline void
client_key(const struct saddr *c, unsigned char key[16])
{
    if (c->u.sa.sa_family == AF_INET6) {
        memcpy(key, &c->u.in6.sin6_addr, 16);
        return;
    }
    memset(key, 0, 10);
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &c->u.in.sin_addr, 4);
}

/* splitmix64's finaliser. */
static inline uint64_t
client_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline size_t
client_hash(uint64_t seed, const unsigned char key[16])
{
    uint64_t hi, lo;

    memcpy(&hi, key, 8);
    memcpy(&lo, key + 8, 8);
    return (size_t)client_mix(client_mix(hi ^ seed) ^ lo);
}

/* A seed for a table at <self>: the clock and the table's address. */
static inline uint64_t
client_seed(const void *self)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return client_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32)
                      ^ (uint64_t)(uintptr_t)self);
}

#endif
