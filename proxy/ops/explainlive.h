/*
 * explainlive.h - "ferry explain --trace NAMESPACE/NAME" and "ferry
 * explain --watch ADDRESS:PORT": ask the running ferry's admin server
 * (GET /explain/trace, GET /explain/watch) and print the answers for a
 * person, or as JSON (README: ferry explain).
 */
#ifndef PROXY_OPS_EXPLAINLIVE_H
#define PROXY_OPS_EXPLAINLIVE_H

#include <jansson.h>
#include <stdio.h>

#include "explaincli.h"

/* Print GET /explain/trace's answer <ans> as timelines, with the time
 * each stage took. */
void explainlive_print_trace(FILE *f, const json_t *ans);

/* Print one watched connection <rec> (GET /explain/watch's record) as a
 * line; <failed> (may be NULL) is what its failed attempts said. */
void explainlive_print_conn(FILE *f, const json_t *rec, const char *failed);

/* The commands, with checked options <o>: return the exit status (0
 * answered, 2 usage or connection error). */
int explainlive_trace(const struct explaincli_opts *o);
int explainlive_watch(const struct explaincli_opts *o);

#endif
