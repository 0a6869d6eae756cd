/*
 * skip.h - API objects and fields ferry does not serve, and why.
 *
 * Every path that drops an object or one of its fields (a watch line that
 * does not decode, a Service port out of range, an endpoint address that
 * is not an IP...) names a kind and a reason from the fixed sets below.
 * The watcher counts them (ferry_api_objects_skipped_total{kind,reason})
 * and logs them through a limiter, a few lines per reason and interval.
 *
 * Objects that kube-proxy also leaves alone without a word (ExternalName
 * and headless Services, Services labelled for another proxy, FQDN or
 * unlabelled EndpointSlices) are "quiet" reasons: counted, and logged at
 * debug level only.
 *
 * A skip set holds what one build of the table skipped, de-duplicated by
 * (kind, object, reason, field), so that the watcher can count and log an
 * object once when it starts being skipped rather than at every rebuild.
 * Nothing here does I/O except skip_log().
 */
#ifndef WATCHER_SKIP_H
#define WATCHER_SKIP_H

#include <stddef.h>
#include <stdint.h>

enum skip_kind {
    SKIP_KIND_SERVICE = 0,
    SKIP_KIND_ENDPOINTSLICE,
    SKIP_KIND_NODE,
    SKIP_KIND__COUNT
};

enum skip_reason {
    SKIP_MALFORMED = 0,        /* not JSON, not an object, no name, no
                                * spec, wrong kind, a field of the wrong
                                * type */
    SKIP_TOO_LARGE,            /* a watch line over the line cap */
    SKIP_NAME_TOO_LONG,        /* a name too long for the cache or table */
    SKIP_CACHE_FULL,           /* object cap reached */
    SKIP_BAD_PORT,             /* port, nodePort, healthCheckNodePort or
                                * EndpointSlice port not in 1-65535 */
    SKIP_BAD_ADDRESS,          /* an IP field that is not an IP literal */
    SKIP_BAD_PROTOCOL,         /* not TCP, UDP or SCTP */
    SKIP_UNSUPPORTED_PROTOCOL, /* UDP and SCTP on the proxy path */
    SKIP_CONFLICT,             /* address or name served by another
                                * service (API or file) */
    SKIP_NO_NODE_PORT,         /* edge to NodePorts: the port has none */
    SKIP_BAD_ANNOTATION,       /* a ferry.dev/ annotation's value */
    SKIP_NO_MEMORY,            /* memory ran out while taking the object:
                                * not a fault of the object, which the
                                * reflector takes again (reflector.c) */
    /* quiet: kube-proxy ignores these too */
    SKIP_EXTERNAL_NAME, /* Service of type ExternalName */
    SKIP_HEADLESS,      /* clusterIP None (or none), headless label */
    SKIP_OTHER_PROXY,   /* service-proxy-name label not ours */
    SKIP_ADDRESS_TYPE,  /* EndpointSlice of addressType FQDN */
    SKIP_NO_SERVICE,    /* EndpointSlice without service-name label */
    SKIP__COUNT
};

/* Metric label values: "Service", ... and "bad_port", ... */
extern const char *const skip_kind_text[SKIP_KIND__COUNT];
extern const char *const skip_reason_text[SKIP__COUNT];

/* Nonzero for the reasons kube-proxy is silent about. */
int skip_quiet(enum skip_reason r);

/* One skipped object or field. <obj> is "namespace/name" (or a table
 * service name), "" when unknown; <what> says which field and value. */
struct skip_note {
    enum skip_kind kind;
    enum skip_reason reason;
    const char *obj;
    const char *what;
};

/* ---- a set of skips (one build) ---- */

struct skip_set;

/* Returns a new empty set, or NULL. */
struct skip_set *skip_set_new(void);
void skip_set_free(struct skip_set *s);

/* Add a copy of <n>. Returns 1 if it was new, 0 if the same (kind, obj,
 * reason, what) was there, -1 out of memory. */
int skip_set_add(struct skip_set *s, const struct skip_note *n);

size_t skip_set_size(const struct skip_set *s);

/* Entries of <kind> for <reason>. */
size_t skip_set_count(const struct skip_set *s, enum skip_kind kind,
                      enum skip_reason reason);

typedef void (*skip_fn)(void *arg, const struct skip_note *n);

/* Call <fn> for each entry of <cur> that <prev> (NULL: empty) lacks.
 * The note passed is valid during the call only. Returns how many. */
size_t skip_set_each_new(const struct skip_set *cur,
                         const struct skip_set *prev, skip_fn fn, void *arg);

/* ---- the log limiter ---- */

#define SKIP_LOG_BURST  5    /* lines per reason and window */
#define SKIP_LOG_WINDOW 10.0 /* seconds */

struct skip_log {
    struct {
        double start;        /* of the current window, 0 = none yet */
        unsigned lines;      /* logged in it */
        uint64_t suppressed; /* not logged since the last line */
    } r[SKIP__COUNT];
};

/* May a line for <reason> be written at loop time <now>? Returns 1 and
 * sets *suppressed to the lines held back since the last one, or 0 (and
 * counts it as held back). */
int skip_log_pass(struct skip_log *l, enum skip_reason reason, double now,
                  uint64_t *suppressed);

/* Log <n> through the limiter, prefixed "<prefix>: ": a warning, info
 * for the reasons that are ferry's limits (unsupported_protocol,
 * no_node_port), debug for the quiet ones. */
void skip_log(struct skip_log *l, double now, const char *prefix,
              const struct skip_note *n);

#endif
