#include <stdio.h>
#include <string.h>

#include "explainq.h"

int
explain_parse(const char *addr, const char *proto, const char *from,
              struct explain_req *out, char *why, size_t whylen)
{
    const char *w = NULL;

    memset(out, 0, sizeof(*out));
    if (addr == NULL || addr[0] == '\0') {
        snprintf(why, whylen, "addr is missing (ADDRESS:PORT)");
        return -1;
    }
    if (parse_hostport(addr, &out->addr, 0, &w) < 0) {
        snprintf(why, whylen, "addr \"%.64s\": %s", addr,
                 w != NULL ? w : "not IP:PORT");
        return -1;
    }
    if (proto == NULL || strcmp(proto, "tcp") == 0) {
        out->proto = TBL_PROTO_TCP;
    } else if (strcmp(proto, "udp") == 0) {
        out->proto = TBL_PROTO_UDP;
    } else {
        snprintf(why, whylen, "proto \"%.16s\": tcp or udp", proto);
        return -1;
    }
    if (from != NULL) {
        if (parse_ip(from, 0, &out->from, &w) < 0) {
            snprintf(why, whylen, "from \"%.64s\": %s", from,
                     w != NULL ? w : "not an IP address");
            return -1;
        }
        out->has_from = 1;
    }
    return 0;
}
