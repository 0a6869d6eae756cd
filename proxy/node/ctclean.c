#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "ctclean.h"
#include "nl.h"

#define CT_TIMEOUT_S 2 /* a kernel that does not answer in this is stuck */

/* ---------------------------------------------------------------- parse */

typedef void attr_fn(uint16_t type, const char *p, size_t len, void *arg);

/* Walk the attributes in [p, end), each bounded by what is left (libmnl's
 * walkers trust the aligned length, which may reach past a short
 * message). */
static void
attr_walk(const char *p, const char *end, attr_fn *fn, void *arg)
{
    while (end - p >= (ptrdiff_t)sizeof(struct nlattr)) {
        const struct nlattr *a = (const void *)p;
        size_t alen = a->nla_len;

        if (alen < sizeof(*a) || alen > (size_t)(end - p))
            break;
        fn(a->nla_type & NLA_TYPE_MASK, p + MNL_ATTR_HDRLEN,
           alen - MNL_ATTR_HDRLEN, arg);
        if ((size_t)MNL_ALIGN(alen) >= (size_t)(end - p))
            break;
        p += MNL_ALIGN(alen);
    }
}

struct tuple_acc {
    struct ctclean_tuple *t;
    int have_src, have_dst, have_proto, have_sport, have_dport;
    int family;
};

static void
set_ip(struct saddr *a, int family, const char *p)
{
    uint16_t port = saddr_port(a);

    memset(a, 0, sizeof(*a));
    if (family == AF_INET) {
        a->u.in.sin_family = AF_INET;
        memcpy(&a->u.in.sin_addr, p, 4);
        a->len = sizeof(a->u.in);
    } else {
        a->u.in6.sin6_family = AF_INET6;
        memcpy(&a->u.in6.sin6_addr, p, 16);
        a->len = sizeof(a->u.in6);
    }
    saddr_set_port(a, port);
}

static void
on_ip(uint16_t type, const char *p, size_t len, void *arg)
{
    struct tuple_acc *x = arg;
    int fam =
        (type == CTA_IP_V4_SRC || type == CTA_IP_V4_DST) ? AF_INET : AF_INET6;
    size_t want = fam == AF_INET ? 4 : 16;

    if (type < CTA_IP_V4_SRC || type > CTA_IP_V6_DST || len != want)
        return;
    if (x->family && x->family != fam)
        return;
    x->family = fam;
    if (type == CTA_IP_V4_SRC || type == CTA_IP_V6_SRC) {
        set_ip(&x->t->src, fam, p);
        x->have_src = 1;
    } else {
        set_ip(&x->t->dst, fam, p);
        x->have_dst = 1;
    }
}

static void
on_proto(uint16_t type, const char *p, size_t len, void *arg)
{
    struct tuple_acc *x = arg;
    uint16_t port;

    if (type == CTA_PROTO_NUM && len >= 1) {
        x->t->proto = (uint8_t)p[0];
        x->have_proto = 1;
    } else if ((type == CTA_PROTO_SRC_PORT || type == CTA_PROTO_DST_PORT)
               && len >= 2) {
        memcpy(&port, p, 2);
        port = ntohs(port);
        if (type == CTA_PROTO_SRC_PORT) {
            saddr_set_port(&x->t->src, port);
            x->have_sport = 1;
        } else {
            saddr_set_port(&x->t->dst, port);
            x->have_dport = 1;
        }
    }
}

static void
on_tuple(uint16_t type, const char *p, size_t len, void *arg)
{
    if (type == CTA_TUPLE_IP)
        attr_walk(p, p + len, on_ip, arg);
    else if (type == CTA_TUPLE_PROTO)
        attr_walk(p, p + len, on_proto, arg);
}

struct entry_acc {
    struct ctclean_entry *e;
    int ok_orig, ok_reply;
};

static int
tuple_parse(const char *p, size_t len, struct ctclean_tuple *t)
{
    struct tuple_acc x;

    memset(&x, 0, sizeof(x));
    memset(t, 0, sizeof(*t));
    x.t = t;
    attr_walk(p, p + len, on_tuple, &x);
    /* Ports were set before the address when the proto attribute came
     * first: set_ip() keeps them, and an address after a port too. */
    return x.have_src && x.have_dst && x.have_proto && x.have_sport
                   && x.have_dport
               ? 0
               : -1;
}

static void
on_entry(uint16_t type, const char *p, size_t len, void *arg)
{
    struct entry_acc *x = arg;
    uint16_t z;

    if (type == CTA_TUPLE_ORIG)
        x->ok_orig = tuple_parse(p, len, &x->e->orig) == 0;
    else if (type == CTA_TUPLE_REPLY)
        x->ok_reply = tuple_parse(p, len, &x->e->reply) == 0;
    else if (type == CTA_ZONE && len >= 2) {
        memcpy(&z, p, 2);
        x->e->zone = ntohs(z);
    }
}

