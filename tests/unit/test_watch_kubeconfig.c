/* kubeconfig parsing, in-cluster credentials, token rotation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kcred.h"

static char tmpdir[64];

static void
write_file(const char *name, const char *content)
{
    char path[256], tmp[300];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0); /* new inode, like kubelet */
}

static int
setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "kcfgtestXXXXXX");
    return mkdtemp(tmpdir) == NULL;
}

static int
teardown(void **state)
{
    char cmd[128];

    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) != 0;
}

static struct kcred *
load(const char *yaml, struct err *e)
{
    char name[128];

    err_clear(e);
    snprintf(name, sizeof(name), "%s/config", tmpdir);
    return kcred_from_kubeconfig_buf(name, yaml, strlen(yaml), e);
}

static void
test_full(void **state)
{
    const char *y = "apiVersion: v1\n"
                    "kind: Config\n"
                    "current-context: sim\n"
                    "clusters:\n"
                    "- name: other\n"
                    "  cluster: {server: \"https://198.18.0.9:6443\"}\n"
                    "- name: sim\n"
                    "  cluster:\n"
                    "    server: https://198.18.0.1:6443\n"
                    "    certificate-authority: ca.crt\n"
                    "    tls-server-name: kubernetes.default\n"
                    "contexts:\n"
                    "- name: sim\n"
                    "  context: {cluster: sim, user: lb, namespace: default}\n"
                    "users:\n"
                    "- name: lb\n"
                    "  user:\n"
                    "    token: abc123\n"
                    "    tokenFile: /abs/token\n"
                    "    client-certificate: certs/lb.crt\n"
                    "    client-key: certs/lb.key\n";
    struct kcred *c;
    struct err e;
    char want[128];

    (void)state;
    c = load(y, &e);
    if (c == NULL)
        fail_msg("%s:%d:%d %s", e.file, e.line, e.col, e.msg);
    assert_string_equal(c->server, "https://198.18.0.1:6443");
    snprintf(want, sizeof(want), "%s/ca.crt", tmpdir);
    assert_string_equal(c->ca_file, want);
    snprintf(want, sizeof(want), "%s/certs/lb.crt", tmpdir);
    assert_string_equal(c->cert_file, want);
    snprintf(want, sizeof(want), "%s/certs/lb.key", tmpdir);
    assert_string_equal(c->key_file, want);
    assert_string_equal(c->tls_server_name, "kubernetes.default");
    assert_string_equal(c->token, "abc123");
    assert_string_equal(c->token_file, "/abs/token");
    assert_int_equal(c->insecure, 0);
    /* tokenFile unreadable: the static token is the fallback. */
    assert_string_equal(kcred_token(c, 1), "abc123");
    kcred_free(c);
}

