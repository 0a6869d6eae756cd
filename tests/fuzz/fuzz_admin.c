/*
 * fuzz_admin.c - libFuzzer target for the admin server's request parser
 * (proxy/http/httpreq.c) and the query of GET /explain
 * (proxy/ops/explainq.c): any bytes in, no crash, no read outside the
 * buffer, and results that keep their promises.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "explainq.h"
#include "httpreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct httpreq r;
    const char *why = NULL;
    enum httpreq_rc rc;
    char *copy, v[64], addr[HTTPREQ_PATH_MAX], from[HTTPREQ_PATH_MAX];
    char proto[16], ewhy[160];
    struct explain_req q;

    /* An exact-size heap copy, so that ASan sees any overread. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    rc = httpreq_parse(copy, size, &r, &why);
    if (rc == HTTPREQ_OK) {
        if (r.length == 0 || r.length > size || r.length > HTTPREQ_MAX)
            abort();
        if (r.path[0] != '/' || strlen(r.path) >= sizeof(r.path))
            abort();
        static const char *const keys[] = {"value"};
        const char *hv;
        size_t hl;
        unsigned k;

        httpreq_query(&r, "value", v, sizeof(v));
        httpreq_query_only(&r, keys, 1);
        /* GET /explain's three values, as admin.c reads them. */
        if (explain_parse(
                httpreq_query(&r, "addr", addr, sizeof(addr)) == 0 ? addr
                                                                   : NULL,
                httpreq_query(&r, "proto", proto, sizeof(proto)) == 0 ? proto
                                                                      : NULL,
                httpreq_query(&r, "from", from, sizeof(from)) == 0 ? from
                                                                   : NULL,
                &q, ewhy, sizeof(ewhy))
                < 0
            && ewhy[0] == '\0')
            abort();
        /* Header values lie inside the request, within its length. */
        k = httpreq_header(&r, "host", &hv, &hl);
        if (k > r.nhdrs || (k > 0 && (hv < copy || hv + hl > copy + r.length)))
            abort();
        httpreq_header(&r, "authorization", NULL, NULL);
        /* A prefix of a complete request is never "bad". */
        if (httpreq_parse(copy, r.length - 1, &r, &why) == HTTPREQ_BAD)
            abort();
    } else if (rc == HTTPREQ_BAD && why == NULL) {
        abort();
    }
    free(copy);
    return 0;
}
