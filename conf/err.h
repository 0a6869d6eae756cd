/*
 * err.h - caller-owned error record for config and decode errors.
 *
 * Deep code never prints: it fills a struct err and returns -1 (or a
 * negative errno). The caller decides where the text goes. A position of
 * line 0 means "no position known"; obj names an API object
 * ("namespace/name") when the error comes from the Kubernetes side.
 */
#ifndef CONF_ERR_H
#define CONF_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define ERR_MSG_MAX 256

struct err {
    char file[256]; /* file name, or "" */
    int line;       /* 1-based, 0 if unknown */
    int col;        /* 1-based, 0 if unknown */
    char obj[256];  /* "namespace/name" of an API object, or "" */
    char msg[ERR_MSG_MAX];
};

/* Clear <e> (no error). */
void err_clear(struct err *e);

/* Set the message of <e>, keeping file/line/col/obj. Returns -1 so that
 * callers can write "return err_set(e, ...);". <e> may be NULL. */
int err_set(struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Same as err_set() and also records a position. */
int err_set_at(struct err *e, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Room for what err_str() writes: file, position, object and message. */
#define ERR_STR_MAX 1024

/* Format <e> as "FILE:LINE:COL: message" (or the parts that are known)
 * into <out> (ERR_STR_MAX bytes hold it whole). Returns <out>. */
const char *err_str(const struct err *e, char *out, size_t outlen);

#endif
