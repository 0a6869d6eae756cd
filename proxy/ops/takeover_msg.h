/*
 * takeover_msg.h - the one message of the takeover exchange (takeover.h)
 * that carries data to parse, apart so that a fuzz target can build it
 * alone.
 */
#ifndef PROXY_OPS_TAKEOVER_MSG_H
#define PROXY_OPS_TAKEOVER_MSG_H

#include <stddef.h>

#include "parse.h"

#define TAKEOVER_MSG_MAX    256
#define TAKEOVER_WORKER_MAX 65535

/* Parse "SOCK <worker> <address:port>" (<len> bytes, not terminated).
 * Returns 0, or -1 with <why> set. */
int takeover_parse_sock(const char *msg, size_t len, unsigned *worker,
                        struct saddr *addr, const char **why);

#endif
