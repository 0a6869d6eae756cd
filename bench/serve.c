#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bnet.h"
#include "log.h"
#include "parse.h"
#include "serve.h"

#define SERVE_MAX_LISTEN  64
#define SERVE_HTTP_MAX    (16 * 1024)
#define SERVE_BUF_CAP     (64 * 1024)
#define SERVE_ACCEPT_MAX  64  /* accepts per callback, to stay fair */
#define SERVE_IO_ROUNDS   16  /* reads or writes per callback */
#define SERVE_FIXED_MAX   (64u * 1024 * 1024)

enum serve_mode {
    SERVE_HTTP = 0,
    SERVE_ECHO,
    SERVE_FIXED,
    SERVE_SINK,
    SERVE_SOURCE,
};

static const char *const mode_names[] = {
    [SERVE_HTTP] = "http", [SERVE_ECHO] = "echo",     [SERVE_FIXED] = "fixed",
    [SERVE_SINK] = "sink", [SERVE_SOURCE] = "source",
};

struct slisten {
    ev_io io;
    int fd;
    struct saddr addr;
    enum serve_mode mode;
    uint64_t size; /* fixed: bytes per answer */
    char resp[512]; /* http: the whole answer */
    size_t resp_len;
};

struct sconn {
    ev_io io;
    int fd; /* -1 while the slot is free */
    struct slisten *l;
    char *buf; /* SERVE_BUF_CAP, allocated on first need, kept */
    size_t len; /* http: request bytes; echo: bytes waiting to go out */
    const char *out; /* bytes to write: buf or the listener's answer */
    size_t out_len, out_off;
    uint64_t pending; /* pattern bytes still to send (fixed, source) */
    ev_tstamp last; /* last activity, for the idle sweep */
    int eof;
    struct sconn *next_free;
};

struct serve {
    struct ev_loop *loop;
    struct slisten ls[SERVE_MAX_LISTEN];
    size_t nls;
    struct sconn *conns;
    unsigned max_conns;
    struct sconn *free_list;
    double idle_timeout;
    ev_timer sweep, stop_timer, resume;
    ev_signal sigint, sigterm;
    uint64_t accepted, refused_full, bytes_in, bytes_out, idle_closed;
    char scratch[SERVE_BUF_CAP];
};

static void serve_conn_on_io(struct ev_loop *loop, ev_io *w, int revents);

static void
serve_conn_close(struct serve *s, struct sconn *c)
{
    ev_io_stop(s->loop, &c->io);
    close(c->fd);
    c->fd = -1;
    c->out = NULL;
    c->len = c->out_len = c->out_off = 0;
    c->pending = 0;
    c->eof = 0;
    c->next_free = s->free_list;
    s->free_list = c;
}

static int
serve_conn_buf(struct sconn *c)
{
    if (c->buf == NULL)
        c->buf = malloc(SERVE_BUF_CAP);
    return c->buf != NULL ? 0 : -ENOMEM;
}

static int
serve_has_output(const struct sconn *c)
{
    return c->out_off < c->out_len || c->pending > 0;
}

/* Write what is queued. Returns 0, or -1 when the connection failed. */
static int
serve_flush(struct serve *s, struct sconn *c)
{
    size_t plen;
    const char *pat = bnet_pattern(&plen);
    int round;

    for (round = 0; round < SERVE_IO_ROUNDS && serve_has_output(c); round++) {
        const char *p;
        size_t n;
        ssize_t w;

        if (c->out_off < c->out_len) {
            p = c->out + c->out_off;
            n = c->out_len - c->out_off;
        } else {
            p = pat;
            n = c->pending < plen ? (size_t)c->pending : plen;
        }
        w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -1;
        }
        s->bytes_out += (uint64_t)w;
        if (c->out_off < c->out_len) {
            c->out_off += (size_t)w;
            if (c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
        } else if (c->pending != UINT64_MAX) {
            c->pending -= (uint64_t)w;
        }
    }
    return 0;
}

