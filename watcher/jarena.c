#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "jarena.h"

/* Address space reserved once; pages are backed only when touched. A
 * page of 500 EndpointSlices is some tens of MB as a jansson tree. */
#define REGION_SIZE ((size_t)512 << 20)
#define ALIGN       16

static char *region;     /* NULL until the first window */
static size_t used;      /* bytes handed out */
static size_t touched;   /* high-water mark since the last release */
static int active;
static json_malloc_t saved_malloc;
static json_free_t saved_free;

static int
in_region(const void *p)
{
    return region != NULL && (const char *)p >= region
           && (const char *)p < region + REGION_SIZE;
}

static void *
arena_malloc(size_t n)
{
    size_t at = (used + ALIGN - 1) & ~(size_t)(ALIGN - 1);

    if (n > REGION_SIZE || at > REGION_SIZE - n)
        return saved_malloc(n); /* full: the rest from the heap */
    used = at + n;
    if (used > touched)
        touched = used;
    return region + at;
}

static void
arena_free(void *p)
{
    if (!in_region(p))
        saved_free(p);
}

int
jarena_begin(void)
{
    if (active)
        return -1;
    if (region == NULL) {
        void *m = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return -1;
        region = m;
    }
    json_get_alloc_funcs(&saved_malloc, &saved_free);
    json_set_alloc_funcs(arena_malloc, arena_free);
    active = 1;
    return 0;
}

void
jarena_end(void)
{
    if (!active)
        return;
    json_set_alloc_funcs(saved_malloc, saved_free);
    active = 0;
}

void
jarena_reset(int release)
{
    if (active || region == NULL)
        return;
    used = 0;
    if (release && touched > 0) {
        (void)madvise(region, touched, MADV_DONTNEED);
        touched = 0;
    }
}

size_t
jarena_used(void)
{
    return used;
}
