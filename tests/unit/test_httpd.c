/* Unit tests for the one-request HTTP server (proxy/http/httpd.c), driven
 * over loopback on a private libev loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "httpd.h"
#include "httpreq.h"
#include "sbuf.h"

struct seen {
    int calls;
    unsigned tag;
    char path[HTTPREQ_PATH_MAX];
    size_t body_len; /* the handler's body size */
};

static void
handler(void *arg, unsigned tag, const struct httpreq *r, double now,
        struct sbuf *out)
{
    static char big[8192];
    struct seen *s = arg;

    (void)now;
    s->calls++;
    s->tag = tag;
    snprintf(s->path, sizeof(s->path), "%s", r->path);
    memset(big, 'x', sizeof(big));
    if (s->body_len > 0)
        httpd_reply(out, 200, "text/plain", "", big, s->body_len, 0);
    else
        httpd_reply_text(out, 200, "hello\n", r->method == HTTPREQ_HEAD);
}

/* A loopback address with a port that was free a moment ago. */
static struct saddr
free_addr(void)
{
    struct saddr a;
    socklen_t len = sizeof(a.u.in);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.u.in.sin_family = AF_INET;
    a.u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.len = sizeof(a.u.in);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, &a.u.sa, a.len), 0);
    assert_int_equal(getsockname(fd, &a.u.sa, &len), 0);
    close(fd);
    return a;
}

static int
dial(struct ev_loop *loop, const struct saddr *a)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(connect(fd, &a->u.sa, a->len), 0);
    ev_run(loop, EVRUN_NOWAIT); /* accept */
    return fd;
}

/* Run the loop until the server closes <fd>; returns the bytes read. */
static size_t
drain(struct ev_loop *loop, int fd, char *buf, size_t len)
{
    size_t got = 0;
    ssize_t n;
    int i;

    for (i = 0; i < 2000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        n = recv(fd, buf + got, len - 1 - got, MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n > 0)
            got += (size_t)n;
        else
            usleep(1000);
    }
    buf[got] = '\0';
    close(fd);
    return got;
}

static size_t
exchange(struct ev_loop *loop, const struct saddr *a, const char *req,
         char *buf, size_t len)
{
    int fd = dial(loop, a);

    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    return drain(loop, fd, buf, len);
}

static void
test_reply_format(void **state)
{
    struct sbuf b;

    (void)state;
    sbuf_init(&b, 4096);
    httpd_reply(&b, 405, "text/plain", "Allow: GET\r\n", "no\n", 3, 0);
    sbuf_add(&b, "", 1);
    assert_string_equal(b.p, "HTTP/1.1 405 Method Not Allowed\r\n"
                             "Content-Type: text/plain\r\n"
                             "X-Content-Type-Options: nosniff\r\n"
                             "Content-Length: 3\r\n"
                             "Cache-Control: no-store\r\n"
                             "Connection: close\r\n"
                             "Allow: GET\r\n\r\nno\n");
    b.len = 0;
    httpd_reply_text(&b, 503, "down\n", 1);
    sbuf_add(&b, "", 1);
    assert_non_null(strstr(b.p, "Content-Length: 5\r\n"));
    assert_null(strstr(b.p, "down"));
    sbuf_deinit(&b);
}

static void
test_serve_and_errors(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 8);
    struct saddr a = free_addr();
    struct seen s = {0};
    struct err e;
    char buf[16384];

    (void)state;
    assert_non_null(httpd_listen(h, &a, handler, &s, 7, &e));
    exchange(loop, &a, "GET /x HTTP/1.1\r\n\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nhello\n"));
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.tag, 7);
    assert_string_equal(s.path, "/x");
    exchange(loop, &a, "GET x HTTP/1.1\r\n\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nbad request: "));
    s.body_len = 5000; /* over the 4096-byte cap */
    exchange(loop, &a, "GET /big HTTP/1.1\r\n\r\n", buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 500 "));
    assert_non_null(strstr(buf, "reply too large\n"));
    assert_int_equal(s.calls, 2); /* not for the 400 */
    httpd_free(h);
    ev_loop_destroy(loop);
}

