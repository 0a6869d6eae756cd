/* Unit tests for the apply step (proxy/dataplane/apply.c, wthread.c):
 * proxy_apply() moving worker 0 and the worker threads to a new table,
 * with real listening sockets on 127.0.0.1.
 *
 * What a worker listens on is read from the kernel (/proc/net/tcp: the
 * listening sockets on a port and their inodes), so the tests see worker
 * threads' sockets without touching their private state; where a
 * connection goes is seen by accepting it on the test's own backend
 * sockets. Ports are found by binding port 0 and reading the port back. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "failalloc.h"
#include "proxy.h"
#include "stats.h"
#include "svc.h"
#include "worker.h"

#define NBE        4    /* backend sockets of a fixture */
#define MAXFE      8    /* frontends of one service */
#define DEADLINE_S 5.0  /* waiting for threads or a connection */
#define NDUMMY     1024 /* descriptors held to fill the limit */

enum { REFUSED = -1, TIMEOUT = -2, CLOSED = -3 };

struct fixture {
    struct ev_loop *loop;
    struct proxy *p;
    unsigned nworkers;
    int be[NBE];
    uint16_t be_port[NBE];
    uint64_t gen;
    /* The descriptor tests lower the limit; teardown puts it back. */
    struct rlimit saved_nofile;
    int dummy[NDUMMY];
    size_t ndummy;
};

/* One service of a test table: frontends by port (0 ends the list),
 * backends by fixture index (-1 ends), and the fields a test changes to
 * make a service differ. */
struct spec {
    const char *name;
    uint16_t fe[MAXFE];
    int be[NBE + 1];
    uint32_t idle_ms;
    uint32_t affinity_ms;
};

/* ---- sockets ------------------------------------------------------------ */

static struct saddr
loopback(uint16_t port)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip("127.0.0.1", port, &a, &why), 0);
    return a;
}

/* A listening socket on 127.0.0.1:<port> (0: any), non-blocking; its
 * port in *out. */
static int
listen_on(uint16_t port, uint16_t *out)
{
    struct saddr a = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
    assert_int_equal(listen(fd, 64), 0);
    a.len = sizeof(a.u);
    assert_int_equal(getsockname(fd, &a.u.sa, &a.len), 0);
    if (out != NULL)
        *out = saddr_port(&a);
    return fd;
}

/* A port no one listens on now, never one handed out before in this run
 * (the kernel may hand the same ephemeral port out again). */
static uint16_t
free_port(void)
{
    static uint16_t given[256];
    static size_t ngiven;
    uint16_t port;
    size_t i;

    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct saddr a = loopback(0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
        a.len = sizeof(a.u);
        assert_int_equal(getsockname(fd, &a.u.sa, &a.len), 0);
        close(fd);
        port = saddr_port(&a);
        for (i = 0; i < ngiven && given[i] != port; i++)
            ;
        if (i == ngiven)
            break;
    }
    assert_true(ngiven < sizeof(given) / sizeof(given[0]));
    given[ngiven++] = port;
    return port;
}

/* The listening sockets on 127.0.0.1:<port> in this network namespace:
 * their count, and their inodes in <ino> (up to <max>). */
static size_t
listening(uint16_t port, unsigned long *ino, size_t max)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    size_t n = 0;

    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f)); /* header */
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned laddr, lport, st;
        unsigned long inode;
        if (sscanf(line,
                   " %*d: %x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*u %*d %lu",
                   &laddr, &lport, &st, &inode)
            != 4)
            continue;
        /* 0x0100007F: 127.0.0.1 as the kernel prints it; 0x0A: LISTEN. */
        if (laddr != 0x0100007Fu || lport != port || st != 0x0A)
            continue;
        if (n < max)
            ino[n] = inode;
        n++;
    }
    fclose(f);
    return n;
}

