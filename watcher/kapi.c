#include "kapi.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "backoff.h"
#include "log.h"
#include "util.h"

#define KAPI_URL_MAX 8192

struct kapi {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer; /* curl's single timeout */
    struct kcred *cred;
    char *base;            /* scheme://host:port to put in URLs */
    char *connect_to;      /* CURLOPT_CONNECT_TO entry for tls-server-name */
    struct kapi_req *reqs; /* live requests, for kapi_free() */
    uint64_t cpu_ns;       /* of the loop's calls into curl (kapi_cpu_ns) */
};

struct kapi_req {
    struct kapi *k;
    struct kapi_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *connect_to;
    const struct kapi_req_ops *ops;
    void *arg;
    ev_timer deadline, idle;
    long status;
    int aborted, timed_out;
    double retry_after;
    char errbuf[CURL_ERROR_SIZE];
    char body[KAPI_ERRBODY_MAX]; /* error response body */
    size_t body_len;
};

/* Per-socket state kept in curl with curl_multi_assign(). */
struct kapi_sock {
    ev_io io;
    struct kapi *k;
};

static void check_done(struct kapi *k);

static void
kapi_on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kapi_sock *ks = w->data;
    struct kapi *k = ks->k; /* ks may be freed inside socket_action */
    int running, flags = (revents & EV_READ ? CURL_CSELECT_IN : 0)
                         | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    uint64_t t0 = thread_cpu_ns();

    (void)loop;
    curl_multi_socket_action(k->multi, w->fd, flags, &running);
    check_done(k);
    k->cpu_ns += thread_cpu_ns() - t0;
}

static void
kapi_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kapi *k = w->data;
    int running;
    uint64_t t0 = thread_cpu_ns();

    (void)loop;
    (void)revents;
    curl_multi_socket_action(k->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(k);
    k->cpu_ns += thread_cpu_ns() - t0;
}

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct kapi *k = userp;
    struct kapi_sock *ks = socketp;
    int ev = (what & CURL_POLL_IN ? EV_READ : 0)
             | (what & CURL_POLL_OUT ? EV_WRITE : 0);

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (ks != NULL) {
            ev_io_stop(k->loop, &ks->io);
            free(ks);
        }
        return 0;
    }
    if (ks == NULL) {
        ks = calloc(1, sizeof(*ks));
        if (ks == NULL)
            return -1;
        ks->k = k;
        curl_multi_assign(k->multi, s, ks);
    } else {
        ev_io_stop(k->loop, &ks->io);
    }
    ev_io_init(&ks->io, kapi_on_io, s, ev);
    ks->io.data = ks;
    ev_io_start(k->loop, &ks->io);
    return 0;
}

/* curl asks for one timeout. Milliseconds as a double: integer division
 * would turn sub-second timeouts into 0. A 0 timeout arms a zero-delay
 * timer: curl must not be re-entered from this callback. */
static int
on_timer_set(CURLM *multi, long timeout_ms, void *userp)
{
    struct kapi *k = userp;

    (void)multi;
    ev_timer_stop(k->loop, &k->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&k->timer, (double)timeout_ms / 1000.0, 0.);
        ev_timer_start(k->loop, &k->timer);
    }
    return 0;
}

static void
req_unlink(struct kapi_req *r)
{
    struct kapi *k = r->k;

    ev_timer_stop(k->loop, &r->deadline);
    ev_timer_stop(k->loop, &r->idle);
    curl_multi_remove_handle(k->multi, r->easy);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        k->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
}

static void
req_free(struct kapi_req *r)
{
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    curl_slist_free_all(r->connect_to);
    free(r);
}

/* Pull message and reason out of an error body (a Status, or text). */
static void
decode_error_body(struct kapi_req *r, struct kapi_result *res)
{
    json_t *st = json_loadb(r->body, r->body_len, 0, NULL);
    const char *msg = json_string_value(json_object_get(st, "message"));
    const char *reason = json_string_value(json_object_get(st, "reason"));
    json_t *ra =
        json_object_get(json_object_get(st, "details"), "retryAfterSeconds");
    size_t n;

    if (msg != NULL) {
        snprintf(res->error, sizeof(res->error), "%s", msg);
        snprintf(res->reason, sizeof(res->reason), "%s", reason ? reason : "");
        if (res->retry_after < 0 && json_integer_value(ra) > 0)
            res->retry_after = (double)json_integer_value(ra);
    } else {
        n = strcspn(r->body, "\r\n");
        snprintf(res->error, sizeof(res->error), "%.*s", (int)n, r->body);
    }
    json_decref(st);
}

