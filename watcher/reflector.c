#include "reflector.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "jarena.h"
#include "linebuf.h"
#include "log.h"

const struct reflector_kind reflector_services = {
    "Service", "/api/v1/services", "services", "", 1, SKIP_KIND_SERVICE};
const struct reflector_kind reflector_slices = {
    "EndpointSlice",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "endpointslices",
    "discovery.k8s.io",
    1,
    SKIP_KIND_ENDPOINTSLICE};
const struct reflector_kind reflector_nodes = {
    "Node", "/api/v1/nodes", "nodes", "", 0, SKIP_KIND_NODE};

enum refl_next { NEXT_LIST = 0, NEXT_WATCH };

/* struct reflector's watch_error besides a Status code. */
#define WATCH_REGRESSED (-1) /* an event's RV went backwards */
#define WATCH_NOMEM     (-2) /* memory ran out while taking an event */

struct reflector {
    struct ev_loop *loop;
    struct kapi *api;
    const struct reflector_kind *kind;
    const struct reflector_ops *ops;
    void *arg;
    char *label_sel, *field_sel; /* escaped, or NULL */

    struct kcache *cache;   /* what the table is built from */
    struct kcache *staging; /* list pages accumulate here */
    struct kapi_req *req;
    ev_timer retry;
    enum refl_next next;
    struct backoff bo;
    int synced;
    int healthy; /* last request worked */
    int rbac_logged;
    /* The last failure logged loudly in this streak: its HTTP status + 1
     * and curl's code. A failure of another kind is logged again (a
     * server that was unreachable and now shows a certificate ferry does
     * not trust must say so), the same kind again only at debug. */
    long streak_status;
    int streak_curl;

    /* current list */
    char *body;
    size_t body_len, body_cap;
    char cont[1024]; /* continue token of the next page */
    int unpaginated; /* after a 410 on continue */
    int list_nomem;  /* a page was refused: memory ran out */
    struct jdoc page; /* the page, parsed (jdoc.h) */

    /* current watch */
    struct linebuf lines;
    uint64_t lines_dropped; /* lines.dropped already reported */
    double watch_started;
    uint64_t watch_events;
    int watch_error; /* ERROR event code, or WATCH_REGRESSED, WATCH_NOMEM */
    char watch_msg[192];

    struct reflector_stats st;
};

static void start_list(struct reflector *r);
static void start_watch(struct reflector *r);

static void
set_health(struct reflector *r, int ok)
{
    double now = ev_now(r->loop);

    if (ok) {
        backoff_healthy(&r->bo, now);
        r->rbac_logged = 0;
        r->streak_status = 0;
        r->streak_curl = 0;
        r->st.failing_since = 0;
        r->st.cert_unverified = 0;
    } else if (r->st.failing_since == 0) {
        r->st.failing_since = now;
    }
    if (ok != r->healthy) {
        r->healthy = ok;
        if (r->ops->on_health != NULL)
            r->ops->on_health(r->arg, r, ok);
    }
}

static void
reflector_on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct reflector *r = w->data;

    (void)loop;
    (void)revents;
    if (r->next == NEXT_WATCH)
        start_watch(r);
    else
        start_list(r);
}

/* <next> in <d> seconds. */
static void
next_in(struct reflector *r, enum refl_next next, double d)
{
    r->next = next;
    ev_timer_set(&r->retry, d, 0.);
    ev_timer_start(r->loop, &r->retry);
}

/* Wait (backoff, or the server's Retry-After if longer), then <next>. */
static void
retry_later(struct reflector *r, enum refl_next next, double retry_after)
{
    double d = backoff_next(&r->bo, ev_now(r->loop), backoff_rand());
    int first = r->st.failing_since == 0;

    if (retry_after > d)
        d = retry_after;
    r->st.errors++;
    set_health(r, 0);
    if (first)
        log_info("kube-api: %s: retrying %s in %.1fs", r->kind->resource,
                 next == NEXT_LIST ? "list" : "watch", d);
    else
        log_debug("kube-api: %s: retrying %s in %.1fs", r->kind->resource,
                  next == NEXT_LIST ? "list" : "watch", d);
    next_in(r, next, d);
}

/* Memory ran out while a watch event or a list page was taken: not the
 * server's fault, so it stays healthy (no "lost the API server", no
 * error counted, /readyz unchanged), but the next try waits as a retry
 * would, so that memory that stays short is not hammered. */
