/*
 * fuzz_xtables.c - libFuzzer target for the walk over legacy iptables
 * entries (proxy/node/nftsys.c, nftsys_xt_has_chain()), which ferry runs
 * on what IPT_SO_GET_ENTRIES and IP6T_SO_GET_ENTRIES return when looking
 * for kube-proxy. The first input byte picks the family (bit 0) and the
 * chain looked for (bits 1-2); the rest is the entries, in a buffer of
 * exactly their size, walked whole and cut short by one byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nftsys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const chains[] = {"KUBE-SERVICES", "KUBE-PROXY-CANARY",
                                         "K", ""};
    const char *chain;
    void *buf;
    int v6, r;

    if (size < 1)
        return 0;
    v6 = data[0] & 1;
    chain = chains[(data[0] >> 1) & 3];
    data++;
    size--;
    /* malloc() aligns as the getsockopt() buffer is aligned. */
    buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    r = nftsys_xt_has_chain(buf, size, v6, chain);
    if (r != 0 && r != 1)
        abort();
    if (size > 0) {
        r = nftsys_xt_has_chain(buf, size - 1, v6, chain);
        if (r != 0 && r != 1)
            abort();
    }
    free(buf);
    return 0;
}
