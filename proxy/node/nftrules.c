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

    /* Whole with its padding, as msg_of() says. */
    if (len < MNL_NLMSG_HDRLEN || nlh->nlmsg_len < hdr
        || MNL_ALIGN((size_t)nlh->nlmsg_len) > len)
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
    /* Close-on-exec: the engine keeps one (nftrules_writer_new()), and
     * SIGUSR2 starts a new ferry by exec. */
    struct mnl_socket *nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);

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

/* <buf> (<len> bytes) as a whole nf_tables message of <type> for
 * <family>, or NULL. Whole with its padding: libmnl walks a message's
 * attributes up to its length rounded up to 4 bytes (the kernel's
 * lengths always are). */
static const struct nlmsghdr *
msg_of(const void *buf, size_t len, uint16_t type, uint8_t family)
{
    const struct nlmsghdr *nlh = buf;
    size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct nfgenmsg));

    if (len < MNL_NLMSG_HDRLEN || nlh->nlmsg_len < hdr
        || MNL_ALIGN((size_t)nlh->nlmsg_len) > len
        || nlh->nlmsg_type != ((NFNL_SUBSYS_NFTABLES << 8) | type))
        return NULL;
    if (((const struct nfgenmsg *)mnl_nlmsg_get_payload(nlh))->nfgen_family
        != family)
        return NULL;
    return nlh;
}

int
nftrules_msg_set(const void *buf, size_t len, struct nftsys_listing *l)
{
    const struct nlmsghdr *nlh = msg_of(buf, len, NFT_MSG_NEWSET,
                                        NFPROTO_INET);
    const struct nlattr *a;
    const char *table = NULL, *name = NULL, *comment = NULL;
    size_t clen = 0;
    uint32_t flags = 0;
    struct nftsys_obj *o;
    char layout[64];
    int n;

    if (nlh == NULL)
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

/* One dump of <type> for <family> (with attribute <table_attr> naming
 * ferry's table when it is not 0), each message fed to <cb>. Returns 0,
 * or -1 with <e> naming <what>. */
static int
dump_all(uint16_t type, uint8_t family, uint16_t table_attr, mnl_cb_t cb,
         void *arg, const char *what, struct err *e)
{
    struct mnl_socket *nl = NULL;
    struct nlmsghdr *nlh;
    char *buf = malloc(DUMP_BUF);
    int rc;

    if (buf == NULL || (nl = nl_open(e)) == NULL) {
        rc = buf == NULL ? err_set(e, "out of memory") : -1;
        goto out;
    }
    nlh = request(buf, type, NLM_F_REQUEST | NLM_F_DUMP, (uint32_t)time(NULL));
    ((struct nfgenmsg *)mnl_nlmsg_get_payload(nlh))->nfgen_family = family;
    if (table_attr != 0)
        mnl_attr_put_strz(nlh, table_attr, NFT_TABLE);
    rc = dump(nl, buf, nlh, mnl_socket_get_portid(nl), cb, arg, what, e);
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}

int
nftrules_list_sets(struct nftsys_listing *l, struct err *e)
{
    return dump_all(NFT_MSG_GETSET, NFPROTO_INET, NFTA_SET_TABLE, on_set, l,
                    "the sets", e);
}

int
nftrules_msg_table(const void *buf, size_t len, uint8_t family,
                   const char *name, uint32_t *use)
{
    const struct nlmsghdr *nlh = msg_of(buf, len, NFT_MSG_NEWTABLE, family);
    const struct nlattr *a;
    uint32_t u = 0;
    int named = 0;

    if (nlh == NULL)
        return 0;
    mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg))
    {
        if (mnl_attr_get_type(a) == NFTA_TABLE_NAME
            && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
            named = strcmp(mnl_attr_get_str(a), name) == 0;
        else if (mnl_attr_get_type(a) == NFTA_TABLE_USE
                 && mnl_attr_validate(a, MNL_TYPE_U32) == 0)
            u = ntohl(mnl_attr_get_u32(a));
    }
    if (named && use != NULL)
        *use = u;
    return named;
}

struct table_query {
    uint8_t family;
    const char *name;
    uint32_t *use;
    int found;
};

static int
on_table(const struct nlmsghdr *nlh, void *arg)
{
    struct table_query *q = arg;

    if (nftrules_msg_table(nlh, nlh->nlmsg_len, q->family, q->name, q->use))
        q->found = 1;
    return MNL_CB_OK;
}

