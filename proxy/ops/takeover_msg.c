#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "takeover_msg.h"

int
takeover_parse_sock(const char *msg, size_t len, unsigned *worker,
                    struct saddr *addr, const char **why)
{
    char buf[TAKEOVER_MSG_MAX + 1], *sp, *end;
    unsigned long w;

    if (len > TAKEOVER_MSG_MAX || len < 5 || memcmp(msg, "SOCK ", 5) != 0) {
        *why = "not a SOCK message";
        return -1;
    }
    memcpy(buf, msg, len);
    buf[len] = '\0';
    if (strlen(buf) != len) {
        *why = "NUL byte in the message";
        return -1;
    }
    if (buf[5] < '0' || buf[5] > '9') {
        *why = "no worker number";
        return -1;
    }
    errno = 0;
    w = strtoul(buf + 5, &end, 10);
    if (errno != 0 || w > TAKEOVER_WORKER_MAX || *end != ' ') {
        *why = "bad worker number";
        return -1;
    }
    sp = end + 1;
    if (parse_hostport(sp, addr, 0, why) < 0)
        return -1;
    *worker = (unsigned)w;
    return 0;
}
