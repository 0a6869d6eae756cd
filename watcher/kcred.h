/*
 * kcred.h - where the API server is and how to authenticate to it.
 *
 * Two sources: a kubeconfig file (current-context, server, CA file or
 * data, client certificate and key, token, tokenFile, tls-server-name,
 * insecure-skip-tls-verify), or the in-cluster service account (token and
 * ca.crt in a directory, server URL given explicitly or from the
 * KUBERNETES_SERVICE_HOST/PORT environment).
 *
 * Loading reads files with blocking I/O: call it at start-up only. The
 * token file is re-read later (it rotates) by kcred_token(): a few bytes
 * from a tmpfs, at most once a second for a change check and at least once
 * a minute, and at once after kcred_invalidate(). Secrets are never
 * logged.
 */
#ifndef WATCHER_KCRED_H
#define WATCHER_KCRED_H

#include <stddef.h>
#include <sys/stat.h>

#include "err.h"

#define KCRED_SA_DIR     "/var/run/secrets/kubernetes.io/serviceaccount"
#define KCRED_FILE_MAX   (1u << 20) /* kubeconfig, PEM and token files */
#define KCRED_TOKEN_TTL  60.0       /* seconds between forced re-reads */
#define KCRED_STAT_EVERY 1.0        /* seconds between change checks */

struct kcred_blob {
    char *data; /* NUL-terminated copy, or NULL */
    size_t len;
};

struct kcred {
    char *server;         /* "https://198.18.0.1:6443", no trailing '/' */
    char *ca_file;        /* PEM file, or NULL */
    struct kcred_blob ca; /* PEM data (wins over ca_file) */
    char *cert_file, *key_file;
    struct kcred_blob cert, key;
    char *token;           /* static token, or NULL */
    char *token_file;      /* read per request (cached), or NULL */
    char *tls_server_name; /* name to verify (and send as SNI), or NULL */
    int insecure;          /* skip TLS verification (loudly) */
    const char *source;    /* "kubeconfig" or "in-cluster" */

    /* token_file cache */
    char *cur_token;
    double token_at, stat_at; /* loop times of last read and check */
    struct stat token_st;
    int token_stale;
    int token_warned;
};

/* Load a kubeconfig file. Relative paths in it are resolved against its
 * directory. Returns a new kcred or NULL with <e> filled as
 * FILE:LINE:COL. */
struct kcred *kcred_from_kubeconfig(const char *path, struct err *e);

/* Same from a buffer; <name> is the file name for errors and its
 * directory anchors relative paths. */
struct kcred *kcred_from_kubeconfig_buf(const char *name, const char *buf,
                                        size_t len, struct err *e);

/* In-cluster credentials from <sa_dir> (NULL: KCRED_SA_DIR). <server>
 * NULL means the KUBERNETES_SERVICE_HOST/PORT environment. A missing
 * token or CA is not an error here (requests then go without a token or
 * with the system CAs, logged). */
struct kcred *kcred_in_cluster(const char *server, const char *sa_dir,
                               struct err *e);

void kcred_free(struct kcred *c);

/* The bearer token to send now, or NULL for none. Borrowed until the
 * next call. <now> is the loop time. */
const char *kcred_token(struct kcred *c, double now);

/* The server rejected us (401) or the file changed: re-read the token
 * file on the next request. */
void kcred_invalidate(struct kcred *c);

/* Decode standard base64 (whitespace ignored) into a new NUL-terminated
 * buffer. Returns 0 or -1. */
int kcred_base64(const char *in, size_t inlen, char **out, size_t *outlen);

#endif
