/*
 * drain.c - deadlines for the connections of backends taken away (see
 * drain.h): the retired services and what they follow on the control
 * loop, and each worker's wake-up and timer.
 *
 * One mutex guards the list of retired services and the list of workers.
 * The control loop holds it while it walks either; a worker takes it
 * only when the last connection of a retired service ends (to take the
 * service off the list) and when the worker starts or stops. Nothing on
 * a connection's path takes it.
 */
#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "conn.h"
#include "drain.h"
#include "log.h"
#include "svc-t.h"
#include "table.h"
#include "worker.h"

/* A deadline this close is due: the worker's cached loop time may lag
 * the timer by a little. */
#define DRAIN_SLACK_S 0.001

static pthread_mutex_t drain_mu = PTHREAD_MUTEX_INITIALIZER;
static struct svc *retired;    /* under drain_mu */
static struct worker *workers; /* under drain_mu */
/* A deadline changed since the last drain_refresh(): control loop. */
static int drain_changed;

double
drain_now(void)
{
    return ev_time();
}

void
drain_mark_changed(void)
{
    drain_changed = 1;
}

/* The service of <name> in <newv> (serving <t> in its order), or NULL. */
static struct svc *
current_of(const char *name, const struct svcv *newv, const struct table *t)
{
    const struct tbl_service *ts = newv != NULL ? table_find(t, name) : NULL;

    return ts != NULL ? svcv_get(newv, ts->pos) : NULL;
}

/* <to> replaces <from> (same name): a backend drained in <from> that <to>
 * lists was taken away when it was drained there, not now. */
static void
inherit_since(struct svc *to, const struct svc *from)
{
    struct svc_drain *d;
    size_t i, j;

    for (i = 0; i < from->nbe; i++) {
        if (svc_be_since(from, i) <= 0 || !svc_be_drained(from, i))
            continue;
        for (j = 0; j < to->nbe; j++)
            /* Out of memory: <to> counts from when it drains it. */
            if (to->be[j].b == from->be[i].b
                && (d = svc_drain_make(to)) != NULL)
                d[j].since = svc_be_since(from, i);
    }
}

/* Retire <r> unless <newv> keeps it. Under drain_mu. */
static void
retire(struct svc *r, const struct svcv *newv, const struct table *newt)
{
    struct svc *n;

    if (r->retired || (n = current_of(r->spec.name, newv, newt)) == r)
        return;
    if (n != NULL)
        inherit_since(n, r);
    r->retired = 1;
    r->succ = NULL;
    r->rprev = NULL;
    r->rnext = retired;
    if (retired != NULL)
        retired->rprev = r;
    retired = r;
}

static void follow_names(const struct svcv *newv, const struct table *newt);

void
drain_swap(const struct svcv *oldv, const struct svcv *newv,
           const struct table *newt)
{
    size_t i;

    pthread_mutex_lock(&drain_mu);
    for (i = 0; oldv != NULL && i < oldv->n; i++)
        retire(svcv_get(oldv, i), newv, newt);
    follow_names(newv, newt);
    pthread_mutex_unlock(&drain_mu);
}

void
drain_swap_some(const struct svcv *oldv, const struct svcv *newv,
                const struct table *newt, const size_t *pos, size_t npos)
{
    size_t i;

    pthread_mutex_lock(&drain_mu);
    for (i = 0; i < npos; i++)
        retire(svcv_get(oldv, pos[i]), newv, newt);
    follow_names(newv, newt);
    pthread_mutex_unlock(&drain_mu);
}

/* Every retired service follows the one of its name in <newv>. Under
 * drain_mu. */
static void
follow_names(const struct svcv *newv, const struct table *newt)
{
    struct svc *r;

    for (r = retired; r != NULL; r = r->rnext) {
        struct svc *n = current_of(r->spec.name, newv, newt);
        if (r->succ == n)
            continue;
        /* The successor given up is one of <oldv>, which the caller still
         * holds: this cannot be its last reference (nor free it under the
         * mutex). */
        svc_unref(r->succ);
        r->succ = n != NULL ? svc_ref(n) : NULL;
    }
}

struct svc *
drain_forget(struct svc *s)
{
    struct svc *succ;

    pthread_mutex_lock(&drain_mu);
    if (!s->retired) {
        pthread_mutex_unlock(&drain_mu);
        return NULL;
    }
    if (s->rprev != NULL)
        s->rprev->rnext = s->rnext;
    else
        retired = s->rnext;
    if (s->rnext != NULL)
        s->rnext->rprev = s->rprev;
    s->retired = 0;
    succ = s->succ;
    s->succ = NULL;
    pthread_mutex_unlock(&drain_mu);
    return succ;
}

/* The entry of backend <b> in <c>, looked for first at <hint> (services
 * mostly keep their order across tables), or -1. */
static ssize_t
find_be(const struct svc *c, const struct backend *b, size_t hint)
{
    size_t j;

    if (c == NULL)
        return -1;
    if (hint < c->nbe && c->be[hint].b == b)
        return (ssize_t)hint;
    for (j = 0; j < c->nbe; j++)
        if (c->be[j].b == b)
            return (ssize_t)j;
    return -1;
}

