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
#include "nftgen.h"
#include "nftrules.h"
#include "nftsys.h"
#include "nl.h"

#define DUMP_TIMEOUT_S 5

/* Receive buffer of a dump. The kernel fills each part of a dump up to
 * the largest buffer the reader has received with (32 KiB at most), and
 * a hash set's part starts by walking past every element already sent:
 * dumping the 250,000 hairpin pairs of 10,000 Services of 25 endpoints
 * took 7 s in 4 KiB parts (time in the square of the elements over the
 * part size). */
#define DUMP_BUF 32768

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

/* The start of an nf_tables request of <type> for family inet in <buf>. */
static struct nlmsghdr *
request(char *buf, uint16_t type, uint16_t flags, uint32_t seq)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    struct nfgenmsg *nfg;

    nlh->nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = NFPROTO_INET;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = 0;
    return nlh;
}

/* Send the dump request <nlh> (in <buf>) and feed every message of the
 * answer to <cb>. A table, chain or set that does not exist is an empty
 * answer. Returns 0, or -1 with <e> naming <what>. */
static int
dump(struct mnl_socket *nl, char *buf, struct nlmsghdr *nlh, unsigned portid,
     mnl_cb_t cb, void *arg, const char *what, struct err *e)
{
    uint32_t seq = nlh->nlmsg_seq;
    int ret;

    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        return err_set(e, "nf_tables dump: %s", strerror(errno));
    for (;;) {
        ret = (int)mnl_socket_recvfrom(nl, buf, DUMP_BUF);
        if (ret < 0)
            return err_set(e, "nf_tables dump: %s",
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        ret = mnl_cb_run(buf, nl_whole(buf, (size_t)ret), seq, portid, cb, arg);
        if (ret == MNL_CB_STOP)
            return 0;
        if (ret < 0)
            return errno == ENOENT ? 0
                                   : err_set(e, "nf_tables dump of %s: %s",
                                             what, strerror(errno));
    }
}

/* Dump the rules of chain <name> (<elems> 0) or the elements of set
 * <name> (<elems> 1), counting them into <count>. */
static int
dump_one(struct mnl_socket *nl, char *buf, uint32_t seq, unsigned portid,
         const char *name, int elems, size_t *count, struct err *e)
{
    struct nlmsghdr *nlh =
        request(buf, elems ? NFT_MSG_GETSETELEM : NFT_MSG_GETRULE,
                NLM_F_REQUEST | NLM_F_DUMP, seq);
    struct counting c = {0, elems};

    if (elems) {
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name);
    } else {
        mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_RULE_CHAIN, name);
    }
    *count = 0;
    if (dump(nl, buf, nlh, portid, on_msg, &c, name, e) < 0)
        return -1;
    *count = c.n;
    return 0;
}

/* A bound nf_tables netlink socket whose reads give up after
 * DUMP_TIMEOUT_S, or NULL with <e> filled. */
static struct mnl_socket *
nl_open(struct err *e)
{
    struct timeval tv = {.tv_sec = DUMP_TIMEOUT_S};
    struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);

    if (nl == NULL
        || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0
        || setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO, &tv,
                      sizeof(tv))
               < 0) {
        err_set(e, "nf_tables netlink socket: %s", strerror(errno));
        if (nl != NULL)
            mnl_socket_close(nl);
        return NULL;
    }
    return nl;
}

static int
count_all(const char *const *names, size_t n, int elems, size_t *counts,
          struct err *e)
{
    struct mnl_socket *nl = NULL;
    char *buf = malloc(DUMP_BUF);
    uint32_t seq = (uint32_t)time(NULL);
    unsigned portid;
    size_t i;
    int rc = 0;

