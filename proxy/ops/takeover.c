#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "takeover.h"

#define HELLO          "FERRY-TAKEOVER 1"
#define HELLO_WAIT_S   10.0 /* a client that connected says hello at once */
#define APPLY_WAIT_S   60.0 /* the new process opening what it needs */
#define CLIENT_WAIT_S  10   /* the new process waiting for an answer */
#define SEND_WAIT_S    2

enum state {
    IDLE = 0,   /* no exchange */
    WAIT_HELLO, /* connected, nothing said yet */
    WAIT_DRAIN, /* sockets sent; the new process is starting */
    RELEASED,   /* done: the new process serves */
};

struct takeover {
    struct ev_loop *loop;
    struct proxy *p;
    takeover_release_fn *fn;
    void *arg;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    ino_t ino; /* of the socket file we made */
    dev_t dev;
    struct ev_io lio; /* the listening socket */
    struct ev_io cio; /* the exchange in progress */
    struct ev_timer timer;
    enum state state;
};

struct takeover_client {
    int fd;
};

/* ---- messages ------------------------------------------------------------ */

static int
send_msg(int fd, const char *text, int pass_fd)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {(void *)text, strlen(text)};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

    if (pass_fd >= 0) {
        struct cmsghdr *c;
        memset(cbuf, 0, sizeof(cbuf));
        m.msg_control = cbuf;
        m.msg_controllen = sizeof(cbuf);
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    return sendmsg(fd, &m, MSG_NOSIGNAL) == (ssize_t)iov.iov_len ? 0 : -1;
}

/* One message into <buf> (terminated) and the descriptors it carried:
 * the first into *fd (-1 if none), any more closed (counted in *extra).
 * Returns its length, 0 at the end, -1 with errno. */
static ssize_t
recv_msg(int fd, char *buf, size_t size, int *pfd, int *extra, int flags)
{
    char cbuf[CMSG_SPACE(4 * sizeof(int))];
    struct iovec iov = {buf, size - 1};
    struct msghdr m = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = cbuf,
                       .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *c;
    ssize_t n;

    *pfd = -1;
    *extra = 0;
    n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC | flags);
    if (n < 0)
        return -1;
    for (c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
        size_t k, nfd;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (k = 0; k < nfd; k++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
            if (*pfd < 0) {
                *pfd = got;
            } else {
                close(got);
                (*extra)++;
            }
        }
    }
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        if (*pfd >= 0)
            close(*pfd);
        *pfd = -1;
        errno = EMSGSIZE;
        return -1;
    }
    buf[n] = '\0';
    return n;
}

/* ---- the running process's side ------------------------------------------ */

static void
end_exchange(struct takeover *t, const char *why)
{
    if (why != NULL)
        log_warn("takeover: %s; this process keeps serving", why);
    ev_io_stop(t->loop, &t->cio);
    ev_timer_stop(t->loop, &t->timer);
    if (t->cio.fd >= 0)
        close(t->cio.fd);
    ev_io_set(&t->cio, -1, EV_READ);
    if (t->state != RELEASED)
        t->state = IDLE;
}

/* Remove the socket file if it is still the one we made. */
static void
unlink_ours(struct takeover *t)
{
    struct stat st;

    if (t->path[0] != '\0' && stat(t->path, &st) == 0 && st.st_ino == t->ino
        && st.st_dev == t->dev)
        unlink(t->path);
    t->path[0] = '\0';
}

static void
stop_listening(struct takeover *t)
{
    if (ev_is_active(&t->lio))
        ev_io_stop(t->loop, &t->lio);
    if (t->lio.fd >= 0)
        close(t->lio.fd);
    ev_io_set(&t->lio, -1, EV_READ);
    unlink_ours(t);
}

