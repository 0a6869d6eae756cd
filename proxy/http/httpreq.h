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

/* Where one header line's name and value (trimmed) lie in the buffer. */
struct httpreq_hdr {
    unsigned short name, name_len, value, value_len; /* offsets, lengths */
};

struct httpreq {
    enum httpreq_method method;
    int minor;                    /* HTTP/1.<minor> */
    char path[HTTPREQ_PATH_MAX];  /* percent-decoded, without the query */
    char query[HTTPREQ_PATH_MAX]; /* raw text after '?', or "" */
    size_t length;                /* bytes the request occupies */
    const char *buf;              /* the parsed buffer (borrowed) */
    unsigned nhdrs;
    struct httpreq_hdr hdrs[HTTPREQ_HEADERS_MAX];
};

/* Parse the request at the start of <buf> (<len> bytes, no NUL needed).
 * On HTTPREQ_OK, <out> is filled and points into <buf> for its headers:
 * <buf> must outlive every httpreq_header() call on it. Otherwise <out>'s
 * contents are unspecified. <why> (may be NULL) gets a static reason on
 * HTTPREQ_BAD. */
enum httpreq_rc httpreq_parse(const char *buf, size_t len,
                              struct httpreq *out, const char **why);

/* Copy the percent-decoded value of query parameter <key> into <out>.
 * Returns 0, or -1 when absent, malformed or too long. */
int httpreq_query(const struct httpreq *r, const char *key, char *out,
                  size_t outlen);

/* Nonzero when every query parameter of <r> is one of the <nkeys> names
 * of <keys> and none appears twice ("value=5&value=300" is ambiguous:
 * refuse rather than pick one). An empty query passes. */
int httpreq_query_only(const struct httpreq *r, const char *const *keys,
                       size_t nkeys);

/* Header <name> (case-insensitive) of <r>: returns how many lines carry
 * it (0: absent), with the first one's value, trimmed and not
 * NUL-terminated, in <val>/<len> (both may be NULL). The value points
 * into the buffer given to httpreq_parse(). */
unsigned httpreq_header(const struct httpreq *r, const char *name,
                        const char **val, size_t *len);

#endif
