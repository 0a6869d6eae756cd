/*
 * failalloc.h - make one allocation fail, for tests of what code does
 * when memory runs out.
 *
 * A test linked with failalloc.c and
 *   -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,
 *   --wrap=strndup,--wrap=aligned_alloc,--wrap=asprintf,--wrap=vasprintf
 * has every such call of ferry's own code (the static libraries it
 * links; not libc's or a shared library's own calls) counted, and the
 * one armed fails as an allocator out of memory does: NULL (or -1) and
 * errno ENOMEM. jansson's allocations are counted too once a test gives
 * it failalloc_malloc() (json_set_alloc_funcs()).
 *
 * The usual loop: arm failure number k, run the operation, and check
 * that it either failed cleanly (said so, changed nothing it should not
 * have) or, when failalloc_failed() says no allocation was refused, did
 * the whole thing; then k + 1, until a run refuses none.
 */
#ifndef TESTS_UNIT_FAILALLOC_H
#define TESTS_UNIT_FAILALLOC_H

/* The <k>th allocation from now (0: the next) fails; -1: none does
 * (and failalloc_failed() still tells about the run before). */
void failalloc_at(long k);

/* The <k>th allocation from now made by a thread other than the caller
 * (a worker's) fails; the caller's are not counted. */
void failalloc_at_others(long k);

/* Nonzero when the armed allocation came and was refused. */
int failalloc_failed(void);

/* Allocations counted since the last failalloc_at(). */
long failalloc_count(void);

/* malloc() through the counter, for a library's allocator hook. */
void *failalloc_malloc(size_t n);

#endif