int
nftrules_table_present(uint8_t family, const char *name, uint32_t *use,
                       struct err *e)
{
    struct table_query q = {family, name, use, 0};

    /* The family's tables, without their chains, sets or rules. */
    if (dump_all(NFT_MSG_GETTABLE, family, 0, on_table, &q, "the tables", e)
        < 0)
        return -1;
    return q.found;
}

int
nftrules_msg_table_name(const void *buf, size_t len, uint8_t family,
                        char *out, size_t outlen)
{
    const struct nlmsghdr *nlh = msg_of(buf, len, NFT_MSG_NEWTABLE, family);
    const struct nlattr *a;
    const char *name = NULL;

    if (nlh == NULL || outlen == 0)
        return 0;
    mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg))
    {
        if (mnl_attr_get_type(a) == NFTA_TABLE_NAME
            && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0)
            name = mnl_attr_get_str(a);
    }
    if (name == NULL || name[0] == '\0' || strlen(name) >= outlen)
        return 0;
    memcpy(out, name, strlen(name) + 1);
    return 1;
}

struct table_list {
    uint8_t family;
    char (*v)[NFTRULES_NAME_MAX];
    size_t n, cap;
};

static int
on_table_name(const struct nlmsghdr *nlh, void *arg)
{
    struct table_list *l = arg;
    char name[NFTRULES_NAME_MAX];

    if (!nftrules_msg_table_name(nlh, nlh->nlmsg_len, l->family, name,
                                 sizeof(name)))
        return MNL_CB_OK;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        void *p;

        if (ncap > NFTRULES_TABLES_MAX) {
            errno = E2BIG;
            return MNL_CB_ERROR;
        }
        if ((p = realloc(l->v, ncap * sizeof(*l->v))) == NULL) {
            errno = ENOMEM;
            return MNL_CB_ERROR;
        }
        l->v = p;
        l->cap = ncap;
    }
    memcpy(l->v[l->n++], name, sizeof(name));
    return MNL_CB_OK;
}

int
nftrules_table_names(uint8_t family, char (**names)[NFTRULES_NAME_MAX],
                     size_t *n, struct err *e)
{
    struct table_list l = {family, NULL, 0, 0};

    *names = NULL;
    *n = 0;
    if (dump_all(NFT_MSG_GETTABLE, family, 0, on_table_name, &l, "the tables",
                 e)
        < 0) {
        free(l.v);
        return -1;
    }
    *names = l.v;
    *n = l.n;
    return 0;
}

/* ------------------------------------------------------------- deletion */

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

/* ------------------------------------------ endpoint maps: their text */

/* An unsigned decimal below 2^32 at <*p>, advancing it. */
static int
parse_u32(const char **p, uint32_t *out)
{
    uint64_t v = 0;
    const char *q = *p;

    if (*q < '0' || *q > '9')
        return -1;
    while (*q >= '0' && *q <= '9') {
        v = v * 10 + (uint64_t)(*q - '0');
        if (v > UINT32_MAX)
            return -1;
        q++;
    }
    *p = q;
    *out = (uint32_t)v;
    return 0;
}

static int
skip(const char **p, const char *what)
{
    size_t n = strlen(what);

    if (strncmp(*p, what, n) != 0)
        return -1;
    *p += n;
    return 0;
}

/* "ip . port" at <*p> into <a>, advancing <*p>: an IPv4 or IPv6 address
 * of family <*fam> (any when it is -1, which it then becomes) and a port
 * of 1 to 65535. Returns 0, or -1 with <*why>. */
static int
addr_port(const char **p, struct saddr *a, int *fam, const char **why)
{
    char ip[INET6_ADDRSTRLEN];
    uint32_t port;
    size_t len = strcspn(*p, " ");

    memset(a, 0, sizeof(*a));
    if (len == 0 || len >= sizeof(ip)) {
        *why = "bad address";
        return -1;
    }
    memcpy(ip, *p, len);
    ip[len] = '\0';
    *p += len;
    if (inet_pton(AF_INET, ip, &a->u.in.sin_addr) == 1) {
        a->u.in.sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, ip, &a->u.in6.sin6_addr) == 1) {
        a->u.in6.sin6_family = AF_INET6;
    } else {
        *why = "bad address";
        return -1;
    }
    if (*fam < 0)
        *fam = a->u.sa.sa_family;
    if (*fam != a->u.sa.sa_family) {
        *why = "addresses of two families";
        return -1;
    }
    if (skip(p, " . ") < 0 || parse_u32(p, &port) < 0 || port == 0
        || port > 65535) {
        *why = "bad port";
        return -1;
    }
    saddr_set_port(a, (uint16_t)port);
    return 0;
}

