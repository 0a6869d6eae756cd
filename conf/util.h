/*
 * util.h - small language helpers shared by every library.
 */
#ifndef CONF_UTIL_H
#define CONF_UTIL_H

#include <stddef.h>

/* The struct of type <type> whose member <member> is at <ptr>. */
#define container_of(ptr, type, member)                                      \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Elements of a true array (not a pointer). */
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
