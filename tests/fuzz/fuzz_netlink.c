/*
 * fuzz_netlink.c - libFuzzer target for the netlink address messages ferry
 * reads (proxy/node/vip.c, vip_parse_addr()), fed the way vip.c feeds it: a
 * whole receive buffer, cut to its whole messages by nl_whole(),
 * through mnl_cb_run2() (dump replies and ACKs), and the same walked
 * message by message (notifications).
 */
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "nl.h"
#include "vip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const struct nlmsghdr *nlh, size_t len)
{
    unsigned ifindex = 0, plen = 0, proto = 0;
    struct saddr ip;

    if (vip_parse_addr(nlh, len, &ifindex, &ip, &plen, &proto) < 0)
        return;
    if (ip.u.sa.sa_family == AF_INET) {
        if (ip.len != sizeof(ip.u.in))
            abort();
    } else if (ip.u.sa.sa_family == AF_INET6) {
        if (ip.len != sizeof(ip.u.in6))
            abort();
    } else {
        abort();
    }
    if (plen > 255 || proto > 255)
        abort();
}

static int
on_data(const struct nlmsghdr *nlh, void *data)
{
    size_t *seen = data;

    check(nlh, nlh->nlmsg_len);
    (*seen)++;
    return MNL_CB_OK;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nlmsghdr *nlh;
    size_t seen = 0, whole;
    void *buf;
    int left;

    if (size > (size_t)MNL_SOCKET_BUFFER_SIZE)
        return 0; /* more than one recv() ever returns */
    /* malloc() is suitably aligned, as the receive buffer is. */
    buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    /* The whole buffer as one message, length as given. */
    check(buf, size);
    /* As vip.c does: only whole messages reach libmnl. */
    whole = nl_whole(buf, size);
    if (whole > size)
        abort();
    mnl_cb_run2(buf, whole, 0, 0, on_data, &seen, NULL, NLMSG_MIN_TYPE);
    left = (int)whole;
    for (nlh = buf; mnl_nlmsg_ok(nlh, left);
         nlh = mnl_nlmsg_next(nlh, &left))
        check(nlh, nlh->nlmsg_len);
    free(buf);
    return 0;
}
