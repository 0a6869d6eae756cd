/*
 * sniroute.c - clients of an SNI address, from accept to their service.
 *
 * A waiting client holds its socket, a timer (client_hello_timeout from
 * the accept), and the bytes read so far in a relay buffer: the PROXY
 * header first with accept_proxy, taken off, then the ClientHello, kept
 * whole for the backend. Each read is parsed again from the start
 * (tlshello is bounded, and a hello is a few hundred bytes); the client
 * is routed as soon as the parser decides. A waiting client counts as a
 * connection of its worker, so that a drain waits for it too.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accesslog.h"
#include "bug.h"
#include "conn.h"
#include "log.h"
#include "proxyproto.h"
#include "sniroute.h"
#include "stats.h"
#include "svc-t.h"
#include "tlshello.h"
#include "worker.h"

/* The most bytes read before routing: room is left for the PROXY header
 * ferry may send before them (conn_accept_read). */
#define SNI_READ_MAX (WORKER_BUF_SIZE - PROXYPROTO_WRITE_MAX)
/* Addresses with counters of their own; more share the last entry. */
#define SNI_ADDRS_MAX 256

_Static_assert(SNI_READ_MAX > TLSHELLO_MAX + 1024,
               "a whole ClientHello of the cap fits the read buffer");
_Static_assert(ACCESSLOG_SNI_CLOSED - ACCESSLOG_SNI_NO_MATCH
                       == SNIROUTE_CLOSED - SNIROUTE_NO_MATCH
                   && SNIROUTE_PROXY == SNIROUTE_CLOSED + 1,
               "SNI refusals and access log causes in the same order");

const char *const sniroute_reason_text[SNIROUTE__COUNT] = {
    [SNIROUTE_NAME] = "name",          [SNIROUTE_NO_MATCH] = "no_match",
    [SNIROUTE_NO_SNI] = "no_sni",      [SNIROUTE_MALFORMED] = "malformed",
    [SNIROUTE_TIMEOUT] = "timeout",    [SNIROUTE_CLOSED] = "closed",
    [SNIROUTE_PROXY] = "proxy_header",
};

const char *const sniroute_outcome_text[SNIROUTE_OUTCOME__COUNT] = {
    [SNIROUTE_ROUTED] = "routed",
    [SNIROUTE_DEFAULT] = "default",
    [SNIROUTE_REFUSED] = "refused",
};

/* ---- counters per address ------------------------------------------------ */

struct sni_addr_stats {
    struct saddr addr;
    char str[SADDR_STR_MAX];
    atomic_uint_fast64_t n[SNIROUTE__COUNT][SNIROUTE_OUTCOME__COUNT];
};

/* Static, never freed: waiting clients may point at an entry across any
 * table change. Entries are added under the lock, by routing builds (not
 * per connection), and published by the count. */
static struct sni_addr_stats addr_stats[SNI_ADDRS_MAX];
static atomic_size_t naddr_stats;
static pthread_mutex_t addr_stats_lock = PTHREAD_MUTEX_INITIALIZER;

static struct sni_addr_stats *
addr_stats_get(const struct saddr *a)
{
    size_t i, n;
    struct sni_addr_stats *st;

    pthread_mutex_lock(&addr_stats_lock);
    n = atomic_load(&naddr_stats);
    for (i = 0; i < n; i++)
        if (saddr_cmp(&addr_stats[i].addr, a) == 0)
            break;
    if (i == n && n < SNI_ADDRS_MAX) {
        addr_stats[n].addr = *a;
        if (n + 1 < SNI_ADDRS_MAX)
            saddr_str(a, addr_stats[n].str, sizeof(addr_stats[n].str));
        else
            snprintf(addr_stats[n].str, sizeof(addr_stats[n].str), "other");
        atomic_store(&naddr_stats, n + 1);
    }
    st = &addr_stats[i < SNI_ADDRS_MAX ? i : SNI_ADDRS_MAX - 1];
    pthread_mutex_unlock(&addr_stats_lock);
    return st;
}

