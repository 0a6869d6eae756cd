#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "table.h"
#include "watchq.h"

struct watch {
    uint64_t id; /* 0: a free place */
    char svc[TBL_NAME_MAX];
    unsigned count, ended;
    double started, until, read_at;
    uint64_t cursor; /* the first record not read yet */
    uint64_t dropped;
};

atomic_int watchq_on;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct watch watches[WATCHQ_WATCHES];
static char (*lines)[ACCESSLOG_LINE_MAX]; /* WATCHQ_SLOTS, at first use */
static uint16_t len[WATCHQ_SLOTS];
static uint8_t mask[WATCHQ_SLOTS];
static uint64_t head = 1; /* the next record's number */
static uint64_t next_id = 1;
static atomic_uint_fast64_t queued;

_Static_assert(WATCHQ_WATCHES <= 8, "a watch is a bit of a byte");

/* Under mu. */
static int
live(const struct watch *w, double now)
{
    return w->id != 0 && w->ended < w->count && now < w->until
           && now - w->read_at < WATCHQ_IDLE_S;
}

/* Under mu. */
static void
update_on(double now)
{
    int on = 0;
    size_t i;

    for (i = 0; i < WATCHQ_WATCHES; i++)
        on |= live(&watches[i], now);
    atomic_store_explicit(&watchq_on, on, memory_order_relaxed);
}

unsigned
watchq_match(const char *svc, double now)
{
    unsigned m = 0;
    size_t i;

    pthread_mutex_lock(&mu);
    for (i = 0; i < WATCHQ_WATCHES; i++)
        if (live(&watches[i], now) && strcmp(watches[i].svc, svc) == 0)
            m |= 1u << i;
    if (m == 0)
        update_on(now);
    pthread_mutex_unlock(&mu);
    return m;
}

/* Take a slot for a record of the watches in <m> still on for a
 * connection accepted at <accepted>; its number, or 0 for none. Under
 * mu. */
static uint64_t
take_slot(unsigned m, double accepted, int end)
{
    uint64_t seq, old;
    unsigned keep = 0, i;
    size_t s;

    for (i = 0; i < WATCHQ_WATCHES; i++) {
        struct watch *w = &watches[i];
        /* A place taken since by a newer watch is not this one's. */
        if ((m & (1u << i)) && w->id != 0 && w->started <= accepted
            && w->ended < w->count) {
            keep |= 1u << i;
            w->ended += end;
        }
    }
    if (keep == 0 || lines == NULL)
        return 0;
    seq = head++;
    s = seq % WATCHQ_SLOTS;
    old = seq - WATCHQ_SLOTS;
    for (i = 0; seq > WATCHQ_SLOTS && i < WATCHQ_WATCHES; i++)
        if ((mask[s] & (1u << i)) && watches[i].id != 0
            && old >= watches[i].cursor)
            watches[i].dropped++;
    mask[s] = (uint8_t)keep;
    atomic_fetch_add_explicit(&queued, 1, memory_order_relaxed);
    return seq;
}

void
watchq_attempt(unsigned m, uint64_t id, const char *backend, int err)
{
    uint64_t seq;
    size_t s;
    int n;

    pthread_mutex_lock(&mu);
    /* An attempt is always of a connection accepted before now. */
    if ((seq = take_slot(m, 1e300, 0)) != 0) {
        s = seq % WATCHQ_SLOTS;
        n = snprintf(lines[s], ACCESSLOG_LINE_MAX,
                     "{\"attempt_failed\":true,\"id\":%llu,\"backend\":"
                     "\"%.128s\",\"error\":\"%.128s\"}",
                     (unsigned long long)id, backend, strerror(err));
        len[s] = (uint16_t)(n < 0                     ? 0
                            : n >= ACCESSLOG_LINE_MAX ? ACCESSLOG_LINE_MAX - 1
                                                      : n);
    }
    pthread_mutex_unlock(&mu);
}

void
watchq_end(unsigned m, const struct accesslog_rec *r)
{
    uint64_t seq;
    size_t s, n;

    pthread_mutex_lock(&mu);
    if ((seq = take_slot(m, r->start, 1)) != 0) {
        s = seq % WATCHQ_SLOTS;
        n = accesslog_format(r, CONF_ACCESS_LOG_JSON, lines[s]);
        len[s] = (uint16_t)(n > 0 ? n - 1 : 0); /* without the newline */
    }
    pthread_mutex_unlock(&mu);
}

uint64_t
watchq_start(const char *svc, unsigned count, double seconds, double now)
{
    struct watch *w = NULL;
    uint64_t id = 0;
    size_t i;

    pthread_mutex_lock(&mu);
    if (lines == NULL && (lines = calloc(WATCHQ_SLOTS, sizeof(*lines))) == NULL)
        goto out;
    for (i = 0; i < WATCHQ_WATCHES && w == NULL; i++)
        if (watches[i].id == 0 || now - watches[i].read_at >= WATCHQ_IDLE_S)
            w = &watches[i];
    if (w == NULL)
        goto out;
    memset(w, 0, sizeof(*w));
    id = w->id = next_id++;
    snprintf(w->svc, sizeof(w->svc), "%s", svc);
    w->count = count;
    w->started = w->read_at = now;
    w->until = now + seconds;
    w->cursor = head;
    update_on(now);
out:
    pthread_mutex_unlock(&mu);
    return id;
}

int
watchq_read(uint64_t id, double now,
            void (*fn)(void *arg, const char *line, size_t len), void *arg,
            struct watchq_read *out)
{
    struct watch *w = NULL;
    uint64_t seq, bit;
    size_t i;

    pthread_mutex_lock(&mu);
    for (i = 0; i < WATCHQ_WATCHES && w == NULL; i++)
        if (id != 0 && watches[i].id == id)
            w = &watches[i];
    if (w == NULL) {
        pthread_mutex_unlock(&mu);
        return -1;
    }
    bit = 1u << (w - watches);
    seq = head > WATCHQ_SLOTS && w->cursor < head - WATCHQ_SLOTS
              ? head - WATCHQ_SLOTS
              : w->cursor;
    for (; seq < head; seq++)
        if (mask[seq % WATCHQ_SLOTS] & bit)
            fn(arg, lines[seq % WATCHQ_SLOTS], len[seq % WATCHQ_SLOTS]);
    w->cursor = head;
    w->read_at = now;
    out->dropped = w->dropped;
    out->ended = w->ended;
    out->done = w->ended >= w->count || now >= w->until;
    if (out->done)
        w->id = 0;
    update_on(now);
    pthread_mutex_unlock(&mu);
    return 0;
}

uint64_t
watchq_queued(void)
{
    return atomic_load_explicit(&queued, memory_order_relaxed);
}

void
watchq_shutdown(void)
{
    pthread_mutex_lock(&mu);
    free(lines);
    lines = NULL;
    memset(watches, 0, sizeof(watches));
    atomic_store(&watchq_on, 0);
    pthread_mutex_unlock(&mu);
}
