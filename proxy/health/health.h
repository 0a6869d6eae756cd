/*
 * health.h - active health checks: a TCP connect, or an HTTP GET whose
 * status must fall in a range, every <interval>, each with a <timeout>.
 *
 * One checker per backend address (the state lives in struct backend,
 * which all services listing that address share); when several services
 * list one address with checks on, the first service in the table sets
 * the check. A checked backend starts up; <fall> consecutive failures
 * take it down (svc_pick skips it), <rise> consecutive successes bring
 * it back. Every transition is logged once, with the cause. A passing
 * probe also ends a passive ejection. First checks are spread evenly
 * across the interval so that a large table does not probe in bursts.
 *
 * Everything runs on the control loop.
 */
#ifndef PROXY_HEALTH_HEALTH_H
#define PROXY_HEALTH_HEALTH_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "table.h"

struct backend;
struct svc;

/* ---- the state machine, on its own for tests ---- */

struct health_sm {
    int up;
    uint32_t ok_run;   /* consecutive successes while down */
    uint32_t fail_run; /* consecutive failures while up */
};

enum health_change {
    HEALTH_SAME = 0,
    HEALTH_WENT_UP,
    HEALTH_WENT_DOWN,
};

/* A machine that starts up. */
void health_sm_init(struct health_sm *sm);

/* Feed one result. Returns the change it caused. */
enum health_change health_sm_feed(struct health_sm *sm, int ok, uint32_t rise,
                                  uint32_t fall);

/* Delay before the first check of checker <index> of <n> started
 * together: evenly spread over [0, interval). */
double health_spread(size_t index, size_t n, double interval);

/* Parse the status code of an HTTP response's first line in <buf> (up to
 * <len> bytes, no NUL needed). Returns 100..599, 0 when more bytes are
 * needed, or -1 when it is not an HTTP response. */
int health_http_status(const char *buf, size_t len);

/* ---- checkers ---- */

struct health;

/* Returns a new, empty set of checkers on <loop>, or NULL. */
struct health *health_new(struct ev_loop *loop);

/* Stop every probe and free; health_free(NULL) does nothing. Backends
 * that were checked go back to UNCHECKED. */
void health_free(struct health *h);

/* Follow the runtime services in force: start checkers for newly checked
 * backends, update the spec of kept ones (their state is kept), stop the
 * others. <svcs> are borrowed. */
void health_apply(struct health *h, struct svc *const *svcs, size_t n);

/* How many of the services the last health_apply() was given have a
 * check. */
size_t health_svcs_checked(const struct health *h);

/*
 * Checks that no proxy service asks for: node mode's kernel dataplane
 * checks the endpoints of Services with a health-check annotation. Each
 * target names a backend (from backend_get(): one address, one checker
 * and one state, whoever asks) and its check; a proxy service checking
 * the same address wins the spec. <t> replaces the previous targets and
 * is copied (the backends get a reference of their own).
 */
struct health_target {
    struct backend *b;
    struct tbl_check spec;
    char svc[TBL_NAME_MAX];  /* for logs */
    char name[TBL_NAME_MAX]; /* the endpoint, for logs */
};
void health_set_targets(struct health *h, const struct health_target *t,
                        size_t n);

/* Call <fn>(<arg>) after any checked backend goes up or down (once per
 * transition, after its state is stored); NULL stops. */
void health_on_change(struct health *h, void (*fn)(void *), void *arg);

/* What status pages show about one backend's checks. */
struct health_info {
    int checked;      /* a checker runs for it */
    int up;
    uint32_t ok_run, fail_run;
    double last_check; /* ev_now() of the last result, 0 = none yet */
    const char *cause; /* last failure, "" if the last check passed */
};

/* Fill <out> for backend <b>. Returns 0, or -1 when it is not checked
 * (out->checked is then 0). */
int health_info(const struct health *h, const struct backend *b,
                struct health_info *out);

#endif
