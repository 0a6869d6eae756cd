/*
 * sbuf.h - a growable text buffer with a hard cap, for admin replies.
 *
 * Appends past the cap are dropped and remembered in <overflow>, so a
 * writer can format freely and check once at the end.
 */
#ifndef PROXY_HTTP_SBUF_H
#define PROXY_HTTP_SBUF_H

#include <stddef.h>

struct sbuf {
    char *p;
    size_t len, cap, max;
    int overflow; /* the cap (or memory) was hit: contents are truncated */
};

/* An empty buffer that will never hold more than <max> bytes. */
void sbuf_init(struct sbuf *b, size_t max);
void sbuf_deinit(struct sbuf *b);

void sbuf_add(struct sbuf *b, const char *s, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
