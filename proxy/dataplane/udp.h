/*
 * udp.h - UDP services: frontend sockets and flows (README: UDP services).
 *
 * Each worker that serves a UDP frontend holds a socket of its own on it
 * (SO_REUSEPORT: the kernel hashes the client's address and port, so a
 * client's datagrams keep landing on the same worker). A flow is a client
 * address and port, and the local address it sent to when the frontend
 * is a wildcard: its first datagram picks a backend with the service's
 * balancer, and the flow keeps that backend, through a connected socket
 * of its own, until it has been idle for udp_idle_timeout or has had
 * udp_responses replies. Replies leave through the frontend socket, from
 * the address the client sent to (IP_PKTINFO / IPV6_PKTINFO on a
 * wildcard). A flow holds a reference to its service and its backend, so
 * a reload that changes them does not cut it; a reload that removes its
 * frontend does.
 *
 * Frontend sockets follow the apply step (apply.h): the control loop
 * opens what a worker lacks into a plan (udp_plan_build), records what
 * the worker will hold once the plan is posted (udp_plan_posted), and the
 * worker commits it on its own loop (udp_plan_commit), which cannot fail.
 * Flows are not connections: a drain does not wait for them, and they end
 * with the process.
 */
#ifndef PROXY_DATAPLANE_UDP_H
#define PROXY_DATAPLANE_UDP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct apply_plan;
struct udp_plan;
struct worker;

/* Which UDP frontends of a table a worker serves. */
enum udp_serve {
    UDP_SERVE_NONE = 0, /* none (the descriptor guard said so) */
    UDP_SERVE_SHARED,   /* those of services without ClientIP affinity */
    UDP_SERVE_ALL,      /* all: worker 0 */
};

enum udp_plan_flag {
    UDP_PLAN_STRICT = 1u << 0,   /* a socket that cannot be opened fails */
    UDP_PLAN_TAKEOVER = 1u << 1, /* the previous ferry still holds them */
};

/*
 * Fill pl->udp (pl->t and pl->svcs set) for <w>: the UDP frontends it is
 * to serve, with the sockets it does not hold yet opened here (always
 * with SO_REUSEPORT). A socket that cannot be opened fails the whole
 * build with UDP_PLAN_STRICT (-1, <e> filled; pl->udp holds what was
 * opened, freed with the plan); otherwise it is logged and left out.
 * Worker 0's build also makes sure that no other process listens on a
 * new address, except during a takeover (UDP_PLAN_TAKEOVER), when the
 * previous ferry does: UDP sockets are not handed over, the new ones
 * join the old ones' SO_REUSEPORT group. <flags>: enum udp_plan_flag.
 * Returns 0 or -1. Control loop.
 */
int udp_plan_build(struct worker *w, struct apply_plan *pl,
                   enum udp_serve serve, unsigned flags, struct err *e);

/* <up> (NULL: nothing) is on its way to <w> for the table of
 * <generation>: what <w> holds from now on, as far as the next build
 * knows. Control loop, once stage 3 of the apply cannot fail. */
void udp_plan_posted(struct worker *w, struct udp_plan *up,
                     uint64_t generation);

/* Commit <up> (NULL: nothing) on <w>'s own loop: its frontends serve
 * their new services, fresh ones start, the rest close with their
 * flows. Cannot fail. */
void udp_plan_commit(struct worker *w, struct udp_plan *up);

/* <older> was never taken: <up> takes over its fresh sockets. */
void udp_plan_adopt(struct udp_plan *up, struct udp_plan *older);

/* Close the sockets <up> still holds and free it; NULL does nothing.
 * Any thread. */
void udp_plan_free(struct udp_plan *up);

/* Set up <w>'s UDP state (w->udp), serving nothing. Returns 0, or -1
 * when out of memory. Control loop, before the worker's thread starts. */
int udp_worker_init(struct worker *w);

/* End every flow and close every UDP socket of <w>, and free its UDP
 * state; nothing if there is none. The control loop, once the owner's
 * thread ended (or for worker 0). */
void udp_worker_free(struct worker *w);

/* Flows open on <w> now; any thread. */
size_t udp_worker_nflows(struct worker *w);

#endif
