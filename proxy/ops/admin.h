/*
 * admin.h - the admin HTTP server: health and readiness probes, metrics,
 * status (JSON and a page for people) and runtime control of backends.
 *
 * It runs on the control loop, on its own listener (loopback by default).
 * Every connection carries one request, has one timer for the whole
 * exchange, and may not send more than HTTPREQ_MAX bytes. Endpoints:
 *
 *   GET  /healthz                           200 while the process runs
 *   GET  /readyz                            200 ready, 503 with a reason
 *   GET  /metrics                           Prometheus text format
 *   GET  /status                            JSON
 *   GET  /                                  the status page (HTML)
 *   GET  /explain?addr=IP:PORT[&proto=P][&from=IP]   ferry explain
 *   GET  /explain/trace?service=NS/NAME     ferry explain --trace
 *   GET  /explain/watch?addr=IP:PORT[&count=N][&seconds=T]
 *   GET  /explain/watch?id=N                ferry explain --watch
 *   POST /backends/SERVICE/BACKEND/drain    no new connections
 *   POST /backends/SERVICE/BACKEND/enable   undo drain
 *   POST /backends/SERVICE/BACKEND/weight?value=N
 *   POST /backends/SERVICE/BACKEND/reset    undo drain and weight
 *
 * BACKEND is the backend's name or its address. Overrides are kept by
 * service name and backend address, and apply to every table (reloads,
 * API updates) until undone.
 *
 * Reads are open to whoever reaches the port. A control request (POST)
 * is refused with 403 unless it carries X-Ferry-Control: 1, a Host that
 * names the admin address and no Origin but the admin's own (a browser
 * cannot send that cross-site), and with 401 unless it carries
 * "Authorization: Bearer TOKEN" when admin.token_file is set (read at
 * start and on reload). Repeated or unknown query parameters get 400.
 * Action log lines are rate-limited; every action is counted.
 */
#ifndef PROXY_OPS_ADMIN_H
#define PROXY_OPS_ADMIN_H

#include <ev.h>
#include <stdint.h>

#include "config.h"
#include "err.h"

struct health;
struct proxy;
struct sbuf;

/* Filled by main.c in Kubernetes mode; every member may be NULL. */
struct admin_hooks {
    void *arg;
    /* Nonzero once the first full sync from the API is in force. */
    int (*synced)(void *arg);
    /* Seconds the API watch has been failing at loop time <now>, or 0
     * while it is healthy. */
    double (*api_failing_for)(void *arg, double now);
    /* GET /explain/trace's answer for Service <ns>/<name>: a new JSON
     * object, or NULL when out of memory. */
    struct json_t *(*trace)(struct proxy *p, const char *ns, const char *name);
};

struct admin;

/* Returns a new admin server (not listening yet) serving the state of
 * <p> and <h> (borrowed; they must outlive it), or NULL. */
struct admin *admin_new(struct ev_loop *loop, struct proxy *p,
                        struct health *h);

/* Close the listener and every connection; admin_free(NULL) is fine. */
void admin_free(struct admin *a);

/* Apply the "admin:" settings: open, move or close the listener. A bind
 * failure returns -1 with <e> filled and leaves the server closed (the
 * caller logs it; the data plane does not depend on it). */
int admin_configure(struct admin *a, const struct conf_admin *c,
                    struct err *e);

/* Apply the "metrics:" settings to what /metrics writes (from the next
 * scrape on). */
void admin_set_metrics(struct admin *a, const struct conf_metrics *m);

void admin_set_hooks(struct admin *a, const struct admin_hooks *hooks);

/* A table is in force (first one: /readyz may answer ready). Also
 * re-applies the overrides to the proxy's current services: call it
 * after every proxy_apply(). */
void admin_on_applied(struct admin *a);

/* Build the reply to one parsed request into <out> (status line, headers
 * and body), at loop time <now>. Exposed for tests. */
struct httpreq;
void admin_respond(struct admin *a, const struct httpreq *r, double now,
                   struct sbuf *out);

extern const char admin_page_html[];
extern const size_t admin_page_html_len;

#endif
