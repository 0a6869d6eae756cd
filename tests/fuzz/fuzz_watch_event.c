/*
 * fuzz_watch_event.c - libFuzzer target for one watch-event line on its
 * way to a table: kcache_apply_line() (watcher/kcache.c) into a Service
 * and an EndpointSlice cache that already hold a small cluster, then
 * translate_build() (watcher/translate.c) over the result, as the watcher
 * does after each change.
 *
 * The input is one line, or several separated by '\n' (a stream chunk);
 * each line goes to both caches, as a line of the wrong kind must be
 * refused cleanly too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kcache.h"
#include "log.h"
#include "translate.h"

#define MAX_LINES 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The cluster every run starts from: one Service and its slice. */
static const char *const base_svc =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Service\",\"metadata\":"
    "{\"name\":\"web\",\"namespace\":\"shop\",\"resourceVersion\":\"100\"},"
    "\"spec\":{\"type\":\"NodePort\",\"clusterIP\":\"198.18.0.10\","
    "\"clusterIPs\":[\"198.18.0.10\"],\"ports\":[{\"name\":\"http\","
    "\"protocol\":\"TCP\",\"port\":80,\"targetPort\":8080,"
    "\"nodePort\":31080}]}}}";
static const char *const base_eps =
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"EndpointSlice\",\"metadata\":"
    "{\"name\":\"web-1\",\"namespace\":\"shop\",\"resourceVersion\":\"101\","
    "\"labels\":{\"kubernetes.io/service-name\":\"web\"}},"
    "\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":"
    "[\"198.18.2.7\"],\"conditions\":{\"ready\":true},\"nodeName\":"
    "\"node-a\",\"zone\":\"z1\"}],\"ports\":[{\"name\":\"http\","
    "\"protocol\":\"TCP\",\"port\":8080}]}}";

static struct saddr node_addr;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *why;

    (void)argc;
    (void)argv;
    log_setup(LOG_ERROR, LOG_TEXT);
    if (parse_ip("198.18.1.1", 0, &node_addr, &why) < 0)
        abort();
    return 0;
}

static void
apply(struct kcache *c, const char *line, size_t len)
{
    struct kcache_event ev;
    struct err e;
    int rc;

    err_clear(&e);
    rc = kcache_apply_line(c, line, len, &ev, &e);
    if (rc == -1 && e.msg[0] == '\0')
        abort(); /* a refusal always says why */
    if (rc != -1 && rc != KCACHE_APPLIED && rc != KCACHE_ERROR
        && rc != KCACHE_REGRESS)
        abort();
    if (memchr(ev.rv, '\0', sizeof(ev.rv)) == NULL
        || memchr(ev.reason, '\0', sizeof(ev.reason)) == NULL
        || memchr(ev.message, '\0', sizeof(ev.message)) == NULL)
        abort();
}

static void
build(const struct kcache *svcs, const struct kcache *eps, int edge)
{
    struct translate_opts o;
    struct translate_stats st;
    struct table *t = table_new();
    struct err e;
    size_t i;

    if (t == NULL)
        return;
    memset(&o, 0, sizeof(o));
    o.node_name = edge ? NULL : "node-a";
    o.node_zone = edge ? NULL : "z1";
    o.node_addrs = &node_addr;
    o.n_node_addrs = 1;
    o.stats = &st;
    o.edge = edge;
    err_clear(&e);
    if (translate_build(svcs, eps, &o, t, &e) < 0)
        abort(); /* only running out of memory fails a build */
    for (i = 0; i < t->nservices; i++)
        if (table_service(t, i)->name[0] == '\0')
            abort();
    table_freeze(t, 1);
    table_unref(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kcache *svcs = kcache_new("Service", 1);
    struct kcache *eps = kcache_new("EndpointSlice", 1);
    char *copy = malloc(size ? size : 1);
    size_t off = 0, n;
    int lines;

    if (svcs == NULL || eps == NULL || copy == NULL)
        abort();
    apply(svcs, base_svc, strlen(base_svc));
    apply(eps, base_eps, strlen(base_eps));
    if (kcache_size(svcs) != 1 || kcache_size(eps) != 1)
        abort();
    memcpy(copy, data, size);
    for (lines = 0; off < size && lines < MAX_LINES; lines++) {
        const char *nl = memchr(copy + off, '\n', size - off);
        n = nl ? (size_t)(nl - (copy + off)) : size - off;
        /* Each line in its own exact-size buffer, so that reading past
         * its end is caught. */
        char *line = malloc(n ? n : 1);
        if (line == NULL)
            abort();
        memcpy(line, copy + off, n);
        apply(svcs, line, n);
        apply(eps, line, n);
        free(line);
        off += n + 1;
    }
    build(svcs, eps, 0);
    if (size & 1) /* edge mode too, for half the inputs (it costs) */
        build(svcs, eps, 1);
    kcache_free(svcs);
    kcache_free(eps);
    free(copy);
    return 0;
}
