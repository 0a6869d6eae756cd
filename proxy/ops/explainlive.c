#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "explainlive.h"

#define EXPLAINLIVE_POLL_MS 100 /* --watch asks this often */
#define EXPLAINLIVE_PENDING 64  /* connections whose failures are held */

static const char *
jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s != NULL ? s : "";
}

/* "13:04:05.123456" (UTC) for Unix time <t>. */
static const char *
clock_str(double t, char out[32])
{
    time_t s = (time_t)t;
    struct tm tm;
    long us = (long)((t - (double)s) * 1e6);

    if (us > 999999)
        us = 999999;
    gmtime_r(&s, &tm);
    snprintf(out, 32, "%02d:%02d:%02d.%06ld", tm.tm_hour, tm.tm_min, tm.tm_sec,
             us);
    return out;
}

static const char *
stage_name(const json_t *st, char out[32])
{
    const char *s = jstr(st, "stage");

    if (strcmp(s, "worker") == 0) {
        snprintf(out, 32, "worker %lld",
                 (long long)json_integer_value(json_object_get(st, "worker")));
        return out;
    }
    return strcmp(s, "trigger") == 0    ? "trigger time"
           : strcmp(s, "received") == 0 ? "API event"
           : strcmp(s, "built") == 0    ? "table built"
           : strcmp(s, "posted") == 0   ? "posted to workers"
           : strcmp(s, "kernel") == 0   ? "kernel rules"
                                        : s;
}

/* One change: each stage with its time and how long it took after the
 * stage it waited for (the workers and the kernel wait for "posted"). */
static void
print_change(FILE *f, const json_t *c)
{
    const json_t *st;
    double prev = 0, posted = 0, first = 0, last = 0;
    size_t i;

    fprintf(f, "\n%s %s %s (change %lld)\n", jstr(c, "kind"), jstr(c, "object"),
            jstr(c, "event"),
            (long long)json_integer_value(json_object_get(c, "seq")));
    json_array_foreach(json_object_get(c, "stages"), i, st)
    {
        const char *what = jstr(st, "stage");
        const json_t *at = json_object_get(st, "at");
        const json_t *gen = json_object_get(st, "generation");
        char name[32], clk[32];
        double t = json_real_value(at), from;
        int waits_post =
            strcmp(what, "worker") == 0 || strcmp(what, "kernel") == 0;

        fprintf(f, "  %-18s ", stage_name(st, name));
        if (!json_is_real(at)) {
            fprintf(f, "%-15s %11s", "-", "");
        } else {
            from = waits_post && posted > 0 ? posted : prev;
            fprintf(f, "%s", clock_str(t, clk));
            if (from > 0)
                fprintf(f, " %+9.3f ms", (t - from) * 1e3);
            else
                fprintf(f, " %11s", "");
            if (first == 0)
                first = t;
            if (t > last)
                last = t;
            if (!waits_post)
                prev = t;
            if (strcmp(what, "posted") == 0)
                posted = t;
        }
        if (json_is_integer(gen))
            fprintf(f, "  %s %lld",
                    strcmp(what, "built") == 0 ? "watcher table" : "generation",
                    (long long)json_integer_value(gen));
        else if (strcmp(what, "worker") == 0 && !json_is_real(at))
            fprintf(f, "  not yet");
        if (strcmp(what, "kernel") == 0 && json_object_get(c, "kernel"))
            fprintf(f, "  %s", jstr(c, "kernel"));
        fprintf(f, "\n");
    }
    if (json_object_get(c, "note") != NULL)
        fprintf(f, "  note: %s\n", jstr(c, "note"));
    if (first > 0 && last > first)
        fprintf(f, "  %-18s %15s %+9.3f ms\n", "all done", "",
                (last - first) * 1e3);
}

void
explainlive_print_trace(FILE *f, const json_t *ans)
{
    const json_t *ch = json_object_get(ans, "changes"), *c;
    size_t i;

    fprintf(f,
            "Service %s/%s: %zu change(s) kept, newest first (%lld "
            "worker(s), table generation %lld; times UTC)\n",
            jstr(ans, "namespace"), jstr(ans, "name"), json_array_size(ch),
            (long long)json_integer_value(json_object_get(ans, "workers")),
            (long long)json_integer_value(json_object_get(ans, "generation")));
    json_array_foreach(ch, i, c) print_change(f, c);
    if (json_array_size(ch) == 0)
        fprintf(f, "no change of this Service seen since ferry started (or "
                   "since it was pushed out of the record)\n");
}

void
explainlive_print_conn(FILE *f, const json_t *rec, const char *failed)
{
    const json_t *cms = json_object_get(rec, "connect_ms");

    fprintf(f, "conn %lld %s -> %s attempts=%lld",
            (long long)json_integer_value(json_object_get(rec, "id")),
            jstr(rec, "client"),
            json_is_string(json_object_get(rec, "backend"))
                ? jstr(rec, "backend")
                : "-",
            (long long)json_integer_value(json_object_get(rec, "attempts")));
    if (failed != NULL && failed[0] != '\0')
        fprintf(f, " failed=[%s]", failed);
    if (json_is_number(cms))
        fprintf(f, " connect_ms=%.3f", json_number_value(cms));
    else
        fprintf(f, " connect_ms=-");
    fprintf(f, " bytes_up=%lld bytes_down=%lld duration_ms=%.3f cause=%s\n",
            (long long)json_integer_value(json_object_get(rec, "bytes_up")),
            (long long)json_integer_value(json_object_get(rec, "bytes_down")),
            json_number_value(json_object_get(rec, "duration_ms")),
            jstr(rec, "cause"));
}