long
nftrules_epmap_parse(const char *rules, struct nftrules_eprange *out,
                     size_t max, const char **why)
{
    const char *p = rules;
    uint32_t next = 0;
    long n = 0;
    int fam = -1;

    *why = NULL;
    if (p == NULL || *p == '\0') {
        *why = "no ranges";
        return -1;
    }
    while (*p) {
        struct nftrules_eprange r;

        memset(&r, 0, sizeof(r));
        if (n > 0 && skip(&p, ", ") < 0) {
            *why = "ranges not separated by \", \"";
            return -1;
        }
        if (parse_u32(&p, &r.lo) < 0 || skip(&p, "-") < 0
            || parse_u32(&p, &r.hi) < 0 || skip(&p, " : ") < 0) {
            *why = "a range is not \"lo-hi : \"";
            return -1;
        }
        if (r.lo != next || r.hi < r.lo || r.hi >= NFTGEN_EP_MOD) {
            *why = "ranges not adjacent, ascending and under the modulus";
            return -1;
        }
        next = r.hi + 1;
        if (addr_port(&p, &r.ep, &fam, why) < 0)
            return -1;
        if (out != NULL) {
            if ((size_t)n >= max) {
                *why = "more ranges than room";
                return -1;
            }
            out[n] = r;
        }
        n++;
    }
    if (next != NFTGEN_EP_MOD) {
        *why = "ranges do not cover the modulus";
        return -1;
    }
    return n;
}

long
nftrules_addrs_parse(const char *text, struct saddr *out, size_t max,
                     const char **why)
{
    const char *p = text;
    long n = 0;
    int fam = -1;

    *why = NULL;
    if (p == NULL || *p == '\0') {
        *why = "no addresses";
        return -1;
    }
    while (*p) {
        struct saddr a;

        memset(&a, 0, sizeof(a));
        if (n > 0 && skip(&p, ", ") < 0) {
            *why = "addresses not separated by \", \"";
            return -1;
        }
        if (addr_port(&p, &a, &fam, why) < 0)
            return -1;
        if (out != NULL) {
            if ((size_t)n >= max) {
                *why = "more addresses than room";
                return -1;
            }
            out[n] = a;
        }
        n++;
    }
    return n;
}

size_t
nftrules_addr_port(const struct saddr *a, uint8_t *out)
{
    size_t alen = a->u.sa.sa_family == AF_INET ? 4 : 16;
    uint16_t port = htons(saddr_port(a));

    memset(out, 0, alen + 4);
    memcpy(out,
           alen == 4 ? (const void *)&a->u.in.sin_addr
                     : (const void *)&a->u.in6.sin6_addr,
           alen);
    memcpy(out + alen, &port, sizeof(port));
    return alen + 4;
}

/* --------------------------------------------------------- endpoint maps */

/* Bytes an element list nest may hold: its length is 16 bits. */
#define ELEMS_NEST_MAX 60000u
/* Bytes one range may take: a start element (key, data) and an end
 * element (key, flags), with their nests. */
#define RANGE_BYTES (2 * (6 * MNL_ATTR_HDRLEN + 4 + 20 + 4 + 8))
#define MSG_BYTES   (MNL_NLMSG_HDRLEN + 16 + 2 * (NFT_NAME_MAXLEN + 8))
/* Bytes one element of a set (a key, no data) may take. */
#define ELEM_BYTES (3 * MNL_ATTR_HDRLEN + NFTRULES_KEY_MAX)
/* And of a map (a key and its data). */
#define ELEMD_BYTES (ELEM_BYTES + 2 * MNL_ATTR_HDRLEN + NFTRULES_DATA_MAX)

/* Key <v> (big-endian, as the rule's byteorder expression turns the
 * random number) into element nest <nlh>. */
