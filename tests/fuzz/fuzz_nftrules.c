/*
 * fuzz_nftrules.c - libFuzzer target for the nf_tables dump messages the
 * verify step counts (proxy/node/nftrules.c, nftrules_msg_count()): the
 * input as one message with the length given, then as a dump's receive
 * buffer walked by mnl_cb_run() (its whole messages only, see nl_whole()),
 * counted as rules and as set elements, and read as a set of the set
 * dump (nftrules_msg_set()). A message never counts more elements than
 * its bytes could hold, nor more than one rule, nor lists more than one
 * set, and read as a table of the table dump (nftrules_msg_table(),
 * and for its name, nftrules_msg_table_name()).
 * Then as the acknowledgements of an element deletion
 * (nftrules_ack_of()).
 */
#include <libmnl/libmnl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nftrules.h"
#include "nftsys.h"
#include "nl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const void *msg, size_t len)
{
    if (nftrules_msg_count(msg, len, 0) > 1)
        abort();
    /* Each element is an attribute header at least. */
    if (nftrules_msg_count(msg, len, 1) > len / MNL_ATTR_HDRLEN)
        abort();
    /* A set of the verify step's set dump: one at most, named. */
    {
        struct nftsys_listing l = {0};

        if (nftrules_msg_set(msg, len, &l) < 0 || l.n > 1
            || (l.n == 1 && (!l.present || l.v[0].name[0] == '\0')))
            abort();
        nftsys_listing_free(&l);
    }
    /* A table of the table dump: at most one name matches, and only a
     * name the message holds whole. */
    {
        uint32_t use = 0;
        int a = nftrules_msg_table(msg, len, 1, "kube-proxy", &use);
        int b = nftrules_msg_table(msg, len, 1, "ferry", NULL);

        if (a < 0 || a > 1 || b < 0 || b > 1 || (a && b))
            abort();
        if (a && memmem(msg, len, "kube-proxy", 11) == NULL)
            abort();
        if (!a && use != 0)
            abort();
    }
    /* A table's name for the kube-proxy check: NUL-terminated within the
     * room given, never empty, and held whole by the message. */
    {
        char name[16];
        int a;

        memset(name, 'x', sizeof(name));
        a = nftrules_msg_table_name(msg, len, 1, name, sizeof(name));
        if (a < 0 || a > 1)
            abort();
        if (a && (memchr(name, '\0', sizeof(name)) == NULL || name[0] == '\0'
                  || memmem(msg, len, name, strlen(name) + 1) == NULL))
            abort();
        if (nftrules_msg_table_name(msg, len, 1, name, 0) != 0)
            abort();
    }
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
    int err;

    if (size > (size_t)MNL_SOCKET_BUFFER_SIZE)
        return 0; /* more than the receive buffer holds */
    buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    check(buf, size);
    mnl_cb_run(buf, nl_whole(buf, size), 0, 0, on_msg, NULL);
    /* The acknowledgements of a deletion: never more than the messages
     * the bytes could hold, an error only from one of them. */
    /* The acknowledgement of the first message's sequence number is
     * found exactly when a whole error message with that number is
     * there, and an error comes only from such a message. */
    {
        const struct nlmsghdr *nlh = buf;
        int left = (int)nl_whole(buf, size), any = 0, errs = 0;
        uint32_t seq = size >= MNL_NLMSG_HDRLEN ? nlh->nlmsg_seq : 0;

        while (mnl_nlmsg_ok(nlh, left)) {
            if (nlh->nlmsg_type == NLMSG_ERROR
                && nlh->nlmsg_len
                       >= MNL_NLMSG_HDRLEN + sizeof(struct nlmsgerr)) {
                const struct nlmsgerr *me = mnl_nlmsg_get_payload(nlh);

                any |= nlh->nlmsg_seq == seq;
                errs |= me->error != 0;
            }
            nlh = mnl_nlmsg_next(nlh, &left);
        }
        err = 0;
        if (nftrules_ack_of(buf, size, seq, &err) != any
            || (err != 0) != errs)
            abort();
    }
    free(buf);
    return 0;
}
