/*
 * fuzz_nftlist.c - libFuzzer target for nftables' JSON listings as ferry
 * reads them back from the kernel (proxy/node/nftsys.c): the input, made
 * NUL-terminated, goes through nftsys_parse_table() twice into one
 * listing (callers add several listings up), and nftsys_count_elems()
 * for ferry's main map and for the first name the listing held.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nftsys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_listing(const struct nftsys_listing *l)
{
    size_t i;

    if (l->n > l->cap || (l->n > 0 && l->v == NULL))
        abort();
    for (i = 0; i < l->n; i++) {
        const struct nftsys_obj *o = &l->v[i];

        if (memchr(o->name, '\0', sizeof(o->name)) == NULL)
            abort();
        if (o->kind != NFTSYS_CHAIN && o->kind != NFTSYS_SET)
            abort();
        if (o->kind == NFTSYS_SET && o->nrules != 0)
            abort();
        if (o->kind == NFTSYS_CHAIN && o->is_map)
            abort();
    }
}

static void
count(const char *json, const char *name, int parsed)
{
    struct err e;
    size_t n = 1;
    int rc;

    err_clear(&e);
    rc = nftsys_count_elems(json, name, &n, &e);
    /* Whether the text is a listing does not depend on the name. */
    if ((rc == 0) != parsed || (rc < 0 && e.msg[0] == '\0'))
        abort();
    if (rc < 0 && n != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nftsys_listing l;
    struct err e;
    char *json = malloc(size + 1);
    size_t n1;
    int rc, parsed;

    if (json == NULL)
        return 0;
    memcpy(json, data, size);
    json[size] = '\0';
    /* Whether the text is a listing at all, which no name changes. */
    err_clear(&e);
    n1 = 1;
    rc = nftsys_count_elems(json, "svc4", &n1, &e);
    if (rc < -1 || rc > 0 || (rc < 0 && e.msg[0] == '\0'))
        abort();
    parsed = rc == 0;
    memset(&l, 0, sizeof(l));
    err_clear(&e);
    rc = nftsys_parse_table(json, &l, &e);
    /* A listing is refused only when it holds too many objects. */
    if ((rc < 0 && e.msg[0] == '\0') || (rc == 0 && !parsed)
        || (rc < 0 && parsed && l.n != NFTSYS_OBJS_MAX))
        abort();
    check_listing(&l);
    n1 = l.n;
    if (rc == 0) {
        /* The same listing again: its objects once more, or the cap. */
        err_clear(&e);
        rc = nftsys_parse_table(json, &l, &e);
        if (rc == 0 ? l.n != 2 * n1 : l.n != NFTSYS_OBJS_MAX)
            abort();
        check_listing(&l);
    }
    count(json, "svc4", parsed);
    if (l.n > 0)
        count(json, l.v[0].name, parsed);
    nftsys_listing_free(&l);
    if (l.v != NULL || l.n != 0)
        abort();
    free(json);
    return 0;
}
