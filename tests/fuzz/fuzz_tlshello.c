/*
 * fuzz_tlshello.c - libFuzzer target for the ClientHello reader
 * (conf/tlshello.c): any bytes in, no crash, no read outside the buffer,
 * and answers that keep their promises: a hello never claims more bytes
 * than it was given nor more than the cap allows, the bytes it claims
 * alone read the same, every proper prefix of them asks for more, and a
 * name it returns is a lower-case host name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tlshello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_name(const char *name)
{
    size_t i, n = strlen(name);

    if (tlshello_name_check(name, n) != NULL)
        abort();
    for (i = 0; i < n; i++)
        if (name[i] >= 'A' && name[i] <= 'Z')
            abort();
    if (tlshello_match(name, name) != 2)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tlshello h, p;
    enum tlshello_err err, perr;
    enum tlshello_status st;
    uint8_t *copy;

    /* An exact-size heap copy, so that ASan sees any overread. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    st = tlshello_parse(copy, size, &h, &err);
    switch (st) {
    case TLSHELLO_NAME:
    case TLSHELLO_NO_SNI:
        /* At most one record per byte of the message, 5 bytes each. */
        if (h.len < 10 || h.len > size || err != TLSHELLO_ERR_NONE
            || h.len > TLSHELLO_MAX * 6)
            abort();
        if (st == TLSHELLO_NAME)
            check_name(h.name);
        else if (h.name[0] != '\0')
            abort();
        if (tlshello_parse(copy, h.len, &p, &perr) != st || p.len != h.len
            || strcmp(p.name, h.name) != 0
            || tlshello_parse(copy, h.len - 1, &p, &perr) != TLSHELLO_NEED
            || tlshello_parse(copy, h.len / 2, &p, &perr) != TLSHELLO_NEED)
            abort();
        break;
    case TLSHELLO_NEED:
        if (err != TLSHELLO_ERR_NONE)
            abort();
        break;
    case TLSHELLO_ERROR:
        if (err <= TLSHELLO_ERR_NONE || err >= TLSHELLO_ERR__COUNT
            || tlshello_err_text[err] == NULL)
            abort();
        break;
    default:
        abort();
    }
    free(copy);
    return 0;
}
