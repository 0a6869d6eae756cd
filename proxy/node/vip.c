#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "nl.h"
#include "stats.h"
#include "vip.h"

#define VIP_TIMEOUT_S 5.0 /* a kernel that does not answer in this is stuck */
#define VIP_RESYNC_S  0.1 /* coalesce notifications before a new dump */

struct ipset {
    struct saddr *v;
    size_t n, cap;
};

struct vip {
    struct ev_loop *loop;
    struct mnl_socket *req;   /* requests and their replies */
    struct mnl_socket *mon;   /* address notifications */
    struct ev_io req_io, mon_io;
    struct ev_timer timeout;  /* outstanding requests */
    struct ev_timer resync;   /* coalescing delay before a dump */
    char ifname[IF_NAMESIZE];
    unsigned ifindex;
    unsigned portid;
    uint32_t seq;
    uint32_t dump_seq;        /* 0 when no dump runs */
    unsigned pending;         /* add/del requests without an ACK yet */
    int again;                /* reconcile once more after this round */
    int synced;
    struct ipset want, ours, others;
    char *buf;                /* MNL_SOCKET_BUFFER_SIZE */
};

static void vip_schedule(struct vip *v);

static int
ipset_add(struct ipset *s, const struct saddr *a)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 16;
        struct saddr *p = realloc(s->v, ncap * sizeof(*p));
        if (p == NULL)
            return -1;
        s->v = p;
        s->cap = ncap;
    }
    s->v[s->n++] = *a;
    return 0;
}

static int
ipset_has(const struct ipset *s, const struct saddr *a)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        if (saddr_cmp(&s->v[i], a) == 0)
            return 1;
    return 0;
}

static struct saddr
ip_only(const struct saddr *a)
{
    struct saddr r = *a;

    saddr_set_port(&r, 0);
    return r;
}

int
vip_parse_addr(const void *msg, size_t len, unsigned *ifindex,
               struct saddr *ip, unsigned *prefixlen, unsigned *proto)
{
    const struct nlmsghdr *nlh = msg;
    const struct ifaddrmsg *ifa;
    const struct nlattr *attr;
    const void *addr = NULL, *local = NULL;
    const char *p, *end;
    size_t alen;

    if (len < sizeof(*nlh) || nlh->nlmsg_len > len
        || !mnl_nlmsg_ok(nlh, (int)len)
        || (nlh->nlmsg_type != RTM_NEWADDR && nlh->nlmsg_type != RTM_DELADDR)
        || mnl_nlmsg_get_payload_len(nlh) < sizeof(*ifa))
        return -1;
    ifa = mnl_nlmsg_get_payload(nlh);
    if (ifa->ifa_family != AF_INET && ifa->ifa_family != AF_INET6)
        return -1;
    alen = ifa->ifa_family == AF_INET ? 4 : 16;
    *proto = 0;
    /* Walk the attributes by hand, bounded by nlmsg_len itself: libmnl's
     * mnl_attr_for_each() bounds them by the aligned length, so with an
     * unaligned nlmsg_len the last one could reach past the message. */
    end = (const char *)nlh + nlh->nlmsg_len;
    p = (const char *)ifa + MNL_ALIGN(sizeof(*ifa));
    while (end - p >= (ptrdiff_t)sizeof(*attr)) {
        uint16_t t;
        size_t plen;

        attr = (const void *)p;
        if (attr->nla_len < sizeof(*attr)
            || attr->nla_len > (size_t)(end - p))
            break;
        t = mnl_attr_get_type(attr);
        plen = mnl_attr_get_payload_len(attr);
        if (t == IFA_ADDRESS && plen == alen)
            addr = mnl_attr_get_payload(attr);
        else if (t == IFA_LOCAL && plen == alen)
            local = mnl_attr_get_payload(attr);
        else if (t == IFA_PROTO && plen >= 1)
            *proto = mnl_attr_get_u8(attr);
        if ((size_t)MNL_ALIGN(attr->nla_len) >= (size_t)(end - p))
            break;
        p += MNL_ALIGN(attr->nla_len);
    }
    if (local != NULL)
        addr = local;
    if (addr == NULL)
        return -1;
    memset(ip, 0, sizeof(*ip));
    if (ifa->ifa_family == AF_INET) {
        ip->u.in.sin_family = AF_INET;
        memcpy(&ip->u.in.sin_addr, addr, 4);
        ip->len = sizeof(ip->u.in);
    } else {
        ip->u.in6.sin6_family = AF_INET6;
        memcpy(&ip->u.in6.sin6_addr, addr, 16);
        ip->len = sizeof(ip->u.in6);
    }
    *ifindex = ifa->ifa_index;
    *prefixlen = ifa->ifa_prefixlen;
    return 0;
}

