/* Placeholder until the YAML loader lands; replaced in the next commit. */
#include <stdlib.h>

#include "config.h"

struct conf *
conf_load_buf(const char *name, const char *buf, size_t len, struct err *e)
{
    (void)name;
    (void)buf;
    (void)len;
    err_set(e, "config loader not built yet");
    return NULL;
}

struct conf *
conf_load_file(const char *path, struct err *e)
{
    return conf_load_buf(path, NULL, 0, e);
}

void
conf_free(struct conf *c)
{
    if (c == NULL)
        return;
    table_unref(c->table);
    free(c);
}
