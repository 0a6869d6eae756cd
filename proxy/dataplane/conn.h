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

#include "parse.h"

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

/* Close every open connection of <w> at once (end of drain). */
void conn_close_all(struct worker *w);

#endif
