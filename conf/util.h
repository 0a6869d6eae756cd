/*
 * util.h - small language helpers shared by every library.
 */
#ifndef CONF_UTIL_H
#define CONF_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The struct of type <type> whose member <member> is at <ptr>. */
#define container_of(ptr, type, member)                                      \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Elements of a true array (not a pointer). */
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The value of hex digit <c>, or -1. */
static inline int
hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* CPU time the calling thread has used, in nanoseconds (0 if unknown). */
static inline uint64_t
thread_cpu_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
