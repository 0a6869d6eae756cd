/*
 * intern.h - one shared copy of each string that repeats across cached
 * API objects: namespaces, Service names, node names, zones, port names
 * and protocols. At 250,000 endpoints on a few hundred nodes, a node name
 * stored once instead of 250,000 times is most of what a compact cache
 * saves on strings.
 *
 * The table is process-wide and reference-counted: each intern_get()
 * is paired with an intern_put(), and a string is freed with its last
 * reference. Interned strings can be compared by pointer. Not
 * thread-safe: only the loop that owns the caches calls it.
 */
#ifndef WATCHER_INTERN_H
#define WATCHER_INTERN_H

#include <stddef.h>

/* The interned copy of the <len> bytes at <s> (need not be NUL
 * terminated; a NUL inside is kept), with one more reference. Returns
 * NULL when memory runs out. */
const char *intern_get(const char *s, size_t len);

/* intern_get() of a NUL-terminated string; NULL for NULL. */
const char *intern_str(const char *s);

/* intern_str(), setting *<oom> when memory runs out (<s> not NULL). */
const char *intern_str_oom(const char *s, int *oom);

/* One more reference to <s>, an interned string (or NULL). Returns <s>. */
const char *intern_ref(const char *s);

/* Drop a reference taken by intern_get(), intern_str() or intern_ref().
 * NULL does nothing. */
void intern_put(const char *s);

/* Distinct strings held, and their bytes (headers included). */
size_t intern_count(void);
size_t intern_bytes(void);

#endif