size_t
sniroute_counts(struct sniroute_count *out, size_t max)
{
    size_t i, r, o, n = atomic_load(&naddr_stats);

    for (i = 0; i < n && i < max; i++) {
        memcpy(out[i].listen, addr_stats[i].str, sizeof(out[i].listen));
        for (r = 0; r < SNIROUTE__COUNT; r++)
            for (o = 0; o < SNIROUTE_OUTCOME__COUNT; o++)
                out[i].n[r][o] = stats_get(&addr_stats[i].n[r][o]);
    }
    return i;
}

/* ---- routing: addresses, names, services ------------------------------- */

struct sni_name {
    const char *name; /* the table's (w->dtable) */
    struct svc *svc;  /* w->dsvcs' */
};

struct sni_group {
    struct saddr addr;
    struct svc *def; /* default_service, or NULL */
    struct sni_addr_stats *st;
    double timeout; /* seconds */
    uint8_t accept_proxy;
    struct sni_name *names; /* sorted, in the map's array */
    size_t nnames;
};

struct sniroute_map {
    struct sni_group *g; /* sorted by address */
    size_t ng;
    struct sni_name *names;
};

/* A service's name on an address, while building. */
struct sni_tuple {
    const struct saddr *addr;
    const char *name;
    size_t svc; /* index in the table */
};

static int
tuple_cmp(const void *a, const void *b)
{
    const struct sni_tuple *x = a, *y = b;
    int c = saddr_cmp(x->addr, y->addr);

    return c != 0 ? c : strcmp(x->name, y->name);
}

void
sniroute_clear(struct worker *w)
{
    if (w->sni == NULL)
        return;
    free(w->sni->g);
    free(w->sni->names);
    free(w->sni);
    w->sni = NULL;
}

/* Group <g> of <t>: its settings from the listener entry, if any. */
static void
group_settings(struct worker *w, const struct table *t, struct sni_group *g,
               size_t first_svc)
{
    const struct tbl_listener *l = table_find_listener(t, &g->addr);
    const struct tbl_service *d;
    uint32_t ms = TBL_CLIENT_HELLO_TIMEOUT_MS;

    g->def = NULL;
    if (l != NULL) {
        if (l->client_hello_timeout_ms > 0)
            ms = l->client_hello_timeout_ms;
        if (l->default_service[0] != '\0'
            && (d = table_find(t, l->default_service)) != NULL)
            g->def = svcv_get(w->dsvcs, d->pos);
    }
    g->timeout = ms / 1e3;
    g->accept_proxy = table_service(t, first_svc)->accept_proxy != 0;
    g->st = addr_stats_get(&g->addr);
}

/* The tuples of <t>: every name of every service on every frontend. */
static struct sni_tuple *
collect(const struct table *t, size_t *np)
{
    struct sni_tuple *v;
    size_t i, j, k, n = 0;

    /* A LISTEN service is one of t->lpos. */
    for (i = 0; t->nsnisvcs > 0 && i < t->nlpos; i++)
        if (table_service(t, t->lpos[i])->reach == TBL_REACH_LISTEN)
            n += table_service(t, t->lpos[i])->nfrontends
                 * table_service(t, t->lpos[i])->nsni;
    *np = n;
    if (n == 0 || (v = malloc(n * sizeof(*v))) == NULL)
        return NULL;
    for (n = 0, i = 0; i < t->nlpos; i++) {
        const struct tbl_service *s = table_service(t, t->lpos[i]);
        if (s->reach != TBL_REACH_LISTEN)
            continue;
        for (j = 0; j < s->nfrontends; j++)
            for (k = 0; k < s->nsni; k++) {
                struct sni_tuple tu = {&s->frontends[j], s->sni[k].name,
                                       s->pos};
                v[n++] = tu;
            }
    }
    qsort(v, n, sizeof(*v), tuple_cmp);
    return v;
}

