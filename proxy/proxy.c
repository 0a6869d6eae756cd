#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "listener.h"
#include "log.h"
#include "proxy.h"
#include "svc.h"

static void
proxy_on_drain_timeout(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct proxy *p = t->data;

    (void)loop;
    (void)rev;
    log_warn("drain timeout: resetting %zu remaining connection(s)",
             p->w.nconns);
    p->w.on_idle = NULL;
    conn_close_all(&p->w);
    p->on_drained(p);
}

static void
proxy_on_idle(struct worker *w)
{
    struct proxy *p = (struct proxy *)(void *)((char *)w - offsetof(struct proxy, w));

    if (p->draining) {
        ev_timer_stop(w->loop, &p->drain_timer);
        p->on_drained(p);
    }
}

int
proxy_init(struct proxy *p, struct ev_loop *loop)
{
    memset(p, 0, sizeof(*p));
    if (worker_init(&p->w, loop) < 0)
        return -1;
    ev_init(&p->drain_timer, proxy_on_drain_timeout);
    p->drain_timer.data = p;
    return 0;
}

static void
proxy_close_listeners(struct proxy *p)
{
    struct listener *l;

    while ((l = p->w.listeners) != NULL) {
        p->w.listeners = l->next;
        listener_free(l);
    }
}

static void
free_svcs(struct svc **v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        svc_unref(v[i]);
    free(v);
}

void
proxy_deinit(struct proxy *p)
{
    ev_timer_stop(p->w.loop, &p->drain_timer);
    proxy_close_listeners(p);
    p->w.on_idle = NULL;
    conn_close_all(&p->w);
    free_svcs(p->svcs, p->nsvcs);
    p->svcs = NULL;
    p->nsvcs = 0;
    table_unref(p->table);
    p->table = NULL;
    worker_deinit(&p->w);
}

/* Runtime services for <t>: kept from the current set when unchanged
 * (so round-robin positions survive a reload), new otherwise. Names are
 * unique in a table, so the current service of the same name is found
 * through the current table's name index (p->svcs[i] serves
 * p->table->services[i]): O(N) for a table of N services, which the
 * Kubernetes side rebuilds on every change. */
static struct svc **
build_svcs(struct proxy *p, const struct table *t)
{
    struct svc **v = calloc(t->nservices ? t->nservices : 1, sizeof(*v));
    size_t i;

    if (v == NULL)
        return NULL;
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *ts = &t->services[i];
        const struct tbl_service *cur =
            p->table != NULL ? table_find(p->table, ts->name) : NULL;
        struct svc *old = NULL;
        if (cur != NULL && (size_t)(cur - p->table->services) < p->nsvcs)
            old = p->svcs[cur - p->table->services];
        if (old != NULL && svc_matches(old, ts)) {
            v[i] = svc_ref(old);
            continue;
        }
        if ((v[i] = svc_new(ts)) == NULL) {
            free_svcs(v, i);
            return NULL;
        }
        if (old != NULL)
            svc_inherit(v[i], old, ev_now(p->w.loop));
    }
    return v;
}

static int
listener_cmp(const void *a, const void *b)
{
    return saddr_cmp(&(*(struct listener *const *)a)->addr,
                     &(*(struct listener *const *)b)->addr);
}

/* The listeners of <p> and then those of <more> (a list), sorted by
 * address for find_listener(); NULL with *n = 0 when there are none.
 * Returns -1 when out of memory. */
static int
sorted_listeners(const struct proxy *p, struct listener *more,
                 struct listener ***out, size_t *n)
{
    struct listener *lists[2] = {p->w.listeners, more}, *l, **v;
    size_t k = 0, i;

    *out = NULL;
    *n = 0;
    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            k++;
    if (k == 0)
        return 0;
    if ((v = malloc(k * sizeof(*v))) == NULL)
        return -1;
    k = 0;
    for (i = 0; i < 2; i++)
        for (l = lists[i]; l != NULL; l = l->next)
            v[k++] = l;
    qsort(v, k, sizeof(*v), listener_cmp);
    *out = v;
    *n = k;
    return 0;
}

static struct listener *
find_listener(struct listener **v, size_t n, const struct saddr *a)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = saddr_cmp(&v[mid]->addr, a);
        if (c == 0)
            return v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Open listeners for frontends that have none yet; they are collected in
 * <fresh> (not yet started). A table's frontends are unique, so one
 * frontend never needs two fresh listeners. */
