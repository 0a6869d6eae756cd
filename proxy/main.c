#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "accesslog.h"
#include "admin.h"
#include "ctl.h"
#include "kube.h"
#include "log.h"
#include "nft.h"
#include "proxy.h"
#include "vip.h"

#define FERRY_VERSION "0.1.0"

struct opts {
    const char *config;     /* NULL: the built-in default */
    const char *log_level;  /* overrides the file */
    const char *log_format;
    struct kube_flags kf;   /* --kubeconfig, --api-server, --node-name */
};

struct daemon {
    struct ev_loop *loop;
    struct opts o;
    struct proxy *proxy;
    struct ctl ctl; /* health checks, admin server, metrics */
    struct kube *kube; /* Kubernetes mode, or NULL */
    uint64_t generation;
    double drain_timeout_s;
    int exit_code;
    unsigned workers; /* relay.workers at start (0: one per CPU) */
    struct ev_signal sig_hup, sig_term, sig_int, sig_usr1;
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: ferry [-c FILE] [--log-level LEVEL] [--log-format FMT]\n"
            "       ferry check-config FILE\n"
            "       ferry cleanup\n"
            "       ferry --print-default-config | --version | --help\n"
            "\n"
            "  -c, --config FILE      configuration file (YAML); without it\n"
            "                         ferry runs its built-in demo config\n"
            "      --log-level LEVEL  debug, info, warn or error (overrides "
            "the file)\n"
            "      --log-format FMT   text or json (overrides the file)\n"
            "\n"
            "Kubernetes mode (also \"kubernetes:\" in the file):\n"
            "      --kubeconfig FILE  API credentials from a kubeconfig\n"
            "      --api-server URL   the API server's address (wins over "
            "the kubeconfig\n"
            "                         and the in-cluster environment)\n"
            "      --node-name NAME   this node (default: NODE_NAME, then "
            "the host name)\n"
            "  ferry cleanup          remove the service addresses ferry "
            "added and its\n"
            "                         nftables table (inet ferry), and "
            "exit\n"
            "\n"
            "signals: SIGHUP re-reads the file; SIGTERM or SIGINT stop "
            "accepting,\n"
            "let open connections finish (drain_timeout), then exit 0;\n"
            "SIGUSR1 reopens the access log file (logrotate).\n");
}

/* Load the config named by the options (or the built-in one). */
static struct conf *
load_conf(const struct opts *o, struct err *e)
{
    static const char kube_only[] = "kubernetes: {enabled: true}\n";

    if (o->config != NULL)
        return conf_load_file(o->config, e);
    /* Flags alone mean Kubernetes mode with every default, not the demo. */
    if (o->kf.kubeconfig != NULL || o->kf.api_server != NULL)
        return conf_load_buf("<flags>", kube_only, sizeof(kube_only) - 1, e);
    return conf_load_buf("<built-in>", conf_default_yaml,
                         conf_default_yaml_len, e);
}

/* Logging from the file, unless the command line says otherwise. */
static int
apply_logging(const struct opts *o, const struct conf *c)
{
    enum log_level level = c->log_level;
    enum log_format format = c->log_format;

    if (o->log_level != NULL && log_level_parse(o->log_level, &level) < 0) {
        fprintf(stderr, "ferry: unknown log level \"%s\"\n", o->log_level);
        return -1;
    }
    if (o->log_format != NULL) {
        if (strcmp(o->log_format, "json") == 0)
            format = LOG_JSON;
        else if (strcmp(o->log_format, "text") == 0)
            format = LOG_TEXT;
        else {
            fprintf(stderr, "ferry: unknown log format \"%s\"\n",
                    o->log_format);
            return -1;
        }
    }
    log_setup(level, format);
    return 0;
}

