/* Unit tests for the one-request HTTP server (proxy/http/httpd.c), driven
 * over loopback on a private libev loop. */
#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
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
    fd2 = dial(loop, &a); /* over the cap: closed at once */
    assert_int_equal(drain(loop, fd2, buf, sizeof(buf)), 0);
    assert_int_equal(drain(loop, fd1, buf, sizeof(buf)), 0); /* timeout */
    assert_int_equal(s.calls, 0);
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
        cmocka_unit_test(test_listen_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
