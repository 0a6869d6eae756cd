/*
 * proxyproto.h - the PROXY protocol, versions 1 (a text line) and 2
 * (binary): a parser for the header a balancer in front of ferry puts
 * before a client's bytes, and a writer for the header ferry puts before
 * them on the way to a backend, so that either end learns the client's
 * address.
 *
 * Both are pure: no socket, no allocation, no global state. The parser
 * takes whatever bytes have arrived so far and says whether they hold a
 * whole header, could still become one, or never will; it reads nothing
 * past the header, so the caller knows exactly how many bytes to take off
 * the socket. Safe in any thread, and in callbacks.
 */
#ifndef PROXY_DATAPLANE_PROXYPROTO_H
#define PROXY_DATAPLANE_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "parse.h"

/* The longest version 1 line, "\r\n" included (the protocol's own cap). */
#define PROXYPROTO_V1_MAX 107
/* A version 2 header: 16 fixed bytes, then up to 65535 more. */
#define PROXYPROTO_V2_FIXED 16
#define PROXYPROTO_V2_MAX   (PROXYPROTO_V2_FIXED + 65535)
/* Room proxyproto_write() needs for any header it writes. */
#define PROXYPROTO_WRITE_MAX 108

enum proxyproto_status {
    PROXYPROTO_DONE = 0, /* a whole, valid header */
    PROXYPROTO_NEED,     /* a valid beginning: wait for more bytes */
    PROXYPROTO_ERROR,    /* not a header, whatever follows */
};

/* Why bytes are not a header; proxyproto_err_text[] says it in words. */
enum proxyproto_err {
    PROXYPROTO_ERR_NONE = 0,
    PROXYPROTO_ERR_SIGNATURE, /* neither "PROXY " nor the v2 signature */
    PROXYPROTO_ERR_V1_LONG,   /* no "\r\n" within 107 bytes */
    PROXYPROTO_ERR_V1_SYNTAX, /* a byte or a field out of place */
    PROXYPROTO_ERR_V1_PROTO,  /* not TCP4, TCP6 or UNKNOWN */
    PROXYPROTO_ERR_V1_ADDR,   /* an address not of the family named */
    PROXYPROTO_ERR_V1_PORT,   /* a port not decimal 0..65535 */
    PROXYPROTO_ERR_V2_VERSION,
    PROXYPROTO_ERR_V2_COMMAND,
    PROXYPROTO_ERR_V2_FAMILY, /* unknown family or transport */
    PROXYPROTO_ERR_V2_LENGTH, /* too short for its addresses */
    PROXYPROTO_ERR_V2_TLV,    /* a TLV runs past the header */
    PROXYPROTO_ERR__COUNT
};

extern const char *const proxyproto_err_text[PROXYPROTO_ERR__COUNT];

/* A parsed header. */
struct proxyproto_hdr {
    size_t len;      /* bytes the header takes, from the first */
    uint8_t version; /* 1 or 2 */
    /* Nonzero when <src> and <dst> hold the client's addresses (TCP over
     * IPv4 or IPv6). Zero for a v2 LOCAL command (the balancer's own
     * connection, a health check say), a v1 UNKNOWN line, and a v2
     * UNSPEC or UNIX family: the connection's own addresses stand. */
    uint8_t has_addrs;
    uint8_t local; /* v2 LOCAL command */
    struct saddr src, dst;
};

/* Parse the <len> bytes at <buf> (borrowed), the first bytes a client
 * sent. Returns PROXYPROTO_DONE with <out> filled (out->len bytes are
 * the header; what follows is the client's), PROXYPROTO_NEED when more
 * bytes are needed to decide, or PROXYPROTO_ERROR with <err> set. A
 * header is refused as soon as a byte shows it cannot be one (garbage is
 * refused at its first byte), and parsing is strict: v1 fields separated
 * by one space, addresses and ports in their one spelling; v2 version 2,
 * a known command, family and transport, and TLVs that fit the header
 * exactly (they are skipped). Never reads past <len>, nor past the
 * header once its end is known. */
enum proxyproto_status proxyproto_parse(const void *buf, size_t len,
                                        struct proxyproto_hdr *out,
                                        enum proxyproto_err *err);

/* Write a header of <version> (1 or 2) for a connection from <src> to
 * <dst> (borrowed; either may be NULL) into <out>, which has room for
 * <cap> bytes (PROXYPROTO_WRITE_MAX is always enough). When the two are
 * not both IPv4 or both IPv6, v1 writes "PROXY UNKNOWN\r\n" and v2 a
 * PROXY command with the UNSPEC family: the receiver then uses the
 * connection's own addresses. Returns the header's length, or 0 when
 * <cap> is too small or <version> unknown. */
size_t proxyproto_write(int version, const struct saddr *src,
                        const struct saddr *dst, char *out, size_t cap);

#endif