static void
put_key(struct nlmsghdr *nlh, uint32_t v)
{
    struct nlattr *key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);
    uint32_t be = htonl(v);

    mnl_attr_put(nlh, NFTA_DATA_VALUE, sizeof(be), &be);
    mnl_attr_nest_end(nlh, key);
}

/* The map's data: the address, then the port in the first two bytes of
 * a 4-byte register. */
static void
put_ep(struct nlmsghdr *nlh, const struct saddr *ep)
{
    struct nlattr *data = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_DATA);
    uint8_t v[NFTRULES_DATA_MAX];
    size_t len = nftrules_addr_port(ep, v);

    mnl_attr_put(nlh, NFTA_DATA_VALUE, len, v);
    mnl_attr_nest_end(nlh, data);
}

/* Set <name> flushed: a deletion of its elements that names none. */
static void
put_flush(char *buf, size_t *off, uint32_t *seq, const char *name)
{
    struct nlmsghdr *nlh;

    nlh = put_msg(buf, off, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM,
                  NLM_F_REQUEST, ++*seq, NFPROTO_INET, 0);
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name);
    *off += MNL_ALIGN(nlh->nlmsg_len);
}

/* Flush map <name> (unless <fresh>) and add ranges <r>[0..n) into <buf>
 * at <*off>: the flush and as many element messages as the nests need.
 * Returns how many messages. */
static size_t
put_map(char *buf, size_t *off, uint32_t *seq, const char *name,
        const struct nftrules_eprange *r, size_t n, int fresh)
{
    struct nlmsghdr *nlh;
    size_t i = 0, msgs = 0;

    if (!fresh) {
        put_flush(buf, off, seq, name);
        msgs++;
    }
    while (i < n) {
        struct nlattr *list;
        size_t start;

        nlh = put_msg(buf, off,
                      (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM,
                      NLM_F_REQUEST | NLM_F_CREATE, ++*seq,
                      NFPROTO_INET, 0);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, name);
        list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
        start = nlh->nlmsg_len;
        for (; i < n && nlh->nlmsg_len - start + RANGE_BYTES < ELEMS_NEST_MAX;
             i++) {
            struct nlattr *el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);

            put_key(nlh, r[i].lo);
            put_ep(nlh, &r[i].ep);
            mnl_attr_nest_end(nlh, el);
            el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
            put_key(nlh, r[i].hi + 1);
            mnl_attr_put_u32(nlh, NFTA_SET_ELEM_FLAGS,
                             htonl(NFT_SET_ELEM_INTERVAL_END));
            mnl_attr_nest_end(nlh, el);
        }
        mnl_attr_nest_end(nlh, list);
        *off += MNL_ALIGN(nlh->nlmsg_len);
        msgs++;
    }
    return msgs;
}

/* Elements <v>[0..n) of one set added (<type> NFT_MSG_NEWSETELEM) or
 * deleted, into <buf> at <*off>, as many messages as the nests need.
 * Returns how many messages. */
static size_t
put_elems(char *buf, size_t *off, uint32_t *seq, uint16_t type,
          const struct nftrules_elem *v, size_t n)
{
    size_t i = 0, msgs = 0;

    while (i < n) {
        struct nlmsghdr *nlh;
        struct nlattr *list;
        size_t start;

        nlh = put_msg(buf, off, (NFNL_SUBSYS_NFTABLES << 8) | type,
                      NLM_F_REQUEST
                          | (type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0),
                      ++*seq, NFPROTO_INET, 0);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, NFT_TABLE);
        mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, v[i].set);
        list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
        start = nlh->nlmsg_len;
        for (; i < n && nlh->nlmsg_len - start + ELEMD_BYTES < ELEMS_NEST_MAX;
             i++) {
            struct nlattr *el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
            struct nlattr *key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_KEY);

            mnl_attr_put(nlh, NFTA_DATA_VALUE, v[i].len, v[i].key);
            mnl_attr_nest_end(nlh, key);
            if (v[i].dlen > 0 && type == NFT_MSG_NEWSETELEM) {
                key = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_DATA);
                mnl_attr_put(nlh, NFTA_DATA_VALUE, v[i].dlen, v[i].data);
                mnl_attr_nest_end(nlh, key);
            }
            mnl_attr_nest_end(nlh, el);
        }
        mnl_attr_nest_end(nlh, list);
        *off += MNL_ALIGN(nlh->nlmsg_len);
        msgs++;
    }
    return msgs;
}

