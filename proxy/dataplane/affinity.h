/*
 * affinity.h - ClientIP session affinity: which backend a client IP was
 * last sent to, remembered for a timeout of inactivity.
 *
 * One table per runtime service with affinity on, owned by its svc and
 * used on that service's loop only. It is a bounded cache, not a map that
 * grows with the number of clients: a client IP may live only in a small
 * window of slots after its hash, and when every slot of the window holds
 * a live pin the table doubles (up to AFFINITY_MAX_SLOTS); at the cap the
 * least recently used pin of the window is dropped. So the data path
 * allocates at most log2(AFFINITY_MAX_SLOTS / AFFINITY_MIN_SLOTS) times
 * over the life of a service, never per connection.
 *
 * Entries store an index into the service's backend array. The array of a
 * svc never changes; when a table change builds a new svc for the same
 * service, affinity_inherit() carries the pins over to the new indices so
 * that a scale-up does not re-balance the clients already pinned.
 */
#ifndef PROXY_DATAPLANE_AFFINITY_H
#define PROXY_DATAPLANE_AFFINITY_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

#define AFFINITY_MIN_SLOTS 256
#define AFFINITY_MAX_SLOTS 65536
#define AFFINITY_WINDOW    16 /* slots a key may occupy after its hash */

struct affinity;

/* Returns a new table with pins that expire after <timeout_s> seconds of
 * inactivity, or NULL when out of memory. */
struct affinity *affinity_new(double timeout_s);
void affinity_free(struct affinity *a);

/* The backend index <client>'s IP (port ignored) is pinned to at loop time
 * <now>, or -1 if none or expired. A hit does not refresh the pin: the
 * caller confirms its choice with affinity_set(). Never allocates. */
int affinity_get(const struct affinity *a, const struct saddr *client,
                 double now);

/* affinity_get() from a thread other than the table's owner (the admin
 * server's explanations): it takes the lock the owner's writes hold, so
 * it never reads a table being grown. */
int affinity_peek(struct affinity *a, const struct saddr *client, double now);

/* Pin <client>'s IP to backend <idx> from <now> on (a new pin, a refresh
 * or a move). Returns 0, or -1 when the table could not grow and the pin
 * was dropped (the connection still proceeds, unpinned). */
int affinity_set(struct affinity *a, const struct saddr *client, uint32_t idx,
                 double now);

/* Copy <from>'s live pins into <to>, mapping backend indices through
 * <map> (<map>[old] = new index, or -1 to drop; <nmap> entries). */
void affinity_inherit(struct affinity *to, const struct affinity *from,
                      const int32_t *map, size_t nmap, double now);

/* Live pins at <now> and allocated slots, for status and tests. */
size_t affinity_count(const struct affinity *a, double now);
size_t affinity_slots(const struct affinity *a);

#endif