void
sniroute_build(struct worker *w)
{
    const struct table *t = w->dtable;
    struct sniroute_map *m;
    struct sni_tuple *v;
    size_t i, n, ng = 0, nn = 0;

    sniroute_clear(w);
    if (t == NULL || (v = collect(t, &n)) == NULL) {
        if (t != NULL && n > 0)
            log_error("out of memory: SNI addresses will refuse clients");
        return;
    }
    for (i = 0; i < n; i++)
        ng += i == 0 || saddr_cmp(v[i].addr, v[i - 1].addr) != 0;
    m = calloc(1, sizeof(*m));
    if (m == NULL || (m->g = calloc(ng, sizeof(*m->g))) == NULL
        || (m->names = calloc(n, sizeof(*m->names))) == NULL) {
        if (m != NULL)
            free(m->g);
        free(m);
        free(v);
        log_error("out of memory: SNI addresses will refuse clients");
        return;
    }
    for (i = 0; i < n; i++) {
        struct sni_group *g = &m->g[m->ng];
        if (i == 0 || saddr_cmp(v[i].addr, v[i - 1].addr) != 0) {
            g = &m->g[m->ng++];
            g->addr = *v[i].addr;
            g->names = &m->names[nn];
            group_settings(w, t, g, v[i].svc);
        } else if (strcmp(v[i].name, v[i - 1].name) == 0) {
            continue; /* the config allows none: the first stays */
        } else {
            g = &m->g[m->ng - 1];
        }
        m->names[nn].name = v[i].name;
        m->names[nn].svc = svcv_get(w->dsvcs, v[i].svc);
        nn++;
        g->nnames++;
    }
    free(v);
    w->sni = m;
}