int
nftrules_ack_of(const void *buf, size_t len, uint32_t seq, int *err)
{
    const struct nlmsghdr *nlh = buf;
    int left = (int)nl_whole(buf, len), found = 0;

    while (mnl_nlmsg_ok(nlh, left)) {
        if (nlh->nlmsg_type == NLMSG_ERROR
            && nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(struct nlmsgerr)) {
            const struct nlmsgerr *me = mnl_nlmsg_get_payload(nlh);

            if (me->error != 0 && *err == 0)
                *err = me->error;
            if (nlh->nlmsg_seq == seq)
                found = 1;
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    return found;
}

/* Send the batch <buf>[0..off) (or one request), whose last message
 * asks for an acknowledgement with sequence number <seq>, and read the
 * answers up to that one, the first error of the kernel's into <*err>
 * (0 when none): the kernel answers a failed message whatever its flags,
 * and handles a batch whole before it answers, so the last
 * acknowledgement comes after every error. One acknowledgement a batch,
 * not one a message: a few hundred would fill the socket's receive
 * buffer (ENOBUFS) at an adoption's thousands of maps. Returns 0, or -1
 * with <e>, which names <what>, when the socket fails. */
static int
send_acked(struct mnl_socket *nl, char *buf, size_t off, uint32_t seq,
           char *rbuf, int *err, const char *what, struct err *e)
{
    int ret, done = 0;

    *err = 0;
    if (mnl_socket_sendto(nl, buf, off) < 0)
        return err_set(e, "nf_tables %s: %s", what, strerror(errno));
    while (!done) {
        ret = (int)mnl_socket_recvfrom(nl, rbuf, MNL_SOCKET_BUFFER_SIZE);
        if (ret < 0)
            return err_set(e, "nf_tables %s: %s", what,
                           errno == EAGAIN ? "no answer from the kernel"
                                           : strerror(errno));
        done = nftrules_ack_of(rbuf, (size_t)ret, seq, err);
    }
    return 0;
}

/* send_acked() where any error of the kernel's is one. */
static int
send_batch(struct mnl_socket *nl, char *buf, size_t off, uint32_t seq,
           char *rbuf, struct err *e)
{
    int err;

    if (send_acked(nl, buf, off, seq, rbuf, &err, "set elements", e) < 0)
        return -1;
    if (err != 0)
        return err_set(e, "nf_tables set elements: %s", strerror(-err));
    return 0;
}

int
nftrules_chain_in(uint8_t family, const char (*tables)[NFTRULES_NAME_MAX],
                  size_t n, const char *chain, size_t *at, struct err *e)
{
    struct mnl_socket *nl = NULL;
    struct nlmsghdr *nlh;
    /* The request, then the answers (send_acked() reads a whole
     * MNL_SOCKET_BUFFER_SIZE at a time). */
    char *buf = malloc(2 * MNL_SOCKET_BUFFER_SIZE);
    uint32_t seq = (uint32_t)time(NULL);
    int rc = 0, err;
    size_t i;

    if (strlen(chain) >= NFTRULES_NAME_MAX)
        return err_set(e, "nf_tables chain lookup: name too long");
    if (buf == NULL)
        return err_set(e, "out of memory");
    if (n > 0 && (nl = nl_open(e)) == NULL)
        rc = -1;
    /* One socket for every lookup; each is not a dump: the kernel
     * answers the chain (or ENOENT), then the acknowledgement asked for. */
    for (i = 0; i < n && rc == 0; i++) {
        nlh = request(buf, NFT_MSG_GETCHAIN, NLM_F_REQUEST | NLM_F_ACK, ++seq);
        ((struct nfgenmsg *)mnl_nlmsg_get_payload(nlh))->nfgen_family = family;
        mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, tables[i]);
        mnl_attr_put_strz(nlh, NFTA_CHAIN_NAME, chain);
        if (send_acked(nl, buf, nlh->nlmsg_len, seq,
                       buf + MNL_SOCKET_BUFFER_SIZE, &err, "chain lookup", e)
            < 0)
            rc = -1;
        else if (err == 0) {
            *at = i;
            rc = 1;
        } else if (err != -ENOENT)
            rc = err_set(e, "nf_tables chain lookup in table %s: %s",
                         tables[i], strerror(-err));
    }
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    return rc;
}

/* A batch being built: its buffer, and where its last message starts;
 * <sndbuf>: the send buffer asked of <nl> so far. */
struct batch {
    struct mnl_socket *nl;
    char *buf, *rbuf;
    size_t cap, off, last, sndbuf;
    uint32_t seq;
};

/* What nftrules_write() keeps between calls: a batch between batches. */
struct nftrules_writer {
    struct batch b;
};

struct nftrules_writer *
nftrules_writer_new(void)
{
    struct nftrules_writer *w = calloc(1, sizeof(*w));

    if (w != NULL)
        w->b.seq = (uint32_t)time(NULL);
    return w;
}

static void
writer_close(struct batch *b)
{
    if (b->nl)
        mnl_socket_close(b->nl);
    b->nl = NULL;
    b->sndbuf = 0;
}

void
nftrules_writer_free(struct nftrules_writer *w)
{
    if (w == NULL)
        return;
    writer_close(&w->b);
    free(w->b.buf);
    free(w->b.rbuf);
    free(w);
}

/* The last whole message of <b>'s buffer from offset <from> on. */
static void
batch_mark_last(struct batch *b, size_t from)
{
    struct nlmsghdr *nlh = (struct nlmsghdr *)(void *)(b->buf + from);
    int left = (int)(b->off - from);

    while (mnl_nlmsg_ok(nlh, left)) {
        b->last = (size_t)((char *)nlh - b->buf);
        nlh = mnl_nlmsg_next(nlh, &left);
    }
}

/* Close the batch being built, if any, and send it. */
static int
batch_send(struct batch *b, struct err *e)
{
    struct nlmsghdr *nlh, *last;
    int rc;

    if (b->off == 0)
        return 0;
    /* The last message asks for the batch's one acknowledgement. */
    last = (struct nlmsghdr *)(void *)(b->buf + b->last);
    last->nlmsg_flags |= NLM_F_ACK;
    nlh = put_msg(b->buf, &b->off, NFNL_MSG_BATCH_END, NLM_F_REQUEST, ++b->seq,
                  AF_UNSPEC, NFNL_SUBSYS_NFTABLES);
    b->off += MNL_ALIGN(nlh->nlmsg_len);
    rc = send_batch(b->nl, b->buf, b->off, last->nlmsg_seq, b->rbuf, e);
    b->off = b->last = 0;
    return rc;
}

/* Room for <need> more bytes: the batch so far is sent first when the
 * two would pass NFTRULES_SET_BATCH, and the buffer (with the socket's
 * send buffer) grows for what one piece needs alone. Starts a batch when
 * none is open. */
static int
batch_room(struct batch *b, size_t need, struct err *e)
{
    need += 2 * MSG_BYTES; /* the batch's begin and end */
    if (b->off > 0 && b->off + need > NFTRULES_SET_BATCH
        && batch_send(b, e) < 0)
        return -1;
    if (b->off + need > b->cap) {
        size_t ncap = b->off + need > NFTRULES_SET_BATCH ? b->off + need
                                                         : NFTRULES_SET_BATCH;
        char *p = realloc(b->buf, ncap);

        if (p == NULL)
            return err_set(e, "out of memory");
        b->buf = p;
        b->cap = ncap;
    }
    if (b->sndbuf < b->cap) {
        int sndbuf = (int)(b->cap + 4096);

        /* Room for the whole batch in the socket (best effort: the send
         * says so when it does not fit). */
        if (setsockopt(mnl_socket_get_fd(b->nl), SOL_SOCKET, SO_SNDBUFFORCE,
                       &sndbuf, sizeof(sndbuf))
            < 0)
            setsockopt(mnl_socket_get_fd(b->nl), SOL_SOCKET, SO_SNDBUF,
                       &sndbuf, sizeof(sndbuf));
        b->sndbuf = b->cap;
    }
    if (b->off == 0) {
        struct nlmsghdr *nlh =
            put_msg(b->buf, &b->off, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST,
                    ++b->seq, AF_UNSPEC, NFNL_SUBSYS_NFTABLES);

        b->off += MNL_ALIGN(nlh->nlmsg_len);
    }
    return 0;
}

/* Elements <v>[0..n) added or deleted (<type>), a set and at most
 * ELEMS_PIECE elements at a time. */
#define ELEMS_PIECE 256
static int
batch_elems(struct batch *b, uint16_t type, const struct nftrules_elem *v,
            size_t n, struct err *e)
{
    size_t i = 0, j;

    while (i < n) {
        for (j = i; j < n && j - i < ELEMS_PIECE
                    && strcmp(v[j].set, v[i].set) == 0;
             j++)
            ;
        size_t from;

        if (batch_room(b, (j - i) * ELEM_BYTES + 2 * MSG_BYTES, e) < 0)
            return -1;
        from = b->off;
        put_elems(b->buf, &b->off, &b->seq, type, v + i, j - i);
        batch_mark_last(b, from);
        i = j;
    }
    return 0;
}

/* Steps <v>[0..n) as one piece: room for all of them first (the batch
 * before is sent when the piece would not fit with it), then each run of
 * one op on one set as few messages as the nests allow. */
static int
batch_piece(struct batch *b, const struct nftrules_elem *v, size_t n,
            struct err *e)
{
    size_t i = 0, j, runs = 0, from;

    for (j = 0; j < n; j++)
        runs += j == 0 || v[j].op != v[j - 1].op
                || strcmp(v[j].set, v[j - 1].set) != 0;
    if (batch_room(b,
                   n * ELEMD_BYTES
                       + (runs + n * ELEMD_BYTES / (ELEMS_NEST_MAX / 2) + 1)
                             * MSG_BYTES,
                   e)
        < 0)
        return -1;
    from = b->off;
    while (i < n) {
        for (j = i + 1; j < n && v[j].op == v[i].op
                        && strcmp(v[j].set, v[i].set) == 0;
             j++)
            ;
        if (v[i].op == NFTRULES_FLUSH)
            put_flush(b->buf, &b->off, &b->seq, v[i].set);
        else
            put_elems(b->buf, &b->off, &b->seq,
                      v[i].op == NFTRULES_ADD ? NFT_MSG_NEWSETELEM
                                              : NFT_MSG_DELSETELEM,
                      v + i, j - i);
        i = j;
    }
    batch_mark_last(b, from);
    return 0;
}

static int
elems_ok(const struct nftrules_elem *v, size_t n, int steps)
{
    size_t i;

    for (i = 0; i < n; i++)
        if ((v[i].len == 0 && !(steps && v[i].op == NFTRULES_FLUSH))
            || v[i].len > NFTRULES_KEY_MAX || v[i].dlen > NFTRULES_DATA_MAX
            || (steps && v[i].op > NFTRULES_FLUSH)
            || strlen(v[i].set) >= NFT_NAME_MAXLEN)
            return 0;
    return 1;
}

int
nftrules_write(struct nftrules_writer *w, const struct nftrules_change *c,
               struct err *e)
{
    const struct nftrules_elem *add = c->add, *del = c->del;
    const char *const *maps = c->maps, *const *elems = c->elems;
    const unsigned char *fresh = c->fresh;
    size_t nadd = c->nadd, nmaps = c->nmaps, ndel = c->ndel;
    struct batch b = {0};
    struct nftrules_eprange *r = NULL;
    size_t cap = 0, i, start;
    int rc = 0, one = 1;

    if (!elems_ok(add, nadd, 0) || !elems_ok(del, ndel, 0)
        || !elems_ok(c->steps, c->nsteps, 1))
        return err_set(e, "nf_tables set elements: bad element");
    for (i = 0; i < c->nends; i++)
        if (c->ends[i] > c->nsteps || (i > 0 && c->ends[i] < c->ends[i - 1]))
            return err_set(e, "nf_tables set elements: bad pieces");
    if (nadd + c->nsteps + nmaps + ndel == 0)
        return 0;
    b = w->b;
    if (b.rbuf == NULL && (b.rbuf = malloc(MNL_SOCKET_BUFFER_SIZE)) == NULL) {
        rc = err_set(e, "out of memory");
        goto out;
    }
    if (b.nl == NULL) {
        if ((b.nl = nl_open(e)) == NULL) {
            rc = -1;
            goto out;
        }
        /* Errors without the message they answer (an element message is
         * up to 64 KB), so that a read never comes out cut short. */
        setsockopt(mnl_socket_get_fd(b.nl), SOL_NETLINK, NETLINK_CAP_ACK,
                   &one, sizeof(one));
    }
    rc = batch_elems(&b, NFT_MSG_NEWSETELEM, add, nadd, e);
    for (i = 0, start = 0; i <= c->nends && rc == 0; i++) {
        size_t to = i < c->nends ? c->ends[i] : c->nsteps;

        if (to > start)
            rc = batch_piece(&b, c->steps + start, to - start, e);
        start = to;
    }
    for (i = 0; i < nmaps && rc == 0; i++) {
        const char *why;
        long k = nftrules_epmap_parse(elems[i], NULL, 0, &why);

        if (k < 0 || strlen(maps[i]) >= NFT_NAME_MAXLEN) {
            rc = err_set(e, "endpoint map %s: %s", maps[i],
                         k < 0 ? why : "name too long");
            break;
        }
        if ((size_t)k > cap) {
            struct nftrules_eprange *p = realloc(r, (size_t)k * sizeof(*r));

            if (p == NULL) {
                rc = err_set(e, "out of memory");
                break;
            }
            r = p;
            cap = (size_t)k;
        }
        nftrules_epmap_parse(elems[i], r, cap, &why);
        rc = batch_room(&b,
                        ((size_t)k * RANGE_BYTES / (ELEMS_NEST_MAX / 2) + 2)
                                * MSG_BYTES
                            + (size_t)k * RANGE_BYTES,
                        e);
        if (rc == 0) {
            size_t from = b.off;

            put_map(b.buf, &b.off, &b.seq, maps[i], r, (size_t)k,
                    fresh != NULL && fresh[i]);
            batch_mark_last(&b, from);
        }
    }
    if (rc == 0)
        rc = batch_elems(&b, NFT_MSG_DELSETELEM, del, ndel, e);
    if (rc == 0)
        rc = batch_send(&b, e);
out:
    /* A socket that failed may still hold an answer to what it sent: the
     * next write gets a fresh one. */
    if (rc < 0)
        writer_close(&b);
    b.off = b.last = 0;
    if (b.cap > NFTRULES_SET_BATCH) { /* a map of a huge Service: not kept */
        free(b.buf);
        b.buf = NULL;
        b.cap = 0;
    }
    w->b = b;
    free(r);
    return rc;
}

int
nftrules_has_elems(const struct nftrules_elem *v, size_t n, struct err *e)
{
    struct mnl_socket *nl = NULL;
    size_t off = 0, i;
    char *buf = NULL, *rbuf = NULL;
    uint32_t seq = (uint32_t)time(NULL);
    int rc = 1, err, one = 1;

    if (n == 0)
        return 1;
    for (i = 0; i < n; i++)
        if (v[i].len == 0 || v[i].len > NFTRULES_KEY_MAX
            || strcmp(v[i].set, v[0].set) != 0
            || strlen(v[i].set) >= NFT_NAME_MAXLEN)
            return err_set(e, "nf_tables set elements: bad element");
    if (n * ELEM_BYTES >= ELEMS_NEST_MAX)
        return err_set(e, "nf_tables set elements: too many to look up");
    buf = malloc(MSG_BYTES + n * ELEM_BYTES);
    rbuf = malloc(MNL_SOCKET_BUFFER_SIZE);
    if (buf == NULL || rbuf == NULL || (nl = nl_open(e)) == NULL) {
        rc = nl == NULL && buf && rbuf ? -1 : err_set(e, "out of memory");
        goto out;
    }
    /* Errors without the request they answer, as nftrules_write(). */
    setsockopt(mnl_socket_get_fd(nl), SOL_NETLINK, NETLINK_CAP_ACK, &one,
               sizeof(one));
    /* One lookup, not a dump, in one message: the kernel answers each
     * element it finds, and stops at the first it does not with ENOENT. */
    put_elems(buf, &off, &seq, NFT_MSG_GETSETELEM, v, n);
    ((struct nlmsghdr *)(void *)buf)->nlmsg_flags |= NLM_F_ACK;
    if (send_acked(nl, buf, off, seq, rbuf, &err, "set elements", e) < 0)
        rc = -1;
    else if (err == -ENOENT)
        rc = 0;
    else if (err != 0)
        rc = err_set(e, "nf_tables set elements: %s", strerror(-err));
out:
    if (nl)
        mnl_socket_close(nl);
    free(buf);
    free(rbuf);
    return rc;
}