static size_t
nlisten(uint16_t port)
{
    return listening(port, NULL, 0);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One turn of the control loop, then a millisecond's rest so that a wait
 * on the threads does not spin a core the threads need. */
static void
turn(struct fixture *fx)
{
    struct timespec ms = {0, 1000000};

    ev_run(fx->loop, EVRUN_NOWAIT);
    nanosleep(&ms, NULL);
}

/* Connect to frontend <port> and return the index of the backend the
 * connection reaches, REFUSED when no one listens, or TIMEOUT; with
 * <see_close>, CLOSED when ferry closes the client first (else a closed
 * client waits out the deadline like one nobody serves). */
static int
reach(struct fixture *fx, uint16_t port, int see_close)
{
    struct saddr a = loopback(port);
    double end = now_s() + DEADLINE_S;
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), i, fd;

    assert_true(c >= 0);
    /* Loopback connects complete in the kernel's backlog: blocking is
     * fine, and ECONNREFUSED says nobody listens. */
    if (connect(c, &a.u.sa, a.len) < 0) {
        assert_int_equal(errno, ECONNREFUSED);
        close(c);
        return REFUSED;
    }
    while (now_s() < end) {
        struct pollfd pf = {c, POLLIN, 0};
        char b;

        turn(fx);
        for (i = 0; i < NBE; i++) {
            fd = accept4(fx->be[i], NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                close(fd);
                close(c);
                return i;
            }
        }
        if (see_close && poll(&pf, 1, 0) == 1
            && recv(c, &b, 1, MSG_DONTWAIT) <= 0) {
            close(c);
            return CLOSED;
        }
    }
    close(c);
    return TIMEOUT;
}

static int
route(struct fixture *fx, uint16_t port)
{
    return reach(fx, port, 0);
}

/* ---- tables ------------------------------------------------------------- */

static struct table *
build(struct fixture *fx, const struct spec *sp, size_t n)
{
    struct table *t = table_new();
    struct err e;
    size_t i, j;

    assert_non_null(t);
    for (i = 0; i < n; i++) {
        struct saddr fe[MAXFE];
        struct tbl_backend be[NBE];
        char names[NBE][16];
        struct tbl_service ts;
        memset(&ts, 0, sizeof(ts));
        ts.name = sp[i].name;
        for (j = 0; j < MAXFE && sp[i].fe[j] != 0; j++)
            fe[j] = loopback(sp[i].fe[j]);
        ts.frontends = fe;
        ts.nfrontends = j;
        memset(be, 0, sizeof(be));
        for (j = 0; j < NBE && sp[i].be[j] >= 0; j++) {
            be[j].addr = loopback(fx->be_port[sp[i].be[j]]);
            snprintf(names[j], sizeof(names[j]), "be%d", sp[i].be[j]);
            be[j].name = names[j];
            be[j].weight = 1;
            be[j].flags = TBL_BE_READY | TBL_BE_SERVING;
        }
        ts.backends = be;
        ts.nbackends = j;
        ts.balance = TBL_BAL_ROUNDROBIN;
        ts.connect_timeout_ms = 2000;
        ts.idle_timeout_ms = sp[i].idle_ms ? sp[i].idle_ms : 30000;
        ts.affinity_timeout_ms = sp[i].affinity_ms;
        err_clear(&e);
        assert_int_equal(table_add_service(t, &ts, &e), 0);
    }
    table_freeze(t, ++fx->gen);
    return t;
}

/* Apply a new table of <n> services; the proxy keeps its own reference.
 * Returns what proxy_apply() returned. */
static int
apply(struct fixture *fx, const struct spec *sp, size_t n,
      enum proxy_apply_mode mode, struct err *e)
{
    struct table *t = build(fx, sp, n);
    int rc;

    err_clear(e);
    rc = proxy_apply(fx->p, t, mode, e);
    table_unref(t);
    return rc;
}

static void
apply_ok(struct fixture *fx, const struct spec *sp, size_t n)
{
    struct err e;

    if (apply(fx, sp, n, PROXY_APPLY_STRICT, &e) != 0)
        fail_msg("apply: %s", e.msg);
}

