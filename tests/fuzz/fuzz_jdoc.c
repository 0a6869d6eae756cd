/*
 * fuzz_jdoc.c - libFuzzer target for jdoc_parse() (watcher/jdoc.c), held
 * to jansson: every input is parsed by both; they must accept and refuse
 * the same texts, and what they accept must be the same value. Then the
 * readers walk the document. A text with a NUL byte is refused by jdoc
 * whatever jansson says: jansson skips one right after a number.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jdoc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every reader over every value. */
static void
walk(const struct jdoc *d)
{
    size_t i;
    int k;

    for (i = 0; i < d->n; i++) {
        (void)jdoc_str(d, (int)i);
        (void)jdoc_int(d, (int)i);
        (void)jdoc_get(d, (int)i, "metadata");
        (void)jdoc_size(d, (int)i);
        jdoc_foreach(d, (int)i, k)(void) jdoc_type(d, k);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jdoc d = {0};
    json_error_t je;
    json_t *want, *got;
    struct err e;
    char *text = malloc(size + 1);
    int rc;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    want = json_loadb((const char *)data, size, 0, &je);
    rc = jdoc_parse(&d, text, size, &e);
    if (memchr(data, 0, size) != NULL) {
        if (rc == 0)
            abort();
    } else if ((want != NULL) != (rc == 0)) {
        abort(); /* one accepted what the other refused */
    }
    if (rc == 0 && want != NULL) {
        walk(&d);
        got = jdoc_to_json(&d, 0);
        if (got == NULL || !json_equal(want, got))
            abort();
        json_decref(got);
    }
    json_decref(want);
    jdoc_free(&d);
    free(text);
    return 0;
}
