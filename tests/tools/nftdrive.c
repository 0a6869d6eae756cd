/*
 * nftdrive - drive the kernel dataplane engine (proxy/node/nft.c) from a
 * JSON description of kernel services, for the integration tests. A test
 * tool: not installed.
 *
 *   nftdrive run FILE [VERIFY_MS]  apply FILE, then again on SIGHUP
 *                                  (only what changed), verify the table
 *                                  every VERIFY_MS (default 500); SIGTERM
 *                                  or SIGINT exits 0 leaving the rules
 *   nftdrive apply FILE            apply once (adopting the table) and exit
 *   nftdrive time FILE [FILE2]     apply, verify, then (with FILE2) apply
 *                                  FILE2 as an update, printing how long
 *                                  each step took (for scale checks)
 *   nftdrive check FILE            parse only
 *   nftdrive cleanup               delete the table
 *   nftdrive kube-proxy            exit 3 naming kube-proxy's rules, else 0
 *
 * Lines on stdout tell the test what happened: "applied N services=S",
 * "restored", "error: ...". Logs go to stderr.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "nft.h"
#include "nftjson.h"

#define RETRY_MS 200

static char *
read_file(const char *path, size_t *len, struct err *e)
{
    FILE *f = fopen(path, "re");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL) {
        err_set(e, "%s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            char *p;

            if (cap >= NFTJSON_MAX_BYTES) {
                err_set(e, "%s: too large", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            cap = cap ? cap * 2 : 65536;
            p = realloc(buf, cap);
            if (p == NULL) {
                err_set(e, "out of memory");
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n, f);

        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int
load(const char *path, struct nftjson_doc *doc, struct err *e)
{
    size_t len = 0;
    char *buf = read_file(path, &len, e);
    int rc;

    if (buf == NULL)
        return -1;
    rc = nftjson_parse(buf, len, doc, e);
    free(buf);
    return rc;
}

/* The previous document's keys, to delete what a new one leaves out. */
struct keys {
    struct {
        char id[NFT_ID_MAX];
        enum nft_proto proto;
    } * v;
    size_t n;
};

/* Services the new document leaves out go first, so that one it adds
 * may take over their addresses in the same transaction. */
static int
put_all(struct nft *n, const struct nftjson_doc *doc, struct keys *prev,
        struct err *e)
{
    size_t i, j;
    struct keys next = {0};

    next.v = calloc(doc->nsvcs + 1, sizeof(*next.v));
    if (next.v == NULL)
        return err_set(e, "out of memory");
    for (i = 0; i < doc->nsvcs; i++) {
        snprintf(next.v[next.n].id, NFT_ID_MAX, "%s", doc->svcs[i].id);
        next.v[next.n++].proto = doc->svcs[i].proto;
    }
    for (i = 0; i < prev->n; i++) {
        for (j = 0; j < next.n; j++)
            if (strcmp(prev->v[i].id, next.v[j].id) == 0
                && prev->v[i].proto == next.v[j].proto)
                break;
        if (j == next.n)
            nft_svc_del(n, prev->v[i].id, prev->v[i].proto);
    }
    free(prev->v);
    *prev = next;
    for (i = 0; i < doc->nsvcs; i++)
        if (nft_svc_put(n, &doc->svcs[i], e) < 0)
            return -1;
    return 0;
}

static void
say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int
apply_and_say(struct nft *n, unsigned long *seq)
{
    struct nft_stats st;
    struct err e;

    err_clear(&e);
    if (nft_apply(n, &e) < 0) {
        say("error: %s", e.msg);
        return -1;
    }
    nft_get_stats(n, &st);
    say("applied %lu services=%zu texts=%llu epmaps=%llu keyed=%llu "
        "lean=%llu verifies=%llu vlists=%llu",
        ++*seq, st.services, (unsigned long long)st.texts,
        (unsigned long long)st.epmaps, (unsigned long long)st.keyed,
        (unsigned long long)st.lean,
        (unsigned long long)st.verifies, (unsigned long long)st.verify_lists);
    return 0;
}