/* Run the control loop until every worker serves generation <gen>. */
static void
wait_generation(struct fixture *fx, uint64_t gen)
{
    double end = now_s() + DEADLINE_S;
    unsigned k;

    for (;;) {
        for (k = 0; k < fx->nworkers; k++)
            if (worker_generation(proxy_worker(fx->p, k)) != gen)
                break;
        if (k == fx->nworkers)
            return;
        assert_true(now_s() < end);
        turn(fx);
    }
}

static int
svc_index(struct fixture *fx, const char *name)
{
    size_t i;

    for (i = 0; i < proxy_nsvcs(fx->p); i++)
        if (strcmp(svc_name(proxy_svc(fx->p, i)), name) == 0)
            return (int)i;
    return -1;
}

static struct svc *
svc_named(struct fixture *fx, const char *name)
{
    int i = svc_index(fx, name);

    assert_true(i >= 0);
    return proxy_svc(fx->p, (size_t)i);
}

/* ---- fixture ------------------------------------------------------------ */

static int
setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    unsigned n = *state != NULL ? *(unsigned *)*state : 1;
    struct err e;
    int i;

    assert_non_null(fx);
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(fx->loop);
    fx->p = proxy_new(fx->loop);
    assert_non_null(fx->p);
    err_clear(&e);
    assert_int_equal(proxy_start_workers(fx->p, n, &e), (int)n);
    fx->nworkers = n;
    for (i = 0; i < NBE; i++)
        fx->be[i] = listen_on(0, &fx->be_port[i]);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &fx->saved_nofile), 0);
    *state = fx;
    return 0;
}

static void
release_dummies(struct fixture *fx)
{
    while (fx->ndummy > 0)
        close(fx->dummy[--fx->ndummy]);
}

static int
teardown(void **state)
{
    struct fixture *fx = *state;
    int i;

    release_dummies(fx);
    setrlimit(RLIMIT_NOFILE, &fx->saved_nofile);
    proxy_free(fx->p);
    for (i = 0; i < NBE; i++)
        close(fx->be[i]);
    ev_loop_destroy(fx->loop);
    free(fx);
    return 0;
}

/* Lower the soft descriptor limit to <limit>. */
static void
limit_fds(struct fixture *fx, rlim_t limit)
{
    struct rlimit rl = fx->saved_nofile;

    assert_true(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= limit);
    rl.rlim_cur = limit;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

/* Hold every descriptor the limit allows but <spare>. */
static void
fill_fds(struct fixture *fx, size_t spare)
{
    int fd;

    while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0) {
        assert_true(fx->ndummy < NDUMMY);
        fx->dummy[fx->ndummy++] = fd;
    }
    assert_int_equal(errno, EMFILE);
    assert_true(fx->ndummy >= spare);
    while (spare-- > 0)
        close(fx->dummy[--fx->ndummy]);
}

/* ---- tests -------------------------------------------------------------- */

/* Services added and removed: new frontends listen, removed ones close,
 * every worker reaches the new generation and listens on each address. */
static void
test_add_and_remove(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port(), f3 = free_port();
    struct spec t1[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f2}, {1, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"c", {f3}, {2, -1}, 0, 0},
    };

    apply_ok(fx, t1, 2);
    wait_generation(fx, 1);
    assert_int_equal(proxy_table(fx->p)->generation, 1);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(nlisten(f2), fx->nworkers);
    assert_int_equal(nlisten(f3), 0);
    assert_int_equal(route(fx, f1), 0);
    assert_int_equal(route(fx, f2), 1);

    apply_ok(fx, t2, 2);
    wait_generation(fx, 2);
    assert_int_equal(proxy_nsvcs(fx->p), 2);
    assert_int_equal(svc_index(fx, "b"), -1);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(nlisten(f2), 0);
    assert_int_equal(nlisten(f3), fx->nworkers);
    assert_int_equal(route(fx, f2), REFUSED);
    assert_int_equal(route(fx, f3), 2);
    assert_int_equal(route(fx, f1), 0);

    /* An empty table closes everything. */
    apply_ok(fx, NULL, 0);
    wait_generation(fx, 3);
    assert_int_equal(nlisten(f1), 0);
    assert_int_equal(nlisten(f3), 0);
}