/* http: gather the request head, then queue the answer. */
static int
serve_read_http(struct serve *s, struct sconn *c)
{
    ssize_t r;
    size_t from;

    if (serve_conn_buf(c) < 0)
        return -1;
    r = recv(c->fd, c->buf + c->len, SERVE_HTTP_MAX - c->len, 0);
    if (r < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (r == 0)
        return -1;
    s->bytes_in += (uint64_t)r;
    from = c->len > 3 ? c->len - 3 : 0;
    c->len += (size_t)r;
    if (memmem(c->buf + from, c->len - from, "\r\n\r\n", 4) != NULL) {
        c->out = c->l->resp;
        c->out_len = c->l->resp_len;
        c->out_off = 0;
        c->eof = 1; /* read no more; close once the answer is out */
        return 0;
    }
    return c->len < SERVE_HTTP_MAX ? 0 : -1;
}

/* echo, fixed, sink, source: read into the shared scratch buffer. */
static int
serve_read_data(struct serve *s, struct sconn *c)
{
    int round;

    /* A source always has output; it still reads, to drop what comes and
     * to see the peer close. The others wait for their output to drain. */
    for (round = 0; round < SERVE_IO_ROUNDS
                    && (c->l->mode == SERVE_SOURCE || !serve_has_output(c));
         round++) {
        ssize_t r = recv(c->fd, s->scratch, sizeof(s->scratch), 0);

        if (r < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        if (r == 0) {
            c->eof = 1;
            return 0;
        }
        s->bytes_in += (uint64_t)r;
        switch (c->l->mode) {
        case SERVE_ECHO: {
            ssize_t w = send(c->fd, s->scratch, (size_t)r, MSG_NOSIGNAL);

            if (w < 0 && errno != EAGAIN && errno != EINTR)
                return -1;
            if (w < 0)
                w = 0;
            s->bytes_out += (uint64_t)w;
            if (w < r) {
                /* The peer is slow: keep the rest and stop reading. */
                if (serve_conn_buf(c) < 0)
                    return -1;
                memcpy(c->buf, s->scratch + w, (size_t)(r - w));
                c->out = c->buf;
                c->out_len = (size_t)(r - w);
                c->out_off = 0;
            }
            break;
        }
        case SERVE_FIXED:
            c->pending += c->l->size;
            break;
        default:
            break; /* sink and source drop what they read */
        }
    }
    return 0;
}

static void
serve_conn_update(struct serve *s, struct sconn *c)
{
    int want = 0;

    if (!c->eof && !serve_has_output(c))
        want |= EV_READ;
    if (c->l->mode == SERVE_SOURCE && !c->eof)
        want |= EV_READ; /* to notice the peer closing */
    if (serve_has_output(c))
        want |= EV_WRITE;
    if (want == 0) {
        serve_conn_close(s, c); /* eof and nothing left to send */
        return;
    }
    if ((c->io.events & (EV_READ | EV_WRITE)) != want) {
        ev_io_stop(s->loop, &c->io);
        ev_io_set(&c->io, c->fd, want);
        ev_io_start(s->loop, &c->io);
    }
}

static void
serve_conn_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct serve *s = ev_userdata(loop);
    struct sconn *c = (struct sconn *)w;
    int rc = 0;

    c->last = ev_now(loop);
    if (revents & EV_READ) {
        if (c->l->mode == SERVE_HTTP)
            rc = serve_read_http(s, c);
        else
            rc = serve_read_data(s, c);
    }
    if (rc == 0 && c->l->mode == SERVE_SOURCE && c->eof)
        rc = -1; /* nobody left to feed */
    if (rc == 0)
        rc = serve_flush(s, c);
    if (rc < 0) {
        serve_conn_close(s, c);
        return;
    }
    serve_conn_update(s, c);
}

static void
serve_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct serve *s = ev_userdata(loop);
    struct slisten *l = (struct slisten *)w;
    int i;

    (void)revents;
    for (i = 0; i < SERVE_ACCEPT_MAX; i++) {
        struct sconn *c;
        int fd = bnet_accept(l->fd);

        if (fd == -EAGAIN || fd == -EINTR)
            return;
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS
            || fd == -ENOMEM) {
            /* Out of fds: pause every listener briefly, or we would spin. */
            log_rl(LOG_WARN, ev_now(loop), "serve: accept: %s",
                   strerror(-fd));
            for (size_t k = 0; k < s->nls; k++)
                ev_io_stop(loop, &s->ls[k].io);
            ev_timer_again(loop, &s->resume);
            return;
        }
        if (fd < 0)
            continue; /* ECONNABORTED and friends: the peer gave up */
        if (s->free_list == NULL) {
            s->refused_full++;
            close(fd);
            continue;
        }
        c = s->free_list;
        s->free_list = c->next_free;
        c->fd = fd;
        c->l = l;
        c->last = ev_now(loop);
        c->pending = l->mode == SERVE_SOURCE ? UINT64_MAX : 0;
        s->accepted++;
        ev_io_init(&c->io, serve_conn_on_io, fd,
                   l->mode == SERVE_SOURCE ? EV_READ | EV_WRITE : EV_READ);
        ev_io_start(loop, &c->io);
    }
}

