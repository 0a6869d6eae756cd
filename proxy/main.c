#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "accesslog.h"
#include "admin.h"
#include "ctl.h"
#include "explaincli.h"
#include "ktrace.h"
#include "kube.h"
#include "log.h"
#include "nft.h"
#include "notify.h"
#include "proxy.h"
#include "takeover.h"
#include "vip.h"

#define FERRY_VERSION "0.1.0"

struct opts {
    const char *config;     /* NULL: the built-in default */
    const char *log_level;  /* overrides the file */
    const char *log_format;
    struct kube_flags kf;   /* --kubeconfig, --api-server, --node-name */
    const char *takeover_socket; /* --takeover-socket: where a new process
                                  * asks this one for its sockets */
    int takeover;           /* --takeover: take them from the running one */
};

/* What SIGUSR2 runs again: this program (its path when it started, so an
 * upgraded binary is the one started) with the same arguments. */
static char self_path[PATH_MAX];
static char **self_argv;
static int self_argc;
/* The control thread's nice value before control_priority() lowered it:
 * the process SIGUSR2 starts gets it back. */
static int base_nice;

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
    struct takeover *tk; /* --takeover-socket, or NULL */
    struct ev_signal sig_hup, sig_term, sig_int, sig_usr1, sig_usr2;
    struct ev_child child; /* the process SIGUSR2 started */
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: ferry [-c FILE] [--log-level LEVEL] [--log-format FMT]\n"
            "       ferry check-config FILE\n"
            "       ferry cleanup\n"
            "       ferry explain ADDRESS:PORT [--proto tcp|udp] "
            "[--from CLIENT_IP]\n"
            "                     [--admin HOST:PORT] [--json]\n"
            "       ferry explain --trace NAMESPACE/NAME | --watch "
            "ADDRESS:PORT\n"
            "                     [--count N] [--seconds T] [--admin "
            "HOST:PORT] [--json]\n"
            "       ferry -c FILE --takeover-socket PATH [--takeover]\n"
            "       ferry --print-default-config | --version | --help\n"
            "\n"
            "  -c, --config FILE      configuration file (YAML); without it\n"
            "                         ferry runs its built-in demo config\n"
            "      --log-level LEVEL  debug, info, warn or error (overrides "
            "the file)\n"
            "      --log-format FMT   text or json (overrides the file)\n"
            "      --takeover-socket PATH\n"
            "                         listen on this Unix socket for a new "
            "ferry taking\n"
            "                         over (upgrades without a refused "
            "connection)\n"
            "      --takeover         take the listening sockets of the "
            "ferry running on\n"
            "                         --takeover-socket, then tell it to "
            "drain\n"
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
            "  ferry explain          ask the running ferry's admin server "
            "where a\n"
            "                         connection to ADDRESS:PORT would go, "
            "and why;\n"
            "                         --trace: a Service's recent changes, "
            "stage by stage;\n"
            "                         --watch: the connections to "
            "ADDRESS:PORT as they end\n"
            "\n"
            "signals: SIGHUP re-reads the file; SIGTERM or SIGINT stop "
            "accepting,\n"
            "let open connections finish (drain_timeout), then exit 0;\n"
            "SIGUSR1 reopens the access log file (logrotate); SIGUSR2 "
            "starts this\n"
            "program again with --takeover (needs --takeover-socket).\n");
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

/* Returns 0 if the file was applied, -1 if it was rejected. */
static int
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
        return -1;
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
        return -1;
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
    return 0;
}

static unsigned long long
monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ull
           + (unsigned long long)ts.tv_nsec / 1000u;
}

/* The new process serves on our sockets and asks us to let go: stop what
 * listens on addresses of our own (the admin server; the takeover socket
 * is closed by takeover.c), then drain. */
static void
daemon_release(void *arg)
{
    struct daemon *d = arg;
    struct conf_admin off;
    struct err e;

    memset(&off, 0, sizeof(off));
    err_clear(&e);
    admin_configure(d->ctl.admin, &off, &e);
    proxy_hand_over(d->proxy);
    proxy_drain(d->proxy, d->drain_timeout_s);
}

static void
daemon_on_child(struct ev_loop *loop, struct ev_child *w, int rev)
{
    (void)rev;
    ev_child_stop(loop, w);
    log_warn("SIGUSR2: the new process (pid %d) exited with status %d "
             "before taking over; this one keeps serving",
             w->rpid, WIFEXITED(w->rstatus) ? WEXITSTATUS(w->rstatus) : -1);
}

/* SIGUSR2: start this program again with --takeover; it takes our
 * sockets through the takeover socket, then tells us to drain. */