/* A frontend moving from service a to service b keeps its sockets (the
 * same inodes on every worker) and serves b from then on. */
static void
test_move_between_services(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port(), f3 = free_port();
    struct spec t1[] = {
        {"a", {f1, f2}, {0, -1}, 0, 0},
        {"b", {f3}, {1, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f3, f2}, {1, -1}, 0, 0},
    };
    unsigned long before[8], after[8];
    size_t n, i, j;

    apply_ok(fx, t1, 2);
    wait_generation(fx, 1);
    assert_int_equal(route(fx, f2), 0);
    n = listening(f2, before, 8);
    assert_int_equal(n, fx->nworkers);

    apply_ok(fx, t2, 2);
    wait_generation(fx, 2);
    assert_int_equal(listening(f2, after, 8), n);
    for (i = 0; i < n; i++) {
        for (j = 0; j < n && after[j] != before[i]; j++)
            ;
        assert_true(j < n); /* the same socket, not a new one */
    }
    /* Whichever worker accepts, f2 now leads to b. */
    for (i = 0; i < 4 * fx->nworkers; i++)
        assert_int_equal(route(fx, f2), 1);
    assert_int_equal(route(fx, f1), 0);
    assert_int_equal(route(fx, f3), 1);
}

/* Tables on the same addresses, whose services change (a Kubernetes
 * endpoint change): every worker points its listeners at the new
 * services without opening or closing any (apply.c's repoint()); a
 * table that adds an address takes the full path, and the next one on
 * the same addresses repoints again. */
static void
test_same_addresses_repoint(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port(), f3 = free_port();
    struct spec t1[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f2}, {1, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {2, -1}, 0, 0},
        {"b", {f2}, {1, -1}, 0, 0},
    };
    struct spec t3[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f2}, {2, -1}, 0, 0},
        {"c", {f3}, {1, -1}, 0, 0},
    };
    struct spec t4[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f2}, {2, -1}, 0, 0},
        {"c", {f3}, {0, -1}, 0, 0},
    };
    unsigned long before[8], after[8];
    size_t n, i, j, k;

    apply_ok(fx, t1, 2);
    wait_generation(fx, 1);
    n = listening(f1, before, 8);
    assert_int_equal(n, fx->nworkers);
    apply_ok(fx, t2, 2);
    wait_generation(fx, 2);
    for (k = 0; k < 2 * fx->nworkers; k++) {
        assert_int_equal(route(fx, f1), 2);
        assert_int_equal(route(fx, f2), 1);
    }
    assert_int_equal(listening(f1, after, 8), n);
    for (i = 0; i < n; i++) {
        for (j = 0; j < n && after[j] != before[i]; j++)
            ;
        assert_true(j < n); /* the same sockets */
    }
    apply_ok(fx, t3, 3);
    wait_generation(fx, 3);
    apply_ok(fx, t4, 3);
    wait_generation(fx, 4);
    for (k = 0; k < 2 * fx->nworkers; k++) {
        assert_int_equal(route(fx, f1), 0);
        assert_int_equal(route(fx, f2), 2);
        assert_int_equal(route(fx, f3), 0);
    }
}

/* A service whose definition is unchanged keeps its svc, and with it its
 * round-robin position; a changed one gets a new svc (starting over). */