/* Build an RTM_NEWADDR / RTM_DELADDR for <ip> on <ifindex> in <buf>. */
static struct nlmsghdr *
addr_msg(char *buf, int type, uint32_t seq, unsigned ifindex,
         const struct saddr *ip)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct ifaddrmsg *ifa;
    int v4 = ip->u.sa.sa_family == AF_INET;

    nlh->nlmsg_type = (uint16_t)type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    if (type == RTM_NEWADDR)
        nlh->nlmsg_flags |= NLM_F_CREATE | NLM_F_EXCL;
    nlh->nlmsg_seq = seq;
    ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = (uint8_t)ip->u.sa.sa_family;
    ifa->ifa_prefixlen = v4 ? 32 : 128;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = ifindex;
    /* No duplicate address detection: the address is ours by design. */
    ifa->ifa_flags = v4 ? 0 : IFA_F_NODAD;
    if (v4) {
        mnl_attr_put(nlh, IFA_LOCAL, 4, &ip->u.in.sin_addr);
        mnl_attr_put(nlh, IFA_ADDRESS, 4, &ip->u.in.sin_addr);
    } else {
        mnl_attr_put(nlh, IFA_ADDRESS, 16, &ip->u.in6.sin6_addr);
    }
    if (type == RTM_NEWADDR)
        mnl_attr_put_u8(nlh, IFA_PROTO, VIP_PROTO);
    return nlh;
}

static void
vip_send(struct vip *v, struct nlmsghdr *nlh)
{
    if (mnl_socket_sendto(v->req, nlh, nlh->nlmsg_len) < 0) {
        stats_inc(&stats_proc.vip_errors);
        log_error("vip: netlink send on %s: %s", v->ifname, strerror(errno));
        return;
    }
    if (!ev_is_active(&v->timeout)) {
        ev_timer_set(&v->timeout, VIP_TIMEOUT_S, 0.);
        ev_timer_start(v->loop, &v->timeout);
    }
}

static void
vip_change(struct vip *v, int type, const struct saddr *ip)
{
    char a[SADDR_STR_MAX];

    saddr_ip_str(ip, a, sizeof(a));
    log_info("vip: %s %s %s %s", type == RTM_NEWADDR ? "adding" : "removing",
             a, type == RTM_NEWADDR ? "to" : "from", v->ifname);
    vip_send(v, addr_msg(v->buf, type, ++v->seq, v->ifindex, ip));
    v->pending++;
}

/* The dump is complete: add what is wanted and missing, remove what is
 * ours and no longer wanted, leave everything else alone. */
