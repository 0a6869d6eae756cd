#include <arpa/inet.h> /* glibc's in.h before the kernel's (libc-compat) */
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "nft.h"
#include "nftrules.h"
#include "nl.h"

#define DUMP_TIMEOUT_S 5

static int
on_rule(const struct nlmsghdr *nlh, void *arg)
{
    size_t *n = arg;

    if ((nlh->nlmsg_type & 0xff) == NFT_MSG_NEWRULE)
        (*n)++;
    return MNL_CB_OK;
}

static int
dump_chain(struct mnl_socket *nl, char *buf, uint32_t seq, unsigned portid,
           const char *chain, size_t *count, struct err *e)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct nfgenmsg *nfg;
    int ret;

    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = NFPROTO_INET;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, NFT_TABLE);
    mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, chain);
    *count = 0;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        return err_set(e, "nf_tables rule dump: %s", strerror(errno));
    for (;;) {
        ret = (int)mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
        if (ret < 0)
            return err_set(e, "nf_tables rule dump: %s",
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        ret = mnl_cb_run(buf, nl_whole(buf, (size_t)ret), seq, portid,
                         on_rule, count);
        if (ret == MNL_CB_STOP)
            return 0;
        if (ret < 0) {
            /* No such table or chain: nothing to count. */
            if (errno == ENOENT)
                return 0;
            return err_set(e, "nf_tables rule dump of %s: %s", chain,
                           strerror(errno));
        }
    }
}

int
nftrules_count(const char *const *names, size_t n, size_t *counts,
               struct err *e)
{
    struct timeval tv = {.tv_sec = DUMP_TIMEOUT_S};
    struct mnl_socket *nl;
    char *buf = malloc(MNL_SOCKET_BUFFER_SIZE);
    uint32_t seq = (uint32_t)time(NULL);
    unsigned portid;
    size_t i;
    int rc = 0;

    nl = mnl_socket_open(NETLINK_NETFILTER);
    if (buf == NULL || nl == NULL) {
        rc = err_set(e, "nf_tables netlink socket: %s", strerror(errno));
        goto out;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0
        || setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv,
                      sizeof(tv))
               < 0) {
        rc = err_set(e, "nf_tables netlink socket: %s", strerror(errno));
        goto out;
    }
    portid = mnl_socket_get_portid(nl);
    for (i = 0; i < n && rc == 0; i++)
        rc = dump_chain(nl, buf, ++seq, portid, names[i], &counts[i], e);
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}