static void
test_kept_service_keeps_its_svc(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port();
    struct spec t1[] = {
        {"a", {f1}, {0, 1, 2, -1}, 0, 0},
        {"b", {f2}, {0, 1, 2, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {0, 1, 2, -1}, 0, 0},
        {"b", {f2}, {0, 1, 2, -1}, 5000, 0}, /* idle timeout changed */
    };
    struct svc *a, *b;

    apply_ok(fx, t1, 2);
    wait_generation(fx, 1);
    a = svc_named(fx, "a");
    b = svc_named(fx, "b");
    assert_int_equal(route(fx, f1), 0);
    assert_int_equal(route(fx, f2), 0);

    apply_ok(fx, t2, 2);
    wait_generation(fx, 2);
    assert_ptr_equal(svc_named(fx, "a"), a);
    assert_ptr_not_equal(svc_named(fx, "b"), b);
    /* a carries on where it was (the order is shared by the workers);
     * b starts its order again. */
    assert_int_equal(route(fx, f1), 1);
    assert_int_equal(route(fx, f1), 2);
    assert_int_equal(route(fx, f2), 0);
}

/* A frontend that cannot be bound: a strict apply fails as a whole and
 * nothing changes (the old listeners still serve the old services, the
 * new address opened before the failure is closed again); without
 * strict the address is skipped and the rest applied. */
static void
test_unbindable_frontend(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port(), f3;
    int taken = listen_on(0, &f3); /* someone else listens on f3 */
    struct spec t1[] = {
        {"a", {f1}, {0, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {1, -1}, 0, 0}, /* now to backend 1 */
        {"c", {f2}, {2, -1}, 0, 0}, /* opens fine, before the failure */
        {"d", {f3}, {3, -1}, 0, 0},
    };
    struct svc *a;
    struct err e;
    unsigned k;

    apply_ok(fx, t1, 1);
    wait_generation(fx, 1);
    a = svc_named(fx, "a");

    assert_int_equal(apply(fx, t2, 3, PROXY_APPLY_STRICT, &e), -1);
    assert_non_null(strstr(e.msg, "cannot listen"));
    assert_int_equal(proxy_table(fx->p)->generation, 1);
    assert_int_equal(proxy_nsvcs(fx->p), 1);
    assert_ptr_equal(svc_named(fx, "a"), a);
    for (k = 0; k < fx->nworkers; k++)
        assert_int_equal(worker_generation(proxy_worker(fx->p, k)), 1);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(nlisten(f2), 0);
    assert_int_equal(nlisten(f3), 1);
    assert_int_equal(route(fx, f1), 0);

    assert_int_equal(apply(fx, t2, 3, PROXY_APPLY_SKIP_FAILING, &e), 0);
    wait_generation(fx, 3);
    assert_int_equal(proxy_nsvcs(fx->p), 3);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(nlisten(f2), fx->nworkers);
    assert_int_equal(nlisten(f3), 1); /* still only the other one */
    assert_int_equal(route(fx, f1), 1);
    assert_int_equal(route(fx, f2), 2);
    close(taken);
}

/* Worker 0 opens the new addresses but a worker thread cannot (out of
 * descriptors): a strict apply unwinds everything opened for every
 * worker; without strict, the thread listens on what it could open. */
static void
test_thread_cannot_open(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port(), f3 = free_port();
    struct spec t1[] = {
        {"a", {f1}, {0, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"a", {f1}, {0, -1}, 0, 0},
        {"b", {f2, f3}, {1, -1}, 0, 0},
    };
    struct err e;

    apply_ok(fx, t1, 1);
    wait_generation(fx, 1);
    limit_fds(fx, 256);
    /* Four: worker 0 needs three at most (its two sockets, and while it
     * opens the second, a probe that no one else holds the address), and
     * it leaves two for thread 1 and none for thread 2. */
    fill_fds(fx, 4);
    assert_int_equal(apply(fx, t2, 2, PROXY_APPLY_STRICT, &e), -1);
    assert_non_null(strstr(e.msg, "cannot listen"));
    assert_int_equal(nlisten(f2), 0);
    assert_int_equal(nlisten(f3), 0);
    assert_int_equal(proxy_table(fx->p)->generation, 1);

    /* Everything was closed again: the same four suffice once more. */
    assert_int_equal(apply(fx, t2, 2, PROXY_APPLY_SKIP_FAILING, &e), 0);
    wait_generation(fx, 3);
    release_dummies(fx);
    assert_int_equal(nlisten(f2), 2);
    assert_int_equal(nlisten(f3), 2);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(route(fx, f2), 1);
    assert_int_equal(route(fx, f3), 1);
}

/* Past a quarter of the descriptor limit in thread listening sockets, the
 * threads listen on nothing and worker 0 serves every address; below it
 * again, every worker listens. */
static void
test_threads_off_past_quarter_of_fd_limit(void **state)
{
    struct fixture *fx = *state;
    struct spec many[6], few[2];
    uint16_t port[6];
    size_t i;

    for (i = 0; i < 6; i++) {
        static const char *names[] = {"s0", "s1", "s2", "s3", "s4", "s5"};
        port[i] = free_port();
        memset(&many[i], 0, sizeof(many[i]));
        many[i].name = names[i];
        many[i].fe[0] = port[i];
        many[i].be[0] = (int)(i % NBE);
        many[i].be[1] = -1;
    }
    memcpy(few, many, sizeof(few));
    /* A quarter of 40 is 10: 6 addresses on 2 threads are 12. */
    limit_fds(fx, 40);
    apply_ok(fx, many, 6);
    wait_generation(fx, 1);
    for (i = 0; i < 6; i++)
        assert_int_equal(nlisten(port[i]), 1);
    assert_int_equal(route(fx, port[5]), 1);

    apply_ok(fx, few, 2); /* 4: the threads listen again */
    wait_generation(fx, 2);
    for (i = 0; i < 6; i++)
        assert_int_equal(nlisten(port[i]), i < 2 ? 3 : 0);

    apply_ok(fx, many, 6);
    wait_generation(fx, 3);
    for (i = 0; i < 6; i++)
        assert_int_equal(nlisten(port[i]), 1);
    for (i = 0; i < 6; i++)
        assert_int_equal(route(fx, port[i]), (int)(i % NBE));
}

/* ClientIP affinity state belongs to worker 0: such a service listens
 * there alone, the others on every worker. */
static void
test_affinity_served_by_worker_0(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port();
    struct spec t1[] = {
        {"sticky", {f1}, {0, -1}, 0, 10000},
        {"plain", {f2}, {1, -1}, 0, 0},
    };
    struct spec t2[] = {
        {"sticky", {f1}, {0, -1}, 0, 0}, /* affinity off: threads join */
        {"plain", {f2}, {1, -1}, 0, 10000},
    };

    apply_ok(fx, t1, 2);
    wait_generation(fx, 1);
    assert_int_equal(nlisten(f1), 1);
    assert_int_equal(nlisten(f2), fx->nworkers);
    assert_int_equal(route(fx, f1), 0);

    apply_ok(fx, t2, 2);
    wait_generation(fx, 2);
    assert_int_equal(nlisten(f1), fx->nworkers);
    assert_int_equal(nlisten(f2), 1);
    assert_int_equal(route(fx, f2), 1);
}

/* Tables applied faster than the threads take them: a thread may skip to
 * the newest (taking over the sockets opened for the ones it skipped),
 * and ends up listening on exactly what the newest says. */
static void
test_tables_in_quick_succession(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port();
    int round;

    for (round = 0; round < 5; round++) {
        uint16_t f2 = free_port(), f3 = free_port();
        struct spec t1[] = {{"a", {f1}, {0, -1}, 0, 0}};
        struct spec t2[] = {{"a", {f1}, {0, -1}, 0, 0},
                            {"b", {f2}, {1, -1}, 0, 0}};
        struct spec t3[] = {{"a", {f1}, {0, -1}, 0, 0},
                            {"b", {f2}, {1, -1}, 0, 0},
                            {"c", {f3}, {2, -1}, 0, 0}};
        struct spec t4[] = {{"a", {f1}, {0, -1}, 0, 0},
                            {"c", {f3}, {2, -1}, 0, 0}};
        apply_ok(fx, t1, 1);
        apply_ok(fx, t2, 2);
        apply_ok(fx, t3, 3);
        apply_ok(fx, t4, 2);
        wait_generation(fx, fx->gen);
        assert_int_equal(nlisten(f1), fx->nworkers);
        assert_int_equal(nlisten(f2), 0);
        assert_int_equal(nlisten(f3), fx->nworkers);
        assert_int_equal(route(fx, f3), 2);
    }
}

/* An address removed and added again before the worker threads took the
 * removal: the threads' old sockets still listen there, and they are
 * ferry's own, so worker 0 opens it again (strict or not) instead of
 * taking them for someone else's. */
static void
test_readd_before_threads_commit(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port();
    struct spec both[] = {{"a", {f1}, {0, -1}, 0, 0},
                          {"b", {f2}, {1, -1}, 0, 0}};
    struct spec one_less[] = {{"a", {f1}, {0, -1}, 0, 0}};
    struct err e;
    int round;

    apply_ok(fx, both, 2);
    for (round = 0; round < 20; round++) {
        enum proxy_apply_mode mode =
            round % 2 ? PROXY_APPLY_SKIP_FAILING : PROXY_APPLY_STRICT;
        wait_generation(fx, fx->gen);
        apply_ok(fx, one_less, 1);
        if (apply(fx, both, 2, mode, &e) != 0)
            fail_msg("round %d: %s", round, e.msg);
        wait_generation(fx, fx->gen);
        assert_int_equal(nlisten(f2), fx->nworkers);
    }
    assert_int_equal(route(fx, f2), 1);
}

static void
test_no_table_while_draining(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port();
    struct spec t1[] = {{"a", {f1}, {0, -1}, 0, 0}};
    struct err e;

    apply_ok(fx, t1, 1);
    wait_generation(fx, 1);
    proxy_drain(fx->p, 10.0);
    assert_int_equal(apply(fx, t1, 1, PROXY_APPLY_STRICT, &e), -1);
    assert_non_null(strstr(e.msg, "draining"));
    assert_int_equal(proxy_table(fx->p)->generation, 1);
}

/* Each allocation of an apply refused in turn (failalloc.h): the apply
 * fails, saying why, and the table before stays in force and served as
 * it was (no frontend of the new table listens); or, where only an
 * allocation it can do without was refused, the new table is served
 * whole. One worker; failalloc_at() counts its thread too, and a refusal
 * there is taken again (the next test). */
static void
test_out_of_memory_keeps_the_table(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port();
    struct spec t1[] = {{"a", {f1}, {0, -1}, 0, 0}};
    struct spec t2[] = {
        {"a", {f1}, {1, -1}, 0, 0},
        {"b", {f2}, {2, -1}, 0, 0},
    };
    uint64_t in_force;
    long k, refused = 0;

    apply_ok(fx, t1, 1);
    in_force = fx->gen;
    wait_generation(fx, in_force);
    for (k = 0; k < 5000; k++) {
        struct table *t = build(fx, t2, 2);
        struct err e;
        int rc;

        err_clear(&e);
        failalloc_at(k);
        rc = proxy_apply(fx->p, t, PROXY_APPLY_STRICT, &e);
        failalloc_at(-1);
        table_unref(t);
        if (rc == 0) {
            wait_generation(fx, fx->gen);
            assert_int_equal(route(fx, f1), 1);
            assert_int_equal(route(fx, f2), 2);
            if (!failalloc_failed())
                break;
            apply_ok(fx, t1, 1); /* t1 again for the next step */
            in_force = fx->gen;
            wait_generation(fx, in_force);
            continue;
        }
        refused++;
        assert_true(failalloc_failed());
        if (e.msg[0] == '\0')
            fail_msg("step %ld: refused without a reason", k);
        assert_int_equal(proxy_table(fx->p)->generation, in_force);
        assert_int_equal(worker_generation(proxy_worker(fx->p, 0)), in_force);
        assert_int_equal(route(fx, f1), 0);
        assert_int_equal(route(fx, f2), REFUSED);
    }
    assert_true(refused > 0);
    assert_true(k < 5000);
}

/* Each allocation of the worker thread's commit refused in turn: the
 * apply is done on the control loop's side, the worker keeps its
 * listeners, and takes the table again half a second later; the new
 * table is then served whole. */
static void
test_worker_out_of_memory_tries_again(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port(), f2 = free_port();
    struct spec t1[] = {{"a", {f1}, {0, -1}, 0, 0}};
    struct spec t2[] = {
        {"a", {f1}, {1, -1}, 0, 0},
        {"b", {f2}, {2, -1}, 0, 0},
    };
    long k, refused = 0;
    uint64_t retried = 0;

    apply_ok(fx, t1, 1);
    wait_generation(fx, fx->gen);
    for (k = 0; k < 5000; k++) {
        struct table *t = build(fx, t2, 2);
        struct err e;
        uint64_t counted;
        int failed;

        err_clear(&e);
        counted = stats_get(&stats_proc.nomem_workers);
        failalloc_at_others(k);
        assert_int_equal(proxy_apply(fx->p, t, PROXY_APPLY_STRICT, &e), 0);
        table_unref(t);
        wait_generation(fx, fx->gen);
        failed = failalloc_failed();
        failalloc_at(-1);
        /* ferry_out_of_memory_total{part="workers"}: a refusal the
         * commit does without counts nothing. */
        counted = stats_get(&stats_proc.nomem_workers) - counted;
        assert_true(counted <= (uint64_t)failed);
        retried += counted;
        assert_int_equal(route(fx, f1), 1);
        assert_int_equal(route(fx, f2), 2);
        if (!failed)
            break;
        refused++;
        apply_ok(fx, t1, 1);
        wait_generation(fx, fx->gen);
    }
    assert_true(refused > 0 && retried > 0);
    assert_true(k < 5000);
}

/* Each allocation a worker makes for a first connection (its pools are
 * empty) refused in turn, in a proxy made anew each time: that
 * connection is closed, or it goes through; the next one goes through,
 * and the worker goes on serving. */
static void
test_data_path_out_of_memory(void **state)
{
    struct fixture *fx = *state;
    uint16_t f1 = free_port();
    struct spec t1[] = {{"a", {f1}, {0, -1}, 0, 0}};
    long k, refused = 0;

    for (k = 0; k < 2000; k++) {
        struct err e;
        int r, failed;

        if (k > 0) { /* a proxy with empty pools */
            proxy_free(fx->p);
            fx->p = proxy_new(fx->loop);
            assert_non_null(fx->p);
            err_clear(&e);
            assert_int_equal(proxy_start_workers(fx->p, 1, &e), 1);
        }
        apply_ok(fx, t1, 1);
        wait_generation(fx, fx->gen);
        failalloc_at_others(k);
        r = reach(fx, f1, 1);
        failed = failalloc_failed();
        failalloc_at(-1);
        if (!(r == 0 || (failed && r == CLOSED)))
            fail_msg("step %ld: connection %d", k, r);
        assert_int_equal(route(fx, f1), 0);
        assert_int_equal(route(fx, f1), 0);
        if (!failed)
            break;
        refused++;
    }
    assert_true(refused > 0);
    assert_true(k < 2000);
}

static unsigned one = 1, three = 3;

#define BOTH(fn)                                                               \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &one),       \
        cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &three)
#define THREADS(fn)                                                            \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &three)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_add_and_remove),
        BOTH(test_move_between_services),
        BOTH(test_kept_service_keeps_its_svc),
        BOTH(test_same_addresses_repoint),
        BOTH(test_unbindable_frontend),
        THREADS(test_thread_cannot_open),
        THREADS(test_threads_off_past_quarter_of_fd_limit),
        THREADS(test_affinity_served_by_worker_0),
        THREADS(test_tables_in_quick_succession),
        THREADS(test_readd_before_threads_commit),
        BOTH(test_no_table_while_draining),
        cmocka_unit_test_prestate_setup_teardown(
            test_out_of_memory_keeps_the_table, setup, teardown, &one),
        cmocka_unit_test_prestate_setup_teardown(
            test_worker_out_of_memory_tries_again, setup, teardown, &one),
        cmocka_unit_test_prestate_setup_teardown(
            test_data_path_out_of_memory, setup, teardown, &one),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
