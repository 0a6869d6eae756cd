/*
 * udp-t.h - the inside of the UDP data path (udp.h), shared by its two
 * halves: udp.c (flows and datagrams, on each worker's loop) and
 * udpplan.c (frontend sockets and the apply step's plans).
 */
#ifndef PROXY_DATAPLANE_UDP_T_H
#define PROXY_DATAPLANE_UDP_T_H

#ifndef FERRY_DATAPLANE_INTERNAL
#error "udp-t.h is private to proxy/dataplane: use the functions of udp.h"
#endif

#include <ev.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "accesslog.h"
#include "parse.h"
#include "udp.h"

struct backend;
struct svc;
struct worker;

#define UDP_BATCH       8     /* datagrams per recvmmsg() */
#define UDP_ROUNDS      4     /* recvmmsg() calls per readiness event */
#define UDP_REPLY_BATCH 16    /* replies read per readiness of a flow */
#define UDP_DGRAM_MAX   65536 /* larger than any UDP payload */
#define UDP_FLOW_CACHE  1024  /* idle flow objects kept */
#define UDP_BUCKETS_MIN 256
#define UDP_OUT_BATCH   32           /* replies per sendmmsg() */
#define UDP_OUT_BYTES   (256 * 1024) /* their bytes, at most */

/* Room for either family's packet info, aligned for its header. */
#define UDP_CMSG_SPACE CMSG_SPACE(sizeof(struct in6_pktinfo))

union udp_cmsg {
    char b[UDP_CMSG_SPACE];
    struct cmsghdr hdr;
};

struct udp_listener;

struct udp_flow {
    struct ev_io io; /* the connected socket to the backend */
    struct ev_timer idle;
    struct udp_flow *hnext;         /* hash chain */
    struct udp_flow *lprev, *lnext; /* in its listener's list */
    struct udp_listener *l;
    struct svc *svc;    /* reference */
    struct backend *be; /* reference */
    struct saddr client;
    struct saddr local; /* where the client sent to */
    uint32_t hash;
    uint32_t replies;
    uint64_t id;
    double start, last;
    uint64_t bytes_up, bytes_down;
};

struct udp_listener {
    struct ev_io io;
    struct saddr addr;
    char addr_str[SADDR_STR_MAX];
    int wildcard;    /* replies need the client's destination as source */
    struct svc *svc; /* reference */
    struct udp_worker *u;
    struct udp_listener *next;
    struct udp_flow *flows; /* its flows, to end when it closes */
};

/* A reply waiting for the worker's next sendmmsg() on its frontend. */
struct udp_out {
    struct udp_listener *l;
    struct svc *svc; /* reference, for the counters */
    struct saddr client, local;
    size_t off, len; /* in udp_worker.out_bytes */
};

/* A sorted set of addresses. */
struct udp_addrs {
    struct saddr *v;
    size_t n;
};

struct udp_worker {
    struct worker *w;
    struct udp_listener *listeners;
    struct udp_flow **buckets;
    size_t nbuckets; /* a power of two */
    uint64_t seed;   /* of flow_hash() */
    atomic_size_t nflows;
    struct udp_flow *free_flows; /* linked by hnext */
    size_t nfree;
    /* One recvmmsg() batch, and the datagram buffers. */
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct saddr from[UDP_BATCH];
    union udp_cmsg cmsg[UDP_BATCH];
    char *bufs; /* UDP_BATCH * UDP_DGRAM_MAX */
    /* Replies queued by the flows during one loop iteration, sent in
     * one sendmmsg() per frontend before the loop polls again (or when
     * the queue is full, or before a commit may close a frontend). */
    struct udp_out out[UDP_OUT_BATCH];
    unsigned nout;
    size_t out_used;
    char *out_bytes; /* UDP_OUT_BYTES */
    struct mmsghdr out_msgs[UDP_OUT_BATCH];
    struct iovec out_iov[UDP_OUT_BATCH];
    union udp_cmsg out_cmsg[UDP_OUT_BATCH];
    struct ev_prepare flush;
    /* Control loop only: what the worker holds once it has taken the
     * newest plan posted to it, what it may still hold until then, and
     * that plan's generation; the others, for udp_plan_build(). */
    struct udp_addrs held, stale;
    uint64_t posted_gen;
    struct udp_worker *ctl_next;
};

struct udp_plan {
    struct udp_addrs addrs;  /* what the worker serves once committed */
    struct svc **svcs;       /* references, one per address */
    unsigned char *taken;    /* scratch for the commit, one per address */
    struct udp_listener *fresh; /* opened on the control loop */
    struct udp_addrs held, stale; /* the control loop's records, to post */
};


/* udp.c: a frontend socket is readable (its ev_io's callback); the
 * queued replies are due (the worker's ev_prepare); send them now. */
void udp_on_client(struct ev_loop *loop, struct ev_io *io, int rev);
void udp_on_flush(struct ev_loop *loop, struct ev_prepare *p, int rev);
void udp_out_flush(struct udp_worker *u);

/* udp.c: end <f> for <cause> and free it; <log>: write its access log
 * line. The owner's loop (or the control loop once it stopped). */
void udp_flow_end(struct udp_flow *f, enum accesslog_cause cause, int log);

#endif