static void
retry_nomem(struct reflector *r, enum refl_next next)
{
    double d = backoff_next(&r->bo, ev_now(r->loop), backoff_rand());

    log_info("kube-api: %s: %s again in %.1fs", r->kind->resource,
             next == NEXT_LIST ? "listing" : "watching", d);
    next_in(r, next, d);
}

/* A watch whose resourceVersion the server compacted away (410 Gone)
 * lists again: the API's normal course, not a failure. The server stays
 * healthy (no "lost the API server", no error counted); the list waits
 * as a retry would, so that a server answering every watch with 410
 * still sees a growing delay, reset by the next healthy minute. */
static void
relist_expired(struct reflector *r)
{
    double d = backoff_next(&r->bo, ev_now(r->loop), backoff_rand());

    log_debug("kube-api: %s: listing in %.1fs", r->kind->resource, d);
    next_in(r, NEXT_LIST, d);
}

/* Log a failed request once, clearly; 403 names the missing grant. */
static void
say_failure(struct reflector *r, const char *what,
            const struct kapi_result *res)
{
    const struct reflector_kind *k = r->kind;

    if (r->streak_status == res->status + 1
        && r->streak_curl == res->curl_code) {
        log_debug("kube-api: %s %s failed again: %ld %s", what, k->resource,
                  res->status, res->error);
        return; /* said once already in this streak */
    }
    r->streak_status = res->status + 1;
    r->streak_curl = res->curl_code;
    if (res->status == 403) {
        if (!r->rbac_logged++)
            log_error("kube-api: forbidden to %s %s: ferry's account needs "
                      "get, list and watch on \"%s\" (API group \"%s\") at "
                      "cluster scope (server said: %s)",
                      what, k->resource, k->resource, k->group, res->error);
        return;
    }
    if (res->status == 401)
        log_error("kube-api: %s %s: 401 Unauthorized: the token or client "
                  "certificate was refused; re-reading the token",
                  what, k->resource);
    else if (res->status != 0)
        log_warn("kube-api: %s %s: HTTP %ld %s%s%s", what, k->resource,
                 res->status, res->reason, res->reason[0] ? ": " : "",
                 res->error);
    else
        log_warn("kube-api: %s %s: %s", what, k->resource,
                 res->error[0] ? res->error : "request failed");
}

static void
log_failure(struct reflector *r, const char *what,
            const struct kapi_result *res)
{
    const struct reflector_kind *k = r->kind;

    if (res->status != 0)
        snprintf(r->st.last_error, sizeof(r->st.last_error),
                 "%s %s: HTTP %ld %.200s", what, k->resource, res->status,
                 res->error);
    else
        snprintf(r->st.last_error, sizeof(r->st.last_error), "%s %s: %.200s",
                 what, k->resource, res->error);
    r->st.cert_unverified = res->cert_unverified;
    say_failure(r, what, res);
    if (res->cert_unverified && r->ops->on_cert_failure != NULL)
        r->ops->on_cert_failure(r->arg, r);
}

/* Count a skipped line or item and tell the owner. */
static void
skipped(struct reflector *r, enum skip_reason why, const char *obj,
        const char *what)
{
    struct skip_note n = {r->kind->skip_kind, why, obj, what};

    r->st.bad_lines++;
    if (r->ops->on_skip != NULL)
        r->ops->on_skip(r->arg, r, &n);
}

/* --- LIST ------------------------------------------------------------ */

