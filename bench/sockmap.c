/*
 * sockmap.c - ferry-sockmap: ferry-floor's relay with the bytes moved by
 * the kernel (issue 18: go below the epoll floor). User space accepts and
 * connects as the floor does; then both sockets go into a BPF sockhash
 * whose stream verdict program (sockmap.bpf.c) sends whatever one socket
 * receives out of the other. No byte comes to user space.
 *
 *   ferry-sockmap LISTEN_ADDR:PORT BACKEND_ADDR:PORT
 *
 * Same command line and semantics as ferry-floor (floor.c), the same
 * omissions, and one more requirement: loading the program needs root, or
 * CAP_BPF with CAP_NET_ADMIN. The program is read from sockmap.bpf.o
 * beside the binary (built with clang's BPF target; no kernel BTF needed).
 *
 * What the kernel does and what is left to user space:
 *  - bytes: the verdict program runs in the receiving socket's softirq and
 *    queues each skb on the peer's psock; a kernel worker sends it from
 *    there. A full send buffer holds the skb, which stays charged to the
 *    receiving socket, so its window closes: back-pressure without user
 *    space;
 *  - bytes that came before the map held both sockets: every socket starts
 *    with SO_RCVLOWAT at its maximum (set once on the listener, inherited
 *    by accepted sockets, and on each backend socket), so the kernel does
 *    not call the receive hook; once both are in the map, SO_RCVLOWAT 1
 *    makes it run over what waits;
 *  - a FIN is not a byte: the program never sees it, the socket's own
 *    receive path does, and epoll reports it (EPOLLRDHUP) to user space.
 *    The bytes before it may still sit in the peer's psock queue, and a
 *    shutdown() now would drop them; so the FIN is passed on once the
 *    peer's TCP has taken as many bytes as the socket received (TCP_INFO:
 *    bytes_received against bytes_sent - bytes_retrans + notsent_bytes),
 *    checked every millisecond while it has not. The second FIN closes
 *    both sockets, once the same holds;
 *  - a socket that got its FIN before the backend connected (a request
 *    and its FIN sent at once) is in CLOSE_WAIT, and the kernel keeps such
 *    sockets out of a sockmap (EOPNOTSUPP): that connection is relayed in
 *    user space, as the floor does;
 *  - errors (EPOLLERR, a refused backend) close both sockets.
 */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <limits.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raddr.h"

#define SM_MAXEVENTS 256
#define SM_FIN_POLL_MS 1
#define SM_BUF_SIZE (32 * 1024) /* user space relay only, as the floor */

struct conn;

struct sock {
    struct conn *c; /* NULL for the listener */
    int i;          /* 0 client, 1 backend */
};

struct conn {
    struct sock s[2];
    int fd[2];
    uint8_t connected;
    uint8_t eof[2];  /* the FIN arrived on fd[i] */
    uint8_t shut[2]; /* and was passed on to fd[!i] */
    uint8_t waiting; /* on the list of FINs waiting for their bytes */
    uint8_t user;    /* relayed in user space (splice_start() says when) */
    uint8_t read0[2]; /* user space: recv() on fd[i] returned 0 */
    uint8_t dead;
    struct conn *next;  /* free list and dead list */
    struct conn *wnext; /* FINs waiting */
    struct pend {
        char *buf; /* user space only: what fd[!i] did not take */
        uint32_t off, len;
    } p[2];
};

static struct {
    int ep;
    int lsn;
    int map;
    struct sockaddr_storage be_addr;
    socklen_t be_len;
    struct conn *free_conns;
    struct conn *dead;
    struct conn *waiting;
    int accept_blocked;
    char scratch[SM_BUF_SIZE];
} sm;

static const int rcvlowat_max = INT_MAX; /* the kernel caps it */

static void
conn_close(struct conn *c)
{
    close(c->fd[0]);
    if (c->fd[1] >= 0)
        close(c->fd[1]);
    free(c->p[0].buf);
    free(c->p[1].buf);
    c->dead = 1;
    c->next = sm.dead;
    sm.dead = c;
}

static int
tcp_info_of(int fd, struct tcp_info *ti)
{
    socklen_t len = sizeof(*ti);

    memset(ti, 0, sizeof(*ti));
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len);
}

/* Once fd[i] has its FIN: 1 when fd[!i]'s TCP holds every byte fd[i]
 * received, 0 when some are still on their way through the psock queue,
 * -1 on error. */
static int
drained(const struct conn *c, int i)
{
    struct tcp_info src, dst;

    if (tcp_info_of(c->fd[i], &src) < 0 || tcp_info_of(c->fd[!i], &dst) < 0)
        return -1;
    /* The FIN took a sequence number: bytes_received counts it. */
    return dst.tcpi_bytes_sent - dst.tcpi_bytes_retrans + dst.tcpi_notsent_bytes
           >= src.tcpi_bytes_received - 1;
}

/* Pass on the FINs that came, each once its bytes are through. Returns 1
 * when some FIN must wait, 0 otherwise (<c> may be closed). */
