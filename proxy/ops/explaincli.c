#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "config.h"
#include "explaincli.h"
#include "explainlive.h"
#include "explainq.h"
#include "watchq.h"

#define EXPLAINCLI_REPLY_MAX (4u << 20)
#define EXPLAINCLI_TIMEOUT_S 5

static const char explaincli_usage[] =
    "usage: ferry explain ADDRESS:PORT [--proto tcp|udp] [--from CLIENT_IP]\n"
    "                     [--admin HOST:PORT] [--json]\n"
    "       ferry explain --trace NAMESPACE/NAME [--admin HOST:PORT] [--json]\n"
    "       ferry explain --watch ADDRESS:PORT [--count N] [--seconds T]\n"
    "                     [--admin HOST:PORT] [--json]\n";

/* The combinations that make no sense. */
static int
check_mode(const struct explaincli_opts *o, int has_proto, char *why,
           size_t whylen)
{
    if (o->trace != NULL && (o->addr != NULL || has_proto || o->from != NULL)) {
        snprintf(why, whylen, "--trace takes a Service, not an address");
        return -1;
    }
    if ((o->count != NULL || o->seconds != NULL) && !o->watch) {
        snprintf(why, whylen, "--count and --seconds go with --watch");
        return -1;
    }
    if (o->watch && o->from != NULL) {
        snprintf(why, whylen, "--watch shows every client: no --from");
        return -1;
    }
    return 0;
}

int
explaincli_args(int argc, char **argv, struct explaincli_opts *o, char *why,
                size_t whylen)
{
    struct explain_req q;
    struct explain_watch wq;
    struct explain_svc sq;
    const char *w = NULL, *admin = CONF_ADMIN_LISTEN_DEFAULT;
    int i, has_proto = 0, nmodes = 0;

    memset(o, 0, sizeof(*o));
    o->proto = "tcp";
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--proto") == 0 && has_val) {
            o->proto = argv[++i];
            has_proto = 1;
        } else if (strcmp(a, "--trace") == 0 && has_val) {
            o->trace = argv[++i];
            nmodes++;
        } else if (strcmp(a, "--watch") == 0 && has_val) {
            o->addr = argv[++i];
            o->watch = 1;
            nmodes++;
        } else if (strcmp(a, "--count") == 0 && has_val) {
            o->count = argv[++i];
        } else if (strcmp(a, "--seconds") == 0 && has_val) {
            o->seconds = argv[++i];
        } else if (strcmp(a, "--from") == 0 && has_val) {
            o->from = argv[++i];
        } else if (strcmp(a, "--admin") == 0 && has_val) {
            admin = argv[++i];
        } else if (a[0] == '-') {
            snprintf(why, whylen,
                     "%.64s: unknown option, or its value is "
                     "missing",
                     a);
            return -1;
        } else if (o->addr == NULL) {
            o->addr = a;
            nmodes++;
        } else {
            snprintf(why, whylen, "one ADDRESS:PORT only (\"%.64s\")", a);
            return -1;
        }
    }
    if (nmodes > 1) {
        snprintf(why, whylen, "one of ADDRESS:PORT, --trace and --watch");
        return -1;
    }
    if (check_mode(o, has_proto, why, whylen) < 0)
        return -1;
    if (o->trace != NULL) {
        if (explain_parse_service(o->trace, &sq, why, whylen) < 0)
            return -1;
    } else if (o->watch) {
        if (explain_parse_watch(NULL, o->addr, o->proto, o->count, o->seconds,
                                WATCHQ_COUNT_MAX, WATCHQ_SECONDS_MAX, &wq, why,
                                whylen)
            < 0)
            return -1;
        o->nwatch = wq.count;
        o->watch_s = wq.seconds;
    } else if (explain_parse(o->addr, o->proto, o->from, &q, why, whylen) < 0) {
        return -1;
    }
    if (parse_hostport(admin, &o->admin, 0, &w) < 0) {
        snprintf(why, whylen, "--admin \"%.64s\": %s", admin,
                 w != NULL ? w : "not IP:PORT");
        return -1;
    }
    return 0;
}

void
explaincli_qenc(char *out, size_t len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *s != '\0' && n + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
            || (c >= 'A' && c <= 'Z') || c == '.' || c == '-') {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    out[n] = '\0';
}