static void
send_sockets(struct takeover *t)
{
    struct proxy_sock *v;
    char msg[TAKEOVER_MSG_MAX], a[SADDR_STR_MAX];
    struct timeval tv = {SEND_WAIT_S, 0};
    size_t n, i;
    struct err e;
    int fd = t->cio.fd, fl, failed = 0;

    err_clear(&e);
    if (proxy_export(t->p, &v, &n, &e) < 0) {
        end_exchange(t, e.msg);
        return;
    }
    /* A few hundred small messages: blocking, bounded by a timeout. */
    fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    for (i = 0; i < n && !failed; i++) {
        snprintf(msg, sizeof(msg), "SOCK %u %s", v[i].worker,
                 saddr_str(&v[i].addr, a, sizeof(a)));
        failed = send_msg(fd, msg, v[i].fd) < 0;
    }
    snprintf(msg, sizeof(msg), "END %zu", n);
    failed = failed || send_msg(fd, msg, -1) < 0;
    fcntl(fd, F_SETFL, fl);
    /* The new process has its own descriptors for them now. */
    for (i = 0; i < n; i++)
        close(v[i].fd);
    free(v);
    if (failed) {
        char why[128];
        snprintf(why, sizeof(why), "sending the sockets: %s",
                 strerror(errno));
        end_exchange(t, why);
        return;
    }
    log_info("takeover: handed %zu listening socket(s) to the new process; "
             "waiting for it to start",
             n);
    t->state = WAIT_DRAIN;
    ev_timer_stop(t->loop, &t->timer);
    ev_timer_set(&t->timer, APPLY_WAIT_S, 0.);
    ev_timer_start(t->loop, &t->timer);
}

static void
release(struct takeover *t)
{
    int fd = t->cio.fd;

    log_info("takeover: the new process serves; releasing and draining");
    t->state = RELEASED;
    ev_io_stop(t->loop, &t->cio);
    ev_timer_stop(t->loop, &t->timer);
    /* Before the answer: the new process binds the same path next. */
    stop_listening(t);
    t->fn(t->arg);
    if (send_msg(fd, "RELEASED", -1) < 0)
        log_warn("takeover: answering the new process: %s",
                 strerror(errno));
    end_exchange(t, NULL);
}

static void
on_conn(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct takeover *t = io->data;
    char msg[TAKEOVER_MSG_MAX + 1];
    int fd, extra;
    ssize_t n;

    (void)loop;
    (void)rev;
    n = recv_msg(io->fd, msg, sizeof(msg), &fd, &extra, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (fd >= 0)
        close(fd); /* nothing is expected from that side */
    if (n <= 0) {
        end_exchange(t, n == 0 ? "the new process went away"
                               : "reading from the new process failed");
        return;
    }
    if (t->state == WAIT_HELLO && strcmp(msg, HELLO) == 0) {
        send_sockets(t);
        return;
    }
    if (t->state == WAIT_DRAIN && strcmp(msg, "DRAIN") == 0) {
        release(t);
        return;
    }
    end_exchange(t, "unexpected message from the process taking over");
}

static void
on_timer(struct ev_loop *loop, struct ev_timer *tm, int rev)
{
    struct takeover *t = tm->data;

    (void)loop;
    (void)rev;
    end_exchange(t, t->state == WAIT_HELLO
                        ? "a client connected and said nothing"
                        : "the new process did not finish starting");
}

static void
on_accept(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct takeover *t = io->data;
    int fd;

    (void)rev;
    fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (t->state != IDLE) {
        log_warn("takeover: a second process asked while one is taking "
                 "over; refused");
        close(fd);
        return;
    }
    t->state = WAIT_HELLO;
    ev_io_set(&t->cio, fd, EV_READ);
    ev_io_start(loop, &t->cio);
    ev_timer_set(&t->timer, HELLO_WAIT_S, 0.);
    ev_timer_start(loop, &t->timer);
}

static int
unix_addr(const char *path, struct sockaddr_un *sun, struct err *e)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (path[0] == '\0' || strlen(path) >= sizeof(sun->sun_path))
        return err_set(e, "takeover socket path \"%s\": empty or longer "
                          "than %zu bytes",
                       path, sizeof(sun->sun_path) - 1);
    memcpy(sun->sun_path, path, strlen(path));
    return 0;
}

struct takeover *
takeover_listen(struct ev_loop *loop, const char *path, struct proxy *p,
                takeover_release_fn *fn, void *arg, struct err *e)
{
    struct sockaddr_un sun;
    struct takeover *t;
    struct stat st;
    mode_t old;
    int fd, probe;

    if (unix_addr(path, &sun, e) < 0)
        return NULL;
    /* A socket file someone answers on belongs to a running ferry. */
    probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
        close(probe);
        err_set(e, "takeover socket %s: a running ferry listens there "
                   "(start this one with --takeover to replace it)",
                path);
        return NULL;
    }
    if (probe >= 0)
        close(probe);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            err_set(e, "takeover socket %s: exists and is not a socket",
                    path);
            return NULL;
        }
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set(e, "takeover socket: %s", strerror(errno));
        return NULL;
    }
    old = umask(0077);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0
        || listen(fd, 4) < 0 || stat(path, &st) < 0) {
        umask(old);
        err_set(e, "takeover socket %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    umask(old);
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        close(fd);
        unlink(path);
        err_set(e, "out of memory");
        return NULL;
    }
    t->loop = loop;
    t->p = p;
    t->fn = fn;
    t->arg = arg;
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->ino = st.st_ino;
    t->dev = st.st_dev;
    ev_io_init(&t->lio, on_accept, fd, EV_READ);
    t->lio.data = t;
    ev_io_init(&t->cio, on_conn, -1, EV_READ);
    t->cio.data = t;
    ev_init(&t->timer, on_timer);
    t->timer.data = t;
    ev_io_start(loop, &t->lio);
    log_info("takeover: a new ferry started with --takeover takes over "
             "through %s",
             path);
    return t;
}