static void
vip_reconcile(struct vip *v)
{
    size_t i;

    for (i = 0; i < v->want.n; i++) {
        const struct saddr *ip = &v->want.v[i];
        if (ipset_has(&v->ours, ip))
            continue;
        if (ipset_has(&v->others, ip)) {
            char a[SADDR_STR_MAX];
            log_debug("vip: %s is already on %s and not ferry's; using it "
                      "as it is",
                      saddr_ip_str(ip, a, sizeof(a)), v->ifname);
            continue;
        }
        vip_change(v, RTM_NEWADDR, ip);
        stats_inc(&stats_proc.vip_added);
    }
    for (i = 0; i < v->ours.n; i++) {
        if (ipset_has(&v->want, &v->ours.v[i]))
            continue;
        vip_change(v, RTM_DELADDR, &v->ours.v[i]);
        stats_inc(&stats_proc.vip_removed);
    }
    atomic_store(&stats_proc.vip_owned, v->ours.n);
    v->synced = v->pending == 0;
}

static void
vip_start_dump(struct vip *v)
{
    struct nlmsghdr *nlh;
    struct ifaddrmsg *ifa;

    if (v->dump_seq != 0 || v->pending != 0) {
        v->again = 1;
        return;
    }
    v->ours.n = v->others.n = 0;
    v->again = 0;
    nlh = mnl_nlmsg_put_header(v->buf);
    nlh->nlmsg_type = RTM_GETADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = v->dump_seq = ++v->seq;
    ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = AF_UNSPEC;
    stats_inc(&stats_proc.vip_resyncs);
    vip_send(v, nlh);
}

static int
vip_on_data(const struct nlmsghdr *nlh, void *data)
{
    struct vip *v = data;
    unsigned ifindex, plen, proto;
    struct saddr ip;

    if (nlh->nlmsg_seq != v->dump_seq || v->dump_seq == 0)
        return MNL_CB_OK;
    if (vip_parse_addr(nlh, nlh->nlmsg_len, &ifindex, &ip, &plen, &proto) < 0
        || ifindex != v->ifindex)
        return MNL_CB_OK;
    if (proto == VIP_PROTO && (plen == 32 || plen == 128))
        ipset_add(&v->ours, &ip);
    else
        ipset_add(&v->others, &ip);
    return MNL_CB_OK;
}

static int
vip_on_done(const struct nlmsghdr *nlh, void *data)
{
    struct vip *v = data;

    if (nlh->nlmsg_seq == v->dump_seq && v->dump_seq != 0) {
        v->dump_seq = 0;
        vip_reconcile(v);
        /* Nothing left to wait for: the dump's timer must not fire. */
        if (v->pending == 0)
            ev_timer_stop(v->loop, &v->timeout);
    }
    return MNL_CB_OK;
}

static int
vip_on_error(const struct nlmsghdr *nlh, void *data)
{
    const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
    struct vip *v = data;

    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(*err))
        return MNL_CB_OK;
    if (nlh->nlmsg_seq == v->dump_seq && v->dump_seq != 0) {
        v->dump_seq = 0;
        stats_inc(&stats_proc.vip_errors);
        log_error("vip: address dump failed: %s", strerror(-err->error));
        vip_schedule(v);
        return MNL_CB_OK;
    }
    if (v->pending > 0)
        v->pending--;
    if (err->error != 0 && err->error != -EEXIST
        && err->error != -EADDRNOTAVAIL) {
        stats_inc(&stats_proc.vip_errors);
        log_error("vip: netlink request %u on %s failed: %s",
                  nlh->nlmsg_seq, v->ifname, strerror(-err->error));
    }
    if (v->pending == 0 && v->dump_seq == 0) {
        ev_timer_stop(v->loop, &v->timeout);
        /* Check the result, and catch up with changes queued meanwhile. */
        vip_schedule(v);
    }
    return MNL_CB_OK;
}

static void
vip_on_req(struct ev_loop *loop, struct ev_io *io, int rev)
{
    static mnl_cb_t ctl[NLMSG_MIN_TYPE] = {
        [NLMSG_ERROR] = vip_on_error,
        [NLMSG_DONE] = vip_on_done,
    };
    struct vip *v = io->data;
    ssize_t n;
    int i;

    (void)loop;
    (void)rev;
    for (i = 0; i < 64; i++) {
        n = mnl_socket_recvfrom(v->req, v->buf, MNL_SOCKET_BUFFER_SIZE);
        if (n < 0) {
            if (errno == ENOBUFS) {
                vip_schedule(v);
                continue;
            }
            return;
        }
        mnl_cb_run2(v->buf, nl_whole(v->buf, (size_t)n), 0, v->portid,
                    vip_on_data, v, ctl, NLMSG_MIN_TYPE);
    }
}