static int
open_new_listeners(struct proxy *p, const struct table *t, int strict,
                   struct listener **fresh, struct err *e)
{
    struct listener **cur;
    size_t i, j, ncur;

    if (sorted_listeners(p, NULL, &cur, &ncur) < 0)
        return err_set(e, "out of memory opening listeners");
    for (i = 0; i < t->nservices; i++) {
        const struct tbl_service *ts = &t->services[i];
        for (j = 0; j < ts->nfrontends; j++) {
            const struct saddr *a = &ts->frontends[j];
            struct listener *l;
            if (find_listener(cur, ncur, a))
                continue;
            l = listener_new(&p->w, a, !strict, e);
            if (l == NULL) {
                if (strict) {
                    free(cur);
                    return -1;
                }
                char m[512];
                log_error("service %s: %s", ts->name, err_str(e, m, sizeof(m)));
                continue;
            }
            l->next = *fresh;
            *fresh = l;
        }
    }
    free(cur);
    return 0;
}

/* Point every listener of <t> at its service and close the others.
 * Returns -1, having changed nothing, when out of memory. */
static int
reconcile_listeners(struct proxy *p, const struct table *t, struct svc **v,
                    struct listener *fresh)
{
    struct listener *l, **pl, **all;
    size_t i, j, nall;

    if (sorted_listeners(p, fresh, &all, &nall) < 0)
        return -1;
    for (l = p->w.listeners; l != NULL; l = l->next)
        l->mark = 0;
    while ((l = fresh) != NULL) {
        fresh = l->next;
        l->next = p->w.listeners;
        p->w.listeners = l;
        l->mark = 2;
    }
    for (i = 0; i < t->nservices; i++) {
        for (j = 0; j < t->services[i].nfrontends; j++) {
            l = find_listener(all, nall, &t->services[i].frontends[j]);
            if (l == NULL)
                continue;
            listener_set_svc(l, v[i]);
            if (l->mark == 2)
                log_info("listening on %s for service %s", l->addr_str,
                         v[i]->name);
            l->mark = 1;
            listener_start(l);
        }
    }
    free(all);
    for (pl = &p->w.listeners; (l = *pl) != NULL;) {
        if (l->mark == 0) {
            log_info("closing listener %s (service %s removed or moved)",
                     l->addr_str, l->svc ? l->svc->name : "-");
            *pl = l->next;
            listener_free(l);
        } else {
            pl = &l->next;
        }
    }
    return 0;
}

int
proxy_apply(struct proxy *p, struct table *t, int strict, struct err *e)
{
    struct listener *fresh = NULL, *l;
    struct svc **v;
    size_t i;

    if (p->draining)
        return err_set(e, "draining: no new table is applied");
    v = build_svcs(p, t);
    if (v == NULL)
        return err_set(e, "out of memory building services");
    if (open_new_listeners(p, t, strict, &fresh, e) < 0) {
        while ((l = fresh) != NULL) {
            fresh = l->next;
            listener_free(l);
        }
        free_svcs(v, t->nservices);
        return -1;
    }
    if (reconcile_listeners(p, t, v, fresh) < 0) {
        while ((l = fresh) != NULL) {
            fresh = l->next;
            listener_free(l);
        }
        free_svcs(v, t->nservices);
        return err_set(e, "out of memory reconciling listeners");
    }
    for (i = 0; i < p->nsvcs; i++)
        p->svcs[i]->retired = 1;
    for (i = 0; i < t->nservices; i++)
        v[i]->retired = 0;
    free_svcs(p->svcs, p->nsvcs);
    p->svcs = v;
    p->nsvcs = t->nservices;
    table_unref(p->table);
    p->table = table_ref(t);
    if (p->on_applied != NULL)
        p->on_applied(p, p->on_applied_arg);
    return 0;
}

void
proxy_drain(struct proxy *p, double timeout_s)
{
    if (p->draining)
        return;
    p->draining = 1;
    proxy_close_listeners(p);
    p->w.on_idle = proxy_on_idle;
    log_info("draining: listeners closed, %zu connection(s) open, "
             "waiting up to %.1f s",
             p->w.nconns, timeout_s);
    if (p->w.nconns == 0) {
        p->on_drained(p);
        return;
    }
    ev_timer_set(&p->drain_timer, timeout_s, 0.);
    ev_timer_start(p->w.loop, &p->drain_timer);
}