char *
explaincli_get(const struct saddr *admin, const char *path, int *status,
               char *why, size_t whylen)
{
    struct timeval tv = {EXPLAINCLI_TIMEOUT_S, 0};
    char host[SADDR_STR_MAX], req[1024], *buf = NULL, *body;
    size_t len = 0;
    ssize_t n;
    int fd;

    saddr_str(admin, host, sizeof(host));
    fd = socket(admin->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0
        || connect(fd, &admin->u.sa, admin->len) < 0) {
        snprintf(why, whylen, "admin server %s: %s", host, strerror(errno));
        goto fail;
    }
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                 path, host);
    if (n < 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n) {
        snprintf(why, whylen, "admin server %s: request not sent", host);
        goto fail;
    }
    if ((buf = malloc(EXPLAINCLI_REPLY_MAX + 1)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    while (len < EXPLAINCLI_REPLY_MAX
           && (n = read(fd, buf + len, EXPLAINCLI_REPLY_MAX - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", status) != 1
        || (body = strstr(buf, "\r\n\r\n")) == NULL) {
        snprintf(why, whylen, "admin server %s: no HTTP reply", host);
        goto fail;
    }
    close(fd);
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static const char *
jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s != NULL ? s : "";
}

static void
print_service(FILE *f, const json_t *s)
{
    const json_t *be, *nx = json_object_get(s, "next");
    size_t i;

    fprintf(f, "service:   %s (%s", jstr(s, "name"),
            strcmp(jstr(s, "origin"), "file") == 0 ? "config file"
                                                   : "Kubernetes API");
    if (json_object_get(s, "service") != NULL)
        fprintf(f, ": Service %s/%s, port %s", jstr(s, "namespace"),
                jstr(s, "service"), jstr(s, "port_name"));
    fprintf(f, ")\n");
    fprintf(f, "frontend:  %s\n", jstr(s, "frontend_kind"));
    fprintf(f, "dataplane: %s\n", jstr(s, "dataplane"));
    if (json_object_get(s, "balance") != NULL)
        fprintf(f, "balance:   %s%s\n", jstr(s, "balance"),
                json_integer_value(json_object_get(s, "affinity_seconds")) > 0
                    ? ", ClientIP affinity"
                    : "");
    if (json_object_get(s, "endpoint_set") != NULL)
        fprintf(f, "endpoints: %s\n", jstr(s, "endpoint_set"));
    fprintf(f, "backends:\n");
    json_array_foreach(json_object_get(s, "backends"), i, be)
    {
        const char *why = jstr(be, "reason");
        if (why[0] == '\0' && json_object_get(be, "note") != NULL)
            why = jstr(be, "note");
        if (why[0] == '\0')
            fprintf(f, "  %-8s  %-16s %s\n", jstr(be, "verdict"),
                    jstr(be, "name"), jstr(be, "address"));
        else
            fprintf(f, "  %-8s  %-16s %-22s %s\n", jstr(be, "verdict"),
                    jstr(be, "name"), jstr(be, "address"), why);
    }
    if (json_array_size(json_object_get(s, "backends")) == 0)
        fprintf(f, "  (none)\n");
    fprintf(f, "next:      ");
    if (json_is_string(json_object_get(nx, "backend")))
        fprintf(f, "%s %s%s", jstr(nx, "backend"), jstr(nx, "address"),
                json_is_true(json_object_get(nx, "pinned"))
                    ? " (the client's affinity pin)"
                    : "");
    if (json_object_get(nx, "note") != NULL)
        fprintf(f, "%s%s",
                json_is_string(json_object_get(nx, "backend")) ? "; " : "",
                jstr(nx, "note"));
    fprintf(f, "\n");
}

void
explaincli_print(FILE *f, const json_t *ans)
{
    const json_t *s = json_object_get(ans, "service"), *m;
    size_t i;

    fprintf(f, "%s/%s", jstr(ans, "address"), jstr(ans, "protocol"));
    if (json_is_string(json_object_get(ans, "from")))
        fprintf(f, " from %s", jstr(ans, "from"));
    fprintf(f, " (table generation %lld)\n",
            (long long)json_integer_value(json_object_get(ans, "generation")));
    if (s != NULL) {
        print_service(f, s);
        return;
    }
    fprintf(f, "no service owns this address\n");
    json_array_foreach(json_object_get(ans, "nearest"), i, m)
        fprintf(f, "  nearest: %s %s/%s (%s)\n", jstr(m, "service"),
                jstr(m, "frontend"), jstr(m, "protocol"), jstr(m, "match"));
}

int
explaincli_main(int argc, char **argv)
{
    struct explaincli_opts o;
    char why[256], path[768], a[256], fr[128];
    char *body;
    json_t *ans;
    json_error_t je;
    int status = 0, rc;

    if (explaincli_args(argc, argv, &o, why, sizeof(why)) < 0) {
        fprintf(stderr, "ferry explain: %s\n%s", why, explaincli_usage);
        return 2;
    }
    if (o.trace != NULL)
        return explainlive_trace(&o);
    if (o.watch)
        return explainlive_watch(&o);
    explaincli_qenc(a, sizeof(a), o.addr);
    explaincli_qenc(fr, sizeof(fr), o.from != NULL ? o.from : "");
    snprintf(path, sizeof(path), "/explain?addr=%s&proto=%s%s%s", a, o.proto,
             o.from != NULL ? "&from=" : "", fr);
    if ((body = explaincli_get(&o.admin, path, &status, why, sizeof(why)))
        == NULL) {
        fprintf(stderr, "ferry explain: %s\n", why);
        return 2;
    }
    if (status != 200) {
        fprintf(stderr, "ferry explain: admin server answered %d: %s", status,
                body);
        free(body);
        return 2;
    }
    ans = json_loads(body, 0, &je);
    if (ans == NULL) {
        fprintf(stderr, "ferry explain: the answer is not JSON: %s\n", je.text);
        free(body);
        return 2;
    }
    if (o.json)
        fputs(body, stdout);
    else
        explaincli_print(stdout, ans);
    rc = json_is_true(json_object_get(ans, "found")) ? 0 : 1;
    json_decref(ans);
    free(body);
    return rc;
}
