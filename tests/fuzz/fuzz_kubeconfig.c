/*
 * fuzz_kubeconfig.c - libFuzzer target for the kubeconfig loader
 * (watcher/kcred.c): kcred_from_kubeconfig_buf() and the base64 decoder
 * it uses for *-data fields.
 *
 * The file name points into a directory that does not exist, so relative
 * paths in the input (certificate-authority, client-key, tokenFile) fail
 * fast instead of reading whatever lies next to the fuzzer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcred.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_setup(LOG_ERROR, LOG_TEXT); /* the insecure warning, per run */
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kcred *c;
    struct err e;
    char *copy, *out = NULL;
    size_t outlen = 0;

    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    err_clear(&e);
    c = kcred_from_kubeconfig_buf("/nonexistent-ferry-fuzz/kubeconfig", copy,
                                  size, &e);
    if (c == NULL) {
        if (e.msg[0] == '\0')
            abort();
    } else {
        /* A loaded kubeconfig always names an http(s) server. */
        if (c->server == NULL
            || (strncmp(c->server, "https://", 8) != 0
                && strncmp(c->server, "http://", 7) != 0))
            abort();
        kcred_free(c);
    }
    /* The base64 decoder on raw bytes: output never longer than 3/4 of
     * the input, always NUL-terminated. */
    if (kcred_base64(copy, size, &out, &outlen) == 0) {
        if (outlen > size / 4 * 3 + 3 || out[outlen] != '\0')
            abort();
        free(out);
    }
    free(copy);
    return 0;
}
