/*
 * explaincli.h - "ferry explain ADDRESS:PORT": asks the running ferry's
 * admin server (GET /explain) and prints its answer for a person, or as
 * JSON (README: ferry explain).
 */
#ifndef PROXY_OPS_EXPLAINCLI_H
#define PROXY_OPS_EXPLAINCLI_H

#include <jansson.h>
#include <stdio.h>

#include "parse.h"

struct explaincli_opts {
    const char *addr;  /* ADDRESS:PORT, checked */
    const char *proto; /* "tcp" or "udp" */
    const char *from;  /* client IP, checked; NULL: none */
    struct saddr admin;
    int json;
};

/* Parse the arguments after "explain" (<argv>[0] is the first). Returns
 * 0, or -1 with <why> saying what is wrong. */
int explaincli_args(int argc, char **argv, struct explaincli_opts *o, char *why,
                    size_t whylen);

/* Print the answer <ans> (GET /explain's JSON) for a person. */
void explaincli_print(FILE *f, const json_t *ans);

/* The whole command: returns the exit status (0 answered and the address
 * is owned, 1 owned by no service, 2 usage or connection error). */
int explaincli_main(int argc, char **argv);

#endif
