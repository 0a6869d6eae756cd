/*
 * httpd.h - a small HTTP/1.1 server on a libev loop: one request per
 * connection (Connection: close), for the admin server and kube-proxy's
 * health endpoints.
 *
 * Each connection reads at most HTTPREQ_MAX bytes, parses them with
 * httpreq_parse(), answers 400 ("bad request: <why>") to a malformed or
 * oversized request, and otherwise hands the request to the handler of
 * the listener that accepted it. The reply is written from a capped
 * buffer (500 "reply too large" past the cap), then the server sends its
 * FIN and reads until the client's, so that unread request bytes cannot
 * turn the close into a reset that loses the reply. A timer bounds the
 * whole request and reply; another bounds the linger.
 *
 * Idle clients cannot lock probes out: at the connection cap, or at the
 * cap per client address (IPv4 address or IPv6 /64, a quarter of the
 * total by default), the oldest connection that has not sent a whole
 * request (else one whose reply is out) is closed for the new one. One
 * client thus never pushes out another's, and a fresh request is read
 * long before enough newer connections arrive to push it out. On EMFILE
 * (and ENFILE, ENOBUFS, ENOMEM) the listeners stop for 100 ms, or until
 * a connection closes, rather than wake the loop again and again.
 *
 * Everything runs on the loop given to httpd_new(); nothing is thread-safe.
 */
#ifndef PROXY_HTTP_HTTPD_H
#define PROXY_HTTP_HTTPD_H

#include <ev.h>
#include <stddef.h>

#include "err.h"
#include "parse.h"

struct httpreq;
struct sbuf;

/* Answers request <r> (borrowed, valid during the call) into <out> with
 * httpd_reply(). <arg> and <tag> are those given to httpd_listen(), copied
 * into the connection at accept: the listener may be gone by now. <now>
 * is the loop's cached time (ev_now). Runs inside a loop callback; it must
 * not call httpd_free() on its own server. */
typedef void (*httpd_handler_fn)(void *arg, unsigned tag,
                                 const struct httpreq *r, double now,
                                 struct sbuf *out);

struct httpd;
struct httpd_listener;

/* A server with no listener yet. <name> (copied) prefixes its log lines
 * ("admin", "healthz"). A reply may take <reply_max> bytes; at most
 * <max_conns> connections are open (see above for who gives way), and
 * <max_conns> / 4 from one client. The request timeout starts at 5 s.
 * Returns new, or NULL when out of memory; free with httpd_free(). */
struct httpd *httpd_new(struct ev_loop *loop, const char *name,
                        size_t reply_max, unsigned max_conns);

/* Close every listener and connection, then free <h>. NULL does nothing.
 * Not from inside one of <h>'s handlers. */
void httpd_free(struct httpd *h);

/* Time a connection has, from its accept, to send a whole request and
 * read the reply. Applies to connections accepted from now on. */
void httpd_set_timeout(struct httpd *h, double seconds);

/* At most <max> (at least 1) connections from one client address. */
void httpd_set_per_source(struct httpd *h, unsigned max);

/* Call <fn> each time accepting pauses for lack of descriptors (a
 * counter of the caller's; NULL: none). */
void httpd_set_on_pause(struct httpd *h, void (*fn)(void));

/* Listen on <addr> (borrowed) and answer with <fn>(<arg>, <tag>, ...);
 * <arg> is borrowed and must outlive every connection of <h> (in practice,
 * <h> itself). Returns the listener, owned by <h>, or NULL with <e>
 * filled ("cannot listen on ADDR: reason"; the caller adds context). */
struct httpd_listener *httpd_listen(struct httpd *h, const struct saddr *addr,
                                    httpd_handler_fn fn, void *arg,
                                    unsigned tag, struct err *e);

/* Close and free listener <l> of <h>; its open connections finish with
 * the handler they were accepted with. NULL does nothing. */
void httpd_unlisten(struct httpd *h, struct httpd_listener *l);

/* Append a complete reply to <out>: status line, <ctype>, the length of
 * <body> (<len> bytes, borrowed), no-store, Connection: close, and
 * <extra> header lines ("" or "Name: value\r\n", borrowed). With
 * <head_only>, the body is left out but its length still announced. */
void httpd_reply(struct sbuf *out, int status, const char *ctype,
                 const char *extra, const char *body, size_t len,
                 int head_only);

/* httpd_reply() of a NUL-terminated text/plain (UTF-8) body. */
void httpd_reply_text(struct sbuf *out, int status, const char *text,
                      int head_only);

#endif
