/*
 * log.h - the one log API.
 *
 * Lines go to stderr as text ("2026-11-22T03:07:24.123Z info  message") or
 * as JSON lines ({"ts":...,"level":"info","msg":"..."}). The level is
 * checked before anything is formatted. May be called from any thread and
 * from inside loop callbacks; a write that would block is dropped and
 * counted rather than stalling the loop.
 */
#ifndef CONF_LOG_H
#define CONF_LOG_H

#include <stdatomic.h>
#include <stdint.h>

enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
    LOG__COUNT
};

enum log_format {
    LOG_TEXT = 0,
    LOG_JSON,
    LOG_FORMAT__COUNT
};

/* "debug", "info", "warn", "error" and "text", "json", each by its enum
 * value and NULL-terminated: the one list the config and the log share. */
extern const char *const log_level_names[LOG__COUNT + 1];
extern const char *const log_format_names[LOG_FORMAT__COUNT + 1];

extern atomic_int log_min_level; /* an enum log_level */

void log_setup(enum log_level level, enum log_format format);

/* Parse "debug", "info", "warn"/"warning", "error". Returns 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level l);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Lines dropped because stderr would have blocked or failed. */
uint64_t log_dropped(void);

#define log_enabled(l)                                                         \
    ((int)(l) >= atomic_load_explicit(&log_min_level, memory_order_relaxed))

#define log_debug(...)                                                         \
    do {                                                                       \
        if (log_enabled(LOG_DEBUG))                                            \
            log_write(LOG_DEBUG, __VA_ARGS__);                                 \
    } while (0)
#define log_info(...)                                                          \
    do {                                                                       \
        if (log_enabled(LOG_INFO))                                             \
            log_write(LOG_INFO, __VA_ARGS__);                                  \
    } while (0)
#define log_warn(...)                                                          \
    do {                                                                       \
        if (log_enabled(LOG_WARN))                                             \
            log_write(LOG_WARN, __VA_ARGS__);                                  \
    } while (0)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

/*
 * Rate-limited logging for errors that repeat on the hot path: at most one
 * line per call site per second; the next line that gets through says how
 * many were suppressed. <now> is the loop's cached time in seconds.
 */
struct log_ratelimit {
    double last;
    uint64_t suppressed;
};

int log_ratelimit_pass(struct log_ratelimit *rl, double now,
                       uint64_t *suppressed);

#define log_rl(level, now, ...)                                                \
    do {                                                                       \
        static __thread struct log_ratelimit rl_;                              \
        uint64_t sup_;                                                         \
        if (log_enabled(level) && log_ratelimit_pass(&rl_, (now), &sup_)) {    \
            log_write(level, __VA_ARGS__);                                     \
            if (sup_ > 0)                                                      \
                log_write(level, "(%llu similar messages suppressed)",         \
                          (unsigned long long)sup_);                           \
        }                                                                      \
    } while (0)

#endif