static void
req_finish(struct kapi_req *r, int code)
{
    struct kapi_result res;

    memset(&res, 0, sizeof(res));
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    res.curl_code = code;
    res.cert_unverified = code == CURLE_PEER_FAILED_VERIFICATION;
    res.aborted = r->aborted;
    res.timed_out = r->timed_out;
    res.retry_after = r->retry_after;
    if (res.status >= 300) {
        r->body[r->body_len < sizeof(r->body) ? r->body_len
                                              : sizeof(r->body) - 1] = '\0';
        decode_error_body(r, &res);
    } else if (code != CURLE_OK) {
        snprintf(res.error, sizeof(res.error), "%s",
                 r->errbuf[0] ? r->errbuf : curl_easy_strerror((CURLcode)code));
    }
    req_unlink(r);
    r->ops->on_done(r->arg, &res);
    req_free(r);
}

static void
check_done(struct kapi *k)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(k->multi, &left)) != NULL) {
        struct kapi_req *r;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        req_finish(r, msg->data.result);
    }
}

static void
kapi_on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kapi_req *r = w->data;

    (void)loop;
    (void)revents;
    r->timed_out = 1;
    req_finish(r, CURLE_OPERATION_TIMEDOUT);
}

static size_t
on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct kapi_req *r = ud;
    size_t n = size * nmemb, room;

    if (r->status == 0)
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->idle.repeat > 0)
        ev_timer_again(r->k->loop, &r->idle);
    if (r->status >= 200 && r->status < 300) {
        if (r->ops->on_data(r->arg, p, n) != 0) {
            r->aborted = 1;
            return 0; /* CURLE_WRITE_ERROR ends the transfer */
        }
        return n;
    }
    room = sizeof(r->body) - 1 - r->body_len;
    if (n < room)
        room = n;
    memcpy(r->body + r->body_len, p, room);
    r->body_len += room;
    return n;
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    struct kapi_req *r = ud;
    size_t n = size * nmemb;
    char val[128];
    double secs;

    if (r->idle.repeat > 0)
        ev_timer_again(r->k->loop, &r->idle);
    if (n > 12 && strncasecmp(p, "Retry-After:", 12) == 0
        && n - 12 < sizeof(val)) {
        memcpy(val, p + 12, n - 12);
        val[n - 12] = '\0';
        if (backoff_retry_after(val, (double)time(NULL), &secs) == 0)
            r->retry_after = secs;
    }
    return n;
}

/* Split the server URL so tls-server-name can be verified: the URL
 * carries that name and CURLOPT_CONNECT_TO sends it to the real host. */
static int
setup_base(struct kapi *k, struct err *e)
{
    const struct kcred *c = k->cred;
    const char *srv = c->server, *hp = strstr(srv, "://"), *port;
    int https = strncmp(srv, "https://", 8) == 0;
    size_t hl;

    if (hp == NULL)
        return err_set(e, "bad API server URL \"%s\"", srv);
    hp += 3;
    hl = strcspn(hp, "/");
    if (c->tls_server_name == NULL || !https) {
        k->base = strndup(srv, (size_t)(hp - srv) + hl);
        return k->base ? 0 : err_set(e, "out of memory");
    }
    port = hp[0] == '[' ? strstr(hp, "]:") : memchr(hp, ':', hl);
    if (port != NULL && port - hp < (long)hl)
        port += hp[0] == '[' ? 2 : 1;
    else
        port = "443";
    if (asprintf(&k->base, "https://%s:%.*s", c->tls_server_name,
                 (int)strcspn(port, "/"), port)
            < 0
        || asprintf(&k->connect_to, "%s:%.*s:%.*s", c->tls_server_name,
                    (int)strcspn(port, "/"), port, (int)hl, hp)
               < 0)
        return err_set(e, "out of memory");
    return 0;
}

