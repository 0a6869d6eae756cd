/* threads.h - run one function on several threads at once, for the unit
 * tests of what workers share. */
#ifndef TESTS_UNIT_THREADS_H
#define TESTS_UNIT_THREADS_H

#include <pthread.h>

/* Run <fn> on <n> threads (at most 16) and wait for them all. Returns the
 * number of threads that could not start or whose <fn> returned non-NULL
 * (its way to say it saw something wrong). */
static inline int
threads_run(void *(*fn)(void *), int n)
{
    pthread_t t[16];
    int i, started = 0, bad = 0;

    for (i = 0; i < n && i < 16; i++) {
        if (pthread_create(&t[i], NULL, fn, NULL) != 0) {
            bad += n - i; /* these never ran */
            break;
        }
        started = i + 1;
    }
    for (i = 0; i < started; i++) {
        void *rc = NULL;
        pthread_join(t[i], &rc);
        bad += rc != NULL;
    }
    return bad;
}

#endif
