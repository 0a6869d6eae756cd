#include "kcred.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "ydoc.h"

/* Read a whole small file (non-blocking open, capped). Returns 0 or
 * -errno; the result is NUL-terminated. */
static int
read_file(const char *path, char **out, size_t *outlen)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    int fd, rc = 0;

    if (buf == NULL)
        return -ENOMEM;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    for (;;) {
        ssize_t n;
        if (len == cap) {
            char *nb;
            if (cap >= KCRED_FILE_MAX) {
                rc = -EFBIG;
                break;
            }
            nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                rc = -ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;
}

static int
b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int
kcred_base64(const char *in, size_t inlen, char **out, size_t *outlen)
{
    char *o = malloc(inlen / 4 * 3 + 4);
    unsigned acc = 0;
    size_t i, n = 0;
    int bits = 0, pad = 0;

    if (o == NULL)
        return -1;
    for (i = 0; i < inlen; i++) {
        int v, c = (unsigned char)in[i];
        if (isspace(c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        v = b64val(c);
        if (v < 0 || pad > 0)
            goto bad;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (pad > 2 || bits >= 6)
        goto bad;
    o[n] = '\0';
    *out = o;
    *outlen = n;
    return 0;
bad:
    free(o);
    return -1;
}

void
kcred_free(struct kcred *c)
{
    if (c == NULL)
        return;
    free(c->server);
    free(c->ca_file);
    free(c->ca.data);
    free(c->cert_file);
    free(c->key_file);
    free(c->cert.data);
    free(c->key.data);
    if (c->token != NULL)
        explicit_bzero(c->token, strlen(c->token));
    free(c->token);
    free(c->token_file);
    free(c->tls_server_name);
    if (c->cur_token != NULL)
        explicit_bzero(c->cur_token, strlen(c->cur_token));
    free(c->cur_token);
    free(c);
}

void
kcred_invalidate(struct kcred *c)
{
    c->token_stale = 1;
}

static char *
trim_dup(const char *s, size_t n)
{
    char *r;

    while (n > 0 && isspace((unsigned char)*s))
        s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    r = malloc(n + 1);
    if (r != NULL) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

/* Has the token file changed since we read it? stat() follows the
 * "..data" symlink swap the kubelet does, so the inode changes. */
static int
token_changed(struct kcred *c)
{
    struct stat st;

    if (stat(c->token_file, &st) < 0)
        return 0;
    return st.st_ino != c->token_st.st_ino
           || st.st_mtim.tv_sec != c->token_st.st_mtim.tv_sec
           || st.st_mtim.tv_nsec != c->token_st.st_mtim.tv_nsec
           || st.st_size != c->token_st.st_size;
}

static void
reread_token(struct kcred *c, double now)
{
    char *buf, *tok;
    size_t len;
    int rc = read_file(c->token_file, &buf, &len);

    c->token_at = c->stat_at = now;
    c->token_stale = 0;
    if (rc < 0) {
        if (!c->token_warned++)
            log_warn("kube-api: cannot read token file %s: %s%s", c->token_file,
                     strerror(-rc),
                     c->cur_token ? " (keeping the last token)"
                     : c->token   ? " (using the kubeconfig token)"
                                  : "");
        return;
    }
    tok = trim_dup(buf, len);
    explicit_bzero(buf, len);
    free(buf);
    if (tok == NULL || tok[0] == '\0') {
        if (!c->token_warned++)
            log_warn("kube-api: token file %s is empty", c->token_file);
        free(tok);
        return;
    }
    stat(c->token_file, &c->token_st);
    if (c->cur_token != NULL && strcmp(c->cur_token, tok) != 0)
        log_info("kube-api: token file %s changed, using the new token",
                 c->token_file);
    if (c->cur_token != NULL)
        explicit_bzero(c->cur_token, strlen(c->cur_token));
    free(c->cur_token);
    c->cur_token = tok;
    c->token_warned = 0;
}

const char *
kcred_token(struct kcred *c, double now)
{
    if (c->token_file != NULL) {
        int due = c->token_stale || c->cur_token == NULL
                  || now - c->token_at >= KCRED_TOKEN_TTL;
        if (!due && now - c->stat_at >= KCRED_STAT_EVERY) {
            c->stat_at = now;
            due = token_changed(c);
        }
        if (due)
            reread_token(c, now);
        if (c->cur_token != NULL)
            return c->cur_token;
    }
    return c->token;
}

static char *
join_path(const char *dir, const char *name)
{
    char *r;

    if (name[0] == '/' || dir == NULL || dir[0] == '\0')
        return strdup(name);
    if (asprintf(&r, "%s/%s", dir, name) < 0)
        return NULL;
    return r;
}

struct kcred *
kcred_in_cluster(const char *server, const char *sa_dir, struct err *e)
{
    struct kcred *c = calloc(1, sizeof(*c));
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    char *ca;

    if (c == NULL) {
        err_set(e, "out of memory");
        return NULL;
    }
    c->source = "in-cluster";
    if (sa_dir == NULL)
        sa_dir = KCRED_SA_DIR;
    if (server != NULL)
        c->server = strdup(server);
    else if (host != NULL && host[0] != '\0' && port != NULL && port[0]) {
        if (asprintf(&c->server,
                     strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s",
                     host, port)
            < 0)
            c->server = NULL;
    } else {
        err_set(e, "no API server: give one in the config or on the command "
                   "line, or a kubeconfig (KUBERNETES_SERVICE_HOST unset)");
        goto fail;
    }
    c->token_file = join_path(sa_dir, "token");
    ca = join_path(sa_dir, "ca.crt");
    if (c->server == NULL || c->token_file == NULL || ca == NULL) {
        free(ca);
        err_set(e, "out of memory");
        goto fail;
    }
    if (access(ca, R_OK) == 0)
        c->ca_file = ca;
    else
        free(ca);
    return c;
fail:
    kcred_free(c);
    return NULL;
}

/* --- kubeconfig ------------------------------------------------------ */

/* Kubeconfigs come from other tools, which may add "extensions:" of any
 * shape: a generous nesting cap, far above the seven levels of an exec
 * plugin's env list, that still stops a hostile file at once. */
static const struct ydoc_limits kcfg_limits = {64, 65536};

struct kcfg {
    struct ydoc *doc;
    const char *name; /* file name for errors */
    char *dir;        /* its directory, for relative paths */
    struct err *e;
};

static int
str_eq_safe(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

static int node_err(struct kcfg *k, const struct ydoc_node *n,
                    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Fill the error with the node's position in the file. Returns -1. */
static int
node_err(struct kcfg *k, const struct ydoc_node *n, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(k->e->file, sizeof(k->e->file), "%s", k->name);
    if (n != NULL)
        return err_set_at(k->e, n->pos.line, n->pos.col, "%s", msg);
    return err_set(k->e, "%s", msg);
}

static const char *
scalar(const struct kcfg *k, const struct ydoc_node *n)
{
    return n != NULL && n->type == YDOC_SCALAR ? ydoc_str(k->doc, n) : NULL;
}

/* Value node of <key> in mapping <map>, or NULL. Every walk of the tree
 * is bounded by its size with aliases expanded, which ydoc caps. */
static const struct ydoc_node *
map_get(struct kcfg *k, const struct ydoc_node *map, const char *key)
{
    return ydoc_get(k->doc, map, key);
}

/* In list <key> of the root, the entry named <name>; returns its <sub>
 * mapping ("cluster", "user", "context"). */
static const struct ydoc_node *
named_entry(struct kcfg *k, const char *key, const char *name, const char *sub,
            const struct ydoc_node *ref)
{
    const struct ydoc_node *root = ydoc_root(k->doc);
    const struct ydoc_node *list = map_get(k, root, key), *m;
    size_t i;

    if (list != NULL && list->type != YDOC_LIST) {
        node_err(k, list, "%s must be a list", key);
        return NULL;
    }
    for (i = 0; list != NULL && i < list->len; i++) {
        m = ydoc_item(k->doc, list, i);
        if (str_eq_safe(scalar(k, map_get(k, m, "name")), name)) {
            const struct ydoc_node *v = map_get(k, m, sub);
            if (v == NULL || v->type != YDOC_MAP)
                node_err(k, m, "entry has no %s mapping", sub);
            return v != NULL && v->type == YDOC_MAP ? v : NULL;
        }
    }
    node_err(k, ref, "%s \"%s\" not found in %s", sub, name, key);
    return NULL;
}

/* Optional string field; with <is_path> resolved against the file's
 * directory. Empty counts as absent. */
static int
get_str(struct kcfg *k, const struct ydoc_node *map, const char *key, int is_path,
        char **out)
{
    const struct ydoc_node *n = map_get(k, map, key);
    const char *v = scalar(k, n);

    if (n == NULL)
        return 0;
    if (v == NULL)
        return node_err(k, n, "%s must be a string", key);
    if (v[0] == '\0')
        return 0;
    free(*out);
    *out = is_path ? join_path(k->dir, v) : strdup(v);
    if (*out == NULL)
        return node_err(k, n, "%s", "out of memory");
    return 0;
}

static int
get_data(struct kcfg *k, const struct ydoc_node *map, const char *key,
         struct kcred_blob *b)
{
    const struct ydoc_node *n = map_get(k, map, key);
    const char *v = scalar(k, n);

    if (n == NULL)
        return 0;
    if (v == NULL || kcred_base64(v, strlen(v), &b->data, &b->len) < 0)
        return node_err(k, n, "%s is not valid base64", key);
    if (b->len == 0) {
        free(b->data);
        b->data = NULL;
    }
    return 0;
}

static int
get_bool(struct kcfg *k, const struct ydoc_node *map, const char *key, int *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", "yes", "on"};
    static const char *const no[] = {"false", "False", "FALSE", "no", "off"};
    const struct ydoc_node *n = map_get(k, map, key);
    const char *v = scalar(k, n);
    size_t i;

    if (n == NULL)
        return 0;
    for (i = 0; v != NULL && i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *out = strcmp(v, yes[i]) == 0;
            return 0;
        }
    }
    return node_err(k, n, "%s must be true or false", key);
}

static int
load_cluster(struct kcfg *k, const struct ydoc_node *cl, struct kcred *c)
{
    const struct ydoc_node *srv = map_get(k, cl, "server");

    if (get_str(k, cl, "server", 0, &c->server) < 0
        || get_str(k, cl, "certificate-authority", 1, &c->ca_file) < 0
        || get_data(k, cl, "certificate-authority-data", &c->ca) < 0
        || get_bool(k, cl, "insecure-skip-tls-verify", &c->insecure) < 0
        || get_str(k, cl, "tls-server-name", 0, &c->tls_server_name) < 0)
        return -1;
    if (c->server == NULL)
        return node_err(k, cl, "%s", "cluster has no server");
    if (strncmp(c->server, "https://", 8) != 0
        && strncmp(c->server, "http://", 7) != 0)
        return node_err(k, srv,
                        "server must be an http:// or https:// URL, "
                        "not \"%s\"",
                        c->server);
    if (c->insecure && (c->ca_file != NULL || c->ca.data != NULL))
        return node_err(k, map_get(k, cl, "insecure-skip-tls-verify"), "%s",
                        "insecure-skip-tls-verify cannot be combined with "
                        "a certificate authority");
    return 0;
}

static int
load_user(struct kcfg *k, const struct ydoc_node *u, struct kcred *c)
{
    static const char *const unsupported[] = {"exec", "auth-provider",
                                              "username", "password"};
    size_t i;

    for (i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        const struct ydoc_node *n = map_get(k, u, unsupported[i]);
        if (n != NULL)
            return node_err(k, n,
                            "user key \"%s\" is not supported: use a "
                            "token, tokenFile or client certificate",
                            unsupported[i]);
    }
    if (get_str(k, u, "client-certificate", 1, &c->cert_file) < 0
        || get_data(k, u, "client-certificate-data", &c->cert) < 0
        || get_str(k, u, "client-key", 1, &c->key_file) < 0
        || get_data(k, u, "client-key-data", &c->key) < 0
        || get_str(k, u, "token", 0, &c->token) < 0
        || get_str(k, u, "tokenFile", 1, &c->token_file) < 0)
        return -1;
    if ((c->cert_file || c->cert.data) != (c->key_file || c->key.data))
        return node_err(k, u, "%s",
                        "a client certificate needs its key "
                        "and a key its certificate");
    return 0;
}

static int
load_doc(struct kcfg *k, struct kcred *c)
{
    const struct ydoc_node *root = ydoc_root(k->doc);
    const struct ydoc_node *cur = map_get(k, root, "current-context");
    const struct ydoc_node *ctx, *cl, *u;
    const char *cn, *un;

    if (root == NULL || root->type != YDOC_MAP)
        return node_err(k, root, "%s", "not a kubeconfig (want a mapping)");
    if (scalar(k, cur) == NULL || scalar(k, cur)[0] == '\0')
        return node_err(k, cur ? cur : root, "%s", "no current-context set");
    ctx = named_entry(k, "contexts", scalar(k, cur), "context", cur);
    if (ctx == NULL)
        return -1;
    cn = scalar(k, map_get(k, ctx, "cluster"));
    un = scalar(k, map_get(k, ctx, "user"));
    if (cn == NULL)
        return node_err(k, ctx, "%s", "context names no cluster");
    cl = named_entry(k, "clusters", cn, "cluster", map_get(k, ctx, "cluster"));
    if (cl == NULL || load_cluster(k, cl, c) < 0)
        return -1;
    if (un == NULL)
        return 0; /* anonymous */
    u = named_entry(k, "users", un, "user", map_get(k, ctx, "user"));
    if (u == NULL || load_user(k, u, c) < 0)
        return -1;
    return 0;
}

struct kcred *
kcred_from_kubeconfig_buf(const char *name, const char *buf, size_t len,
                          struct err *e)
{
    struct kcred *c = calloc(1, sizeof(*c));
    struct kcfg k;
    const char *slash = strrchr(name, '/');
    int rc = -1;

    memset(&k, 0, sizeof(k));
    k.name = name;
    k.e = e;
    k.dir = slash ? strndup(name, (size_t)(slash - name) + (slash == name))
                  : strdup(".");
    if (c == NULL || k.dir == NULL) {
        free(k.dir);
        free(c);
        err_set(e, "out of memory");
        return NULL;
    }
    c->source = "kubeconfig";
    snprintf(e->file, sizeof(e->file), "%s", name);
    k.doc = ydoc_load(buf, len, &kcfg_limits, e);
    if (k.doc != NULL) {
        rc = load_doc(&k, c);
        ydoc_free(k.doc);
    }
    free(k.dir);
    if (rc < 0) {
        kcred_free(c);
        return NULL;
    }
    if (c->insecure)
        log_warn("kube-api: %s: insecure-skip-tls-verify is set: the API "
                 "server's identity is NOT checked",
                 name);
    return c;
}

struct kcred *
kcred_from_kubeconfig(const char *path, struct err *e)
{
    struct kcred *c;
    char *buf;
    size_t len;
    int rc = read_file(path, &buf, &len);

    if (rc < 0) {
        snprintf(e->file, sizeof(e->file), "%s", path);
        err_set(e, "cannot read: %s", strerror(-rc));
        return NULL;
    }
    c = kcred_from_kubeconfig_buf(path, buf, len, e);
    explicit_bzero(buf, len);
    free(buf);
    return c;
}