struct kapi *
kapi_new(struct ev_loop *loop, struct kcred *cred, struct err *e)
{
    struct kapi *k = calloc(1, sizeof(*k));

    curl_global_init(CURL_GLOBAL_DEFAULT); /* reference counted */
    if (k == NULL || (k->multi = curl_multi_init()) == NULL) {
        free(k);
        err_set(e, "out of memory");
        return NULL;
    }
    k->loop = loop;
    k->cred = cred;
    ev_timer_init(&k->timer, kapi_on_timer, 0., 0.);
    k->timer.data = k;
    curl_multi_setopt(k->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(k->multi, CURLMOPT_SOCKETDATA, k);
    curl_multi_setopt(k->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
    curl_multi_setopt(k->multi, CURLMOPT_TIMERDATA, k);
    if (setup_base(k, e) < 0) {
        kapi_free(k);
        return NULL;
    }
    if (cred->insecure)
        log_warn("kube-api: TLS verification of %s is OFF "
                 "(insecure-skip-tls-verify)",
                 cred->server);
    return k;
}

void
kapi_free(struct kapi *k)
{
    if (k == NULL)
        return;
    while (k->reqs != NULL)
        kapi_cancel(k->reqs);
    curl_multi_cleanup(k->multi);
    ev_timer_stop(k->loop, &k->timer);
    free(k->base);
    free(k->connect_to);
    free(k);
    curl_global_cleanup();
}

void
kapi_cancel(struct kapi_req *r)
{
    if (r == NULL)
        return;
    req_unlink(r);
    req_free(r);
}

void
kapi_unauthorized(struct kapi *k)
{
    kcred_invalidate(k->cred);
}

static int
set_tls(struct kapi_req *r, const struct kcred *c)
{
    CURL *h = r->easy;
    int rc = 0;

    if (c->insecure) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (c->ca.data != NULL) {
        struct curl_blob b = {c->ca.data, c->ca.len, CURL_BLOB_COPY};
        rc |= curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
    } else if (c->ca_file != NULL) {
        rc |= curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    }
    if (c->cert.data != NULL) {
        struct curl_blob b = {c->cert.data, c->cert.len, CURL_BLOB_COPY};
        rc |= curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &b);
    } else if (c->cert_file != NULL) {
        rc |= curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
    }
    if (c->key.data != NULL) {
        struct curl_blob b = {c->key.data, c->key.len, CURL_BLOB_COPY};
        rc |= curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &b);
    } else if (c->key_file != NULL) {
        rc |= curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
    }
    if (r->k->connect_to != NULL) {
        r->connect_to = curl_slist_append(NULL, r->k->connect_to);
        rc |= r->connect_to == NULL;
        rc |= curl_easy_setopt(h, CURLOPT_CONNECT_TO, r->connect_to);
    }
    return rc;
}

static int
set_headers(struct kapi_req *r)
{
    const char *tok = kcred_token(r->k->cred, ev_now(r->k->loop));
    struct curl_slist *l;
    char *auth = NULL;

    l = curl_slist_append(NULL, "Accept: application/json");
    if (l != NULL && tok != NULL) {
        if (asprintf(&auth, "Authorization: Bearer %s", tok) < 0)
            auth = NULL;
        l = auth ? curl_slist_append(l, auth) : NULL;
        if (auth != NULL) {
            explicit_bzero(auth, strlen(auth));
            free(auth);
        }
    }
    if (l == NULL)
        return -1;
    r->headers = l;
    return curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, l) != CURLE_OK;
}

static int
setup_easy(struct kapi_req *r, const char *url)
{
    CURL *h = r->easy;
    int rc = 0;

    rc |= curl_easy_setopt(h, CURLOPT_URL, url);
    rc |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    rc |= curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    rc |= curl_easy_setopt(h, CURLOPT_USERAGENT, "ferry/0.1");
    rc |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    rc |= curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
    rc |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    rc |= curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    rc |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
    rc |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    rc |= curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    rc |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    rc |= curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    rc |= set_tls(r, r->k->cred);
    rc |= set_headers(r);
    return rc;
}

struct kapi_req *
kapi_get(struct kapi *k, const char *path_query, double deadline, double idle,
         const struct kapi_req_ops *ops, void *arg)
{
    struct kapi_req *r = calloc(1, sizeof(*r));
    char url[KAPI_URL_MAX];

    if (r == NULL)
        return NULL;
    r->k = k;
    r->ops = ops;
    r->arg = arg;
    r->retry_after = -1;
    ev_timer_init(&r->deadline, kapi_on_deadline, deadline, 0.);
    ev_timer_init(&r->idle, kapi_on_deadline, 0., idle);
    r->deadline.data = r->idle.data = r;
    if ((size_t)snprintf(url, sizeof(url), "%s%s", k->base, path_query)
            >= sizeof(url)
        || (r->easy = curl_easy_init()) == NULL || setup_easy(r, url) != 0
        || curl_multi_add_handle(k->multi, r->easy) != CURLM_OK) {
        if (r->easy != NULL)
            curl_easy_cleanup(r->easy);
        curl_slist_free_all(r->headers);
        curl_slist_free_all(r->connect_to);
        free(r);
        return NULL;
    }
    r->next = k->reqs;
    if (k->reqs != NULL)
        k->reqs->prev = r;
    k->reqs = r;
    if (deadline > 0)
        ev_timer_start(k->loop, &r->deadline);
    if (idle > 0)
        ev_timer_again(k->loop, &r->idle);
    return r;
}

int
kapi_query_escape(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (; *in != '\0'; in++) {
        unsigned char ch = (unsigned char)*in;
        int plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
                    || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'
                    || ch == '.' || ch == '~';
        if (n + (plain ? 1 : 3) >= outlen)
            return -1;
        if (plain) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    if (n >= outlen)
        return -1;
    out[n] = '\0';
    return 0;
}

uint64_t
kapi_cpu_ns(const struct kapi *k)
{
    return k->cpu_ns;
}