int
ctclean_parse(const void *msg, size_t len, struct ctclean_entry *out)
{
    const struct nlmsghdr *nlh = msg;
    struct entry_acc x;
    const char *p, *end;

    if (len < sizeof(*nlh) || nlh->nlmsg_len > len
        || nlh->nlmsg_len < sizeof(*nlh) + sizeof(struct nfgenmsg)
        || (nlh->nlmsg_type & 0xff) != IPCTNL_MSG_CT_NEW
        || (nlh->nlmsg_type >> 8) != NFNL_SUBSYS_CTNETLINK)
        return -1;
    memset(out, 0, sizeof(*out));
    memset(&x, 0, sizeof(x));
    x.e = out;
    p = (const char *)nlh + MNL_NLMSG_HDRLEN
        + MNL_ALIGN(sizeof(struct nfgenmsg));
    end = (const char *)nlh + nlh->nlmsg_len;
    if (p > end)
        return -1;
    attr_walk(p, end, on_entry, &x);
    return x.ok_orig && x.ok_reply ? 0 : -1;
}

static int
same_ip(const struct saddr *a, const struct saddr *b)
{
    struct saddr x = *a, y = *b;

    saddr_set_port(&x, 0);
    saddr_set_port(&y, 0);
    return saddr_cmp(&x, &y) == 0;
}

int
ctclean_matches(const struct ctclean_entry *en, const struct ctclean_match *m)
{
    size_t i;

    if (en->orig.proto != IPPROTO_UDP || saddr_cmp(&en->reply.src, &m->ep) != 0)
        return 0;
    /* Only flows that were NATed to the endpoint: a client talking to the
     * pod's own address keeps its entry. */
    if (saddr_cmp(&en->orig.dst, &en->reply.src) == 0)
        return 0;
    for (i = 0; i < m->ndsts; i++)
        if (saddr_cmp(&en->orig.dst, &m->dsts[i]) == 0)
            return 1;
    return m->node_port && saddr_port(&en->orig.dst) == m->node_port
           && !same_ip(&en->orig.dst, &m->ep);
}

/* ------------------------------------------------------------------ I/O */

struct ctsock {
    struct mnl_socket *nl;
    unsigned portid;
    uint32_t seq;
    char *buf;
};

static int
ct_open(struct ctsock *s, struct err *e)
{
    struct timeval tv = {.tv_sec = CT_TIMEOUT_S};

    memset(s, 0, sizeof(*s));
    s->buf = malloc(MNL_SOCKET_BUFFER_SIZE);
    s->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
    if (s->buf == NULL || s->nl == NULL) {
        err_set(e, "conntrack netlink socket: %s", strerror(errno));
        goto fail;
    }
    if (mnl_socket_bind(s->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        err_set(e, "conntrack netlink bind: %s", strerror(errno));
        goto fail;
    }
    if (setsockopt(mnl_socket_get_fd(s->nl), SOL_SOCKET, SO_RCVTIMEO, &tv,
                   sizeof(tv))
        < 0) {
        err_set(e, "conntrack netlink timeout: %s", strerror(errno));
        goto fail;
    }
    s->portid = mnl_socket_get_portid(s->nl);
    s->seq = (uint32_t)time(NULL);
    return 0;
fail:
    if (s->nl)
        mnl_socket_close(s->nl);
    free(s->buf);
    return -1;
}

static void
ct_close(struct ctsock *s)
{
    mnl_socket_close(s->nl);
    free(s->buf);
}

static struct nlmsghdr *
ct_msg(char *buf, int type, uint16_t flags, uint32_t seq, int family)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct nfgenmsg *nfg;

    nlh->nlmsg_type = (uint16_t)((NFNL_SUBSYS_CTNETLINK << 8) | type);
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = (uint8_t)family;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    return nlh;
}

struct dump_acc {
    const struct ctclean_match *m;
    size_t n;
    struct ctclean_entry *hits;
    size_t nhits, cap;
    size_t scanned;
    int oom;
};

static int
on_dump_msg(const struct nlmsghdr *nlh, void *arg)
{
    struct dump_acc *d = arg;
    struct ctclean_entry en;
    size_t i;

    if (++d->scanned > CTCLEAN_SCAN_MAX)
        return MNL_CB_STOP;
    if (ctclean_parse(nlh, nlh->nlmsg_len, &en) < 0)
        return MNL_CB_OK;
    for (i = 0; i < d->n; i++) {
        if (ctclean_matches(&en, &d->m[i])) {
            if (d->nhits == d->cap && d->cap < CTCLEAN_DELETE_MAX) {
                size_t ncap = d->cap ? d->cap * 2 : 64;
                struct ctclean_entry *p = realloc(d->hits, ncap * sizeof(*p));

                if (p == NULL) {
                    d->oom = 1;
                    return MNL_CB_STOP;
                }
                d->hits = p;
                d->cap = ncap;
            }
            if (d->nhits < d->cap)
                d->hits[d->nhits++] = en;
            break;
        }
    }
    return MNL_CB_OK;
}

