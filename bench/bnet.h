/*
 * bnet.h - small socket helpers shared by the bench client and backends.
 *
 * All sockets are created non-blocking and close-on-exec. Functions return
 * a file descriptor or 0 on success, and -errno on failure; they never
 * print and never block.
 */
#ifndef BENCH_BNET_H
#define BENCH_BNET_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

/* Bind and listen on <a> with SO_REUSEADDR. Returns the fd or -errno. */
int bnet_listen(const struct saddr *a, int backlog);

/* Start a non-blocking connect to <a>. Returns the fd or -errno; on
 * success <*done> says whether the connect already completed (1) or is
 * in progress (0) and must be finished with bnet_connect_result(). */
int bnet_connect(const struct saddr *a, int *done);

/* Once a connecting fd is writable: 0 if connected, else -errno. */
int bnet_connect_result(int fd);

/* Accept one connection from <lfd>. Returns the fd or -errno (-EAGAIN
 * when the queue is empty). */
int bnet_accept(int lfd);

/* Kinds of failure the bench counts; the text table is bnet_err_name(). */
enum bnet_err {
    BNET_ERR_REFUSED = 0,
    BNET_ERR_RESET,
    BNET_ERR_TIMEOUT,
    BNET_ERR_SHORT_READ,
    BNET_ERR_LOCAL, /* no port, no fd: the load side ran out of something */
    BNET_ERR_OTHER,
    BNET_ERR__COUNT,
};

/* Classify a negative errno from connect, read or write. */
enum bnet_err bnet_err_from_errno(int neg_errno);

/* Stable JSON key for <e> ("refused", "reset", ...). */
const char *bnet_err_name(enum bnet_err e);

/* A read-only buffer of <*len> pattern bytes, for sources and senders. */
const char *bnet_pattern(size_t *len);

/* Monotonic clock in nanoseconds. Latency samples need a fresh clock:
 * the loop's cached time is stale by however long a batch of callbacks
 * takes, which is the very delay being measured. */
uint64_t bnet_now_ns(void);

#endif
