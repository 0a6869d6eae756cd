/*
 * linebuf.h - split a byte stream into newline-terminated lines, with a
 * hard cap on the length of one line.
 *
 * Watch bodies arrive in chunks that do not line up with events; each
 * event ends in '\n'. A line longer than the cap is dropped (counted in
 * <dropped>; the caller logs it) and the splitter resynchronises at the
 * next newline.
 */
#ifndef WATCHER_LINEBUF_H
#define WATCHER_LINEBUF_H

#include <stddef.h>
#include <stdint.h>

struct linebuf {
    char *buf;        /* partial line carried between chunks */
    size_t len;       /* bytes in buf */
    size_t cap;       /* allocated size of buf */
    size_t max;       /* longest line accepted */
    int skipping;     /* dropping the rest of an oversized line */
    uint64_t lines;   /* lines delivered */
    uint64_t dropped; /* lines dropped for length */
};

/* Called for each complete line, without its "\n" (nor a "\r" before it);
 * empty lines are not delivered. A nonzero return stops the feed and is
 * returned by linebuf_feed(). */
typedef int (*linebuf_fn)(void *arg, const char *line, size_t len);

/* Set up an empty buffer accepting lines up to <max> bytes. */
void linebuf_init(struct linebuf *lb, size_t max);
void linebuf_deinit(struct linebuf *lb);

/* Forget any partial line (the stream restarted). Keeps the counters. */
void linebuf_reset(struct linebuf *lb);

/* Feed <n> bytes. Returns 0, the callback's nonzero value, or -ENOMEM
 * (the partial line is then dropped). */
int linebuf_feed(struct linebuf *lb, const char *data, size_t n, linebuf_fn fn,
                 void *arg);

/* Bytes of an unfinished line held. */
size_t linebuf_pending(const struct linebuf *lb);

#endif
