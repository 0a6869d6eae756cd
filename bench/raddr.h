#ifndef BENCH_RADDR_H
#define BENCH_RADDR_H

#include <sys/socket.h>

/* Parse "127.0.0.1:80" or "[::1]:80" (IP literals only, port 1-65535)
 * into <ss> and <len>. Returns 0, or -1 when <s> is not such an address.
 * Shared by the bench's minimal relays (floor.c, uring.c, sockmap.c). */
int raddr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* A listening TCP socket on <a>, with SO_REUSEADDR and TCP_NODELAY (which
 * accepted sockets inherit), non-blocking when <nonblock>. Returns the
 * descriptor, or -1 with errno set. */
int raddr_listen(const struct sockaddr_storage *a, socklen_t len, int nonblock);

/* Accept every connection waiting on the non-blocking listener <lsn>
 * and hand each to <start>: edge-triggered, the queue must be emptied,
 * or no event comes for the connections left in it (errors about one
 * connection, ECONNABORTED or EPERM, consume it). Returns 1 when out of
 * descriptors or memory (the caller stops accepting until some close),
 * else 0. */
int raddr_accept_all(int lsn, void (*start)(int fd));

#endif