static int
cmd_run(const char *path, int verify_ms, int once)
{
    struct nftjson_doc doc;
    struct keys prev = {0};
    struct nft *n;
    struct err e;
    sigset_t set;
    unsigned long seq = 0;
    int sfd, failing, rc = 0;

    /* Blocked before the first "applied" line: a test that reads it may
     * signal at once, and must not find the default action (death). */
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (!once)
        sigprocmask(SIG_BLOCK, &set, NULL);
    err_clear(&e);
    if (load(path, &doc, &e) < 0) {
        say("error: %s", e.msg);
        return 1;
    }
    n = nft_new(&doc.conf, &e);
    if (n == NULL || put_all(n, &doc, &prev, &e) < 0) {
        say("error: %s", e.msg);
        nftjson_free(&doc);
        nft_free(n);
        return 1;
    }
    nftjson_free(&doc);
    failing = apply_and_say(n, &seq) < 0;
    if (once) {
        nft_free(n);
        free(prev.v);
        return failing;
    }
    sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        say("error: signalfd: %s", strerror(errno));
        nft_free(n);
        free(prev.v);
        return 1;
    }
    for (;;) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        struct signalfd_siginfo si;
        int r = poll(&pfd, 1, failing ? RETRY_MS : verify_ms);

        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && read(sfd, &si, sizeof(si)) == sizeof(si)) {
            if (si.ssi_signo != SIGHUP)
                break;
            err_clear(&e);
            if (load(path, &doc, &e) < 0 || put_all(n, &doc, &prev, &e) < 0)
                say("error: %s", e.msg);
            nftjson_free(&doc);
            failing = apply_and_say(n, &seq) < 0;
            continue;
        }
        err_clear(&e);
        if (failing || nft_pending(n)) {
            failing = apply_and_say(n, &seq) < 0;
            continue;
        }
        r = nft_verify(n, &e);
        if (r < 0)
            say("error: %s", e.msg);
        else if (r > 0)
            say("restored");
    }
    close(sfd);
    nft_free(n);
    free(prev.v);
    return rc;
}

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
cmd_time(const char *path, char **next, int nnext)
{
    struct nftjson_doc doc;
    struct keys prev = {0};
    struct nft *n = NULL;
    struct err e;
    double t0;
    int i, r, rc = 1;

    err_clear(&e);
    if (load(path, &doc, &e) < 0)
        goto out;
    n = nft_new(&doc.conf, &e);
    if (n == NULL || put_all(n, &doc, &prev, &e) < 0) {
        nftjson_free(&doc);
        goto out;
    }
    nftjson_free(&doc);
    t0 = now_ms();
    if (nft_apply(n, &e) < 0)
        goto out;
    say("apply %.0f ms", now_ms() - t0);
    t0 = now_ms();
    r = nft_verify(n, &e);
    if (r < 0)
        goto out;
    say("verify %.0f ms (%s)", now_ms() - t0, r ? "restored" : "intact");
    /* Again, as the next verify would: the sets are not listed anew. */
    t0 = now_ms();
    r = nft_verify(n, &e);
    if (r < 0)
        goto out;
    say("verify again %.0f ms (%s)", now_ms() - t0,
        r ? "restored" : "intact");
    for (i = 0; i < nnext; i++) {
        struct nft_stats st;

        if (load(next[i], &doc, &e) < 0 || put_all(n, &doc, &prev, &e) < 0) {
            nftjson_free(&doc);
            goto out;
        }
        nftjson_free(&doc);
        t0 = now_ms();
        if (nft_apply(n, &e) < 0)
            goto out;
        nft_get_stats(n, &st);
        say("update %.3f ms epmaps=%llu keyed=%llu lean=%llu",
            now_ms() - t0, (unsigned long long)st.epmaps,
            (unsigned long long)st.keyed, (unsigned long long)st.lean);
    }
    rc = 0;
out:
    if (rc)
        say("error: %s", e.msg);
    nft_free(n);
    free(prev.v);
    return rc;
}

int
main(int argc, char **argv)
{
    struct nftjson_doc doc;
    struct err e;
    char why[512];
    int r;

    log_setup(LOG_INFO, LOG_TEXT);
    err_clear(&e);
    if (argc >= 3 && strcmp(argv[1], "run") == 0)
        return cmd_run(argv[2], argc >= 4 ? atoi(argv[3]) : 500, 0);
    if (argc == 3 && strcmp(argv[1], "apply") == 0)
        return cmd_run(argv[2], 0, 1);
    if (argc >= 3 && strcmp(argv[1], "time") == 0)
        return cmd_time(argv[2], argv + 3, argc - 3);
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        if (load(argv[2], &doc, &e) < 0) {
            say("error: %s", e.msg);
            return 1;
        }
        say("ok services=%zu", doc.nsvcs);
        nftjson_free(&doc);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "cleanup") == 0) {
        r = nft_cleanup(&e);
        if (r < 0)
            say("error: %s", e.msg);
        else
            say(r ? "deleted" : "absent");
        return r < 0;
    }
    if (argc == 2 && strcmp(argv[1], "kube-proxy") == 0) {
        r = nft_kube_proxy_found(why, sizeof(why), &e);
        if (r < 0) {
            say("error: %s", e.msg);
            return 1;
        }
        if (r > 0)
            say("kube-proxy: %s", why);
        else
            say("none");
        return r > 0 ? 3 : 0;
    }
    fprintf(stderr,
            "usage: nftdrive run FILE [VERIFY_MS] | apply FILE | "
            "time FILE [FILE...] | check FILE | cleanup | kube-proxy\n");
    return 2;
}