static void
vip_on_mon(struct ev_loop *loop, struct ev_io *io, int rev)
{
    struct vip *v = io->data;
    unsigned ifindex, plen, proto;
    struct nlmsghdr *nlh;
    struct saddr ip;
    ssize_t n;
    int i, left, touched = 0;

    (void)loop;
    (void)rev;
    for (i = 0; i < 64; i++) {
        n = mnl_socket_recvfrom(v->mon, v->buf, MNL_SOCKET_BUFFER_SIZE);
        if (n < 0) {
            /* Lost notifications: only a full dump can tell the truth. */
            if (errno == ENOBUFS)
                touched = 1;
            break;
        }
        left = (int)nl_whole(v->buf, (size_t)n);
        for (nlh = (struct nlmsghdr *)(void *)v->buf; mnl_nlmsg_ok(nlh, left);
             nlh = mnl_nlmsg_next(nlh, &left))
            if (vip_parse_addr(nlh, nlh->nlmsg_len, &ifindex, &ip, &plen,
                               &proto) == 0
                && ifindex == v->ifindex)
                touched = 1;
    }
    if (touched)
        vip_schedule(v);
}

static void
vip_on_timeout(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    struct vip *v = t->data;

    (void)loop;
    (void)rev;
    stats_inc(&stats_proc.vip_errors);
    log_error("vip: netlink requests on %s unanswered after %.0f s; "
              "resyncing",
              v->ifname, VIP_TIMEOUT_S);
    v->dump_seq = 0;
    v->pending = 0;
    vip_schedule(v);
}

static void
vip_on_resync(struct ev_loop *loop, struct ev_timer *t, int rev)
{
    (void)loop;
    (void)rev;
    vip_start_dump(t->data);
}

static void
vip_schedule(struct vip *v)
{
    v->synced = 0;
    if (!ev_is_active(&v->resync))
        ev_timer_start(v->loop, &v->resync);
}

int
vip_set(struct vip *v, const struct saddr *ips, size_t n)
{
    size_t i;

    v->want.n = 0;
    for (i = 0; i < n; i++) {
        struct saddr ip = ip_only(&ips[i]);
        if (!ipset_has(&v->want, &ip) && ipset_add(&v->want, &ip) < 0)
            return -1; /* out of memory */
    }
    vip_start_dump(v);
    return 0;
}

/* Blocking request/ACK on <nl>, for start-up and `ferry cleanup` only. */
static int
nl_sync(struct mnl_socket *nl, char *buf, struct nlmsghdr *nlh,
        mnl_cb_t cb, void *data)
{
    unsigned portid = mnl_socket_get_portid(nl);
    uint32_t seq = nlh->nlmsg_seq;
    ssize_t n;
    int rc;

    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        return -1;
    do {
        n = mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
        if (n < 0)
            return -1;
        rc = mnl_cb_run(buf, nl_whole(buf, (size_t)n), seq, portid, cb,
                        data);
    } while (rc > MNL_CB_STOP);
    return rc < 0 ? -1 : 0;
}

static struct mnl_socket *
nl_open(int flags, unsigned groups)
{
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, flags);

    if (nl == NULL)
        return NULL;
    if (mnl_socket_bind(nl, groups, MNL_SOCKET_AUTOPID) < 0) {
        mnl_socket_close(nl);
        return NULL;
    }
    return nl;
}

/* Create the dummy interface and bring it up. Returns 0, or -1 with errno
 * (EOPNOTSUPP when the kernel has no dummy link type). */
