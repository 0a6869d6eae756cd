/*
 * httpreq.h - the admin server's HTTP/1.x request parser.
 *
 * A pure function over a buffer: no allocation, no I/O, so that it can be
 * unit-tested and fuzzed on its own. It reads one request (request line,
 * headers, and a body of Content-Length bytes, which is skipped) and
 * refuses what the admin server never needs: chunked bodies, folded
 * headers, targets that are not an origin path, anything above
 * HTTPREQ_MAX bytes.
 */
#ifndef PROXY_HTTP_HTTPREQ_H
#define PROXY_HTTP_HTTPREQ_H

#include <stddef.h>

#define HTTPREQ_MAX       8192 /* whole request, headers and body */
#define HTTPREQ_PATH_MAX  512  /* decoded path and raw query, each */
#define HTTPREQ_HEADERS_MAX 64

enum httpreq_rc {
    HTTPREQ_OK = 0,
    HTTPREQ_AGAIN,     /* well-formed so far, more bytes needed */
    HTTPREQ_BAD,       /* malformed: answer 400 */
    HTTPREQ_TOO_LARGE, /* over HTTPREQ_MAX: answer 400 too */
};

enum httpreq_method {
    HTTPREQ_GET = 0,
    HTTPREQ_HEAD,
    HTTPREQ_POST,
    HTTPREQ_OTHER, /* a valid token we do not serve: 405 */
};

struct httpreq {
    enum httpreq_method method;
    int minor;                    /* HTTP/1.<minor> */
    char path[HTTPREQ_PATH_MAX];  /* percent-decoded, without the query */
    char query[HTTPREQ_PATH_MAX]; /* raw text after '?', or "" */
    size_t length;                /* bytes the request occupies */
};

/* Parse the request at the start of <buf> (<len> bytes, no NUL needed).
 * On HTTPREQ_OK, <out> is filled; otherwise its contents are unspecified.
 * <why> (may be NULL) gets a static reason on HTTPREQ_BAD. */
enum httpreq_rc httpreq_parse(const char *buf, size_t len,
                              struct httpreq *out, const char **why);

/* Copy the percent-decoded value of query parameter <key> into <out>.
 * Returns 0, or -1 when absent, malformed or too long. */
int httpreq_query(const struct httpreq *r, const char *key, char *out,
                  size_t outlen);

#endif
