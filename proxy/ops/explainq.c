#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* The length of the DNS label at the start of <s>, up to <end> (a char
 * or '\0'), or 0 if it is not one. */
static size_t
label_len(const char *s, char end)
{
    size_t i;

    for (i = 0; s[i] != end && s[i] != '\0'; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
    }
    if (s[i] != end || i == 0 || i >= EXPLAIN_NAME_MAX || s[0] == '-'
        || s[i - 1] == '-')
        return 0;
    return i;
}

int
explain_parse_service(const char *s, struct explain_svc *out, char *why,
                      size_t whylen)
{
    size_t a, b;

    memset(out, 0, sizeof(*out));
    if (s == NULL || s[0] == '\0') {
        snprintf(why, whylen, "service is missing (NAMESPACE/NAME)");
        return -1;
    }
    if ((a = label_len(s, '/')) == 0 || (b = label_len(s + a + 1, '\0')) == 0) {
        snprintf(why, whylen,
                 "service \"%.64s\": not NAMESPACE/NAME (each 1 to 63 of "
                 "a-z, 0-9 and '-')",
                 s);
        return -1;
    }
    memcpy(out->ns, s, a);
    memcpy(out->name, s + a + 1, b);
    return 0;
}

/* A whole decimal number in [<lo>, <hi>]. */
static int
number(const char *s, double lo, double hi, int integer, double *out)
{
    char *end;
    double v;

    if (s[0] == '\0' || s[0] == ' ' || s[0] == '+' || s[0] == '-')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < lo || v > hi
        || (integer && strspn(s, "0123456789") != strlen(s)))
        return -1;
    *out = v;
    return 0;
}

int
explain_parse_watch(const char *id, const char *addr, const char *proto,
                    const char *count, const char *seconds, unsigned count_max,
                    double seconds_max, struct explain_watch *out, char *why,
                    size_t whylen)
{
    double v;

    memset(out, 0, sizeof(*out));
    if (id != NULL) {
        if (addr != NULL || proto != NULL || count != NULL || seconds != NULL) {
            snprintf(why, whylen,
                     "id goes alone (the watch has its "
                     "address already)");
            return -1;
        }
        if (number(id, 1, 1e15, 1, &v) < 0) {
            snprintf(why, whylen, "id \"%.32s\": not a watch number", id);
            return -1;
        }
        out->id = (unsigned long long)v;
        return 0;
    }
    if (explain_parse(addr, proto, NULL, &out->q, why, whylen) < 0)
        return -1;
    if (out->q.proto != TBL_PROTO_TCP) {
        snprintf(why, whylen, "only TCP connections can be watched");
        return -1;
    }
    out->count =
        EXPLAIN_WATCH_COUNT < count_max ? EXPLAIN_WATCH_COUNT : count_max;
    out->seconds = EXPLAIN_WATCH_SECONDS < seconds_max ? EXPLAIN_WATCH_SECONDS
                                                       : seconds_max;
    if (count != NULL) {
        if (number(count, 1, count_max, 1, &v) < 0) {
            snprintf(why, whylen,
                     "count \"%.32s\": a whole number from 1 "
                     "to %u",
                     count, count_max);
            return -1;
        }
        out->count = (unsigned)v;
    }
    if (seconds != NULL) {
        if (number(seconds, 0, seconds_max, 0, &v) < 0 || v <= 0) {
            snprintf(why, whylen,
                     "seconds \"%.32s\": a number above 0, at "
                     "most %.0f",
                     seconds, seconds_max);
            return -1;
        }
        out->seconds = v;
    }
    return 0;
}
