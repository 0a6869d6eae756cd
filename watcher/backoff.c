#include "backoff.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void
backoff_init(struct backoff *b)
{
    memset(b, 0, sizeof(*b));
}

void
backoff_healthy(struct backoff *b, double now)
{
    if (b->healthy_since == 0)
        b->healthy_since = now > 0 ? now : 1e-9;
}

double
backoff_peek(const struct backoff *b, double now)
{
    if (b->d == 0
        || (b->healthy_since > 0 && now - b->healthy_since >= BACKOFF_RESET_S))
        return BACKOFF_INITIAL_S;
    return b->d;
}

double
backoff_next(struct backoff *b, double now, double rnd)
{
    double d = backoff_peek(b, now);

    if (rnd < 0 || rnd >= 1)
        rnd = 0;
    b->d = d * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : d * 2;
    b->healthy_since = 0;
    b->failures++;
    return d * (1 + rnd);
}

static int
parse_delta(const char *s, size_t n, double *secs)
{
    double v = 0;
    size_t i;

    if (n == 0 || n > 12)
        return -1;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *secs = v;
    return 0;
}

static int
parse_date(const char *s, size_t n, double wall_now, double *secs)
{
    char buf[64];
    struct tm tm;
    const char *end;

    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(&tm, 0, sizeof(tm));
    end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0')
        return -1;
    *secs = (double)timegm(&tm) - wall_now;
    return 0;
}

int
backoff_retry_after(const char *value, double wall_now, double *secs)
{
    size_t n;
    double v;

    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    n = strlen(value);
    while (n > 0 && isspace((unsigned char)value[n - 1]))
        n--;
    if (parse_delta(value, n, &v) < 0 && parse_date(value, n, wall_now, &v) < 0)
        return -1;
    if (v < 0)
        v = 0;
    *secs = v > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : v;
    return 0;
}

double
backoff_rand(void)
{
    static uint64_t state;

    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec
                ^ ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ull;
    }
    /* xorshift64* */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return (double)((state * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}