void
takeover_free(struct takeover *t)
{
    if (t == NULL)
        return;
    end_exchange(t, NULL);
    stop_listening(t);
    free(t);
}

/* ---- the new process's side ---------------------------------------------- */

static void
close_all(struct proxy_sock *v, size_t n)
{
    while (n > 0)
        close(v[--n].fd);
    free(v);
}

struct takeover_client *
takeover_fetch(const char *path, struct proxy_sock **out, size_t *nout,
               int *absent, struct err *e)
{
    struct timeval tv = {CLIENT_WAIT_S, 0};
    struct takeover_client *c;
    struct proxy_sock *v = NULL, *nv;
    struct sockaddr_un sun;
    char msg[TAKEOVER_MSG_MAX + 1];
    size_t n = 0, cap = 0;
    int fd;

    *absent = 0;
    *out = NULL;
    *nout = 0;
    if (unix_addr(path, &sun, e) < 0)
        return NULL;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set(e, "takeover: %s", strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        *absent = errno == ENOENT || errno == ECONNREFUSED;
        err_set(e, "takeover: no running ferry at %s: %s", path,
                strerror(errno));
        close(fd);
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (send_msg(fd, HELLO, -1) < 0) {
        err_set(e, "takeover: %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    for (;;) {
        const char *why = NULL;
        unsigned long want;
        int got, extra;
        ssize_t r = recv_msg(fd, msg, sizeof(msg), &got, &extra, 0);
        char *end;
        if (r <= 0) {
            err_set(e, "takeover: %s", r == 0 ? "the running ferry closed "
                                                "the exchange"
                                              : strerror(errno));
            goto fail;
        }
        if (strncmp(msg, "END ", 4) == 0) {
            if (got >= 0)
                close(got);
            errno = 0;
            want = strtoul(msg + 4, &end, 10);
            if (errno != 0 || *end != '\0' || end == msg + 4 || want != n) {
                err_set(e, "takeover: \"%s\" after %zu socket(s)", msg, n);
                goto fail;
            }
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
                if (got >= 0)
                    close(got);
                err_set(e, "out of memory");
                goto fail;
            }
            v = nv;
        }
        if (takeover_parse_sock(msg, (size_t)r, &v[n].worker, &v[n].addr,
                                &why)
                < 0
            || got < 0 || extra > 0) {
            if (got >= 0)
                close(got);
            err_set(e, "takeover: bad message from the running ferry: %s",
                    why != NULL ? why : "not exactly one descriptor");
            goto fail;
        }
        v[n++].fd = got;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        err_set(e, "out of memory");
        goto fail;
    }
    c->fd = fd;
    *out = v;
    *nout = n;
    return c;
fail:
    close_all(v, n);
    close(fd);
    return NULL;
}

int
takeover_release(struct takeover_client *c, struct err *e)
{
    char msg[TAKEOVER_MSG_MAX + 1];
    int got, extra, rc = 0;
    ssize_t r;

    if (send_msg(c->fd, "DRAIN", -1) < 0) {
        rc = err_set(e, "takeover: asking the old process to drain: %s",
                     strerror(errno));
        goto out;
    }
    r = recv_msg(c->fd, msg, sizeof(msg), &got, &extra, 0);
    if (got >= 0)
        close(got);
    if (r <= 0 || strcmp(msg, "RELEASED") != 0)
        rc = err_set(e, "takeover: the old process did not confirm it "
                        "released its addresses (%s)",
                     r < 0 ? strerror(errno) : r == 0 ? "closed" : msg);
out:
    close(c->fd);
    free(c);
    return rc;
}

void
takeover_abandon(struct takeover_client *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c);
}