/* GET <path>, expecting 200 and JSON: the answer (new), or NULL after
 * saying why on stderr (with <status> set when the server answered). */
static json_t *
get_json(const struct explaincli_opts *o, const char *path, int *status)
{
    char why[256], *body;
    json_error_t je;
    json_t *ans;

    *status = 0;
    if ((body = explaincli_get(&o->admin, path, status, why, sizeof(why)))
        == NULL) {
        fprintf(stderr, "ferry explain: %s\n", why);
        return NULL;
    }
    if (*status != 200) {
        fprintf(stderr, "ferry explain: admin server answered %d: %s", *status,
                body);
        free(body);
        return NULL;
    }
    if ((ans = json_loads(body, 0, &je)) == NULL)
        fprintf(stderr, "ferry explain: the answer is not JSON: %s\n", je.text);
    free(body);
    return ans;
}

int
explainlive_trace(const struct explaincli_opts *o)
{
    char path[256], q[192];
    json_t *ans;
    int status;

    explaincli_qenc(q, sizeof(q), o->trace);
    snprintf(path, sizeof(path), "/explain/trace?service=%s", q);
    if ((ans = get_json(o, path, &status)) == NULL)
        return 2;
    if (o->json) {
        json_dumpf(ans, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
    } else {
        explainlive_print_trace(stdout, ans);
    }
    json_decref(ans);
    return 0;
}

/* The failed attempts of connections not ended yet, by connection id. */
struct pending {
    long long id[EXPLAINLIVE_PENDING];
    char text[EXPLAINLIVE_PENDING][256];
    size_t next;
};

static char *
pending_of(struct pending *p, long long id, int make)
{
    size_t i;

    for (i = 0; i < EXPLAINLIVE_PENDING; i++)
        if (p->id[i] == id)
            return p->text[i];
    if (!make)
        return NULL;
    i = p->next++ % EXPLAINLIVE_PENDING; /* the oldest makes room */
    p->id[i] = id;
    p->text[i][0] = '\0';
    return p->text[i];
}

/* Print <rec>; returns 1 when it was a connection's end. */
static int
show_record(const struct explaincli_opts *o, struct pending *p, json_t *rec)
{
    long long id = json_integer_value(json_object_get(rec, "id"));
    char *txt;
    size_t n;

    if (json_is_true(json_object_get(rec, "attempt_failed"))) {
        txt = pending_of(p, id, 1);
        n = strlen(txt);
        snprintf(txt + n, 256 - n, "%s%s %s", n > 0 ? ", " : "",
                 jstr(rec, "backend"), jstr(rec, "error"));
        if (o->json) {
            json_dumpf(rec, stdout, JSON_COMPACT);
            fputc('\n', stdout);
        }
        return 0;
    }
    txt = pending_of(p, id, 0);
    if (o->json) {
        json_dumpf(rec, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        explainlive_print_conn(stdout, rec, txt);
    }
    if (txt != NULL) {
        txt[0] = '\0';
        p->id[(size_t)(txt - p->text[0]) / sizeof(p->text[0])] = 0;
    }
    return 1;
}

int
explainlive_watch(const struct explaincli_opts *o)
{
    static struct pending pend;
    char path[512], a[256];
    const json_t *rec;
    json_t *ans;
    long long id, lost, said = 0;
    unsigned seen = 0;
    int status, done = 0;
    size_t i;
    struct timespec t0, t;

    explaincli_qenc(a, sizeof(a), o->addr);
    snprintf(path, sizeof(path),
             "/explain/watch?addr=%s&proto=tcp&count=%u&seconds=%g", a,
             o->nwatch, o->watch_s);
    if ((ans = get_json(o, path, &status)) == NULL)
        return 2;
    id = json_integer_value(json_object_get(ans, "id"));
    if (!o->json)
        printf("watching service %s: %u connection(s) or %g s\n",
               jstr(ans, "service"), o->nwatch, o->watch_s);
    fflush(stdout);
    json_decref(ans);
    snprintf(path, sizeof(path), "/explain/watch?id=%lld", id);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!done && seen < o->nwatch) {
        (void)poll(NULL, 0, EXPLAINLIVE_POLL_MS);
        if ((ans = get_json(o, path, &status)) == NULL)
            return status == 404 ? 0 : 2; /* 404: the server ended it */
        json_array_foreach(json_object_get(ans, "records"), i,
                           rec) if (seen < o->nwatch) seen +=
            (unsigned)show_record(o, &pend, (json_t *)rec);
        done = json_is_true(json_object_get(ans, "done"));
        lost = json_integer_value(json_object_get(ans, "dropped"));
        if (lost > said)
            fprintf(stderr,
                    "ferry explain: %lld record(s) lost so far (the "
                    "queue was full)\n",
                    lost);
        said = lost;
        json_decref(ans);
        fflush(stdout);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec)
                + (double)(t.tv_nsec - t0.tv_nsec) / 1e9
            > o->watch_s + 1)
            break; /* the server ends it too; do not outlive it */
    }
    if (!o->json)
        printf("%u connection(s) seen\n", seen);
    return 0;
}
