/*
 * conn-t.h - the inside of a proxied connection, for conn.c and the
 * io_uring relay (ring.c), which drives a connection's bytes once it is
 * relaying. Nobody else reads these fields.
 */
#ifndef PROXY_DATAPLANE_CONN_T_H
#define PROXY_DATAPLANE_CONN_T_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "parse.h"
#include "svc-t.h"

enum conn_state {
    CONN_CONNECTING,
    CONN_RELAY,
    CONN_WAIT_FD,   /* out of descriptors: retry the backend socket soon */
    CONN_PROXY_HDR, /* accept_proxy: reading the client's PROXY header */
};

/* Outcome of a step; anything but CONN_OK ends the connection. */
enum conn_rc {
    CONN_OK = 0,
    CONN_DONE,  /* both directions finished: close cleanly */
    CONN_ABORT, /* error: reset both sides */
};

/* One direction of the relay. Copying, bytes the destination could not
 * take yet wait in <buf>, which exists only while they do. Splicing, they
 * wait in the pipe (<len> of them) and <buf> is NULL. On the ring
 * (ring.c), <buf>/<len> hold only what waited before the relay started
 * (a PROXY header, early bytes); received bytes wait in the ring's
 * buffers, a list from <head> to <tail>, <off> of the first sent. */
struct half {
    char *buf;
    uint32_t off, len;
    uint8_t eof;     /* the source sent FIN */
    uint8_t shut;    /* FIN passed on: shutdown(dst, SHUT_WR) done */
    uint8_t spliced; /* relaying through <pipe> */
    uint8_t bulk;    /* a read filled the whole buffer: splice next */
    uint8_t nopipe;  /* a pipe was refused: copy for good */
    uint8_t rflags;  /* ring.c: RING_* */
    union {
        int pipe[2]; /* valid while <spliced> */
        struct {
            uint16_t head, tail, queued;
        } r;
    };
};

struct conn {
    struct ev_io cio, bio; /* client and backend sockets */
    struct ev_timer timer; /* connect timeout, then idle timeout */
    struct worker *w;
    struct svc *svc;
    struct backend *be;
    struct conn *prev, *next;
    /* Connecting, the backends tried; relaying, the two directions. The
     * two never live at once, so they share their bytes: an idle
     * connection pays nothing for exact retries. */
    union {
        struct svc_tried tried; /* CONN_CONNECTING, CONN_WAIT_FD */
        struct {
            struct half c2b, b2c; /* CONN_RELAY */
        };
        /* CONN_PROXY_HDR: the bytes of the client's header taken off the
         * socket so far; <buf> (a relay buffer) only once it came in
         * pieces. */
        struct {
            char *buf;
            uint32_t len;
        } hdr;
    };
    double last_active;
    double attempt_start; /* loop time the current connect began */
    double accepted;      /* loop time of the accept (access log) */
    double connect_took;  /* accept to connected; < 0 until then */
    uint64_t id;
    /* Bytes are counted from CONN_RELAY on. Before, the same room holds
     * the PROXY header (send_proxy) waiting for the backend, in a relay
     * buffer; once connected it becomes c2b's pending bytes, so that it
     * goes out before any byte of the client's. */
    union {
        struct {
            uint64_t bytes_c2b, bytes_b2c;
        };
        struct {
            char *buf;
            uint32_t len;
        } pp_out;
    };
    struct saddr client;
    uint8_t state;
    uint8_t attempts;
    uint8_t src_counted; /* counted in the per-source table as <client> */
    uint8_t first_eof;   /* who ended first: 0 nobody, 1 client, 2 backend */
    uint32_t be_idx;     /* <be> is svc->be[be_idx] (drain deadlines) */
    uint16_t early;      /* client bytes read before the connect (SNI) */
    uint8_t watched;     /* the watches that want it (watchq.h) */
    /* ring.c: the ring relays its bytes (else epoll, through cio/bio);
     * its operations whose last completion has not come; closed while
     * some had not (the object lives on until they have), and how. */
    uint8_t on_ring;
    uint8_t ring_closed;
    uint8_t ring_leave; /* bulk seen: back to epoll (and splice) */
    uint8_t ring_connect; /* a connect is in flight on the ring */
    uint8_t ring_timeout; /* ... and its timer fired: cancelled */
    uint16_t ring_inflight;
    /* ring.c: the list of connections waiting for a provided buffer. */
    struct conn *sprev, *snext;
};

/* For ring.c: the epoll relay's steps, shared. */

/* Count <n> bytes relayed up (client to backend, <up> 1) or down. */
void conn_count(struct conn *c, int up, size_t n);

/* End <c> after a step returned <rc> (not CONN_OK). */
void conn_finish(struct conn *c, enum conn_rc rc);

/* Wait for the events the relay needs on cio/bio (the epoll relay). */
void conn_update_io(struct conn *c);

/* The ring's connect of <c> ended: <err> 0 (connected) or an errno. */
void conn_ring_connected(struct conn *c, int err);

/* The last of a closed connection: its descriptors are closed; give its
 * object back and tell the worker (accept pause, drain). */
void conn_reaped(struct worker *w, struct conn *c);

#endif
