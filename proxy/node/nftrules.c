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

size_t
nftrules_msg_count(const void *buf, size_t len, int elems)
{
    const struct nlmsghdr *nlh = buf;
    const struct nlattr *a, *el;
    size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct nfgenmsg)), n = 0;

    if (len < MNL_NLMSG_HDRLEN || nlh->nlmsg_len < hdr || nlh->nlmsg_len > len)
        return 0;
    if (!elems)
        return (nlh->nlmsg_type & 0xff) == NFT_MSG_NEWRULE;
    if ((nlh->nlmsg_type & 0xff) != NFT_MSG_NEWSETELEM)
        return 0;
    /* mnl_attr_for_each stops at the first attribute that does not fit
     * what is left of the message. */
    mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg))
    {
        if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS)
            continue;
        mnl_attr_for_each_nested(el, a) n++;
    }
    return n;
}

struct counting {
    size_t n;
    int elems;
};

static int
on_msg(const struct nlmsghdr *nlh, void *arg)
{
    struct counting *c = arg;

    c->n += nftrules_msg_count(nlh, nlh->nlmsg_len, c->elems);
    return MNL_CB_OK;
}

/* Dump the rules of chain <name> (<elems> 0) or the elements of set
 * <name> (<elems> 1), counting them into <count>. */
static int
dump_one(struct mnl_socket *nl, char *buf, uint32_t seq, unsigned portid,
         const char *name, int elems, size_t *count, struct err *e)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct counting c = {0, elems};
    struct nfgenmsg *nfg;
    int ret;

    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8)
                      | (elems ? NFT_MSG_GETSETELEM : NFT_MSG_GETRULE);
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = NFPROTO_INET;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    if (elems) {
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name);
    } else {
        mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, name);
    }
    *count = 0;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        return err_set(e, "nf_tables dump: %s", strerror(errno));
    for (;;) {
        ret = (int)mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
        if (ret < 0)
            return err_set(e, "nf_tables dump: %s",
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        ret = mnl_cb_run(buf, nl_whole(buf, (size_t)ret), seq, portid, on_msg,
                         &c);
        if (ret == MNL_CB_STOP) {
            *count = c.n;
            return 0;
        }
        if (ret < 0) {
            /* No such table, chain or set: nothing to count. */
            if (errno == ENOENT)
                return 0;
            return err_set(e, "nf_tables dump of %s: %s", name,
                           strerror(errno));
        }
    }
}

static int
count_all(const char *const *names, size_t n, int elems, size_t *counts,
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
        rc = dump_one(nl, buf, ++seq, portid, names[i], elems, &counts[i], e);
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}

int
nftrules_count(const char *const *names, size_t n, size_t *counts,
               struct err *e)
{
    return count_all(names, n, 0, counts, e);
}

int
nftrules_count_elems(const char *const *names, size_t n, size_t *counts,
                     struct err *e)
{
    return count_all(names, n, 1, counts, e);
}