static int
create_dummy(struct mnl_socket *nl, char *buf, unsigned *ifindex)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct ifinfomsg *ifi;
    struct nlattr *info;

    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    nlh->nlmsg_seq = (uint32_t)time(NULL);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    mnl_attr_put_strz(nlh, IFLA_IFNAME, VIP_DUMMY_NAME);
    info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
    mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "dummy");
    mnl_attr_nest_end(nlh, info);
    if (nl_sync(nl, buf, nlh, NULL, NULL) < 0 && errno != EEXIST)
        return -1;
    *ifindex = if_nametoindex(VIP_DUMMY_NAME);
    if (*ifindex == 0)
        return -1;
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = (uint32_t)time(NULL) + 1;
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int)*ifindex;
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    return nl_sync(nl, buf, nlh, NULL, NULL);
}

static int
vip_pick_interface(struct vip *v, const char *ifname, struct err *e)
{
    struct mnl_socket *nl;
    int rc = 0;

    if (strcmp(ifname, "auto") != 0) {
        snprintf(v->ifname, sizeof(v->ifname), "%s", ifname);
        v->ifindex = if_nametoindex(ifname);
        if (v->ifindex == 0)
            return err_set(e, "vip: no interface \"%s\": %s", ifname,
                           strerror(errno));
        return 0;
    }
    nl = nl_open(SOCK_CLOEXEC, 0);
    if (nl == NULL)
        return err_set(e, "vip: cannot open netlink: %s", strerror(errno));
    if (create_dummy(nl, v->buf, &v->ifindex) == 0) {
        snprintf(v->ifname, sizeof(v->ifname), "%s", VIP_DUMMY_NAME);
    } else {
        log_warn("vip: cannot create dummy interface %s (%s); putting "
                 "service addresses on lo instead",
                 VIP_DUMMY_NAME, strerror(errno));
        snprintf(v->ifname, sizeof(v->ifname), "lo");
        v->ifindex = if_nametoindex("lo");
        if (v->ifindex == 0)
            rc = err_set(e, "vip: no interface lo");
    }
    mnl_socket_close(nl);
    return rc;
}

struct vip *
vip_new(struct ev_loop *loop, const char *ifname, struct err *e)
{
    struct vip *v = calloc(1, sizeof(*v));

    if (v == NULL || (v->buf = malloc(MNL_SOCKET_BUFFER_SIZE)) == NULL) {
        free(v);
        err_set(e, "out of memory");
        return NULL;
    }
    v->loop = loop;
    v->seq = (uint32_t)time(NULL);
    if (vip_pick_interface(v, ifname, e) < 0)
        goto fail;
    v->req = nl_open(SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    v->mon = nl_open(SOCK_NONBLOCK | SOCK_CLOEXEC,
                     RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR);
    if (v->req == NULL || v->mon == NULL) {
        err_set(e, "vip: cannot open netlink: %s", strerror(errno));
        goto fail;
    }
    v->portid = mnl_socket_get_portid(v->req);
    ev_io_init(&v->req_io, vip_on_req, mnl_socket_get_fd(v->req), EV_READ);
    ev_io_init(&v->mon_io, vip_on_mon, mnl_socket_get_fd(v->mon), EV_READ);
    ev_init(&v->timeout, vip_on_timeout);
    ev_timer_init(&v->resync, vip_on_resync, VIP_RESYNC_S, 0.);
    v->req_io.data = v->mon_io.data = v->timeout.data = v->resync.data = v;
    ev_io_start(loop, &v->req_io);
    ev_io_start(loop, &v->mon_io);
    log_info("vip: service addresses go on %s", v->ifname);
    return v;
fail:
    vip_free(v);
    return NULL;
}

void
vip_free(struct vip *v)
{
    if (v == NULL)
        return;
    if (v->loop != NULL) {
        ev_io_stop(v->loop, &v->req_io);
        ev_io_stop(v->loop, &v->mon_io);
        ev_timer_stop(v->loop, &v->timeout);
        ev_timer_stop(v->loop, &v->resync);
    }
    if (v->req != NULL)
        mnl_socket_close(v->req);
    if (v->mon != NULL)
        mnl_socket_close(v->mon);
    free(v->want.v);
    free(v->ours.v);
    free(v->others.v);
    free(v->buf);
    free(v);
}

int
vip_in_sync(const struct vip *v)
{
    return v->synced && v->pending == 0 && v->dump_seq == 0;
}

/* ---- ferry cleanup ---------------------------------------------------- */

struct owned {
    unsigned ifindex;
    struct saddr ip;
};

struct owned_list {
    struct owned *v;
    size_t n, cap;
};

static int
cleanup_on_addr(const struct nlmsghdr *nlh, void *data)
{
    struct owned_list *l = data;
    unsigned ifindex, plen, proto;
    struct saddr ip;

    if (vip_parse_addr(nlh, nlh->nlmsg_len, &ifindex, &ip, &plen, &proto) < 0
        || proto != VIP_PROTO)
        return MNL_CB_OK;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct owned *p = realloc(l->v, ncap * sizeof(*p));
        if (p == NULL)
            return MNL_CB_ERROR;
        l->v = p;
        l->cap = ncap;
    }
    l->v[l->n].ifindex = ifindex;
    l->v[l->n].ip = ip;
    l->n++;
    return MNL_CB_OK;
}

