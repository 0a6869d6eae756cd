#include <jansson.h>

#include "ctrace.h"
#include "ktrace.h"
#include "proxy.h"
#include "worker.h"

/* A stage: <at> 0 is "not reached yet" (null). */
static json_t *
stage(const char *what, double at)
{
    return json_pack("{s:s, s:o}", "stage", what, "at",
                     at > 0 ? json_real(at) : json_null());
}

static int
add_gen(json_t *st, uint64_t gen)
{
    return json_object_set_new(st, "generation", json_integer((json_int_t)gen));
}

/* Each worker's first commit of a table at least as new as the
 * record's: a later table may have replaced it in the mailbox. */
static int
add_workers(json_t *stages, struct proxy *p, const struct ctrace_rec *r)
{
    unsigned k;

    for (k = 0; k < proxy_nworkers(p); k++) {
        struct worker *w = proxy_worker(p, k);
        uint64_t got = 0;
        double at = 0;
        json_t *st;
        int found = r->gen != 0 && worker_commit_of(w, r->gen, &got, &at);

        if (!found && r->gen != 0 && worker_generation(w) >= r->gen)
            got = worker_generation(w); /* committed, time forgotten */
        st = stage("worker", at);
        if (st == NULL || json_object_set_new(st, "worker", json_integer(k)) < 0
            || (got != 0 && add_gen(st, got) < 0)
            || json_array_append_new(stages, st) < 0)
            return -1;
    }
    return 0;
}

static const char *
kernel_text(const struct ctrace_rec *r)
{
    if (r->posted == 0)
        return NULL;
    switch (r->kernel) {
    case CTRACE_KERNEL_PENDING:
        return "waiting for a transaction to succeed";
    case CTRACE_KERNEL_DONE:
        return NULL;
    case CTRACE_KERNEL_NONE:
    default:
        return "no kernel dataplane";
    }
}

static json_t *
change_json(struct proxy *p, const struct ctrace_rec *r)
{
    static const char *const events[] = {
        [CTRACE_ADDED] = "ADDED",
        [CTRACE_MODIFIED] = "MODIFIED",
        [CTRACE_DELETED] = "DELETED",
    };
    json_t *c, *stages = json_array(), *st;
    const char *note;

    c = json_pack("{s:I, s:s, s:s, s:s, s:o}", "seq", (json_int_t)r->seq,
                  "kind", r->kind == CTRACE_SLICE ? "EndpointSlice" : "Service",
                  "object", r->obj, "event",
                  (unsigned)r->modified < 3 ? events[r->modified] : "?",
                  "stages", stages);
    if (c == NULL)
        return NULL;
    if (r->trigger > 0
        && json_array_append_new(stages, stage("trigger", r->trigger)) < 0)
        goto oom;
    if (json_array_append_new(stages, stage("received", r->received)) < 0
        || (st = stage("built", r->unchanged ? 0 : r->built)) == NULL
        || (r->tgen != 0 && add_gen(st, r->tgen) < 0)
        || json_array_append_new(stages, st) < 0)
        goto oom;
    if (r->unchanged) {
        if (json_object_set_new(c, "note",
                                json_string("the table built from it is the "
                                            "one in force: nothing to apply"))
            < 0)
            goto oom;
        return c;
    }
    if ((st = stage("posted", r->posted)) == NULL
        || (r->gen != 0 && add_gen(st, r->gen) < 0)
        || json_array_append_new(stages, st) < 0
        || add_workers(stages, p, r) < 0
        || json_array_append_new(stages, stage("kernel", r->committed)) < 0)
        goto oom;
    if (r->apply_failed
        && json_object_set_new(c, "note",
                               json_string("the apply failed (see the log)"))
               < 0)
        goto oom;
    note = kernel_text(r);
    if (note != NULL && json_object_set_new(c, "kernel", json_string(note)) < 0)
        goto oom;
    return c;
oom:
    json_decref(c);
    return NULL;
}

json_t *
ktrace_json(struct proxy *p, const char *ns, const char *name)
{
    const struct ctrace_rec *recs[CTRACE_PER_SVC];
    size_t i, n = ctrace_find(ns, name, recs, CTRACE_PER_SVC);
    json_t *o, *changes = json_array();

    o = json_pack(
        "{s:s, s:s, s:I, s:i, s:o}", "namespace", ns, "name", name,
        "generation",
        (json_int_t)(proxy_table(p) != NULL ? proxy_table(p)->generation : 0),
        "workers", (int)proxy_nworkers(p), "changes", changes);
    if (o == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        json_t *c = change_json(p, recs[i]);
        if (c == NULL || json_array_append_new(changes, c) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}
