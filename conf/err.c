#include <stdio.h>
#include <string.h>

#include "err.h"

void
err_clear(struct err *e)
{
    memset(e, 0, sizeof(*e));
}

static void __attribute__((format(printf, 2, 0)))
err_vset(struct err *e, const char *fmt, va_list ap)
{
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
}

int
err_set(struct err *e, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return -1;
    va_start(ap, fmt);
    err_vset(e, fmt, ap);
    va_end(ap);
    return -1;
}

int
err_set_at(struct err *e, int line, int col, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return -1;
    e->line = line;
    e->col = col;
    va_start(ap, fmt);
    err_vset(e, fmt, ap);
    va_end(ap);
    return -1;
}

const char *
err_str(const struct err *e, char *out, size_t outlen)
{
    size_t n = 0;

    out[0] = '\0';
    if (e->file[0] != '\0') {
        if (e->line > 0)
            n = (size_t)snprintf(out, outlen, "%s:%d:%d: ", e->file, e->line,
                                 e->col > 0 ? e->col : 1);
        else
            n = (size_t)snprintf(out, outlen, "%s: ", e->file);
    }
    if (n < outlen && e->obj[0] != '\0')
        n += (size_t)snprintf(out + n, outlen - n, "%s: ", e->obj);
    if (n < outlen)
        snprintf(out + n, outlen - n, "%s", e->msg);
    return out;
}
