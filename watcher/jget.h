/*
 * jget.h - the two small readers every decoder of API objects uses.
 */
#ifndef WATCHER_JGET_H
#define WATCHER_JGET_H

#include <jansson.h>
#include <string.h>

/* The string at key <k> of object <o>, or NULL (missing, not a string,
 * <o> NULL or not an object). */
static inline const char *
jstr(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Nonzero when both are strings and equal. */
static inline int
str_eq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

#endif
