/*
 * tlshello.h - the server name a TLS client asks for, read from its
 * ClientHello without terminating TLS (README: SNI routing), and the host
 * name rules that the config's "sni:" lists and the names read share.
 *
 * Pure: no socket, no allocation, no global state; safe in any thread and
 * in loop callbacks. It lives in conf/ because the config checks its
 * "sni:" entries with the same rules as the data plane's names.
 */
#ifndef CONF_TLSHELLO_H
#define CONF_TLSHELLO_H

#include <stddef.h>

/* The most bytes of handshake message a ClientHello may take (its 4-byte
 * header included); the records around it add 5 bytes each. A larger
 * one is refused. */
#define TLSHELLO_MAX 16384
/* The longest host name (RFC 1035), and room for it with its NUL. */
#define TLSHELLO_NAME_MAX  253
#define TLSHELLO_NAME_SIZE (TLSHELLO_NAME_MAX + 1)

enum tlshello_status {
    TLSHELLO_NAME = 0, /* a whole ClientHello naming a server */
    TLSHELLO_NO_SNI,   /* a whole ClientHello without a host name */
    TLSHELLO_NEED,     /* a valid beginning: wait for more bytes */
    TLSHELLO_ERROR,    /* not a ClientHello, whatever follows */
};

/* Why bytes are not a ClientHello; tlshello_err_text[] says it in words. */
enum tlshello_err {
    TLSHELLO_ERR_NONE = 0,
    TLSHELLO_ERR_NOT_HANDSHAKE, /* a record that is not a handshake one */
    TLSHELLO_ERR_VERSION,       /* a record or hello version not 3.x */
    TLSHELLO_ERR_RECORD_LENGTH, /* a record of 0 or more than 2^14 bytes */
    TLSHELLO_ERR_NOT_HELLO,     /* a handshake message not client_hello */
    TLSHELLO_ERR_TOO_LARGE,     /* more than TLSHELLO_MAX bytes */
    TLSHELLO_ERR_TRAILING,      /* bytes after the hello in its record */
    TLSHELLO_ERR_TRUNCATED,     /* a field runs past the message */
    TLSHELLO_ERR_EXTENSIONS,    /* extension lengths do not add up */
    TLSHELLO_ERR_SNI,           /* a malformed or repeated server_name */
    TLSHELLO_ERR_NAME,          /* a host name that is not a DNS name */
    TLSHELLO_ERR__COUNT
};

extern const char *const tlshello_err_text[TLSHELLO_ERR__COUNT];

struct tlshello {
    size_t len; /* bytes of records the hello takes, from the first */
    /* TLSHELLO_NAME: the host name, lower-cased; else "". */
    char name[TLSHELLO_NAME_SIZE];
};

/* Parse the <len> bytes at <buf> (borrowed), the first bytes a client
 * sent. Returns TLSHELLO_NAME or TLSHELLO_NO_SNI with <out> filled,
 * TLSHELLO_NEED when more bytes are needed to decide, or TLSHELLO_ERROR
 * with <err> set. Strict: handshake records of version 3.x, one
 * client_hello message that may span records and ends its last one,
 * every length checked against what holds it, at most one server_name
 * extension holding at most one host name, itself a valid DNS host name
 * (tlshello_name_check). Bytes past the records holding the hello are
 * not read. Garbage is refused at its first byte. */
enum tlshello_status tlshello_parse(const void *buf, size_t len,
                                    struct tlshello *out,
                                    enum tlshello_err *err);

/* Whether the <n> bytes at <name> are a DNS host name: 1 to 253 bytes of
 * dot-separated labels of 1 to 63 letters, digits and hyphens, no label
 * starting or ending with a hyphen, the last not all digits (an IPv4
 * address is not a host name), no trailing dot. Returns NULL, or why
 * not. */
const char *tlshello_name_check(const char *name, size_t n);

/* Whether host name <name> (lower case) matches <pattern> (lower case):
 * equal, or <pattern> is "*.<suffix>" and <name> is one label more than
 * <suffix> followed by it. Returns 2 for an exact match, 1 for a wildcard
 * one, 0 for none. */
int tlshello_match(const char *pattern, const char *name);

#endif
