/* Allocation failure injection for unit tests: see failalloc.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failalloc.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t m, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t m, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

/* Shared by every thread of the test: atomics, so that a worker
 * thread's allocations are counted without a race. */
static _Atomic long armed = -1, seen;
static atomic_int failed, others;
static pthread_t owner;

void
failalloc_at(long k)
{
    atomic_store(&others, 0);
    atomic_store(&seen, 0);
    if (k >= 0)
        atomic_store(&failed, 0);
    atomic_store(&armed, k);
}

void
failalloc_at_others(long k)
{
    owner = pthread_self();
    atomic_store(&others, 1);
    atomic_store(&seen, 0);
    atomic_store(&failed, 0);
    atomic_store(&armed, k);
}

int
failalloc_failed(void)
{
    return atomic_load(&failed);
}

long
failalloc_count(void)
{
    return atomic_load(&seen);
}

/* Count one allocation; nonzero when it is the one to refuse. */
static int
refuse(void)
{
    long k = atomic_load(&armed);

    if (atomic_load(&others) && pthread_equal(pthread_self(), owner))
        return 0;
    if (atomic_fetch_add(&seen, 1) == k && k >= 0) {
        atomic_store(&failed, 1);
        errno = ENOMEM;
        return 1;
    }
    return 0;
}

void *
__wrap_malloc(size_t n)
{
    return refuse() ? NULL : __real_malloc(n);
}

void *
__wrap_calloc(size_t m, size_t n)
{
    return refuse() ? NULL : __real_calloc(m, n);
}

void *
__wrap_realloc(void *p, size_t n)
{
    return refuse() ? NULL : __real_realloc(p, n);
}

char *
__wrap_strdup(const char *s)
{
    return refuse() ? NULL : __real_strdup(s);
}

char *
__wrap_strndup(const char *s, size_t n)
{
    return refuse() ? NULL : __real_strndup(s, n);
}

void *
__wrap_aligned_alloc(size_t a, size_t n)
{
    return refuse() ? NULL : __real_aligned_alloc(a, n);
}

int
__wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
    if (refuse()) {
        *out = NULL;
        return -1;
    }
    return __real_vasprintf(out, fmt, ap);
}

int
__wrap_asprintf(char **out, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = __wrap_vasprintf(out, fmt, ap);
    va_end(ap);
    return rc;
}

void *
failalloc_malloc(size_t n)
{
    return __wrap_malloc(n);
}
