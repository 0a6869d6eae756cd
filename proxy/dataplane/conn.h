/*
 * conn.h - one proxied connection.
 *
 * accept -> pick a backend -> non-blocking connect under a timer -> on
 * failure, mark the backend and try another (up to the service's retries)
 * -> relay both ways with back-pressure and half-close -> close. A
 * connection holds a reference to its service and to its backend, so a
 * table change never cuts it.
 */
#ifndef PROXY_DATAPLANE_CONN_H
#define PROXY_DATAPLANE_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

struct proxyproto_hdr;
struct svc;
struct worker;

/* Take over the accepted socket <fd> from <client> for service <s>.
 * Never fails visibly: on any error the client is reset and counted. */
void conn_accept(struct worker *w, struct svc *s, int fd,
                 const struct saddr *client);

/* Reset and count every connection of <w> whose backend's drain
 * deadline (drain.h) is at or before <now>. Returns the earliest deadline
 * of those left, or 0 if none has one. <w>'s thread. */
double conn_drain_scan(struct worker *w, double now);

/* A client whose first bytes were read before its service was known
 * (SNI routing, sniroute.h): take over <fd> for <s> as conn_accept()
 * does, with <client> final (its source rules apply now), the PROXY
 * header it sent <pp> (borrowed; NULL: none) for the header ferry sends
 * on, and the <len> bytes read at <buf> (a relay buffer, taken; NULL when
 * none, and only then <len> 0), which
 * the backend gets before anything else but a header ferry sends. <len>
 * leaves room for that header: at most WORKER_BUF_SIZE -
 * PROXYPROTO_WRITE_MAX. Never fails visibly. */
void conn_accept_read(struct worker *w, struct svc *s, int fd,
                      const struct saddr *client,
                      const struct proxyproto_hdr *pp, char *buf,
                      uint32_t len);

/* The size of a session object, so that others may borrow the pool's
 * (worker_conn_alloc) for objects no larger. */
size_t conn_object_size(void);

/* Close every open connection of <w> at once (end of drain), and every
 * client still waited for (sniroute_close_all). */
void conn_close_all(struct worker *w);

#endif