static void
daemon_reload(struct daemon *d)
{
    const char *name = d->o.config ? d->o.config : "<built-in>";
    char msg[ERR_STR_MAX];
    struct conf *c;
    struct err e;

    err_clear(&e);
    c = load_conf(&d->o, &e);
    if (c == NULL) {
        log_error("reload: rejected %s; keeping generation %llu",
                  err_str(&e, msg, sizeof(msg)),
                  (unsigned long long)d->generation);
        return;
    }
    if (d->kube != NULL) {
        /* The file's services merge with the API's; the merged table gets
         * the next generation. */
        kube_reconfigure(d->kube, c);
        goto applied;
    }
    d->generation++;
    table_freeze(c->table, d->generation);
    err_clear(&e);
    if (proxy_apply(d->proxy, c->table, PROXY_APPLY_STRICT, &e) < 0) {
        d->generation--;
        log_error("reload: rejected %s: %s; keeping generation %llu", name,
                  err_str(&e, msg, sizeof(msg)),
                  (unsigned long long)d->generation);
        conf_free(c);
        return;
    }
applied:
    if (c->relay.workers != d->workers)
        log_warn("reload: relay.workers changed (%u to %u): it takes effect "
                 "at the next start; %u worker(s) keep running",
                 d->workers, c->relay.workers, proxy_nworkers(d->proxy));
    apply_logging(&d->o, c);
    err_clear(&e);
    if (accesslog_configure(&c->access_log, proxy_nworkers(d->proxy), &e) < 0)
        log_error("reload: %s; the access log keeps its previous settings",
                  err_str(&e, msg, sizeof(msg)));
    ctl_configure(&d->ctl, c);
    d->drain_timeout_s = c->drain_timeout_ms / 1e3;
    log_info("reload: applied %s (generation %llu, %zu services)", name,
             (unsigned long long)d->generation, c->table->nservices);
    conf_free(c);
}

static void
daemon_on_drained(struct proxy *p, void *arg)
{
    struct daemon *d = arg;

    (void)p;
    log_info("drained, exiting");
    ev_break(d->loop, EVBREAK_ALL);
}

static void
daemon_on_signal(struct ev_loop *loop, struct ev_signal *s, int rev)
{
    struct daemon *d = s->data;

    (void)rev;
    if (s->signum == SIGHUP) {
        log_info("SIGHUP: reloading");
        daemon_reload(d);
        return;
    }
    if (s->signum == SIGUSR1) {
        accesslog_reopen();
        return;
    }
    if (proxy_draining(d->proxy)) {
        log_warn("second stop signal: exiting now");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    log_info("%s: stopping", strsignal(s->signum));
    proxy_drain(d->proxy, d->drain_timeout_s);
}

static void
daemon_signals(struct daemon *d)
{
    signal(SIGPIPE, SIG_IGN);
    ev_signal_init(&d->sig_hup, daemon_on_signal, SIGHUP);
    ev_signal_init(&d->sig_term, daemon_on_signal, SIGTERM);
    ev_signal_init(&d->sig_int, daemon_on_signal, SIGINT);
    ev_signal_init(&d->sig_usr1, daemon_on_signal, SIGUSR1);
    d->sig_hup.data = d->sig_term.data = d->sig_int.data = d;
    d->sig_usr1.data = d;
    ev_signal_start(d->loop, &d->sig_hup);
    ev_signal_start(d->loop, &d->sig_term);
    ev_signal_start(d->loop, &d->sig_int);
    ev_signal_start(d->loop, &d->sig_usr1);
}

/* Kubernetes mode: follow the API; /readyz waits for the first sync. */
static int
daemon_start_kube(struct daemon *d, const struct conf *c)
{
    struct admin_hooks hooks;
    char msg[ERR_STR_MAX];
    struct err e;

    err_clear(&e);
    d->kube = kube_new(d->loop, d->proxy, c, &d->o.kf, &d->generation, &e);
    if (d->kube == NULL) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        return -1;
    }
    kube_set_health(d->kube, d->ctl.health);
    if (d->ctl.admin != NULL) {
        memset(&hooks, 0, sizeof(hooks));
        hooks.arg = d->kube;
        hooks.synced = kube_synced;
        hooks.api_failing_for = kube_api_failing_for;
        admin_set_hooks(d->ctl.admin, &hooks);
    }
    return 0;
}