static void
daemon_upgrade(struct daemon *d)
{
    char **argv;
    pid_t pid;
    int i, n = 0, has = 0;

    if (d->tk == NULL) {
        log_error("SIGUSR2: no --takeover-socket: nothing to hand over to");
        return;
    }
    if (ev_is_active(&d->child) || proxy_draining(d->proxy)) {
        log_warn("SIGUSR2: a hand-over is already under way");
        return;
    }
    argv = calloc((size_t)self_argc + 2, sizeof(*argv));
    if (argv == NULL) {
        log_error("SIGUSR2: out of memory");
        return;
    }
    for (i = 0; i < self_argc; i++) {
        has |= strcmp(self_argv[i], "--takeover") == 0;
        argv[n++] = self_argv[i];
    }
    if (!has)
        argv[n++] = (char *)"--takeover";
    argv[n] = NULL;
    pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Its workers must not inherit the control thread's priority. */
        setpriority(PRIO_PROCESS, 0, base_nice);
        execv(self_path, argv);
        _exit(127);
    }
    free(argv);
    if (pid < 0) {
        log_error("SIGUSR2: fork: %s", strerror(errno));
        return;
    }
    log_info("SIGUSR2: started %s (pid %d) to take over", self_path,
             (int)pid);
    ev_child_set(&d->child, pid, 0);
    ev_child_start(d->loop, &d->child);
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
        notify("RELOADING=1\nMONOTONIC_USEC=%llu", monotonic_usec());
        if (daemon_reload(d) == 0)
            notify("READY=1\nSTATUS=reload applied (generation %llu)",
                   (unsigned long long)d->generation);
        else
            notify("READY=1\nSTATUS=reload rejected, generation %llu "
                   "serving; see the log",
                   (unsigned long long)d->generation);
        return;
    }
    if (s->signum == SIGUSR1) {
        accesslog_reopen();
        return;
    }
    if (s->signum == SIGUSR2) {
        daemon_upgrade(d);
        return;
    }
    if (proxy_draining(d->proxy)) {
        log_warn("second stop signal: exiting now");
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    log_info("%s: stopping", strsignal(s->signum));
    notify("STOPPING=1");
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
    ev_signal_init(&d->sig_usr2, daemon_on_signal, SIGUSR2);
    d->sig_hup.data = d->sig_term.data = d->sig_int.data = d;
    d->sig_usr1.data = d->sig_usr2.data = d;
    ev_child_init(&d->child, daemon_on_child, 0, 0);
    ev_signal_start(d->loop, &d->sig_usr2);
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
        hooks.trace = ktrace_json;
        admin_set_hooks(d->ctl.admin, &hooks);
    }
    return 0;
}

/* The control thread (this one) yields to the workers on a busy CPU:
 * programming the kernel or translating a relist must not hold up a
 * connection. Linux keeps a nice value per thread, and the workers,
 * started before, keep theirs. */
#define CONTROL_NICE 5

static void
control_priority(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    int now;

    errno = 0;
    now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno != 0)
        return;
    base_nice = now;
    if (now >= CONTROL_NICE)
        return;
    if (setpriority(PRIO_PROCESS, (id_t)tid, CONTROL_NICE) < 0)
        log_warn("cannot lower the control thread's priority: %s",
                 strerror(errno));
}

/* --takeover: the running process's listening sockets, for the first
 * apply to use. Returns 0 (with <*client> NULL when nobody runs there:
 * this process starts afresh), or -1. */
static int
daemon_fetch(struct daemon *d, struct takeover_client **client)
{
    struct proxy_sock *v;
    char msg[ERR_STR_MAX];
    size_t n;
    struct err e;
    int absent;

    err_clear(&e);
    *client = takeover_fetch(d->o.takeover_socket, &v, &n, &absent, &e);
    if (*client == NULL) {
        if (!absent) {
            log_error("%s", err_str(&e, msg, sizeof(msg)));
            return -1;
        }
        log_warn("%s; starting afresh", err_str(&e, msg, sizeof(msg)));
        return 0;
    }
    log_info("takeover: received %zu listening socket(s) from the running "
             "ferry",
             n);
    proxy_inherit(d->proxy, v, n);
    return 0;
}