static int
fin_pass(struct conn *c)
{
    int i, rc, wait = 0;

    for (i = 0; i < 2; i++) {
        if (!c->eof[i] || c->shut[i])
            continue;
        rc = drained(c, i);
        if (rc < 0) {
            conn_close(c);
            return 0;
        }
        if (rc == 0) {
            wait = 1;
            continue;
        }
        /* The second FIN goes out with the close() that follows. */
        if (!c->shut[!i] && shutdown(c->fd[!i], SHUT_WR) < 0) {
            conn_close(c);
            return 0;
        }
        c->shut[i] = 1;
    }
    if (c->shut[0] && c->shut[1])
        conn_close(c);
    return wait;
}

static void
fin_wait(struct conn *c)
{
    if (c->waiting)
        return;
    c->waiting = 1;
    c->wnext = sm.waiting;
    sm.waiting = c;
}

/* Every millisecond while FINs wait: try them again. */
static void
fin_poll(void)
{
    struct conn *c, *list = sm.waiting;

    sm.waiting = NULL;
    while ((c = list) != NULL) {
        list = c->wnext;
        c->waiting = 0;
        if (!c->dead && fin_pass(c))
            fin_wait(c);
    }
}

static uint64_t
cookie_of(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);

    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
        return 0;
    return cookie;
}

/* Both sockets exist: hand the bytes to the kernel. Each socket goes into
 * the map under its peer's cookie; then the receive hook is let run. A
 * socket that already has its FIN (CLOSE_WAIT) is refused by the map
 * (EOPNOTSUPP): that connection is relayed in user space. The backend's
 * socket goes in first: until the client's is in too, a FIN on the
 * client's (which runs the hook whatever SO_RCVLOWAT says) would find no
 * peer and its bytes would be dropped; the backend speaks when asked.
 * Returns 0, or -1 on error. */
static int
splice_start(struct conn *c)
{
    uint64_t key[2] = {cookie_of(c->fd[0]), cookie_of(c->fd[1])};
    uint32_t val;
    int i, one = 1;

    for (i = 0; i < 2 && !c->user; i++) {
        val = (uint32_t)c->fd[!i];
        if (key[i] == 0)
            return -1;
        if (bpf_map_update_elem(sm.map, &key[i], &val, BPF_ANY) == 0)
            continue;
        if (errno != EOPNOTSUPP)
            return -1;
        if (i == 1)
            bpf_map_delete_elem(sm.map, &key[0]);
        c->user = 1;
    }
    for (i = 0; i < 2; i++)
        if (setsockopt(c->fd[i], SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) < 0)
            return -1;
    return 0;
}

/* User space relay of fd[i] to fd[!i], as the floor's, for connections
 * the map refused. Returns 0, or -1 on error. */
static int
pump(struct conn *c, int i)
{
    struct pend *p = &c->p[i];
    ssize_t n, m;

    for (;;) {
        if (p->len > 0) {
            n = send(c->fd[!i], p->buf + p->off, p->len, MSG_NOSIGNAL);
            if (n < 0)
                return errno == EAGAIN ? 0 : -1;
            p->off += (uint32_t)n;
            p->len -= (uint32_t)n;
            if (p->len > 0)
                return 0; /* the next EPOLLOUT edge resumes */
        }
        if (c->read0[i])
            return 0;
        n = recv(c->fd[i], sm.scratch, SM_BUF_SIZE, 0);
        if (n <= 0) {
            c->read0[i] |= n == 0;
            return n == 0 || errno == EAGAIN ? 0 : -1;
        }
        m = send(c->fd[!i], sm.scratch, (size_t)n, MSG_NOSIGNAL);
        if (m < 0 && errno != EAGAIN)
            return -1;
        m = m < 0 ? 0 : m;
        if (m < n) {
            if (p->buf == NULL && (p->buf = malloc(SM_BUF_SIZE)) == NULL)
                return -1;
            p->off = 0;
            p->len = (uint32_t)(n - m);
            memcpy(p->buf, sm.scratch + m, p->len);
        }
    }
}

static void
conn_on_event(struct sock *s, uint32_t ev)
{
    struct conn *c = s->c;

    if (c->dead)
        return;
    if (ev & EPOLLERR) {
        conn_close(c);
        return;
    }
    if (s->i == 1 && !c->connected && (ev & EPOLLOUT)) {
        c->connected = 1;
        if (splice_start(c) < 0) {
            conn_close(c);
            return;
        }
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        c->eof[s->i] = 1;
    if (c->user && (pump(c, 0) < 0 || pump(c, 1) < 0)) {
        conn_close(c);
        return;
    }
    if (c->connected && fin_pass(c))
        fin_wait(c);
}

static int
watch(int fd, void *ptr)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.ptr = ptr,
    };

    return epoll_ctl(sm.ep, EPOLL_CTL_ADD, fd, &ev);
}