static int
daemon_run(const struct opts *o)
{
    struct daemon d;
    char msg[ERR_STR_MAX];
    struct conf *c;
    struct err e;

    memset(&d, 0, sizeof(d));
    d.o = *o;
    err_clear(&e);
    c = load_conf(o, &e);
    if (c == NULL) {
        /* Same form as check-config: editors and CI parse FILE:LINE:COL. */
        fprintf(stderr, "%s\n", err_str(&e, msg, sizeof(msg)));
        return 1;
    }
    if (apply_logging(o, c) < 0) {
        conf_free(c);
        return 2;
    }
    d.loop = ev_default_loop(EVFLAG_AUTO);
    if (d.loop == NULL || (d.proxy = proxy_new(d.loop)) == NULL) {
        log_error("cannot initialise the event loop");
        conf_free(c);
        return 1;
    }
    proxy_on_drained(d.proxy, daemon_on_drained, &d);
    if (proxy_start_workers(d.proxy, c->relay.workers, &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    d.workers = c->relay.workers;
    if (ctl_init(&d.ctl, d.loop, d.proxy) < 0) {
        log_error("out of memory");
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    d.drain_timeout_s = c->drain_timeout_ms / 1e3;
    d.generation = 1;
    table_freeze(c->table, d.generation);
    if (proxy_apply(d.proxy, c->table, PROXY_APPLY_STRICT, &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        return 1;
    }
    if (accesslog_configure(&c->access_log, proxy_nworkers(d.proxy), &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        return 1;
    }
    ctl_configure(&d.ctl, c);
    if (kube_wanted(c, &o->kf) && daemon_start_kube(&d, c) < 0) {
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        accesslog_shutdown();
        return 1;
    }
    log_info("ferry %s serving %zu service(s) from %s (generation %llu, "
             "%u worker%s)",
             FERRY_VERSION, c->table->nservices,
             o->config ? o->config : "the built-in demo config",
             (unsigned long long)d.generation, proxy_nworkers(d.proxy),
             proxy_nworkers(d.proxy) == 1 ? "" : "s");
    conf_free(c);
    daemon_signals(&d);
    ev_run(d.loop, 0);
    if (kube_refused(d.kube))
        d.exit_code = 1;
    kube_free(d.kube);
    ctl_deinit(&d.ctl);
    proxy_free(d.proxy);
    /* After the workers: the connections they reset are logged too. */
    accesslog_shutdown();
    ev_signal_stop(d.loop, &d.sig_hup);
    ev_signal_stop(d.loop, &d.sig_usr1);
    ev_signal_stop(d.loop, &d.sig_term);
    ev_signal_stop(d.loop, &d.sig_int);
    ev_loop_destroy(d.loop);
    return d.exit_code;
}

static int
check_config(const char *path)
{
    char msg[ERR_STR_MAX];
    struct conf *c;
    struct err e;

    err_clear(&e);
    c = conf_load_file(path, &e);
    if (c == NULL) {
        fprintf(stderr, "%s\n", err_str(&e, msg, sizeof(msg)));
        return 1;
    }
    printf("%s: OK (%zu service(s))\n", path, c->table->nservices);
    conf_free(c);
    return 0;
}

/* Remove what ferry put on the node: every service address it added, on
 * any interface, and its nftables table. Each is tried whatever the other
 * gave. */
static int
cleanup(void)
{
    char msg[ERR_STR_MAX];
    struct err e;
    int n, rc = 0;

    err_clear(&e);
    n = vip_cleanup(&e);
    if (n < 0) {
        fprintf(stderr, "ferry cleanup: %s\n", err_str(&e, msg, sizeof(msg)));
        rc = 1;
    } else {
        printf("ferry cleanup: removed %d address(es)\n", n);
    }
    err_clear(&e);
    n = nft_cleanup(&e);
    if (n < 0) {
        fprintf(stderr, "ferry cleanup: %s\n", err_str(&e, msg, sizeof(msg)));
        rc = 1;
    } else {
        printf("ferry cleanup: %s\n", n > 0 ? "deleted table inet " NFT_TABLE
                                             : "no table inet " NFT_TABLE);
    }
    return rc;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"kubeconfig", required_argument, NULL, 'K'},
        {"api-server", required_argument, NULL, 'A'},
        {"node-name", required_argument, NULL, 'N'},
        {"print-default-config", no_argument, NULL, 'P'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o = {0};
    int ch;

    if (argc >= 2 && strcmp(argv[1], "check-config") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: ferry check-config FILE\n");
            return 2;
        }
        return check_config(argv[2]);
    }
    if (argc == 2 && strcmp(argv[1], "cleanup") == 0)
        return cleanup();
    while ((ch = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            o.config = optarg;
            break;
        case 'L':
            o.log_level = optarg;
            break;
        case 'F':
            o.log_format = optarg;
            break;
        case 'K':
            o.kf.kubeconfig = optarg;
            break;
        case 'A':
            o.kf.api_server = optarg;
            break;
        case 'N':
            o.kf.node_name = optarg;
            break;
        case 'P':
            fwrite(conf_default_yaml, 1, conf_default_yaml_len, stdout);
            return 0;
        case 'V':
            printf("ferry %s\n", FERRY_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ferry: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return daemon_run(&o);
}
