/*
 * fuzz_ctnetlink.c - libFuzzer target for the conntrack netlink messages
 * ferry reads when it deletes stale UDP entries (proxy/node/ctclean.c,
 * ctclean_parse()): the input as one message with the length given, then
 * as a dump's receive buffer walked by mnl_cb_run() with each message at
 * its own length, as ctclean_udp() does (its whole messages only, see
 * nl_whole() in proxy/node/nl.h). Each entry parsed must carry
 * both tuples with IPs of one family, and must match the endpoint that
 * answers it (when NATed UDP).
 */
#include <libmnl/libmnl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ctclean.h"
#include "nl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_addr(const struct saddr *a)
{
    if (a->u.sa.sa_family == AF_INET) {
        if (a->len != sizeof(a->u.in))
            abort();
    } else if (a->u.sa.sa_family == AF_INET6) {
        if (a->len != sizeof(a->u.in6))
            abort();
    } else {
        abort();
    }
}

static void
check(const struct nlmsghdr *nlh, size_t len)
{
    struct ctclean_entry en;
    struct ctclean_match m;
    struct saddr x, y;
    int want;

    if (ctclean_parse(nlh, len, &en) < 0)
        return;
    check_addr(&en.orig.src);
    check_addr(&en.orig.dst);
    check_addr(&en.reply.src);
    check_addr(&en.reply.dst);
    if (en.orig.src.u.sa.sa_family != en.orig.dst.u.sa.sa_family
        || en.reply.src.u.sa.sa_family != en.reply.dst.u.sa.sa_family)
        abort();
    /* The endpoint that answers, for the address asked: deleted when
     * the flow is UDP and was NATed. */
    memset(&m, 0, sizeof(m));
    m.ep = en.reply.src;
    m.dsts = &en.orig.dst;
    m.ndsts = 1;
    want = en.orig.proto == IPPROTO_UDP
           && saddr_cmp(&en.orig.dst, &en.reply.src) != 0;
    if (!!ctclean_matches(&en, &m) != want)
        abort();
    /* Any address on the node port: the same, unless the address asked
     * was the endpoint's own (a pod's port on the node's address). */
    m.dsts = NULL;
    m.ndsts = 0;
    m.node_port = saddr_port(&en.orig.dst);
    x = en.orig.dst;
    y = en.reply.src;
    saddr_set_port(&x, 0);
    saddr_set_port(&y, 0);
    if (m.node_port != 0
        && !!ctclean_matches(&en, &m) != (want && saddr_cmp(&x, &y) != 0))
        abort();
}

static int
on_msg(const struct nlmsghdr *nlh, void *data)
{
    (void)data;
    check(nlh, nlh->nlmsg_len);
    return MNL_CB_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    void *buf;

    if (size > (size_t)MNL_SOCKET_BUFFER_SIZE)
        return 0; /* more than ctclean's receive buffer holds */
    /* malloc() aligns as the receive buffer is aligned. */
    buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    check(buf, size);
    mnl_cb_run(buf, nl_whole(buf, size), 0, 0, on_msg, NULL);
    free(buf);
    return 0;
}