static int
list_on_data(void *arg, const char *data, size_t n)
{
    struct reflector *r = arg;

    if (n > REFLECTOR_LIST_MAX - r->body_len)
        return -1;
    if (r->body_len + n > r->body_cap) {
        size_t ncap = r->body_cap ? r->body_cap : 65536;
        char *nb;
        while (ncap < r->body_len + n)
            ncap *= 2;
        nb = realloc(r->body, ncap);
        if (nb == NULL)
            return -1;
        r->body = nb;
        r->body_cap = ncap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    return 0;
}

/* The page's resourceVersion and continue token into the staging cache
 * and r->cont. Returns 0, or -1 when the token is too long. */
static int
take_page_meta(struct reflector *r, const char *rv, const char *cont)
{
    if (rv != NULL)
        kcache_set_rv(r->staging, rv);
    if (cont != NULL && strlen(cont) >= sizeof(r->cont))
        return -1;
    snprintf(r->cont, sizeof(r->cont), "%s", cont ? cont : "");
    return 0;
}

/* An item of a page that the staging cache refused: skipped, or, when
 * memory ran out, the page refused (-1) so that the list is made again
 * later. Skipping it would drop the object from the cache in force at
 * the end of the list, as if it had been deleted. */
static int
page_skip(struct reflector *r, enum skip_reason why, const struct err *e)
{
    if (why == SKIP_NO_MEMORY) {
        r->list_nomem = 1;
        r->st.nomem++;
        return -1;
    }
    skipped(r, why, e->obj, e->msg);
    return 0;
}

/* Put one page's items, parsed into r->page, into the staging cache.
 * Returns 0 or -1. */
static int
take_page_doc(struct reflector *r)
{
    const struct jdoc *d = &r->page;
    int md = jdoc_get(d, 0, "metadata"), items = jdoc_get(d, 0, "items"), it;
    struct err e;

    if (items >= 0 && jdoc_type(d, items) != JD_ARR
        && jdoc_type(d, items) != JD_NULL)
        return -1;
    jdoc_foreach(d, items, it)
    {
        enum skip_reason why;
        err_clear(&e);
        if (kcache_put_doc(r->staging, d, it, &why, &e) < 0
            && page_skip(r, why, &e) < 0)
            return -1;
    }
    return take_page_meta(r, jdoc_gets(d, md, "resourceVersion"),
                          jdoc_gets(d, md, "continue"));
}

static void
list_complete(struct reflector *r)
{
    char old_rv[KCACHE_RV_MAX];
    uint64_t before = kcache_changes(r->cache);
    size_t gone;
    int cmp;

    jarena_reset(1); /* the pages' room goes back to the kernel */
    jdoc_free(&r->page);
    /* So does the buffer a page arrived in (megabytes at 500 slices a
     * page); a watch does not use it, and the next list grows it again. */
    free(r->body);
    r->body = NULL;
    r->body_cap = 0;
    snprintf(old_rv, sizeof(old_rv), "%s", kcache_rv(r->cache));
    if (kcache_rv_cmp(kcache_rv(r->staging), old_rv, &cmp) == 0 && cmp < 0)
        log_warn("kube-api: %s: the server's resourceVersion went back from "
                 "%s to %s (restored?): taking the new list as truth",
                 r->kind->resource, old_rv, kcache_rv(r->staging));
    gone = kcache_replace(r->cache, r->staging);
    r->st.changes += kcache_size(r->cache) + gone;
    if (r->st.lists++ > 0)
        r->st.relists++;
    r->st.last_sync = ev_now(r->loop);
    r->synced = 1;
    r->unpaginated = 0;
    log_info("kube-api: listed %zu %s at resourceVersion %s%s",
             kcache_size(r->cache), r->kind->resource, kcache_rv(r->cache),
             gone ? " (some vanished)" : "");
    set_health(r, 1);
    if (r->ops->on_list != NULL)
        r->ops->on_list(r->arg, r, kcache_rv(r->cache));
    /* The first list always counts: an empty cluster is a table too. */
    if ((kcache_changes(r->cache) != before || r->st.lists == 1)
        && r->ops->on_change != NULL)
        r->ops->on_change(r->arg, r);
    start_watch(r);
}

static void
log_undecodable(const struct reflector *r)
{
    log_warn("kube-api: %s list: undecodable response: no items list or "
             "continue token too long",
             r->kind->resource);
}

static void
list_on_done(void *arg, const struct kapi_result *res)
{
    struct reflector *r = arg;
    int arena, parsed, took;

    r->req = NULL;
    if (res->status == 200 && res->curl_code == 0) {
        /* The page is parsed in place (jdoc.h), whatever the kind: not
         * by jansson, whose parser can return a key cut short when one
         * of its allocations fails (test_oom.c). A kind kept as JSON is
         * made whole from it; of a decoded kind only the little JSON of
         * each object's metadata is made, in one region given back at
         * once (jarena.h). */
        struct err pe;
        err_clear(&pe);
        arena = kcache_decoded(r->staging) && jarena_begin() == 0;
        parsed = jdoc_parse(&r->page, r->body, r->body_len, &pe) == 0;
        took = parsed && take_page_doc(r) == 0;
        r->body_len = 0;
        if (arena) {
            jarena_end();
            jarena_reset(0);
        }
        if (took) {
            if (r->cont[0] != '\0')
                start_list(r); /* next page */
            else
                list_complete(r);
            return;
        }
        if (!parsed && r->page.nomem) {
            r->list_nomem = 1;
            r->st.nomem++;
        }
        if (r->list_nomem) {
            r->list_nomem = 0;
            log_warn("kube-api: %s list: out of memory while taking a page: "
                     "the cache in force is kept, and the list made again",
                     r->kind->resource);
            r->cont[0] = '\0';
            retry_nomem(r, NEXT_LIST);
            return;
        }
        if (!parsed)
            log_warn("kube-api: %s list: undecodable response: %s",
                     r->kind->resource, pe.msg);
        else
            log_undecodable(r);
    } else if (res->status == 410 && r->cont[0] != '\0') {
        /* The continue token expired: one unpaginated list, as
         * client-go's pager does. */
        log_info("kube-api: %s list: continue token expired, listing "
                 "without pages",
                 r->kind->resource);
        r->unpaginated = 1;
        r->cont[0] = '\0';
        start_list(r);
        return;
    } else if (res->aborted) {
        struct kapi_result big = *res;
        snprintf(big.error, sizeof(big.error),
                 "response larger than %u "
                 "bytes or out of memory",
                 REFLECTOR_LIST_MAX);
        log_failure(r, "list", &big);
    } else {
        log_failure(r, "list", res);
    }
    r->body_len = 0;
    r->cont[0] = '\0';
    if (res->status == 401)
        kapi_unauthorized(r->api);
    retry_later(r, NEXT_LIST, res->retry_after);
}

/* Query string: "?a=b&c=d" from the non-empty parts. */
static void
add_param(char *q, size_t qlen, const char *k, const char *v)
{
    size_t n = strlen(q);

    if (v != NULL && v[0] != '\0')
        snprintf(q + n, qlen - n, "%c%s=%s", strchr(q, '?') ? '&' : '?', k, v);
}

static const struct kapi_req_ops list_ops = {list_on_data, list_on_done};

static void
start_list(struct reflector *r)
{
    char q[4096], lim[16], cont[sizeof(r->cont) * 3];

    if (r->cont[0] == '\0') { /* first page: start from empty */
        struct kcache *n = kcache_new(r->kind->kind, r->kind->namespaced);
        if (n == NULL) {
            retry_later(r, NEXT_LIST, -1);
            return;
        }
        kcache_free(r->staging);
        r->staging = n;
        /* Objects the cache has at the version listed are kept, not
         * decoded again (no watch runs while a list does). */
        kcache_set_base(n, r->cache);
    }
    snprintf(q, sizeof(q), "%s", r->kind->path);
    snprintf(lim, sizeof(lim), "%d", REFLECTOR_PAGE);
    add_param(q, sizeof(q), "limit", r->unpaginated ? NULL : lim);
    if (kapi_query_escape(r->cont, cont, sizeof(cont)) == 0)
        add_param(q, sizeof(q), "continue", cont);
    add_param(q, sizeof(q), "labelSelector", r->label_sel);
    add_param(q, sizeof(q), "fieldSelector", r->field_sel);
    r->body_len = 0;
    r->req = kapi_get(r->api, q, REFLECTOR_LIST_TIME, REFLECTOR_WATCH_IDLE,
                      &list_ops, r);
    if (r->req == NULL)
        retry_later(r, NEXT_LIST, -1);
}

/* --- WATCH ----------------------------------------------------------- */

static int
apply_watch_line(struct reflector *r, const char *line, size_t len)
{
    uint64_t before = kcache_changes(r->cache);
    struct kcache_event ev;
    struct err e;
    char old_rv[KCACHE_RV_MAX];

    err_clear(&e);
    snprintf(old_rv, sizeof(old_rv), "%s", kcache_rv(r->cache));
    switch (kcache_apply_line(r->cache, line, len, &ev, &e)) {
    case KCACHE_APPLIED:
        r->watch_events++;
        r->st.events++;
        if (ev.type != KCACHE_EV_BOOKMARK) {
            r->st.changes++;
            if (r->ops->on_object != NULL)
                r->ops->on_object(r->arg, r, &ev);
        }
        if (kcache_changes(r->cache) != before && r->ops->on_change != NULL)
            r->ops->on_change(r->arg, r);
        return 0;
    case KCACHE_ERROR:
        r->watch_error = ev.code != 0 ? ev.code : 500;
        snprintf(r->watch_msg, sizeof(r->watch_msg), "%s", ev.message);
        return 1;
    case KCACHE_REGRESS:
        r->watch_error = WATCH_REGRESSED;
        snprintf(r->watch_msg, sizeof(r->watch_msg),
                 "%s event at resourceVersion %s after %s",
                 kcache_ev_name(ev.type), ev.rv, old_rv);
        return 1;
    default: {
        char what[sizeof(e.msg) + 32];
        if (ev.skip == SKIP_NO_MEMORY) {
            /* Not the event's fault: the cache is as it was, and its RV
             * still before the event, which the next watch brings again. */
            r->watch_error = WATCH_NOMEM;
            r->st.nomem++;
            snprintf(r->watch_msg, sizeof(r->watch_msg), "%.*s",
                     (int)sizeof(r->watch_msg) - 1, e.msg);
            return 1;
        }
        snprintf(what, sizeof(what), "%s", e.msg);
        if (e.line > 0) /* a JSON error: where the parser stopped */
            snprintf(what, sizeof(what), "%s at column %d", e.msg, e.col);
        skipped(r, ev.skip, e.obj, what);
        return 0;
    }
    }
}

/* A kind kept decoded keeps nothing of a watch line's JSON once the
 * event is handled: it comes from one region (jarena.h), given back
 * after the line, which saves most of the line's malloc() and free(). */
static int
watch_on_line(void *arg, const char *line, size_t len)
{
    struct reflector *r = arg;
    int arena = kcache_decoded(r->cache) && jarena_begin() == 0, rc;

    rc = apply_watch_line(r, line, len);
    if (arena) {
        kcache_drop_event(r->cache);
        jarena_end();
        jarena_reset(0);
    }
    return rc;
}

static int
watch_on_data(void *arg, const char *data, size_t n)
{
    struct reflector *r = arg;
    int rc;

    if (!r->healthy)
        set_health(r, 1); /* a 200 is streaming */
    rc = linebuf_feed(&r->lines, data, n, watch_on_line, r);
    while (r->lines_dropped < r->lines.dropped) {
        char what[96];
        r->lines_dropped++;
        snprintf(what, sizeof(what), "watch line longer than %u bytes",
                 REFLECTOR_LINE_MAX);
        skipped(r, SKIP_TOO_LARGE, "", what);
    }
    return rc != 0;
}

/* The stream ended with a 200: why, and what next. */
static void
watch_ended(struct reflector *r, const struct kapi_result *res)
{
    double lived = ev_now(r->loop) - r->watch_started;

    if (r->watch_error == WATCH_NOMEM) {
        log_warn("kube-api: %s watch: %s while taking an event: watching "
                 "again from resourceVersion %s",
                 r->kind->resource, r->watch_msg, kcache_rv(r->cache));
        retry_nomem(r, NEXT_WATCH);
    } else if (r->watch_error == WATCH_REGRESSED) {
        log_warn("kube-api: %s watch: resourceVersion went backwards (%s): "
                 "relisting",
                 r->kind->resource, r->watch_msg);
        retry_later(r, NEXT_LIST, -1);
    } else if (r->watch_error == 410) {
        log_info("kube-api: %s watch expired (%s): relisting",
                 r->kind->resource, r->watch_msg);
        relist_expired(r);
    } else if (r->watch_error != 0) {
        log_warn("kube-api: %s watch: ERROR %d %s: relisting",
                 r->kind->resource, r->watch_error, r->watch_msg);
        retry_later(r, NEXT_LIST, -1);
    } else if (res->curl_code != 0 && !res->timed_out && !res->aborted) {
        log_warn("kube-api: %s watch broke: %s", r->kind->resource, res->error);
        retry_later(r, NEXT_WATCH, -1);
    } else if (lived < 1.0 && r->watch_events == 0 && !res->timed_out) {
        /* client-go counts this as an error, and errors relist: it is
         * also what lets a restored (older) store be noticed. */
        log_warn("kube-api: %s watch ended at once with no event: "
                 "relisting",
                 r->kind->resource);
        retry_later(r, NEXT_LIST, -1);
    } else {
        log_debug("kube-api: %s watch ended after %.0fs, resuming at %s",
                  r->kind->resource, lived, kcache_rv(r->cache));
        start_watch(r);
    }
}

static void
watch_on_done(void *arg, const struct kapi_result *res)
{
    struct reflector *r = arg;

    r->req = NULL;
    linebuf_reset(&r->lines);
    if (res->status == 200) {
        watch_ended(r, res);
        return;
    }
    log_failure(r, "watch", res);
    if (res->status == 401)
        kapi_unauthorized(r->api);
    if (res->status == 0 || res->status == 429 || res->status >= 500)
        retry_later(r, NEXT_WATCH, res->retry_after);
    else
        retry_later(r, NEXT_LIST, res->retry_after); /* 410, 401, 403... */
}

static const struct kapi_req_ops watch_ops = {watch_on_data, watch_on_done};

static void
start_watch(struct reflector *r)
{
    char q[4096], to[16];
    int secs = 300 + (int)(backoff_rand() * 300); /* [300, 600) */

    snprintf(q, sizeof(q), "%s?watch=true&allowWatchBookmarks=true",
             r->kind->path);
    add_param(q, sizeof(q), "resourceVersion", kcache_rv(r->cache));
    snprintf(to, sizeof(to), "%d", secs);
    add_param(q, sizeof(q), "timeoutSeconds", to);
    add_param(q, sizeof(q), "labelSelector", r->label_sel);
    add_param(q, sizeof(q), "fieldSelector", r->field_sel);
    linebuf_reset(&r->lines);
    r->watch_started = ev_now(r->loop);
    r->watch_events = 0;
    r->watch_error = 0;
    r->req =
        kapi_get(r->api, q, secs + 30, REFLECTOR_WATCH_IDLE, &watch_ops, r);
    if (r->req == NULL) {
        retry_later(r, NEXT_WATCH, -1);
        return;
    }
    if (r->st.watches++ > 0)
        r->st.watch_restarts++;
}

/* --- lifecycle ------------------------------------------------------- */

static char *
escaped(const char *s)
{
    size_t n;
    char *out;

    if (s == NULL || s[0] == '\0')
        return NULL;
    n = strlen(s) * 3 + 1;
    out = malloc(n);
    if (out != NULL && kapi_query_escape(s, out, n) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

struct reflector *
reflector_new(struct ev_loop *loop, struct kapi *api,
              const struct reflector_kind *kind, const char *label_selector,
              const char *field_selector, const struct reflector_ops *ops,
              void *arg)
{
    struct reflector *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->api = api;
    r->kind = kind;
    r->ops = ops;
    r->arg = arg;
    r->healthy = 1; /* until proven otherwise */
    r->cache = kcache_new(kind->kind, kind->namespaced);
    r->label_sel = escaped(label_selector);
    r->field_sel = escaped(field_selector);
    backoff_init(&r->bo);
    linebuf_init(&r->lines, REFLECTOR_LINE_MAX);
    ev_timer_init(&r->retry, reflector_on_retry, 0., 0.);
    r->retry.data = r;
    if (r->cache == NULL
        || (label_selector && label_selector[0] && !r->label_sel)
        || (field_selector && field_selector[0] && !r->field_sel)) {
        reflector_free(r);
        return NULL;
    }
    return r;
}

void
reflector_free(struct reflector *r)
{
    if (r == NULL)
        return;
    kapi_cancel(r->req);
    ev_timer_stop(r->loop, &r->retry);
    kcache_free(r->cache);
    kcache_free(r->staging);
    linebuf_deinit(&r->lines);
    free(r->body);
    jdoc_free(&r->page);
    free(r->label_sel);
    free(r->field_sel);
    free(r);
}

void
reflector_start(struct reflector *r)
{
    r->cont[0] = '\0';
    start_list(r);
}

void
reflector_check_rv(struct reflector *r, const char *server_rv)
{
    int cmp;

    if (kcache_rv_cmp(kcache_rv(r->cache), server_rv, &cmp) < 0 || cmp <= 0)
        return;
    log_warn("kube-api: %s: our resourceVersion %s is ahead of the "
             "server's %s (store restored?): relisting",
             r->kind->resource, kcache_rv(r->cache), server_rv);
    kapi_cancel(r->req);
    r->req = NULL;
    ev_timer_stop(r->loop, &r->retry);
    r->cont[0] = '\0';
    r->unpaginated = 0;
    start_list(r);
}

const struct kcache *
reflector_cache(const struct reflector *r)
{
    return r->cache;
}

int
reflector_synced(const struct reflector *r)
{
    return r->synced;
}

const struct reflector_stats *
reflector_stats(const struct reflector *r)
{
    return &r->st;
}