    if (buf == NULL || (nl = nl_open(e)) == NULL) {
        rc = buf == NULL ? err_set(e, "out of memory") : -1;
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

/* ----------------------------------------------------------------- sets */

/* libnftables keeps a set's comment in the set's user data, a list of
 * its own (type, length, value); the comment's type is 7
 * (NFTNL_UDATA_SET_COMMENT in libnftnl). */
#define UDATA_SET_COMMENT 7

/* The comment in user data <p> (<len> bytes), without the NULs after
 * it, into <*c>, <*clen>; left as they are when there is none or the
 * list is malformed. */
static void
udata_comment(const uint8_t *p, size_t len, const char **c, size_t *clen)
{
    while (len >= 2 && (size_t)p[1] + 2 <= len) {
        if (p[0] == UDATA_SET_COMMENT) {
            *c = (const char *)p + 2;
            for (*clen = p[1]; *clen > 0 && (*c)[*clen - 1] == '\0';)
                (*clen)--;
            return;
        }
        len -= (size_t)p[1] + 2;
        p += (size_t)p[1] + 2;
    }
}

int
nftrules_msg_set(const void *buf, size_t len, struct nftsys_listing *l)
{
    const struct nlmsghdr *nlh = buf;
    const struct nfgenmsg *nfg;
    const struct nlattr *a;
    const char *table = NULL, *name = NULL, *comment = NULL;
    size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct nfgenmsg));
    size_t clen = 0;
    uint32_t flags = 0;
    struct nftsys_obj *o;
    char layout[64];
    int n;

    if (len < MNL_NLMSG_HDRLEN || nlh->nlmsg_len < hdr || nlh->nlmsg_len > len
        || nlh->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET))
        return 0;
    nfg = mnl_nlmsg_get_payload(nlh);
    if (nfg->nfgen_family != NFPROTO_INET)
        return 0;
    mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg))
    {
        switch (mnl_attr_get_type(a)) {
        case NFTA_SET_TABLE:
            if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
                table = mnl_attr_get_str(a);
            break;
        case NFTA_SET_NAME:
            if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
                name = mnl_attr_get_str(a);
            break;
        case NFTA_SET_FLAGS:
            if (mnl_attr_validate(a, MNL_TYPE_U32) == 0)
                flags = ntohl(mnl_attr_get_u32(a));
            break;
        case NFTA_SET_USERDATA:
            udata_comment(mnl_attr_get_payload(a), mnl_attr_get_payload_len(a),
                          &comment, &clen);
            break;
        }
    }
    if (table == NULL || name == NULL || name[0] == '\0'
        || strcmp(table, NFT_TABLE) != 0
        || (flags & NFT_SET_ANONYMOUS) || strlen(name) >= NFTSYS_NAME_MAX)
        return 0;
    if ((o = nftsys_listing_add(l, NFTSYS_SET, name)) == NULL)
        return -1;
    o->is_map = (flags & NFT_SET_MAP) != 0;
    l->present = 1;
    if (strcmp(name, NFTGEN_LAYOUT_SET) == 0) {
        n = snprintf(layout, sizeof(layout), "ferry layout %d", NFT_LAYOUT);
        l->layout_ok = comment != NULL && clen == (size_t)n
                       && memcmp(comment, layout, clen) == 0;
    }
    return 0;
}

static int
on_set(const struct nlmsghdr *nlh, void *arg)
{
    if (nftrules_msg_set(nlh, nlh->nlmsg_len, arg) == 0)
        return MNL_CB_OK;
    errno = ENOMEM; /* too many sets, or out of memory */
    return MNL_CB_ERROR;
}