static int
daemon_run(const struct opts *o)
{
    struct takeover_client *client = NULL;
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
    /* Before any socket opens: a SIGTERM that comes as soon as a port
     * answers must drain, not kill. The watchers run once the loop does. */
    daemon_signals(&d);
    /* How they relay, before the workers start: a worker makes its
     * io_uring ring as it starts (relay.engine). */
    proxy_set_relay(d.proxy, &c->relay);
    if (proxy_start_workers(d.proxy, c->relay.workers, &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    d.workers = c->relay.workers;
    control_priority();
    if (o->takeover && kube_wanted(c, &o->kf)) {
        /* Its listeners (health ports, metrics, the node's) and its first
         * table from the API would have to wait for the old process: a
         * node's kernel rules carry Service traffic across a restart
         * instead. */
        log_error("--takeover serves file-configured services only; in "
                  "Kubernetes mode restart ferry instead (the kernel's "
                  "rules stay in force meanwhile)");
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    if (o->takeover && daemon_fetch(&d, &client) < 0) {
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    if (ctl_init(&d.ctl, d.loop, d.proxy) < 0) {
        takeover_abandon(client);
        log_error("out of memory");
        conf_free(c);
        proxy_free(d.proxy);
        return 1;
    }
    d.drain_timeout_s = c->drain_timeout_ms / 1e3;
    /* The workers serve as soon as the table is applied: what they log
     * is set before. */
    if (accesslog_configure(&c->access_log, proxy_nworkers(d.proxy), &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        takeover_abandon(client);
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        return 1;
    }
    d.generation = 1;
    table_freeze(c->table, d.generation);
    if (proxy_apply(d.proxy, c->table, PROXY_APPLY_STRICT, &e) < 0) {
        log_error("%s", err_str(&e, msg, sizeof(msg)));
        if (client != NULL)
            log_error("takeover: abandoned; the running ferry keeps "
                      "serving");
        takeover_abandon(client);
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        accesslog_shutdown();
        return 1;
    }
    /* Serving on the old process's sockets: it may let go and drain. */
    if (client != NULL) {
        err_clear(&e);
        if (takeover_release(client, &e) < 0)
            log_warn("%s", err_str(&e, msg, sizeof(msg)));
        else
            log_info("takeover: the previous ferry released its addresses "
                     "and drains");
    }
    ctl_configure(&d.ctl, c);
    if (kube_wanted(c, &o->kf) && daemon_start_kube(&d, c) < 0) {
        conf_free(c);
        ctl_deinit(&d.ctl);
        proxy_free(d.proxy);
        accesslog_shutdown();
        return 1;
    }
    if (o->takeover_socket != NULL) {
        err_clear(&e);
        d.tk = takeover_listen(d.loop, o->takeover_socket, d.proxy,
                               daemon_release, &d, &e);
        if (d.tk == NULL)
            log_error("%s; upgrades will not be able to take over",
                      err_str(&e, msg, sizeof(msg)));
    }
    log_info("ferry %s serving %zu service(s) from %s (generation %llu, "
             "%u worker%s)",
             FERRY_VERSION, c->table->nservices,
             o->config ? o->config : "the built-in demo config",
             (unsigned long long)d.generation, proxy_nworkers(d.proxy),
             proxy_nworkers(d.proxy) == 1 ? "" : "s");
    snprintf(msg, sizeof(msg), "serving %zu service(s), generation %llu",
             c->table->nservices, (unsigned long long)d.generation);
    notify_ready(msg);
    conf_free(c);
    ev_run(d.loop, 0);
    if (kube_refused(d.kube))
        d.exit_code = 1;
    takeover_free(d.tk);
    kube_free(d.kube);
    ctl_deinit(&d.ctl);
    proxy_free(d.proxy);
    /* After the workers: the connections they reset are logged too. */
    accesslog_shutdown();
    ev_signal_stop(d.loop, &d.sig_hup);
    ev_signal_stop(d.loop, &d.sig_usr1);
    ev_signal_stop(d.loop, &d.sig_usr2);
    ev_child_stop(d.loop, &d.child);
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
        {"takeover-socket", required_argument, NULL, 'S'},
        {"takeover", no_argument, NULL, 'T'},
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
    if (argc >= 2 && strcmp(argv[1], "explain") == 0)
        return explaincli_main(argc - 2, argv + 2);
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
        case 'S':
            o.takeover_socket = optarg;
            break;
        case 'T':
            o.takeover = 1;
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
    if (o.takeover && o.takeover_socket == NULL) {
        fprintf(stderr, "ferry: --takeover needs --takeover-socket PATH\n");
        return 2;
    }
    {
        ssize_t n = readlink("/proc/self/exe", self_path,
                             sizeof(self_path) - 1);
        if (n < 0 || (size_t)n >= sizeof(self_path) - 1)
            snprintf(self_path, sizeof(self_path), "%s", argv[0]);
        else
            self_path[n] = '\0';
        self_argv = argv;
        self_argc = argc;
    }
    return daemon_run(&o);
}