static const struct sni_group *
group_find(const struct sniroute_map *m, const struct saddr *a)
{
    size_t lo = 0, hi = m->ng;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = saddr_cmp(&m->g[mid].addr, a);
        if (c == 0)
            return &m->g[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static struct svc *
name_lookup(const struct sni_group *g, const char *name)
{
    size_t lo = 0, hi = g->nnames;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->names[mid].name, name);
        if (c == 0)
            return g->names[mid].svc;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The service for host name <name>: its exact entry, else the wildcard
 * one label up. */
static struct svc *
name_find(const struct sni_group *g, const char *name)
{
    char wild[TLSHELLO_NAME_SIZE + 1];
    const char *dot;
    struct svc *s = name_lookup(g, name);

    if (s != NULL || (dot = strchr(name, '.')) == NULL)
        return s;
    snprintf(wild, sizeof(wild), "*%s", dot);
    return name_lookup(g, wild);
}

/* ---- waiting clients ----------------------------------------------------- */

struct sniroute_wait {
    struct ev_io io;
    struct ev_timer timer;
    struct worker *w;
    struct sniroute_wait *prev, *next;
    struct sni_addr_stats *st;
    char *buf; /* a relay buffer once something came */
    uint32_t len;
    double accepted; /* loop time (access log) */
    uint8_t want_pp; /* accept_proxy: the PROXY header is still to come */
    uint8_t had_pp;  /* ... and came: <pp> */
    struct saddr laddr, client;
    struct proxyproto_hdr pp;
};

static void sniw_on_read(struct ev_loop *loop, struct ev_io *io, int rev);
static void sniw_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev);

static void
reset_close(int fd)
{
    struct linger lg = {1, 0};

    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* Forget <sw>: off the loop and the list, its object back to the pool. */
static void
sniw_release(struct sniroute_wait *sw)
{
    struct worker *w = sw->w;

    ev_io_stop(w->loop, &sw->io);
    ev_timer_stop(w->loop, &sw->timer);
    if (sw->prev != NULL)
        sw->prev->next = sw->next;
    else
        w->sni_waits = sw->next;
    if (sw->next != NULL)
        sw->next->prev = sw->prev;
    worker_conn_release(w, sw);
}

/* One connection of <w> less: the waiting client was closed or has
 * become a connection of its own. */
static void
sniw_done(struct worker *w)
{
    worker_nconns_add(w, -1);
    if (w->accept_paused)
        worker_resume_accept(w);
    if (worker_nconns(w) == 0 && w->on_idle != NULL)
        w->on_idle(w);
}

int
sniroute_accept(struct worker *w, const struct saddr *laddr, int fd,
                const struct saddr *client)
{
    const struct sni_group *g;
    struct sniroute_wait *sw;

    if (w->sni == NULL || (g = group_find(w->sni, laddr)) == NULL)
        return 0;
    BUG_ON(sizeof(*sw) > conn_object_size());
    if ((sw = worker_conn_alloc(w, conn_object_size())) == NULL) {
        log_rl(LOG_ERROR, ev_now(w->loop),
               "out of memory: refusing a connection");
        reset_close(fd);
        return 1;
    }
    memset(sw, 0, sizeof(*sw));
    sw->w = w;
    sw->st = g->st;
    sw->want_pp = g->accept_proxy;
    sw->laddr = *laddr;
    sw->client = *client;
    sw->accepted = ev_now(w->loop);
    ev_io_init(&sw->io, sniw_on_read, fd, EV_READ);
    ev_timer_init(&sw->timer, sniw_on_timer, g->timeout, 0.);
    sw->io.data = sw->timer.data = sw;
    sw->next = w->sni_waits;
    if (w->sni_waits != NULL)
        w->sni_waits->prev = sw;
    w->sni_waits = sw;
    worker_nconns_add(w, 1);
    ev_io_start(w->loop, &sw->io);
    ev_timer_start(w->loop, &sw->timer);
    return 1;
}

/* The access log's line for a client refused before it had a service
 * (service "-"). */
static void
sniw_access_log(struct worker *w, const struct saddr *client, double start,
                enum sniroute_reason why)
{
    struct accesslog_rec r;

    memset(&r, 0, sizeof(r));
    r.start = start;
    r.end = ev_now(w->loop);
    r.connect = -1;
    r.client = client;
    r.service = "-";
    r.cause = why == SNIROUTE_PROXY
                  ? ACCESSLOG_PROXY_INVALID
                  : (enum accesslog_cause)(ACCESSLOG_SNI_NO_MATCH + why
                                           - SNIROUTE_NO_MATCH);
    accesslog_emit(w->id, &r);
}

/* The ClientHello was read (<name> for SNIROUTE_NAME), or will not be:
 * route <sw> by <why>, or close it; counted either way. */
static void
sniw_finish(struct sniroute_wait *sw, enum sniroute_reason why,
            const char *name)
{
    struct worker *w = sw->w;
    const struct sni_group *g =
        w->sni != NULL ? group_find(w->sni, &sw->laddr) : NULL;
    enum sniroute_outcome out = SNIROUTE_REFUSED;
    struct sni_addr_stats *st = sw->st;
    struct proxyproto_hdr pp = sw->pp;
    double start = sw->accepted;
    struct saddr client = sw->client;
    int fd = sw->io.fd, had_pp = sw->had_pp;
    char *buf = sw->buf;
    uint32_t len = sw->len;
    char a[SADDR_STR_MAX];
    struct svc *s = NULL;

    if (why == SNIROUTE_NAME && (g == NULL || (s = name_find(g, name)) == NULL))
        why = SNIROUTE_NO_MATCH;
    if (s != NULL)
        out = SNIROUTE_ROUTED;
    else if (g != NULL && g->def != NULL && why != SNIROUTE_CLOSED
             && why != SNIROUTE_PROXY && !sw->want_pp)
        s = g->def, out = SNIROUTE_DEFAULT;
    stats_inc(&st->n[why][out]);
    sniw_release(sw);
    if (out == SNIROUTE_REFUSED) {
        log_rl(LOG_INFO, ev_now(w->loop),
               "%s: client %s refused: ClientHello %s%s%s", st->str,
               saddr_str(&client, a, sizeof(a)), sniroute_reason_text[why],
               why == SNIROUTE_NO_MATCH ? " " : "",
               why == SNIROUTE_NO_MATCH ? name : "");
        if (buf != NULL)
            worker_buf_put(w, buf);
        if (why == SNIROUTE_CLOSED)
            close(fd);
        else
            reset_close(fd);
        if (accesslog_enabled())
            sniw_access_log(w, &client, start, why);
        sniw_done(w);
        return;
    }
    stats_inc(&svc_ctr(s->st)->sni_routed[out == SNIROUTE_DEFAULT]);
    if (buf != NULL && len == 0) {
        worker_buf_put(w, buf);
        buf = NULL;
    }
    conn_accept_read(w, s, fd, &client, had_pp ? &pp : NULL, buf, len);
    sniw_done(w);
}

/* accept_proxy: the header, taken off the front of what was read.
 * Returns 1 when it is whole (or was), 0 to wait, -1 when finished. */
static int
sniw_proxy_hdr(struct sniroute_wait *sw)
{
    enum proxyproto_err perr;
    enum proxyproto_status st;

    if (!sw->want_pp)
        return 1;
    st = proxyproto_parse(sw->buf, sw->len, &sw->pp, &perr);
    if (st == PROXYPROTO_ERROR
        || (st == PROXYPROTO_NEED && sw->len == SNI_READ_MAX)) {
        sniw_finish(sw, SNIROUTE_PROXY, NULL);
        return -1;
    }
    if (st == PROXYPROTO_NEED)
        return 0;
    if (sw->pp.has_addrs)
        sw->client = sw->pp.src;
    sw->len -= (uint32_t)sw->pp.len;
    memmove(sw->buf, sw->buf + sw->pp.len, sw->len);
    sw->want_pp = 0;
    sw->had_pp = 1;
    return 1;
}

static void
sniw_on_read(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct sniroute_wait *sw = io->data;
    enum tlshello_status st;
    enum tlshello_err herr;
    struct tlshello h;
    ssize_t n;

    (void)loop;
    (void)rev;
    if (sw->buf == NULL && (sw->buf = worker_buf_get(sw->w)) == NULL) {
        log_rl(LOG_ERROR, ev_now(sw->w->loop),
               "out of memory: refusing a connection");
        sniw_finish(sw, SNIROUTE_CLOSED, NULL);
        return;
    }
    n = recv(io->fd, sw->buf + sw->len, SNI_READ_MAX - sw->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        sniw_finish(sw, SNIROUTE_CLOSED, NULL);
        return;
    }
    sw->len += (uint32_t)n;
    if (sniw_proxy_hdr(sw) <= 0 || sw->len == 0)
        return;
    st = tlshello_parse(sw->buf, sw->len, &h, &herr);
    if (st == TLSHELLO_NEED && sw->len < SNI_READ_MAX)
        return;
    if (st == TLSHELLO_NAME)
        sniw_finish(sw, SNIROUTE_NAME, h.name);
    else if (st == TLSHELLO_NO_SNI)
        sniw_finish(sw, SNIROUTE_NO_SNI, NULL);
    else
        sniw_finish(sw, SNIROUTE_MALFORMED, NULL);
}

static void
sniw_on_timer(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    sniw_finish(t->data, SNIROUTE_TIMEOUT, NULL);
}

void
sniroute_close_all(struct worker *w)
{
    struct sniroute_wait *sw;

    while ((sw = w->sni_waits) != NULL) {
        int fd = sw->io.fd;
        if (sw->buf != NULL)
            worker_buf_put(w, sw->buf);
        sniw_release(sw);
        reset_close(fd);
        worker_nconns_add(w, -1);
    }
}
