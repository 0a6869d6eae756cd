/*
 * bug.h - assertions for invariants that a correct program never breaks.
 *
 * BUG_ON(cond) stays in release builds: use it where the check costs
 * nothing next to the work around it (control loop, accessors, setup).
 * BUG_ON_HOT(cond) is for the per-connection path and exists only in
 * debug builds (NDEBUG unset). Either one prints where it fired and
 * aborts: continuing past a broken invariant would corrupt what is
 * serving.
 */
#ifndef CONF_BUG_H
#define CONF_BUG_H

#include <stdio.h>
#include <stdlib.h>

__attribute__((noreturn, cold)) static inline void
bug_fire(const char *file, int line, const char *what)
{
    fprintf(stderr, "ferry: BUG at %s:%d: %s\n", file, line, what);
    abort();
}

#define BUG_ON(cond)                                                         \
    do {                                                                     \
        if (__builtin_expect(!!(cond), 0))                                   \
            bug_fire(__FILE__, __LINE__, #cond);                             \
    } while (0)

#ifdef NDEBUG
#define BUG_ON_HOT(cond) ((void)0)
#else
#define BUG_ON_HOT(cond) BUG_ON(cond)
#endif

#endif
