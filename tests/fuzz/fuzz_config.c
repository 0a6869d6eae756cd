/*
 * fuzz_config.c - libFuzzer target for the YAML config loader
 * (conf/config.c, conf_load_buf()): any bytes in, either a complete config
 * with a frozen table or NULL with an error message, never a crash or a
 * leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf *c;
    struct err e;
    char *copy;
    size_t i;

    /* Exact-size heap copy, no NUL: the loader must honour <len>. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    err_clear(&e);
    c = conf_load_buf("fuzz.yaml", copy, size, &e);
    if (c == NULL) {
        if (e.msg[0] == '\0')
            abort(); /* a rejection always says why */
    } else {
        if (c->table == NULL || !c->table->frozen)
            abort();
        for (i = 0; i < c->table->nservices; i++)
            if (table_service(c->table, i)->name[0] == '\0')
                abort();
        conf_free(c);
    }
    free(copy);
    return 0;
}
