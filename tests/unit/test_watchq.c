/*
 * test_watchq.c - the queue of watched connections ("ferry explain
 * --watch", proxy/dataplane/watchq.c) and each worker's memory of its
 * commits ("--trace", worker.h): nothing is queued while nobody watches,
 * a watch gets its service's records and ends at its count, time or
 * when nobody reads it, a full queue counts what it lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "parse.h"
#include "watchq.h"
#include "worker.h"

struct got {
    char last[ACCESSLOG_LINE_MAX];
    size_t n;
};

static void
collect(void *arg, const char *line, size_t len)
{
    struct got *g = arg;

    assert_true(len < sizeof(g->last));
    memcpy(g->last, line, len);
    g->last[len] = '\0';
    g->n++;
}

static struct saddr client;

static void
end(unsigned mask, uint64_t id, double at)
{
    struct accesslog_rec r;

    memset(&r, 0, sizeof(r));
    r.start = at;
    r.end = at + 0.001;
    r.connect = 0.0005;
    r.id = id;
    r.bytes_up = 5;
    r.bytes_down = 7;
    r.client = &client;
    r.service = "web";
    r.backend = "127.0.0.1:8080";
    r.attempts = 2;
    r.cause = ACCESSLOG_CLIENT_CLOSE;
    watchq_end(mask, &r);
}

static int
reset(void **state)
{
    (void)state;
    watchq_shutdown();
    assert_int_equal(parse_hostport("127.0.0.9:4000", &client, 0, NULL), 0);
    return 0;
}

static void
test_watch(void **state)
{
    struct watchq_read rd;
    struct got g = {{0}, 0};
    uint64_t before = watchq_queued(), id;
    unsigned m;

    (void)state;
    assert_int_equal(watchq_watching("web", 100), 0);
    id = watchq_start("web", 2, 10, 100);
    assert_true(id > 0);
    assert_int_equal(watchq_watching("db", 100.5), 0);
    m = watchq_watching("web", 100.5);
    assert_true(m != 0);
    watchq_attempt(m, 3, "127.0.0.1:9", 111);
    end(m, 3, 100.5);
    assert_int_equal(watchq_queued(), before + 2);
    assert_int_equal(watchq_read(id, 101, collect, &g, &rd), 0);
    assert_int_equal(g.n, 2);
    assert_string_equal(
        g.last, "{\"time\":\"1970-01-01T00:01:40.501Z\",\"id\":3,\"client\":"
                "\"127.0.0.9:4000\",\"service\":\"web\",\"backend\":"
                "\"127.0.0.1:8080\",\"attempts\":2,\"connect_ms\":0.500,"
                "\"duration_ms\":1.000,\"bytes_up\":5,\"bytes_down\":7,"
                "\"cause\":\"client_close\"}");
    assert_int_equal(rd.ended, 1);
    assert_int_equal(rd.done, 0);
    assert_int_equal(rd.dropped, 0);
    /* A connection accepted before the watch began is not its own. */
    end(m, 4, 99);
    end(m, 5, 101.5);
    /* The count reached: ended, and nothing queued from then on. */
    assert_int_equal(watchq_watching("web", 101.6), 0);
    end(m, 6, 101.7);
    g.n = 0;
    assert_int_equal(watchq_read(id, 102, collect, &g, &rd), 0);
    assert_int_equal(g.n, 1);
    assert_true(strstr(g.last, "\"id\":5,") != NULL);
    assert_int_equal(rd.done, 1);
    assert_int_equal(watchq_read(id, 102, collect, &g, &rd), -1);
    assert_int_equal(atomic_load(&watchq_on), 0);
}

static void
test_time_idle_and_cap(void **state)
{
    struct watchq_read rd;
    struct got g = {{0}, 0};
    uint64_t id[WATCHQ_WATCHES];
    size_t i;

    (void)state;
    assert_true(WATCHQ_IDLE_S == 10.); /* README: ferry explain */
    for (i = 0; i < WATCHQ_WATCHES; i++)
        assert_true((id[i] = watchq_start("web", 100, 5, 10)) > 0);
    assert_int_equal(watchq_start("web", 100, 5, 10), 0); /* all taken */
    assert_int_equal(watchq_watching("web", 11), (1u << WATCHQ_WATCHES) - 1);
    /* Time is up: done at the next read. */
    assert_int_equal(watchq_watching("web", 15), 0);
    assert_int_equal(watchq_read(id[0], 15, collect, &g, &rd), 0);
    assert_int_equal(rd.done, 1);
    /* Nobody read the others for WATCHQ_IDLE_S: their places are free. */
    assert_true(watchq_start("db", 100, 60, 10 + WATCHQ_IDLE_S) > 0);
    assert_true(watchq_start("db", 100, 60, 10 + WATCHQ_IDLE_S) > 0);
    assert_int_equal(watchq_watching("db", 10 + WATCHQ_IDLE_S), 3);
}

static void
test_full_counts_dropped(void **state)
{
    struct watchq_read rd;
    struct got g = {{0}, 0};
    uint64_t id = watchq_start("web", WATCHQ_COUNT_MAX, 60, 1);
    unsigned m = watchq_watching("web", 1);
    size_t i;

    (void)state;
    for (i = 0; i < WATCHQ_SLOTS + 5; i++)
        end(m, i + 1, 2);
    assert_int_equal(watchq_read(id, 3, collect, &g, &rd), 0);
    assert_int_equal(g.n, WATCHQ_SLOTS);
    assert_int_equal(rd.dropped, 5);
    assert_int_equal(rd.ended, WATCHQ_SLOTS + 5);
}

static void
test_worker_commits(void **state)
{
    static struct worker w;
    uint64_t got;
    double at;
    uint64_t g;

    (void)state;
    assert_int_equal(worker_commit_of(&w, 1, &got, &at), 0);
    worker_note_commit(&w, 5, 1000.25);
    worker_note_commit(&w, 8, 1001.5); /* 6 and 7 replaced in the mailbox */
    assert_int_equal(worker_commit_of(&w, 5, &got, &at), 1);
    assert_true(got == 5 && at == 1000.25);
    assert_int_equal(worker_commit_of(&w, 6, &got, &at), 1);
    assert_true(got == 8 && at == 1001.5);
    assert_int_equal(worker_commit_of(&w, 9, &got, &at), 0);
    for (g = 10; g < 10 + WORKER_COMMITS; g++)
        worker_note_commit(&w, g, (double)g);
    assert_int_equal(worker_commit_of(&w, 5, &got, &at), 1);
    assert_true(got == 10); /* 5 and 8 forgotten */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_watch, reset),
        cmocka_unit_test_setup(test_time_idle_and_cap, reset),
        cmocka_unit_test_setup(test_full_counts_dropped, reset),
        cmocka_unit_test(test_worker_commits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
