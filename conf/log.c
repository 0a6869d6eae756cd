#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Set on the control loop (start, reload), read by every worker thread. */
atomic_int log_min_level = LOG_INFO;
static atomic_int log_fmt = LOG_TEXT;
static atomic_uint_fast64_t log_drops;

const char *const log_level_names[LOG__COUNT + 1] = {
    [LOG_DEBUG] = "debug",
    [LOG_INFO] = "info",
    [LOG_WARN] = "warn",
    [LOG_ERROR] = "error",
    [LOG__COUNT] = NULL,
};

const char *const log_format_names[LOG_FORMAT__COUNT + 1] = {
    [LOG_TEXT] = "text",
    [LOG_JSON] = "json",
    [LOG_FORMAT__COUNT] = NULL,
};

void
log_setup(enum log_level level, enum log_format format)
{
    atomic_store_explicit(&log_min_level, (int)level, memory_order_relaxed);
    atomic_store_explicit(&log_fmt, (int)format, memory_order_relaxed);
}

int
log_level_parse(const char *s, enum log_level *out)
{
    size_t i;

    for (i = 0; i < LOG__COUNT; i++) {
        if (strcmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

const char *
log_level_name(enum log_level l)
{
    return (unsigned)l < LOG__COUNT ? log_level_names[l] : "?";
}

uint64_t
log_dropped(void)
{
    return atomic_load(&log_drops);
}

/* Append <s> to <out> as the inside of a JSON string. */
static size_t
json_escape(char *out, size_t cap, size_t n, const char *s)
{
    for (; *s != '\0' && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    return n;
}

void
log_write(enum log_level level, const char *fmt, ...)
{
    char msg[2048], line[4608], ts[40];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    size_t n;
    int saved = errno;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", (long)(tv.tv_usec / 1000));

    if (atomic_load_explicit(&log_fmt, memory_order_relaxed) == LOG_JSON) {
        n = (size_t)snprintf(line, sizeof(line),
                             "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                             log_level_name(level));
        n = json_escape(line, sizeof(line), n, msg);
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\"}\n");
    } else {
        n = (size_t)snprintf(line, sizeof(line), "%s %-5s %s\n", ts,
                             log_level_name(level), msg);
    }
    if (n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* One write() per line keeps lines whole between threads. */
    if (write(STDERR_FILENO, line, n) != (ssize_t)n)
        atomic_fetch_add(&log_drops, 1);
    errno = saved;
}

int
log_ratelimit_pass(struct log_ratelimit *rl, double now, uint64_t *suppressed)
{
    if (rl->last != 0 && now - rl->last < 1.0) {
        rl->suppressed++;
        return 0;
    }
    rl->last = now;
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    return 1;
}
