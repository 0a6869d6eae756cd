/*
 * sniroute.h - SNI routing (README: SNI routing): services that name
 * servers ("sni:") share a listening address; a client accepted there is
 * held until its TLS ClientHello is read (after its PROXY header, with
 * accept_proxy), without terminating TLS, then handed to the service its
 * server name matches (an exact name before a wildcard), or to the
 * address's default_service, with the bytes read sent to the backend
 * first. A ClientHello that names no service, names none, is malformed or
 * late goes to the default, or the client is closed; either way counted.
 *
 * Each worker builds its routing from the table it serves (kept by
 * listener_dispatch_set()) and alone touches it and its waiting clients.
 * The counters per address are shared atomics.
 */
#ifndef PROXY_DATAPLANE_SNIROUTE_H
#define PROXY_DATAPLANE_SNIROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

struct worker;

/* How a ClientHello was routed, or why not. */
enum sniroute_reason {
    SNIROUTE_NAME = 0,  /* its server name matched a service */
    SNIROUTE_NO_MATCH,  /* a name no service on the address has */
    SNIROUTE_NO_SNI,    /* a ClientHello without a server name */
    SNIROUTE_MALFORMED, /* not a ClientHello, or larger than the cap */
    SNIROUTE_TIMEOUT,   /* none whole within client_hello_timeout */
    SNIROUTE_CLOSED,    /* the client closed or reset before its end */
    SNIROUTE_PROXY,     /* accept_proxy: an invalid PROXY header */
    SNIROUTE__COUNT
};

/* "name", "no_match", ... (metric label values). */
extern const char *const sniroute_reason_text[SNIROUTE__COUNT];

/* What became of it. */
enum sniroute_outcome {
    SNIROUTE_ROUTED = 0, /* to the service named */
    SNIROUTE_DEFAULT,    /* to the address's default_service */
    SNIROUTE_REFUSED,    /* closed */
    SNIROUTE_OUTCOME__COUNT
};

/* "routed", "default", "refused". */
extern const char *const sniroute_outcome_text[SNIROUTE_OUTCOME__COUNT];

/* (Re)build <w>'s routing from w->dtable and w->dsvcs, or clear it when
 * they are NULL. Clients waiting keep waiting; they are routed by the
 * routing in force when their ClientHello is whole. Owner's loop; out of
 * memory leaves the addresses without routing (their clients closed),
 * logged. */
void sniroute_build(struct worker *w);
void sniroute_clear(struct worker *w);

/* If <laddr> is an SNI address of <w>, take over <fd>, accepted there
 * from <client>, and return 1; else return 0 and leave it. Owner's loop. */
int sniroute_accept(struct worker *w, const struct saddr *laddr, int fd,
                    const struct saddr *client);

/* Close every client of <w> still waited for. */
void sniroute_close_all(struct worker *w);

/* Counters of one SNI address, [reason][outcome]; any thread reads. */
struct sniroute_count {
    char listen[SADDR_STR_MAX];
    uint64_t n[SNIROUTE__COUNT][SNIROUTE_OUTCOME__COUNT];
};

/* Copy the counters of up to <max> addresses seen so far into <out>, in
 * the order they first served. Returns how many. Any thread. */
size_t sniroute_counts(struct sniroute_count *out, size_t max);

#endif
