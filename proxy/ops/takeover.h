/*
 * takeover.h - handing the listening sockets from a running ferry to the
 * one replacing it, so that an upgrade refuses no connection.
 *
 * The running process listens on a Unix socket (--takeover-socket PATH,
 * SOCK_SEQPACKET, mode 0600). A new process started with --takeover
 * connects to it and says hello; the running one answers with every
 * worker's listening sockets (SCM_RIGHTS, one per message, each with its
 * worker and address), then END. The new process serves on them, then
 * asks the old one to release: the old one stops what binds addresses of
 * its own (admin server, Kubernetes side, the takeover socket), answers
 * RELEASED, and drains (its open connections finish on it). Both
 * processes hold the same sockets until then, so a connection arriving
 * during the hand-over waits in a queue one of them accepts from.
 *
 * Messages, each one datagram of at most TAKEOVER_MSG_MAX bytes:
 *   new -> old   "FERRY-TAKEOVER 1"
 *   old -> new   "SOCK <worker> <address:port>"   + one descriptor
 *   old -> new   "END <count>"
 *   new -> old   "DRAIN"
 *   old -> new   "RELEASED"
 * A message the other side does not expect ends the exchange: the old
 * process keeps serving as before.
 */
#ifndef PROXY_OPS_TAKEOVER_H
#define PROXY_OPS_TAKEOVER_H

#include <ev.h>
#include <stddef.h>

#include "err.h"
#include "parse.h"
#include "proxy.h"
#include "takeover_msg.h"

struct takeover;

/* Called on the old process's control loop when the new one asks it to
 * let go: stop everything that listens on an address of its own; the
 * takeover listener is closed by the caller. Then the old process
 * drains. */
typedef void takeover_release_fn(void *arg);

/* Listen on <path> for a process taking over from <p>. A stale socket
 * file (nobody answers on it) is replaced; one a running process answers
 * on is an error. Returns the listener or NULL with <e> filled. */
struct takeover *takeover_listen(struct ev_loop *loop, const char *path,
                                 struct proxy *p, takeover_release_fn *fn,
                                 void *arg, struct err *e);
/* Stop listening, remove the socket file if it is still ours, end an
 * exchange in progress; NULL does nothing. */
void takeover_free(struct takeover *t);

/* The new process's side. */
struct takeover_client;

/*
 * Connect to <path> and receive the running process's listening sockets
 * into <*v> (<*n>; the caller owns them). Returns the client, or NULL
 * with <e> filled: *absent is then set when nobody listens on <path>
 * (the caller may start afresh).
 */
struct takeover_client *takeover_fetch(const char *path, struct proxy_sock **v,
                                       size_t *n, int *absent, struct err *e);
/* Ask the old process to release and drain; wait (bounded) for its
 * answer. Returns 0, or -1 with <e> filled. Frees <c> either way. */
int takeover_release(struct takeover_client *c, struct err *e);
/* Give up: the old process keeps serving. Frees <c>; NULL does nothing. */
void takeover_abandon(struct takeover_client *c);

#endif
