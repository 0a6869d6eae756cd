/*
 * failsize.so - preloaded into a test's process (LD_PRELOAD), it makes
 * the first malloc(), calloc() or realloc() of a size between
 * FAILSIZE_MIN and FAILSIZE_MAX bytes (the environment's) return NULL,
 * as an allocator out of memory does, and every other one work. An
 * integration test picks the window so that the allocation that fails is
 * the one it means (an object of an unusual size), and checks that the
 * process survives it and takes the object again. glibc only: it calls
 * glibc's own entry points, and a sanitizer's runtime must come first.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t m, size_t n);
void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n);
void *calloc(size_t m, size_t n);
void *realloc(void *p, size_t n);

static size_t lo = 1, hi;
static atomic_int spent; /* one refusal, whichever thread asks first */

__attribute__((constructor)) static void
failsize_init(void)
{
    const char *a = getenv("FAILSIZE_MIN"), *b = getenv("FAILSIZE_MAX");

    if (a != NULL && b != NULL) {
        lo = strtoull(a, NULL, 10);
        hi = strtoull(b, NULL, 10);
    }
}

/* Nonzero for the one allocation to refuse. */
static int
refuse(size_t n)
{
    if (n < lo || n > hi || atomic_exchange(&spent, 1))
        return 0;
    errno = ENOMEM;
    return 1;
}

void *
malloc(size_t n)
{
    return refuse(n) ? NULL : __libc_malloc(n);
}

void *
calloc(size_t m, size_t n)
{
    return m != 0 && n <= (size_t)-1 / m && refuse(m * n)
               ? NULL
               : __libc_calloc(m, n);
}

void *
realloc(void *p, size_t n)
{
    return refuse(n) ? NULL : __libc_realloc(p, n);
}