int
nftrules_list_sets(struct nftsys_listing *l, struct err *e)
{
    struct mnl_socket *nl = NULL;
    struct nlmsghdr *nlh;
    char *buf = malloc(DUMP_BUF);
    int rc;

    if (buf == NULL || (nl = nl_open(e)) == NULL) {
        rc = buf == NULL ? err_set(e, "out of memory") : -1;
        goto out;
    }
    nlh = request(buf, NFT_MSG_GETSET, NLM_F_REQUEST | NLM_F_DUMP,
                  (uint32_t)time(NULL));
    mnl_attr_put_strz(nlh, NFTA_SET_TABLE, NFT_TABLE);
    rc = dump(nl, buf, nlh, mnl_socket_get_portid(nl), on_set, l, "the sets",
              e);
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------- deletion */

size_t
nftrules_acks(const void *buf, size_t len, int *err)
{
    const struct nlmsghdr *nlh = buf;
    int left = (int)nl_whole(buf, len);
    size_t n = 0;

    while (mnl_nlmsg_ok(nlh, left)) {
        if (nlh->nlmsg_type == NLMSG_ERROR
            && nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(struct nlmsgerr)) {
            const struct nlmsgerr *me = mnl_nlmsg_get_payload(nlh);

            if (me->error != 0 && *err == 0)
                *err = me->error;
            n++;
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    return n;
}

static struct nlmsghdr *
put_msg(char *buf, size_t *off, uint16_t type, uint16_t flags, uint32_t seq,
        uint8_t family, uint16_t res_id)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf + *off);
    struct nfgenmsg *nfg;

    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = family;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(res_id);
    return nlh;
}

/* Bytes one batch of up to NFTRULES_DEL_BATCH elements may take: each
 * element's nests and key, and a message of its own at worst (the table
 * and set names, headers). About 160 KB: under a netlink socket's default
 * send buffer. */
#define DEL_ELEM (4 * MNL_ATTR_HDRLEN + NFTRULES_KEY_MAX)
#define DEL_MSG  (MNL_NLMSG_HDRLEN + 16 + 2 * (NFT_NAME_MAXLEN + 8))
#define DEL_BUF  ((size_t)NFTRULES_DEL_BATCH * (DEL_ELEM + DEL_MSG) + 1024)

/* One transaction deleting <v>[0..n), n <= NFTRULES_DEL_BATCH. */
static int
del_batch(struct mnl_socket *nl, char *buf, uint32_t *seq,
          const struct nftrules_elem *v, size_t n, struct err *e)
{
    size_t off = 0, i = 0, j, want = 0, got = 0;
    struct nlmsghdr *nlh;
    int err = 0, ret;

    nlh = put_msg(buf, &off, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, ++*seq,
                  AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    off += MNL_ALIGN(nlh->nlmsg_len);
    while (i < n) {
        struct nlattr *list;

        nlh =
            put_msg(buf, &off, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM,
                    NLM_F_REQUEST | NLM_F_ACK, ++*seq, NFPROTO_INET, 0);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, v[i].set);
        list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
        for (j = i; j < n && strcmp(v[j].set, v[i].set) == 0; j++) {
            struct nlattr *el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
            struct nlattr *key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);

            mnl_attr_put(nlh, NFTA_DATA_VALUE, v[j].len, v[j].key);
            mnl_attr_nest_end(nlh, key);
            mnl_attr_nest_end(nlh, el);
        }
        mnl_attr_nest_end(nlh, list);
        off += MNL_ALIGN(nlh->nlmsg_len);
        want++;
        i = j;
    }
    nlh = put_msg(buf, &off, NFNL_MSG_BATCH_END, NLM_F_REQUEST, ++*seq,
                  AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    off += MNL_ALIGN(nlh->nlmsg_len);
    if (mnl_socket_sendto(nl, buf, off) < 0)
        return err_set(e, "nf_tables element deletion: %s", strerror(errno));
    while (got < want) {
        ret = (int)mnl_socket_recvfrom(nl, buf, MNL_SOCKET_BUFFER_SIZE);
        if (ret < 0)
            return err_set(e, "nf_tables element deletion: %s",
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        got += nftrules_acks(buf, (size_t)ret, &err);
    }
    if (err != 0)
        return err_set(e, "nf_tables element deletion: %s", strerror(-err));
    return 0;
}

int
nftrules_delete_elems(const struct nftrules_elem *v, size_t n, struct err *e)
{
    struct mnl_socket *nl = NULL;
    char *buf = NULL;
    uint32_t seq = (uint32_t)time(NULL);
    size_t i;
    int rc = 0, sndbuf;

    for (i = 0; i < n; i++)
        if (v[i].len == 0 || v[i].len > NFTRULES_KEY_MAX
            || strlen(v[i].set) >= NFT_NAME_MAXLEN)
            return err_set(e, "nf_tables element deletion: bad element");
    if (n == 0)
        return 0;
    buf = malloc(DEL_BUF > (size_t)MNL_SOCKET_BUFFER_SIZE
                     ? DEL_BUF
                     : (size_t)MNL_SOCKET_BUFFER_SIZE);
    if (buf == NULL || (nl = nl_open(e)) == NULL) {
        rc = buf == NULL ? err_set(e, "out of memory") : -1;
        goto out;
    }
    /* Room for a whole batch where the default is smaller (best effort:
     * the send says so when it does not fit). */
    sndbuf = (int)DEL_BUF * 2;
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_SNDBUF, &sndbuf,
               sizeof(sndbuf));
    for (i = 0; i < n && rc == 0; i += NFTRULES_DEL_BATCH)
        rc = del_batch(nl, buf, &seq, v + i,
                       n - i < NFTRULES_DEL_BATCH ? n - i : NFTRULES_DEL_BATCH,
                       e);
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}
