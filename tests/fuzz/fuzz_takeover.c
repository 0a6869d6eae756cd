/*
 * fuzz_takeover.c - libFuzzer target for the one takeover message that
 * carries data (proxy/ops/takeover_msg.c): any bytes in, no crash, and a
 * message it accepts names an address that prints and parses back to the
 * same one, with a worker number in range.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "takeover_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[SADDR_STR_MAX], again[TAKEOVER_MSG_MAX + 1];
    struct saddr a, b;
    const char *why;
    unsigned w, w2;
    int n;

    if (takeover_parse_sock((const char *)data, size, &w, &a, &why) < 0)
        return 0;
    if (w > TAKEOVER_WORKER_MAX)
        abort();
    n = snprintf(again, sizeof(again), "SOCK %u %s", w,
                 saddr_str(&a, text, sizeof(text)));
    if (n < 0 || (size_t)n >= sizeof(again)
        || takeover_parse_sock(again, (size_t)n, &w2, &b, &why) < 0
        || w2 != w || saddr_cmp(&a, &b) != 0)
        abort();
    return 0;
}
