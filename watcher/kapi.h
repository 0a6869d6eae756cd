/*
 * kapi.h - HTTP GETs to the Kubernetes API server on the event loop.
 *
 * libcurl's multi interface driven by libev: curl's sockets become ev_io
 * watchers and its one timeout an ev_timer (a timeout of 0 arms a
 * zero-delay timer rather than calling back into curl from the timer
 * callback). HTTP/1.1, one connection per watch, TCP keepalive, TLS
 * verified unless the credentials say insecure. Nothing blocks.
 *
 * Every request has two timers of its own: a deadline for the whole
 * request and an idle timer re-armed by every byte received.
 *
 * Callbacks run on the loop, never from inside curl: it is safe to start
 * and cancel requests from them. Never call kapi_free() from a callback.
 */
#ifndef WATCHER_KAPI_H
#define WATCHER_KAPI_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "kcred.h"

#define KAPI_ERRBODY_MAX 4096 /* bytes of an error response kept */

/* How a request ended. */
struct kapi_result {
    int curl_code;      /* CURLcode; 0 = the transfer completed */
    long status;        /* HTTP status, 0 if no response */
    int aborted;        /* on_data asked to stop */
    int timed_out;      /* deadline or idle timer fired */
    double retry_after; /* seconds (Retry-After header or Status
                         * details.retryAfterSeconds), -1 if none */
    int cert_unverified; /* TLS: the server's certificate did not verify
                          * (wrong CA, name or expired) */
    char reason[64];    /* Status reason of an error response, or "" */
    char error[256];    /* curl's error, or the error response's message */
};

struct kapi_req_ops {
    /* Body bytes of a 2xx response, in arrival order. Return 0 to go on,
     * nonzero to abort (on_done then sees aborted = 1). */
    int (*on_data)(void *arg, const char *data, size_t n);
    /* Called once when the request ends (not after kapi_cancel()). The
     * request is freed when it returns. */
    void (*on_done)(void *arg, const struct kapi_result *r);
};

struct kapi;
struct kapi_req;

/* Returns a new client for the server in <cred> (borrowed; must outlive
 * the client), or NULL with <e> filled. */
struct kapi *kapi_new(struct ev_loop *loop, struct kcred *cred, struct err *e);

/* Cancel every request (no callbacks) and free. NULL does nothing. */
void kapi_free(struct kapi *k);

/* CPU time of the calling thread spent in the client's callbacks so
 * far (receiving, and whatever the requests' callbacks do with what
 * arrives: decoding, caching), in nanoseconds. */
uint64_t kapi_cpu_ns(const struct kapi *k);

/* Start GET <path_query> ("/api/v1/services?limit=500"). <deadline> and
 * <idle> are seconds (0 = none). Returns the request (owned by the
 * client until on_done returns or kapi_cancel()) or NULL if it could not
 * be started (out of memory). */
struct kapi_req *kapi_get(struct kapi *k, const char *path_query,
                          double deadline, double idle,
                          const struct kapi_req_ops *ops, void *arg);

/* Stop <r> without calling back. Not from inside that request's
 * on_data. NULL does nothing. */
void kapi_cancel(struct kapi_req *r);

/* The server answered 401: re-read the token before the next request. */
void kapi_unauthorized(struct kapi *k);

/* Percent-encode <in> for a query value into <out>. Returns 0, or -1 if
 * it does not fit. */
int kapi_query_escape(const char *in, char *out, size_t outlen);

#endif
