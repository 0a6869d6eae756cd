/*
 * fuzz_proxyproto.c - libFuzzer target for the PROXY protocol parser
 * (proxy/dataplane/proxyproto.c): any bytes in, no crash, no read outside
 * the buffer, and answers that keep their promises: a header never claims
 * more bytes than it was given, no prefix of a header is refused, and
 * what the writer makes of its addresses parses back to them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_round_trip(const struct proxyproto_hdr *h)
{
    char out[PROXYPROTO_WRITE_MAX];
    struct proxyproto_hdr back;
    enum proxyproto_err err;
    int v;

    for (v = 1; v <= 2; v++) {
        size_t n = proxyproto_write(v, &h->src, &h->dst, out, sizeof(out));
        if (n == 0 || proxyproto_parse(out, n, &back, &err) != PROXYPROTO_DONE
            || back.len != n || !back.has_addrs
            || saddr_cmp(&back.src, &h->src) != 0
            || saddr_cmp(&back.dst, &h->dst) != 0)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_hdr h, p;
    enum proxyproto_err err, perr;
    enum proxyproto_status st;
    uint8_t *copy;

    /* An exact-size heap copy, so that ASan sees any overread. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    st = proxyproto_parse(copy, size, &h, &err);
    switch (st) {
    case PROXYPROTO_DONE:
        if (h.len == 0 || h.len > size || err != PROXYPROTO_ERR_NONE
            || (h.version == 1 && h.len > PROXYPROTO_V1_MAX)
            || (h.version == 2 && h.len > PROXYPROTO_V2_MAX)
            || (h.version != 1 && h.version != 2))
            abort();
        /* The header alone parses the same; one byte less asks for
         * more. */
        if (proxyproto_parse(copy, h.len, &p, &perr) != PROXYPROTO_DONE
            || p.len != h.len
            || proxyproto_parse(copy, h.len - 1, &p, &perr) != PROXYPROTO_NEED
            || proxyproto_parse(copy, h.len / 2, &p, &perr) != PROXYPROTO_NEED)
            abort();
        if (h.has_addrs)
            check_round_trip(&h);
        break;
    case PROXYPROTO_NEED:
        /* A v1 line ends within 107 bytes, a v2 header within 65551. */
        if (size >= PROXYPROTO_V2_MAX
            || (size >= PROXYPROTO_V1_MAX && copy[0] == 'P'))
            abort();
        break;
    case PROXYPROTO_ERROR:
        if (err <= PROXYPROTO_ERR_NONE || err >= PROXYPROTO_ERR__COUNT
            || proxyproto_err_text[err] == NULL)
            abort();
        break;
    default:
        abort();
    }
    free(copy);
    return 0;
}