static void
serve_on_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct serve *s = ev_userdata(loop);

    (void)revents;
    ev_timer_stop(loop, w);
    for (size_t k = 0; k < s->nls; k++)
        ev_io_start(loop, &s->ls[k].io);
}

static void
serve_on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct serve *s = ev_userdata(loop);
    ev_tstamp now = ev_now(loop);

    (void)w;
    (void)revents;
    for (unsigned i = 0; i < s->max_conns; i++) {
        struct sconn *c = &s->conns[i];

        if (c->fd >= 0 && now - c->last > s->idle_timeout) {
            s->idle_closed++;
            serve_conn_close(s, c);
        }
    }
}

static void
serve_on_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void
serve_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int
serve_mode_parse(const char *v, enum serve_mode *out)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
        if (strcmp(v, mode_names[i]) == 0) {
            *out = (enum serve_mode)i;
            return 0;
        }
    }
    return -1;
}

static void
serve_usage(FILE *f)
{
    fprintf(f,
            "usage: ferry-bench serve [--mode http|echo|fixed|sink|source]\n"
            "         [--name NAME] [--size N] --listen ADDR:PORT ...\n"
            "         [--max-seconds S] [--idle-timeout S] [--max-conns N]\n"
            "Each --listen takes the --mode, --name and --size given before\n"
            "it (or, if none was, the last ones given).\n");
}

struct serve_args {
    enum serve_mode mode;
    const char *name;
    uint64_t size;
    int mode_seen;
    int explicit_mode[SERVE_MAX_LISTEN];
    double max_seconds, idle_timeout;
    uint64_t max_conns;
};

static void
serve_listen_setup(struct slisten *l, const struct serve_args *a)
{
    size_t nl = strlen(a->name);

    l->mode = a->mode;
    l->size = a->size;
    l->resp_len = (size_t)snprintf(
        l->resp, sizeof(l->resp),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
        nl + 1, a->name);
}

static int
serve_parse(struct serve *s, struct serve_args *a, int argc, char **argv)
{
    static const struct option opts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"name", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},
        {"listen", required_argument, NULL, 'l'},
        {"max-seconds", required_argument, NULL, 't'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"max-conns", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *why = NULL;
    char *end;
    int o;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm':
            if (serve_mode_parse(optarg, &a->mode) < 0) {
                fprintf(stderr, "serve: unknown mode '%s'\n", optarg);
                return -1;
            }
            a->mode_seen = 1;
            break;
        case 'n':
            if (strlen(optarg) > 200) {
                fprintf(stderr, "serve: --name is too long\n");
                return -1;
            }
            a->name = optarg;
            break;
        case 's':
            if (parse_uint(optarg, 1, SERVE_FIXED_MAX, &a->size, &why) < 0) {
                fprintf(stderr, "serve: --size: %s\n", why);
                return -1;
            }
            break;
        case 'l':
            if (s->nls == SERVE_MAX_LISTEN) {
                fprintf(stderr, "serve: at most %d listeners\n",
                        SERVE_MAX_LISTEN);
                return -1;
            }
            if (parse_hostport(optarg, &s->ls[s->nls].addr, 1, &why) < 0) {
                fprintf(stderr, "serve: --listen %s: %s\n", optarg, why);
                return -1;
            }
            serve_listen_setup(&s->ls[s->nls], a);
            a->explicit_mode[s->nls] = a->mode_seen;
            s->nls++;
            break;
        case 't':
        case 'i': {
            double v;

            errno = 0;
            v = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || !(v >= 0) || v > 1e7) {
                fprintf(stderr, "serve: bad number of seconds '%s'\n",
                        optarg);
                return -1;
            }
            *(o == 't' ? &a->max_seconds : &a->idle_timeout) = v;
            break;
        }
        case 'c':
            if (parse_uint(optarg, 1, 1000000, &a->max_conns, &why) < 0) {
                fprintf(stderr, "serve: --max-conns: %s\n", why);
                return -1;
            }
            break;
        case 'h':
            serve_usage(stdout);
            exit(0);
        default:
            serve_usage(stderr);
            return -1;
        }
    }
    if (optind != argc || s->nls == 0) {
        serve_usage(stderr);
        return -1;
    }
    for (size_t i = 0; i < s->nls; i++) {
        if (!a->explicit_mode[i])
            serve_listen_setup(&s->ls[i], a);
    }
    return 0;
}

