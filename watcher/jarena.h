/*
 * jarena.h - one region for the JSON of a list page that is decoded and
 * dropped at once.
 *
 * A list page of EndpointSlices is parsed by jansson into a node for
 * every field (millions at 250,000 endpoints), decoded into compact
 * structures (kslice.h), and freed. Through malloc that is most of the
 * CPU of a first sync, and it leaves the heap fragmented. Between
 * jarena_begin() and jarena_end(), jansson allocates from one bump
 * region instead, frees into it do nothing, and jarena_reset() takes it
 * all back at once.
 *
 * Rules: jansson's allocator is process-wide, so only the thread that
 * owns the watcher may use jansson inside the window (the workers never
 * do), and no JSON allocated inside may outlive jarena_reset(): the
 * caller uses the window only for kinds it keeps decoded. A value made
 * before the window may be freed inside it (it goes to free()); when
 * the region is full, allocations go to malloc() and stay valid.
 */
#ifndef WATCHER_JARENA_H
#define WATCHER_JARENA_H

#include <stddef.h>

/* Route jansson's allocations to the region until jarena_end(). Returns
 * -1 (nothing changed) when the region cannot be mapped. Not nested. */
int jarena_begin(void);

/* Give jansson malloc() and free() back. */
void jarena_end(void);

/* Forget everything allocated in the region; with <release>, give its
 * pages back to the kernel too (at the end of a list; between pages
 * they are reused). Outside a window only. */
void jarena_reset(int release);

/* Bytes handed out since the last reset (tests). */
size_t jarena_used(void);

#endif
