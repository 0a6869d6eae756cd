/*
 * ferry-watch-dump - run the watcher against an API server and print each
 * published table as one JSON line on stdout. A test driver: it lets the
 * integration tests check list/watch/410/429/401/token rotation end to
 * end without the proxy. SIGINT/SIGTERM end it cleanly.
 */
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "watcher.h"

#define MAX_NODE_ADDRS 8

struct dump {
    struct watcher *w;
    long max_tables; /* exit after this many, 0 = never */
    long tables;
    struct ev_loop *loop;
};

static json_t *
backend_json(const struct tbl_backend *b)
{
    char a[SADDR_STR_MAX];
    json_t *flags = json_array();

    if (b->flags & TBL_BE_READY)
        json_array_append_new(flags, json_string("ready"));
    if (b->flags & TBL_BE_SERVING)
        json_array_append_new(flags, json_string("serving"));
    if (b->flags & TBL_BE_TERMINATING)
        json_array_append_new(flags, json_string("terminating"));
    if (b->flags & TBL_BE_LOCAL)
        json_array_append_new(flags, json_string("local"));
    return json_pack("{s:s, s:s, s:i, s:o}", "addr",
                     saddr_str(&b->addr, a, sizeof(a)), "name", b->name,
                     "weight", (int)b->weight, "flags", flags);
}

static json_t *
service_json(const struct tbl_service *s)
{
    json_t *fe = json_array(), *be = json_array();
    char a[SADDR_STR_MAX];
    size_t i;

    for (i = 0; i < s->nfrontends; i++)
        json_array_append_new(
            fe, json_string(saddr_str(&s->frontends[i], a, sizeof(a))));
    for (i = 0; i < s->nbackends; i++)
        json_array_append_new(be, backend_json(&s->backends[i]));
    return json_pack("{s:s, s:o, s:o, s:I, s:s}", "name", s->name, "frontends",
                     fe, "backends", be, "affinity_timeout_ms",
                     (json_int_t)s->affinity_timeout_ms, "balance",
                     tbl_balance_name(s->balance));
}

static void
on_publish(struct table *t, void *arg)
{
    struct dump *d = arg;
    struct watcher_status st;
    json_t *svcs = json_array(), *out, *patched;
    double lat = 0;
    size_t i;
    char *txt;

    watcher_status(d->w, &st);
    watcher_latencies(d->w, &lat, 1);
    for (i = 0; i < t->nservices; i++)
        json_array_append_new(svcs, service_json(table_service(t, i)));
    /* A table patched into the last one (translate_patch()): the services
     * it replaced; null for a table built whole. */
    patched = t->base != 0 ? json_array() : json_null();
    for (i = 0; t->base != 0 && i < t->ndsvcs; i++)
        json_array_append_new(patched,
                              json_string(table_service(t, t->dsvcs[i])->name));
    out = json_pack("{s:I, s:f, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:b, s:s, "
                    "s:I, s:I}}",
                    "generation", (json_int_t)t->generation, "latency_ms",
                    lat * 1e3, "services", svcs, "patched", patched,
                    "status", "relists",
                    (json_int_t)st.relists, "watch_restarts",
                    (json_int_t)st.watch_restarts, "errors",
                    (json_int_t)st.errors, "events", (json_int_t)st.events,
                    "api_healthy", st.api_healthy, "zone", st.node_zone,
                    "nomem_api", (json_int_t)st.nomem_api, "nomem_builds",
                    (json_int_t)st.nomem_builds);
    txt = json_dumps(out, JSON_COMPACT);
    if (txt != NULL) {
        fputs(txt, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    free(txt);
    json_decref(out);
    table_unref(t);
    if (d->max_tables > 0 && ++d->tables >= d->max_tables)
        ev_break(d->loop, EVBREAK_ALL);
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void
usage(void)
{
    fprintf(stderr,
            "usage: ferry-watch-dump [--api-server URL] [--kubeconfig FILE]\n"
            "  [--sa-dir DIR] [--node-name NAME] [--node-addr IP]...\n"
            "  [--proxy-name NAME] [--selector SEL] [--insecure]\n"
            "  [--log-level LEVEL] [--tables N]\n");
    exit(2);
}

static int
parse_args(int argc, char **argv, struct watcher_conf *wc, struct saddr *addrs,
           long *max_tables)
{
    static const struct option opts[] = {{"api-server", 1, 0, 'a'},
                                         {"kubeconfig", 1, 0, 'k'},
                                         {"sa-dir", 1, 0, 's'},
                                         {"node-name", 1, 0, 'n'},
                                         {"node-addr", 1, 0, 'A'},
                                         {"proxy-name", 1, 0, 'p'},
                                         {"selector", 1, 0, 'l'},
                                         {"insecure", 0, 0, 'i'},
                                         {"log-level", 1, 0, 'L'},
                                         {"tables", 1, 0, 't'},
                                         {0, 0, 0, 0}};
    enum log_level lvl;
    const char *why;
    int c;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            wc->api_server = optarg;
            break;
        case 'k':
            wc->kubeconfig = optarg;
            break;
        case 's':
            wc->sa_dir = optarg;
            break;
        case 'n':
            wc->node_name = optarg;
            break;
        case 'p':
            wc->service_proxy_name = optarg;
            break;
        case 'l':
            wc->label_selector = optarg;
            break;
        case 'i':
            wc->insecure_skip_tls_verify = 1;
            break;
        case 't':
            *max_tables = strtol(optarg, NULL, 10);
            break;
        case 'A':
            if (wc->n_node_addrs == MAX_NODE_ADDRS
                || parse_ip(optarg, 0, &addrs[wc->n_node_addrs], &why) < 0)
                usage();
            wc->n_node_addrs++;
            break;
        case 'L':
            if (log_level_parse(optarg, &lvl) < 0)
                usage();
            log_setup(lvl, LOG_TEXT);
            break;
        default:
            usage();
        }
    }
    return optind == argc ? 0 : -1;
}

int
main(int argc, char **argv)
{
    struct saddr addrs[MAX_NODE_ADDRS];
    struct watcher_conf wc;
    struct dump d;
    ev_signal sint, sterm;
    struct err e;
    char buf[600];

    memset(&wc, 0, sizeof(wc));
    memset(&d, 0, sizeof(d));
    wc.node_addrs = addrs;
    if (parse_args(argc, argv, &wc, addrs, &d.max_tables) < 0)
        usage();
    d.loop = EV_DEFAULT;
    err_clear(&e);
    d.w = watcher_new(d.loop, &wc, on_publish, &d, &e);
    if (d.w == NULL) {
        fprintf(stderr, "ferry-watch-dump: %s\n",
                err_str(&e, buf, sizeof(buf)));
        return 1;
    }
    ev_signal_init(&sint, on_signal, SIGINT);
    ev_signal_init(&sterm, on_signal, SIGTERM);
    ev_signal_start(d.loop, &sint);
    ev_signal_start(d.loop, &sterm);
    ev_run(d.loop, 0);
    watcher_free(d.w);
    ev_signal_stop(d.loop, &sint);
    ev_signal_stop(d.loop, &sterm);
    ev_loop_destroy(d.loop);
    return 0;
}
