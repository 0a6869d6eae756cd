#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sbuf.h"

void
sbuf_init(struct sbuf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void
sbuf_deinit(struct sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Room for <need> more bytes plus a NUL. */
static int
sbuf_room(struct sbuf *b, size_t need)
{
    size_t want = b->len + need + 1, ncap;
    char *np;

    if (b->overflow)
        return -1;
    if (want > b->max + 1) {
        b->overflow = 1;
        return -1;
    }
    if (want <= b->cap)
        return 0;
    ncap = b->cap ? b->cap : 1024;
    while (ncap < want)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    np = realloc(b->p, ncap);
    if (np == NULL) {
        b->overflow = 1;
        return -1;
    }
    b->p = np;
    b->cap = ncap;
    return 0;
}

void
sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (sbuf_room(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
sbuf_puts(struct sbuf *b, const char *s)
{
    sbuf_add(b, s, strlen(s));
}

void
sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        sbuf_add(b, small, (size_t)n);
        return;
    }
    if (sbuf_room(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
