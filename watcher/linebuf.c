#include "linebuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LINEBUF_INITIAL 4096

void
linebuf_init(struct linebuf *lb, size_t max)
{
    memset(lb, 0, sizeof(*lb));
    lb->max = max;
}

void
linebuf_deinit(struct linebuf *lb)
{
    free(lb->buf);
    lb->buf = NULL;
    lb->len = lb->cap = 0;
}

void
linebuf_reset(struct linebuf *lb)
{
    lb->len = 0;
    lb->skipping = 0;
}

size_t
linebuf_pending(const struct linebuf *lb)
{
    return lb->len;
}

static void
drop_line(struct linebuf *lb)
{
    lb->dropped++;
    lb->len = 0;
    lb->skipping = 1;
}

/* Append to the partial line, growing by doubling up to max. */
static int
append(struct linebuf *lb, const char *p, size_t n)
{
    if (lb->skipping)
        return 0;
    if (n > lb->max - lb->len) {
        drop_line(lb);
        return 0;
    }
    if (lb->len + n > lb->cap) {
        size_t ncap = lb->cap ? lb->cap : LINEBUF_INITIAL;
        char *nb;
        while (ncap < lb->len + n)
            ncap *= 2;
        if (ncap > lb->max)
            ncap = lb->max;
        nb = realloc(lb->buf, ncap);
        if (nb == NULL) {
            lb->len = 0;
            lb->skipping = 1;
            return -ENOMEM;
        }
        lb->buf = nb;
        lb->cap = ncap;
    }
    memcpy(lb->buf + lb->len, p, n);
    lb->len += n;
    return 0;
}

static int
deliver(struct linebuf *lb, const char *p, size_t n, linebuf_fn fn, void *arg)
{
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (n == 0)
        return 0;
    lb->lines++;
    return fn(arg, p, n);
}

int
linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_fn fn,
             void *arg)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t part = nl ? (size_t)(nl - data) : n;
        int rc = 0;

        if (nl == NULL)
            return append(lb, data, n);
        if (lb->skipping) {
            lb->skipping = 0; /* resynchronised */
        } else if (lb->len == 0 && part <= lb->max) {
            rc = deliver(lb, data, part, fn, arg); /* no copy */
        } else {
            rc = append(lb, data, part);
            if (rc == 0 && !lb->skipping)
                rc = deliver(lb, lb->buf, lb->len, fn, arg);
            lb->len = 0;
            lb->skipping = 0;
        }
        data += part + 1;
        n -= part + 1;
        if (rc != 0)
            return rc;
    }
    return 0;
}