static int
cleanup_dummy(struct mnl_socket *nl, char *buf)
{
    unsigned idx = if_nametoindex(VIP_DUMMY_NAME);
    struct nlmsghdr *nlh;
    struct ifinfomsg *ifi;

    if (idx == 0)
        return 0;
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_DELLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = (uint32_t)time(NULL) + 7;
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int)idx;
    return nl_sync(nl, buf, nlh, NULL, NULL);
}

int
vip_cleanup(struct err *e)
{
    struct owned_list l = {0};
    struct mnl_socket *nl;
    struct nlmsghdr *nlh;
    struct ifaddrmsg *ifa;
    char *buf = malloc(MNL_SOCKET_BUFFER_SIZE);
    uint32_t seq = (uint32_t)time(NULL);
    int removed = 0;
    size_t i;

    nl = buf != NULL ? nl_open(SOCK_CLOEXEC, 0) : NULL;
    if (nl == NULL) {
        err_set(e, "cannot open netlink: %s", strerror(errno));
        free(buf);
        return -1;
    }
    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_GETADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = AF_UNSPEC;
    if (nl_sync(nl, buf, nlh, cleanup_on_addr, &l) < 0) {
        err_set(e, "address dump failed: %s", strerror(errno));
        removed = -1;
    }
    for (i = 0; removed >= 0 && i < l.n; i++) {
        char a[SADDR_STR_MAX], ifn[IF_NAMESIZE] = "?";
        nlh = addr_msg(buf, RTM_DELADDR, ++seq, l.v[i].ifindex, &l.v[i].ip);
        if_indextoname(l.v[i].ifindex, ifn);
        if (nl_sync(nl, buf, nlh, NULL, NULL) < 0 && errno != EADDRNOTAVAIL) {
            err_set(e, "cannot remove %s from %s: %s",
                    saddr_ip_str(&l.v[i].ip, a, sizeof(a)), ifn,
                    strerror(errno));
            removed = -1;
            break;
        }
        log_info("cleanup: removed %s from %s",
                 saddr_ip_str(&l.v[i].ip, a, sizeof(a)), ifn);
        removed++;
    }
    if (removed >= 0 && cleanup_dummy(nl, buf) < 0 && errno != ENODEV) {
        err_set(e, "cannot remove interface %s: %s", VIP_DUMMY_NAME,
                strerror(errno));
        removed = -1;
    }
    mnl_socket_close(nl);
    free(l.v);
    free(buf);
    return removed;
}