static int
serve_bind_all(struct serve *s)
{
    char as[SADDR_STR_MAX];

    for (size_t i = 0; i < s->nls; i++) {
        struct slisten *l = &s->ls[i];

        l->fd = bnet_listen(&l->addr, 4096);
        if (l->fd < 0) {
            fprintf(stderr, "serve: listen %s: %s\n",
                    saddr_str(&l->addr, as, sizeof(as)), strerror(-l->fd));
            return -1;
        }
        ev_io_init(&l->io, serve_on_accept, l->fd, EV_READ);
        ev_io_start(s->loop, &l->io);
        log_info("serve: %s on %s", mode_names[l->mode],
                 saddr_str(&l->addr, as, sizeof(as)));
    }
    return 0;
}

static void
serve_setup_timers(struct serve *s, const struct serve_args *a)
{
    ev_timer_init(&s->resume, serve_on_resume, 0., 0.1);
    if (a->idle_timeout > 0) {
        double every = a->idle_timeout / 4 < 1. ? a->idle_timeout / 4 : 1.;

        ev_timer_init(&s->sweep, serve_on_sweep, every, every);
        ev_timer_start(s->loop, &s->sweep);
    }
    if (a->max_seconds > 0) {
        ev_timer_init(&s->stop_timer, serve_on_stop, a->max_seconds, 0.);
        ev_timer_start(s->loop, &s->stop_timer);
    }
    ev_signal_init(&s->sigint, serve_on_signal, SIGINT);
    ev_signal_start(s->loop, &s->sigint);
    ev_signal_init(&s->sigterm, serve_on_signal, SIGTERM);
    ev_signal_start(s->loop, &s->sigterm);
}

int
serve_main(int argc, char **argv)
{
    struct serve_args a = {
        .mode = SERVE_ECHO,
        .name = "ferry-bench",
        .size = 64,
        .idle_timeout = 300,
        .max_conns = 16384,
    };
    struct serve *s;
    int rc = 0;

    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    if (serve_parse(s, &a, argc, argv) < 0) {
        free(s);
        return 2;
    }
    s->idle_timeout = a.idle_timeout;
    s->max_conns = (unsigned)a.max_conns;
    s->conns = calloc(s->max_conns, sizeof(*s->conns));
    s->loop = ev_default_loop(EVFLAG_AUTO);
    if (s->conns == NULL || s->loop == NULL) {
        fprintf(stderr, "serve: out of memory\n");
        free(s->conns);
        free(s);
        return 1;
    }
    for (unsigned i = s->max_conns; i-- > 0;) {
        s->conns[i].fd = -1;
        s->conns[i].next_free = s->free_list;
        s->free_list = &s->conns[i];
    }
    ev_set_userdata(s->loop, s);
    signal(SIGPIPE, SIG_IGN);
    if (serve_bind_all(s) < 0) {
        rc = 1;
    } else {
        serve_setup_timers(s, &a);
        printf("ready\n");
        fflush(stdout);
        ev_run(s->loop, 0);
        log_info("serve: stop: accepted %llu, turned away %llu, idle-closed "
                 "%llu, in %llu B, out %llu B",
                 (unsigned long long)s->accepted,
                 (unsigned long long)s->refused_full,
                 (unsigned long long)s->idle_closed,
                 (unsigned long long)s->bytes_in,
                 (unsigned long long)s->bytes_out);
    }
    for (unsigned i = 0; i < s->max_conns; i++) {
        if (s->conns[i].fd >= 0)
            close(s->conns[i].fd);
        free(s->conns[i].buf);
    }
    for (size_t i = 0; i < s->nls; i++) {
        if (s->ls[i].fd > 0)
            close(s->ls[i].fd);
    }
    ev_loop_destroy(s->loop);
    free(s->conns);
    free(s);
    return rc;
}