static void
conn_start(int cfd)
{
    struct conn *c = sm.free_conns;
    int one = 1, fd;

    if (c != NULL)
        sm.free_conns = c->next;
    else if ((c = malloc(sizeof(*c))) == NULL) {
        close(cfd);
        return;
    }
    memset(c, 0, sizeof(*c));
    c->s[0].c = c->s[1].c = c;
    c->s[1].i = 1;
    c->fd[0] = cfd;
    c->fd[1] = -1;
    fd = socket(sm.be_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        sm.accept_blocked = errno == EMFILE || errno == ENFILE;
        conn_close(c);
        return;
    }
    c->fd[1] = fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &rcvlowat_max,
                   sizeof(rcvlowat_max)) < 0
        || (connect(fd, (struct sockaddr *)&sm.be_addr, sm.be_len) < 0
            && errno != EINPROGRESS)
        || watch(c->fd[0], &c->s[0]) < 0 || watch(fd, &c->s[1]) < 0)
        conn_close(c);
}

static void
accept_all(void)
{
    if (raddr_accept_all(sm.lsn, conn_start))
        sm.accept_blocked = 1;
}

static void
reap(void)
{
    struct conn *c;

    while ((c = sm.dead) != NULL) {
        if (c->waiting)
            break; /* fin_poll() drops it from its list first */
        sm.dead = c->next;
        c->next = sm.free_conns;
        sm.free_conns = c;
        if (sm.accept_blocked) {
            sm.accept_blocked = 0;
            accept_all();
        }
    }
}

static void
run(void)
{
    static struct sock lsn_sock; /* c == NULL: the listener */
    struct epoll_event evs[SM_MAXEVENTS];
    int i, n;

    if (watch(sm.lsn, &lsn_sock) < 0) {
        fprintf(stderr, "ferry-sockmap: epoll: %s\n", strerror(errno));
        exit(1);
    }
    for (;;) {
        n = epoll_wait(sm.ep, evs, SM_MAXEVENTS,
                       sm.waiting != NULL ? SM_FIN_POLL_MS : -1);
        for (i = 0; i < n; i++) {
            struct sock *s = evs[i].data.ptr;
            if (s->c == NULL)
                accept_all();
            else
                conn_on_event(s, evs[i].events);
        }
        if (sm.waiting != NULL)
            fin_poll();
        reap();
    }
}

static int
libbpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    if (level == LIBBPF_DEBUG)
        return 0;
    return vfprintf(stderr, fmt, ap);
}

/* Load sockmap.bpf.o from beside the binary and attach its verdict
 * program to the map. Returns 0, or -1 having said why. */
static int
bpf_setup(void)
{
    char path[PATH_MAX];
    struct bpf_object *obj;
    struct bpf_program *prog;
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 32);
    char *slash;
    int rc;

    if (n <= 0 || (slash = memrchr(path, '/', (size_t)n)) == NULL) {
        fprintf(stderr, "ferry-sockmap: cannot find my own path\n");
        return -1;
    }
    strcpy(slash + 1, "sockmap.bpf.o");
    libbpf_set_print(libbpf_quiet);
    obj = bpf_object__open_file(path, NULL);
    if (obj == NULL) {
        fprintf(stderr, "ferry-sockmap: %s: %s\n", path, strerror(errno));
        return -1;
    }
    rc = bpf_object__load(obj);
    if (rc < 0) {
        fprintf(stderr, "ferry-sockmap: loading %s: %s%s\n", path,
                strerror(-rc),
                rc == -EPERM || rc == -EACCES
                    ? " (needs root, or CAP_BPF and CAP_NET_ADMIN)"
                    : "");
        return -1;
    }
    prog = bpf_object__find_program_by_name(obj, "relay_verdict");
    sm.map = bpf_object__find_map_fd_by_name(obj, "socks");
    if (prog == NULL || sm.map < 0) {
        fprintf(stderr, "ferry-sockmap: %s lacks relay_verdict or socks\n", path);
        return -1;
    }
    rc = bpf_prog_attach(bpf_program__fd(prog), sm.map,
                         BPF_SK_SKB_STREAM_VERDICT, 0);
    if (rc < 0) {
        fprintf(stderr, "ferry-sockmap: attaching the stream verdict: %s%s\n",
                strerror(errno),
                errno == EPERM ? " (needs CAP_NET_ADMIN)" : "");
        return -1;
    }
    return 0; /* the object lives as long as the process */
}

int
main(int argc, char **argv)
{
    struct sockaddr_storage la;
    socklen_t llen;

    if (argc != 3 || raddr_parse(argv[1], &la, &llen) < 0
        || raddr_parse(argv[2], &sm.be_addr, &sm.be_len) < 0) {
        fprintf(stderr, "usage: ferry-sockmap LISTEN_ADDR:PORT "
                        "BACKEND_ADDR:PORT (IP literals)\n");
        return 2;
    }
    if (bpf_setup() < 0)
        return 1;
    sm.ep = epoll_create1(0);
    sm.lsn = raddr_listen(&la, llen, 1);
    /* Inherited by accepted sockets: the hook waits for the map. */
    if (sm.ep < 0 || sm.lsn < 0
        || setsockopt(sm.lsn, SOL_SOCKET, SO_RCVLOWAT, &rcvlowat_max,
                      sizeof(rcvlowat_max)) < 0) {
        fprintf(stderr, "ferry-sockmap: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    fprintf(stderr, "ferry-sockmap: %s -> %s\n", argv[1], argv[2]);
    run();
    return 0;
}