static void
test_oversized_request(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 8);
    struct saddr a = free_addr();
    struct seen s = {0};
    static char req[HTTPREQ_MAX + 64], buf[4096];
    struct err e;

    (void)state;
    assert_non_null(httpd_listen(h, &a, handler, &s, 0, &e));
    memset(req, 'a', sizeof(req) - 1);
    memcpy(req, "GET /", 5);
    exchange(loop, &a, req, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 400 "));
    assert_non_null(strstr(buf, "bad request: request too large\n"));
    assert_int_equal(s.calls, 0);
    httpd_free(h);
    ev_loop_destroy(loop);
}

/* A connection keeps its handler when its listener goes away. */
static void
test_unlisten_while_open(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 8);
    struct saddr a = free_addr();
    struct httpd_listener *l;
    struct seen s = {0};
    struct err e;
    char buf[4096];
    int fd;

    (void)state;
    l = httpd_listen(h, &a, handler, &s, 3, &e);
    assert_non_null(l);
    fd = dial(loop, &a);
    httpd_unlisten(h, l);
    assert_int_equal(send(fd, "GET /late HTTP/1.1\r\n\r\n", 22, 0), 22);
    drain(loop, fd, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_int_equal(s.tag, 3);
    assert_string_equal(s.path, "/late");
    httpd_free(h);
    ev_loop_destroy(loop);
}

/* At the cap, an idle connection gives way to the new one; alone past
 * the timeout, a connection is closed. */
static void
test_cap_and_timeout(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 1);
    struct saddr a = free_addr();
    struct seen s = {0};
    struct err e;
    char buf[4096];
    int fd1, fd2;

    (void)state;
    httpd_set_timeout(h, 0.05);
    assert_non_null(httpd_listen(h, &a, handler, &s, 0, &e));
    fd1 = dial(loop, &a);
    fd2 = dial(loop, &a); /* over the cap: the idle fd1 gives way */
    assert_int_equal(drain(loop, fd1, buf, sizeof(buf)), 0);
    assert_int_equal(drain(loop, fd2, buf, sizeof(buf)), 0); /* timeout */
    assert_int_equal(s.calls, 0);
    httpd_free(h);
    ev_loop_destroy(loop);
}

/* A client socket bound to source address <src> (127.0.0.x), connected
 * to <a>. */
static int
dial_from(struct ev_loop *loop, const struct saddr *a, const char *src)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, src, &sin.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(connect(fd, &a->u.sa, a->len), 0);
    ev_run(loop, EVRUN_NOWAIT);
    return fd;
}