/* Backend <i> of <r> taken away since <since> (0: not). Returns 0, or
 * -1 when memory runs out for <r>'s first one. */
static int
set_deadline(struct svc *r, size_t i, double since, uint32_t timeout_ms)
{
    double dl = since > 0 && timeout_ms > 0 ? since + timeout_ms / 1e3 : 0;
    struct svc_drain *d;

    if (since <= 0 && svc_drain_at(r, i) == NULL)
        return 0;
    if ((d = svc_drain_make(r)) == NULL)
        return -1;
    d[i].since = since;
    if (atomic_load_explicit(&d[i].deadline, memory_order_relaxed) == dl)
        return 0;
    atomic_store(&d[i].deadline, dl);
    drain_changed = 1;
    return 0;
}

/* Retired <r>'s deadlines from what its successor lists: a backend there
 * and not drained has none; one drained there, since it was drained;
 * one missing, since it went missing. The successor's drain_timeout
 * rules, or <r>'s own when its name is gone. */
static void
follow(struct svc *r, double now)
{
    const struct svc *c = r->succ;
    uint32_t tmo =
        c != NULL ? c->spec.drain_timeout_ms : r->spec.drain_timeout_ms;
    ssize_t off = 0; /* where the last one was found, relative to i */
    size_t i;
    int oom = 0;

    for (i = 0; i < r->nbe; i++) {
        /* An endpoint added or removed shifts those after it: look where
         * the shift says first, so that a change costs O(n), not O(n^2). */
        ssize_t j = find_be(c, r->be[i].b, (size_t)((ssize_t)i + off));
        double since;
        if (j >= 0)
            off = j - (ssize_t)i;
        if (j >= 0 && !svc_be_drained(c, (size_t)j))
            since = 0;
        else if (j >= 0)
            since = svc_be_since(c, (size_t)j) > 0 ? svc_be_since(c, (size_t)j)
                                                   : now;
        else
            since = svc_be_since(r, i) > 0 ? svc_be_since(r, i) : now;
        if (set_deadline(r, i, since, tmo) < 0)
            oom = 1;
    }
    if (oom)
        log_rl(LOG_WARN, now,
               "drain: out of memory: connections to a "
               "backend taken away from %s stay open",
               r->spec.name);
}

void
drain_refresh(void)
{
    double now = drain_now();
    struct svc *r;
    struct worker *w;

    pthread_mutex_lock(&drain_mu);
    for (r = retired; r != NULL; r = r->rnext)
        follow(r, now);
    if (drain_changed)
        for (w = workers; w != NULL; w = w->drain_next)
            ev_async_send(w->loop, &w->drain_kick);
    drain_changed = 0;
    pthread_mutex_unlock(&drain_mu);
}

/* ---- workers ------------------------------------------------------------ */

/* Close what is due, then sleep until the next deadline. */
static void
drain_scan(struct worker *w)
{
    double next;

    ev_timer_stop(w->loop, &w->drain_timer);
    w->drain_at = 0;
    next = conn_drain_scan(w, ev_now(w->loop) + DRAIN_SLACK_S);
    if (next > 0)
        drain_worker_note(w, next);
}

static void
drain_on_kick(struct ev_loop *loop, struct ev_async *a, int rev)
{
    (void)loop;
    (void)rev;
    drain_scan(a->data);
}

static void
drain_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    drain_scan(t->data);
}

void
drain_worker_note(struct worker *w, double deadline)
{
    double in;

    if (w->drain_at > 0 && w->drain_at <= deadline)
        return;
    ev_timer_stop(w->loop, &w->drain_timer);
    w->drain_at = deadline;
    in = deadline - ev_now(w->loop);
    ev_timer_set(&w->drain_timer, in > 0 ? in : 0., 0.);
    ev_timer_start(w->loop, &w->drain_timer);
}

void
drain_worker_init(struct worker *w)
{
    ev_async_init(&w->drain_kick, drain_on_kick);
    w->drain_kick.data = w;
    ev_init(&w->drain_timer, drain_on_timer);
    w->drain_timer.data = w;
    w->drain_at = 0;
    ev_async_start(w->loop, &w->drain_kick);
    /* The wake-up alone must not keep a loop running. */
    ev_unref(w->loop);
    pthread_mutex_lock(&drain_mu);
    w->drain_next = workers;
    workers = w;
    pthread_mutex_unlock(&drain_mu);
}

void
drain_worker_deinit(struct worker *w)
{
    struct worker **pw;

    if (!ev_is_active(&w->drain_kick))
        return; /* never started */
    pthread_mutex_lock(&drain_mu);
    for (pw = &workers; *pw != NULL; pw = &(*pw)->drain_next) {
        if (*pw == w) {
            *pw = w->drain_next;
            break;
        }
    }
    pthread_mutex_unlock(&drain_mu);
    ev_ref(w->loop);
    ev_async_stop(w->loop, &w->drain_kick);
    ev_timer_stop(w->loop, &w->drain_timer);
    w->drain_at = 0;
}
