/*
 * fuzz_nftjson.c - libFuzzer target for the JSON description of kernel
 * services (proxy/node/nftjson.c, nftjson_parse()), which nftdrive reads:
 * the input as the whole document, in a buffer of exactly its size (the
 * parser takes a length, not a NUL), then what it accepted freed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nftjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_setup(LOG_ERROR, LOG_TEXT);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct nftjson_doc d;
    struct err e;
    size_t i;
    int rc;

    err_clear(&e);
    rc = nftjson_parse((const char *)data, size, &d, &e);
    if (rc < 0) {
        /* A refusal says why and leaves nothing to free. */
        if (e.msg[0] == '\0' || d.svcs != NULL || d.nsvcs != 0)
            abort();
        return 0;
    }
    if (rc != 0 || (d.nsvcs > 0) != (d.svcs != NULL))
        abort();
    for (i = 0; i < d.nsvcs; i++) {
        const struct nft_svc *s = &d.svcs[i];

        if (s->id == NULL || s->id[0] == '\0' || strlen(s->id) >= NFT_ID_MAX)
            abort();
        if ((s->ncluster_ips && s->cluster_ips == NULL)
            || (s->ncluster_eps && s->cluster_eps == NULL)
            || (s->nlocal_eps && s->local_eps == NULL))
            abort();
    }
    nftjson_free(&d);
    if (d.svcs != NULL || d.nsvcs != 0)
        abort();
    return 0;
}