/* Nonzero once the server has closed <fd> (without a reply). */
static int
closed_by_server(struct ev_loop *loop, int fd)
{
    char c;
    ssize_t n;
    int i;

    for (i = 0; i < 200; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        n = recv(fd, &c, 1, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            return 1;
        usleep(1000);
    }
    return 0;
}

/* Idle connections from one address cannot lock a request out, and
 * cannot push out another address's connection. */
static void
test_idle_flood_gives_way(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 8); /* 2 per source */
    struct saddr a = free_addr();
    struct seen s = {0};
    struct err e;
    char buf[4096];
    int idle[40], other, probe, i;

    (void)state;
    assert_non_null(httpd_listen(h, &a, handler, &s, 0, &e));
    other = dial_from(loop, &a, "127.0.0.2");
    assert_int_equal(send(other, "GET /slow HTTP/1.1\r\n", 20, 0), 20);
    for (i = 0; i < 40; i++)
        idle[i] = dial_from(loop, &a, "127.0.0.1");
    /* The oldest idle ones of 127.0.0.1 were closed; the two newest stay. */
    assert_true(closed_by_server(loop, idle[0]));
    assert_true(closed_by_server(loop, idle[37]));
    assert_false(closed_by_server(loop, idle[39]));
    /* A probe from the flooding address itself is answered. */
    probe = dial_from(loop, &a, "127.0.0.1");
    assert_int_equal(send(probe, "GET /healthz HTTP/1.1\r\n\r\n", 26, 0), 26);
    drain(loop, probe, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_string_equal(s.path, "/healthz");
    /* 127.0.0.2's request, started before the flood, completes. */
    assert_int_equal(send(other, "\r\n", 2, 0), 2);
    drain(loop, other, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_string_equal(s.path, "/slow");
    for (i = 0; i < 40; i++)
        close(idle[i]);
    httpd_free(h);
    ev_loop_destroy(loop);
}

static void
big_handler(void *arg, unsigned tag, const struct httpreq *r, double now,
            struct sbuf *out)
{
    static char chunk[65536];
    size_t *total = arg;
    int i;

    (void)tag;
    (void)r;
    (void)now;
    memset(chunk, 'y', sizeof(chunk));
    httpd_reply(out, 200, "text/plain", "", chunk, 0, 1); /* headers */
    for (i = 0; i < 256; i++) /* 16 MiB: more than the socket buffers */
        sbuf_add(out, chunk, sizeof(chunk));
    *total = out->len;
}

/* A connection still writing its reply never gives way: at the cap, the
 * new connection is the one closed. */
static void
test_writer_kept_at_cap(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 32u << 20, 1);
    struct saddr a = free_addr();
    static char buf[1 << 16];
    size_t total = 0, got = 0;
    struct err e;
    int rcv = 4096, fd1, fd2, i;
    ssize_t n;

    (void)state;
    assert_non_null(httpd_listen(h, &a, big_handler, &total, 0, &e));
    fd1 = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd1 >= 0);
    setsockopt(fd1, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    assert_int_equal(connect(fd1, &a.u.sa, a.len), 0);
    assert_int_equal(send(fd1, "GET /big HTTP/1.1\r\n\r\n", 21, 0), 21);
    for (i = 0; i < 50 && total == 0; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    assert_true(total > (16u << 20));
    fd2 = dial(loop, &a);
    assert_true(closed_by_server(loop, fd2));
    close(fd2);
    /* The first one reads its whole reply. */
    for (i = 0; i < 20000; i++) {
        ev_run(loop, EVRUN_NOWAIT);
        n = recv(fd1, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n > 0)
            got += (size_t)n;
        else
            usleep(100);
    }
    close(fd1);
    assert_int_equal(got, total);
    httpd_free(h);
    ev_loop_destroy(loop);
}

static int pauses;

static void
count_pause(void)
{
    pauses++;
}

/* Out of descriptors, the listener pauses (the loop sleeps instead of
 * waking for the same pending connection) and serves once one is free. */
static void
test_emfile_pauses(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 8);
    struct saddr a = free_addr();
    struct seen s = {0};
    struct rlimit old, low;
    struct err e;
    char buf[4096];
    int fd, spare[64], nspare = 0, i, runs, pauses_seen;
    ev_tstamp t0;

    (void)state;
    httpd_set_on_pause(h, count_pause);
    assert_non_null(httpd_listen(h, &a, handler, &s, 0, &e));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    /* Every descriptor up to a low limit in use. */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)fd + 8;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    while (nspare < 64 && (spare[nspare] = dup(0)) >= 0)
        nspare++;
    assert_true(nspare < 64);
    assert_int_equal(connect(fd, &a.u.sa, a.len), 0);
    assert_int_equal(send(fd, "GET /late HTTP/1.1\r\n\r\n", 22, 0), 22);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(pauses, 1);
    /* Paused: the loop sleeps until the resume timer instead of waking
     * for the pending connection again and again. */
    ev_now_update(loop);
    t0 = ev_now(loop);
    for (runs = 0; runs < 1000 && ev_now(loop) - t0 < 0.08; runs++) {
        ev_run(loop, EVRUN_ONCE);
        ev_now_update(loop);
    }
    pauses_seen = pauses;
    for (i = 0; i < nspare; i++)
        close(spare[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_true(runs < 20);
    assert_true(pauses_seen <= 2);
    drain(loop, fd, buf, sizeof(buf));
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_string_equal(s.path, "/late");
    httpd_free(h);
    ev_loop_destroy(loop);
}

static void
test_listen_error(void **state)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct httpd *h = httpd_new(loop, "test", 4096, 1);
    struct saddr a = free_addr();
    struct seen s = {0};
    struct err e;

    (void)state;
    assert_non_null(httpd_listen(h, &a, handler, &s, 0, &e));
    err_clear(&e);
    assert_null(httpd_listen(h, &a, handler, &s, 0, &e));
    assert_non_null(strstr(e.msg, "cannot listen on 127.0.0.1:"));
    httpd_free(h);
    httpd_free(NULL);
    ev_loop_destroy(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_format),
        cmocka_unit_test(test_serve_and_errors),
        cmocka_unit_test(test_oversized_request),
        cmocka_unit_test(test_unlisten_while_open),
        cmocka_unit_test(test_cap_and_timeout),
        cmocka_unit_test(test_idle_flood_gives_way),
        cmocka_unit_test(test_writer_kept_at_cap),
        cmocka_unit_test(test_emfile_pauses),
        cmocka_unit_test(test_listen_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
