/*
 * ring.h - the io_uring relay engine (relay.engine: io_uring).
 *
 * Once a connection is relaying, a worker may hand its bytes to an
 * io_uring ring instead of waiting on epoll for each socket: one
 * multishot receive per socket into a ring of provided buffers, the
 * received buffer sent as it is, a close as one more entry,
 * and every entry a loop turn queued submitted with one system call. The
 * ring's descriptor is one libev watcher of the worker's loop, so timers,
 * wake-ups and the accept step stay where they are. The backend's
 * connect is a ring entry too, so neither socket joins the epoll set.
 *
 * What the epoll relay guarantees holds: back-pressure (a direction stops
 * receiving while RING_HIGH buffers wait to be sent), half-close (a FIN is
 * passed on once every byte before it is), idle timeout and byte counters
 * (conn.c's, fed from the completions), drain and close at any time (an
 * operation in flight is cancelled, and the connection's object and
 * descriptors live on until its last completion). A direction that moves
 * bulk data under relay.splice auto goes back to epoll, where it splices.
 *
 * A worker makes its ring as it starts (or at its first connection after a
 * reload chose io_uring); where the kernel refuses one (io_uring
 * disabled, too old, out of locked memory), the worker relays with epoll
 * and says so once.
 */
#ifndef PROXY_DATAPLANE_RING_H
#define PROXY_DATAPLANE_RING_H

#include "config.h"

struct conn;
struct worker;

/* The engine for connections that start relaying from now on, for every
 * worker. Any thread. */
void ring_set_engine(enum conf_engine engine);
enum conf_engine ring_engine(void);

/* At the start of <w>'s thread: make its ring now if the engine is
 * io_uring (else at the first connection that wants one, after a reload
 * chose io_uring). */
void ring_worker_start(struct worker *w);

/* Connect <c>'s backend socket (bio.fd, made a moment ago; state
 * CONN_CONNECTING) on its worker's ring: 0 when the ring has it (its
 * completion calls conn_ring_connected()), -1 to connect with epoll. */
int ring_connect(struct conn *c);

/* The connect timer fired while the ring connects <c>: cancel it; the
 * completion reports ETIMEDOUT unless it connected first. */
void ring_cancel_connect(struct conn *c);

/* Relay <c>, connected a moment ago, on its worker's ring. Returns 0 when
 * the ring has it, -1 when it stays with epoll (engine epoll, splice
 * always, no ring). */
int ring_relay_start(struct conn *c);

/* conn_close() of a connection on the ring: returns 0 when its sockets
 * were closed (or queued to be) and its object may go, 1 when an
 * operation is still in flight: the ring keeps the object and hands it to
 * conn_reaped() after the last completion. <reset>: close with a reset. */
int ring_conn_close(struct conn *c, int reset);

/* <c> was closed with ring_conn_close() returning 1 and is off the
 * worker's list: the ring keeps it until then. */
void ring_park(struct conn *c);

/* The worker is gone: release its ring and the connections it kept. */
void ring_worker_free(struct worker *w);

#endif
