#include <libmnl/libmnl.h>

#include "nl.h"

size_t
nl_whole(const void *buf, size_t len)
{
    const char *p = buf;
    size_t off = 0;

    while (len - off >= sizeof(struct nlmsghdr)) {
        const struct nlmsghdr *nlh = (const void *)(p + off);
        size_t l = nlh->nlmsg_len;

        if (l < sizeof(*nlh) || l > len - off)
            break;
        l = MNL_ALIGN(l);
        off += l < len - off ? l : len - off;
    }
    return off;
}
