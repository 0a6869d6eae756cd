/*
 * backoff.h - capped exponential backoff with jitter, and Retry-After.
 *
 * The sequence is client-go's: a base of 800 ms doubling to 30 s, each
 * wait drawn from [d, 2d), and back to 800 ms once the connection has been
 * healthy for 2 minutes. Times are seconds on the loop clock (ev_now()).
 */
#ifndef WATCHER_BACKOFF_H
#define WATCHER_BACKOFF_H

#include <stdint.h>

#define BACKOFF_INITIAL_S 0.8
#define BACKOFF_MAX_S     30.0
#define BACKOFF_RESET_S   120.0
#define RETRY_AFTER_MAX_S 600.0 /* never wait longer than this on a hint */

struct backoff {
    double d;             /* next base delay, 0 = initial */
    double healthy_since; /* 0 = not healthy */
    uint64_t failures;    /* backoffs taken, for metrics */
};

void backoff_init(struct backoff *b);

/* The connection works (a watch is streaming, a list came back). Starts
 * the healthy period if none is running. */
void backoff_healthy(struct backoff *b, double now);

/* A failure: returns the delay in seconds to wait before retrying.
 * <rnd> is a uniform random number in [0, 1) (the caller's source, so
 * tests are deterministic). Ends the healthy period. */
double backoff_next(struct backoff *b, double now, double rnd);

/* The base delay the next failure would use (for tests and status). */
double backoff_peek(const struct backoff *b, double now);

/*
 * Parse a Retry-After header value: delta-seconds ("3") or an HTTP date
 * ("Wed, 21 Oct 2015 07:28:00 GMT", relative to <wall_now>, Unix time).
 * Leading/trailing blanks are ignored. Sets *secs (clamped to [0,
 * RETRY_AFTER_MAX_S]) and returns 0, or -1 if unparsable.
 */
int backoff_retry_after(const char *value, double wall_now, double *secs);

/* A uniform random number in [0, 1) from a small PRNG seeded at
 * start-up (jitter only; not for security). */
double backoff_rand(void);

#endif
