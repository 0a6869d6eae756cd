/*
 * fuzz_admin.c - libFuzzer target for the admin server's request parser
 * (proxy/http/httpreq.c) and the queries of GET /explain, /explain/trace
 * and /explain/watch (proxy/ops/explainq.c): any bytes in, no crash, no read
 * outside the buffer, and results that keep their promises.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "explainq.h"
#include "httpreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* GET /explain/watch's five values, as admin.c reads them: a watch
 * taken keeps within its bounds. */
static void
fuzz_watch(const struct httpreq *r, struct explain_watch *wq)
{
    static const char *const keys[] = {"id", "addr", "proto", "count",
                                       "seconds"};
    char v[5][HTTPREQ_PATH_MAX], why[200];
    const char *p[5];
    size_t k;

    for (k = 0; k < 5; k++)
        p[k] = httpreq_query(r, keys[k], v[k], sizeof(v[k])) == 0 ? v[k] : NULL;
    why[0] = '\0';
    if (explain_parse_watch(p[0], p[1], p[2], p[3], p[4], 1000, 60, wq, why,
                            sizeof(why))
        < 0) {
        if (why[0] == '\0')
            abort();
        return;
    }
    if (wq->id == 0
        && (wq->count < 1 || wq->count > 1000 || !(wq->seconds > 0)
            || wq->seconds > 60))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct httpreq r;
    const char *why = NULL;
    enum httpreq_rc rc;
    char *copy, v[64], addr[HTTPREQ_PATH_MAX], from[HTTPREQ_PATH_MAX];
    char proto[16], ewhy[160];
    struct explain_req q;
    struct explain_svc sq;
    struct explain_watch wq;

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
        /* GET /explain/trace's Service: two labels when taken. */
        ewhy[0] = '\0';
        if (explain_parse_service(
                httpreq_query(&r, "service", addr, sizeof(addr)) == 0 ? addr
                                                                      : NULL,
                &sq, ewhy, sizeof(ewhy))
            < 0) {
            if (ewhy[0] == '\0')
                abort();
        } else if (sq.ns[0] == '\0' || sq.name[0] == '\0'
                   || strlen(sq.ns) >= EXPLAIN_NAME_MAX
                   || strspn(sq.name, "abcdefghijklmnopqrstuvwxyz0123456789-")
                          != strlen(sq.name)) {
            abort();
        }
        fuzz_watch(&r, &wq);
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