static void
test_data(void **state)
{
    /* "-----BEGIN CERTIFICATE-----\n" and friends, base64. */
    const char *y =
        "current-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8080',\n"
        "  certificate-authority: ignored.crt,\n"
        "  certificate-authority-data: "
        "'LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=='}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "users: [{name: u, user: {client-certificate-data: "
        "'Y2VydA==', client-key-data: 'a2V5\n  eQ=='}}]\n";
    struct kcred *c;
    struct err e;

    (void)state;
    c = load(y, &e);
    if (c == NULL)
        fail_msg("%d:%d %s", e.line, e.col, e.msg);
    assert_string_equal(c->ca.data, "-----BEGIN CERTIFICATE-----\n");
    assert_int_equal(c->ca.len, 28);
    assert_string_equal(c->cert.data, "cert");
    assert_string_equal(c->key.data, "keyy");
    assert_null(c->token);
    assert_null(kcred_token(c, 0));
    kcred_free(c);
}

static void
test_insecure(void **state)
{
    const char *y = "current-context: c\n"
                    "clusters: [{name: k, cluster: {server: "
                    "'https://[2001:db8::1]:6443', "
                    "insecure-skip-tls-verify: true}}]\n"
                    "contexts: [{name: c, context: {cluster: k}}]\n";
    struct kcred *c;
    struct err e;

    (void)state;
    c = load(y, &e);
    assert_non_null(c);
    assert_int_equal(c->insecure, 1);
    kcred_free(c);
}

/* Each bad config and where its error must point. */
static void
test_errors(void **state)
{
    static const struct {
        const char *yaml;
        int line, col;
        const char *msg;
    } cases[] = {
        {"kind: Config\n", 1, 1, "no current-context"},
        {"current-context: x\ncontexts: []\n", 1, 18, "context \"x\" not"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters:\n- name: k\n  cluster: {insecure-skip-tls-verify: true}\n",
         5, 12, "no server"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters:\n- name: k\n  cluster:\n    server: ftp://x\n",
         6, 13, "http:// or https://"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters:\n- name: k\n  cluster:\n    server: https://h\n"
         "    certificate-authority-data: '!!notbase64'\n",
         7, 33, "not valid base64"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters:\n- name: k\n  cluster:\n    server: https://h\n"
         "    certificate-authority: ca.crt\n"
         "    insecure-skip-tls-verify: true\n",
         8, 31, "cannot be combined"},
        {"current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
         "clusters:\n- name: k\n  cluster:\n    server: https://h\n"
         "    insecure-skip-tls-verify: maybe\n",
         7, 31, "true or false"},
        {"current-context: c\n"
         "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
         "users:\n- name: u\n  user:\n    exec: {command: aws}\n",
         7, 11, "\"exec\" is not supported"},
        {"current-context: c\n"
         "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://h'}}]\n"
         "users:\n- name: u\n  user:\n    client-certificate: a.crt\n",
         7, 5, "needs its key"},
        {"current-context: c\n"
         "contexts: [{name: c, context: {cluster: k, user: nobody}}]\n"
         "clusters: [{name: k, cluster: {server: 'https://h'}}]\n",
         2, 50, "user \"nobody\" not found"},
        {"current-context: c\nclusters: {a: b}\n"
         "contexts: [{name: c, context: {cluster: k}}]\n",
         2, 11, "clusters must be a list"},
        {"current-context: [c\n", 2, 1, "did not find"},
        {"- just\n- a list\n", 1, 1, "not a kubeconfig"},
    };
    struct err e;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kcred *c = load(cases[i].yaml, &e);
        char s[600];
        err_str(&e, s, sizeof(s));
        if (c != NULL || e.line != cases[i].line || e.col != cases[i].col
            || strstr(e.msg, cases[i].msg) == NULL
            || strstr(e.file, "/config") == NULL)
            fail_msg("case %zu: got %s (want %d:%d %s)", i, s, cases[i].line,
                     cases[i].col, cases[i].msg);
        kcred_free(c);
    }
}

/* Hostile nesting and aliases are refused at once, with a position: the
 * kubeconfig goes through the same bounded loader as the config. */
static void
test_bounds(void **state)
{
    size_t cap = 1 << 20, n, i;
    char *y = malloc(cap);
    struct kcred *c;
    struct err e;

    (void)state;
    assert_non_null(y);
    n = (size_t)snprintf(y, cap, "current-context: ");
    for (i = 0; i < 100000; i++)
        y[n++] = i % 2 ? '{' : '[';
    y[n] = '\0';
    c = load(y, &e);
    assert_null(c);
    /* The top-level mapping is level 1; the 65th level is refused. */
    assert_int_equal(e.line, 1);
    assert_int_equal(e.col, 18 + 63);
    assert_non_null(strstr(e.msg, "nested too deeply (max 64)"));
    /* A list of 30,000 aliases of a 1,000-pair mapping would have every
     * lookup walk 30 million pairs. */
    n = (size_t)snprintf(y, cap, "big: &b {");
    for (i = 0; i < 1000; i++)
        n += (size_t)snprintf(y + n, cap - n, "k%zu: v, ", i);
    n += (size_t)snprintf(y + n, cap - n, "}\ncurrent-context: x\n"
                                          "contexts: [");
    for (i = 0; i < 30000; i++)
        n += (size_t)snprintf(y + n, cap - n, "*b, ");
    snprintf(y + n, cap - n, "]\n");
    c = load(y, &e);
    assert_null(c);
    assert_int_equal(e.line, 3);
    assert_non_null(strstr(e.msg, "aliases expand the document to too many"));
    free(y);
}

static void
test_token_rotation(void **state)
{
    char path[128];
    struct kcred *c;
    struct err e;

    (void)state;
    write_file("token", "  first-token\n");
    write_file("ca.crt", "pem");
    snprintf(path, sizeof(path), "%s", tmpdir);
    err_clear(&e);
    c = kcred_in_cluster("https://198.18.0.1:6443", path, &e);
    assert_non_null(c);
    assert_non_null(c->ca_file);
    assert_string_equal(kcred_token(c, 100), "first-token");
    write_file("token", "second-token");
    /* Within the change-check interval the cached token is used. */
    assert_string_equal(kcred_token(c, 100.5), "first-token");
    /* The file changed (new inode): noticed at the next check. */
    assert_string_equal(kcred_token(c, 101.5), "second-token");
    /* Emptied: keep the last good token. */
    write_file("token", "\n");
    kcred_invalidate(c);
    assert_string_equal(kcred_token(c, 101.6), "second-token");
    /* After a 401 the file is re-read at once. */
    write_file("token", "third-token");
    kcred_invalidate(c);
    assert_string_equal(kcred_token(c, 101.7), "third-token");
    kcred_free(c);
}

static void
test_in_cluster_env(void **state)
{
    char path[128];
    struct kcred *c;
    struct err e;

    (void)state;
    err_clear(&e);
    snprintf(path, sizeof(path), "%s/ca.crt", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/token", tmpdir);
    unlink(path);
    unsetenv("KUBERNETES_SERVICE_HOST");
    assert_null(kcred_in_cluster(NULL, tmpdir, &e));
    assert_non_null(strstr(e.msg, "no API server"));
    setenv("KUBERNETES_SERVICE_HOST", "2001:db8::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    c = kcred_in_cluster(NULL, tmpdir, &e);
    assert_non_null(c);
    assert_string_equal(c->server, "https://[2001:db8::1]:443");
    assert_null(c->ca_file); /* no ca.crt in the directory */
    assert_null(kcred_token(c, 0));
    kcred_free(c);
}

static void
test_base64(void **state)
{
    char *out;
    size_t n;

    (void)state;
    assert_int_equal(kcred_base64("aGVsbG8=", 8, &out, &n), 0);
    assert_string_equal(out, "hello");
    free(out);
    assert_int_equal(kcred_base64("aGVs\nbG8", 8, &out, &n), 0);
    assert_string_equal(out, "hello");
    free(out);
    assert_int_equal(kcred_base64("", 0, &out, &n), 0);
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(kcred_base64("aG=V", 4, &out, &n), -1);
    assert_int_equal(kcred_base64("a", 1, &out, &n), -1);
    assert_int_equal(kcred_base64("a$==", 4, &out, &n), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_data),
        cmocka_unit_test(test_insecure),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_token_rotation),
        cmocka_unit_test(test_in_cluster_env),
        cmocka_unit_test(test_base64),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