static int
ct_dump(struct ctsock *s, struct dump_acc *d, struct err *e)
{
    struct nlmsghdr *nlh;
    uint32_t seq = ++s->seq;
    int ret;

    nlh = ct_msg(s->buf, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq,
                 AF_UNSPEC);
    if (mnl_socket_sendto(s->nl, nlh, nlh->nlmsg_len) < 0)
        return err_set(e, "conntrack dump: %s", strerror(errno));
    for (;;) {
        ret = (int)mnl_socket_recvfrom(s->nl, s->buf, MNL_SOCKET_BUFFER_SIZE);
        if (ret < 0)
            return err_set(e, "conntrack dump: %s",
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        ret = mnl_cb_run(s->buf, nl_whole(s->buf, (size_t)ret), seq, s->portid,
                         on_dump_msg, d);
        if (ret == MNL_CB_STOP)
            return 0;
        if (ret < 0)
            return err_set(e, "conntrack dump: %s", strerror(errno));
    }
}

static void
put_tuple(struct nlmsghdr *nlh, const struct ctclean_tuple *t)
{
    struct nlattr *tup, *ip, *pr;
    int v4 = t->src.u.sa.sa_family == AF_INET;

    tup = mnl_attr_nest_start(nlh, CTA_TUPLE_ORIG);
    ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
    if (v4) {
        mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, &t->src.u.in.sin_addr);
        mnl_attr_put(nlh, CTA_IP_V4_DST, 4, &t->dst.u.in.sin_addr);
    } else {
        mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, &t->src.u.in6.sin6_addr);
        mnl_attr_put(nlh, CTA_IP_V6_DST, 16, &t->dst.u.in6.sin6_addr);
    }
    mnl_attr_nest_end(nlh, ip);
    pr = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
    mnl_attr_put_u8(nlh, CTA_PROTO_NUM, t->proto);
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(saddr_port(&t->src)));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(saddr_port(&t->dst)));
    mnl_attr_nest_end(nlh, pr);
    mnl_attr_nest_end(nlh, tup);
}

/* Delete one entry; an entry already gone is not an error. Returns 1
 * deleted, 0 gone, -1 failed. */
static int
ct_delete(struct ctsock *s, const struct ctclean_entry *en, struct err *e)
{
    struct nlmsghdr *nlh;
    uint32_t seq = ++s->seq;
    int ret;

    nlh = ct_msg(s->buf, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq,
                 en->orig.src.u.sa.sa_family);
    put_tuple(nlh, &en->orig);
    if (en->zone)
        mnl_attr_put_u16(nlh, CTA_ZONE, htons(en->zone));
    if (mnl_socket_sendto(s->nl, nlh, nlh->nlmsg_len) < 0)
        return err_set(e, "conntrack delete: %s", strerror(errno));
    ret = (int)mnl_socket_recvfrom(s->nl, s->buf, MNL_SOCKET_BUFFER_SIZE);
    if (ret < 0)
        return err_set(e, "conntrack delete: %s",
                       errno == EAGAIN ? "no answer from the kernel"
                                       : strerror(errno));
    ret = mnl_cb_run(s->buf, nl_whole(s->buf, (size_t)ret), seq, s->portid,
                     NULL, NULL);
    if (ret < 0)
        return errno == ENOENT
                   ? 0
                   : err_set(e, "conntrack delete: %s", strerror(errno));
    return 1;
}

int
ctclean_udp(const struct ctclean_match *m, size_t n, uint64_t *deleted,
            struct err *e)
{
    struct ctsock s;
    struct dump_acc d;
    size_t i;
    int rc = 0;

    if (deleted)
        *deleted = 0;
    if (n == 0)
        return 0;
    memset(&d, 0, sizeof(d));
    d.m = m;
    d.n = n;
    if (ct_open(&s, e) < 0)
        return -1;
    if (ct_dump(&s, &d, e) < 0)
        rc = -1;
    else if (d.oom)
        rc = err_set(e, "conntrack cleanup: out of memory");
    for (i = 0; rc == 0 && i < d.nhits; i++) {
        int r = ct_delete(&s, &d.hits[i], e);

        if (r < 0)
            rc = -1;
        else if (r > 0 && deleted)
            (*deleted)++;
    }
    ct_close(&s);
    free(d.hits);
    return rc;
}
