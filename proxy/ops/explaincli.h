/*
 * explaincli.h - "ferry explain ADDRESS:PORT" (and --trace, --watch, run by
 * explainlive.c): asks the running ferry's
 * admin server (GET /explain) and prints its answer for a person, or as
 * JSON (README: ferry explain).
 */
#ifndef PROXY_OPS_EXPLAINCLI_H
#define PROXY_OPS_EXPLAINCLI_H

#include <jansson.h>
#include <stdio.h>

#include "parse.h"

struct explaincli_opts {
    const char *addr;            /* ADDRESS:PORT, checked (also --watch's) */
    const char *trace;           /* --trace NAMESPACE/NAME, checked; or NULL */
    int watch;                   /* --watch */
    const char *count, *seconds; /* --watch's bounds as given, or NULL */
    unsigned nwatch;             /* ... checked, defaults filled */
    double watch_s;
    const char *proto; /* "tcp" or "udp" */
    const char *from;  /* client IP, checked; NULL: none */
    struct saddr admin;
    int json;
};

/* Parse the arguments after "explain" (<argv>[0] is the first). Returns
 * 0, or -1 with <why> saying what is wrong. */
int explaincli_args(int argc, char **argv, struct explaincli_opts *o, char *why,
                    size_t whylen);

/* Percent-encode <s> as a query value into <out> (<len> bytes). */
void explaincli_qenc(char *out, size_t len, const char *s);

/* GET <path> from the admin server <admin>: returns the body (new) and
 * the status, or NULL with <why>. */
char *explaincli_get(const struct saddr *admin, const char *path, int *status,
                     char *why, size_t whylen);

/* Print the answer <ans> (GET /explain's JSON) for a person. */
void explaincli_print(FILE *f, const json_t *ans);

/* The whole command: returns the exit status (0 answered and the address
 * is owned, 1 owned by no service, 2 usage or connection error). */
int explaincli_main(int argc, char **argv);

#endif
