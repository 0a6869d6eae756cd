#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "skip.h"

const char *const skip_kind_text[SKIP_KIND__COUNT] = {
    [SKIP_KIND_SERVICE] = "Service",
    [SKIP_KIND_ENDPOINTSLICE] = "EndpointSlice",
    [SKIP_KIND_NODE] = "Node",
};

const char *const skip_reason_text[SKIP__COUNT] = {
    [SKIP_MALFORMED] = "malformed",
    [SKIP_TOO_LARGE] = "too_large",
    [SKIP_NAME_TOO_LONG] = "name_too_long",
    [SKIP_CACHE_FULL] = "cache_full",
    [SKIP_BAD_PORT] = "bad_port",
    [SKIP_BAD_ADDRESS] = "bad_address",
    [SKIP_BAD_PROTOCOL] = "bad_protocol",
    [SKIP_UNSUPPORTED_PROTOCOL] = "unsupported_protocol",
    [SKIP_CONFLICT] = "conflict",
    [SKIP_NO_NODE_PORT] = "no_node_port",
    [SKIP_BAD_ANNOTATION] = "bad_annotation",
    [SKIP_NO_MEMORY] = "out_of_memory",
    [SKIP_EXTERNAL_NAME] = "external_name",
    [SKIP_HEADLESS] = "headless",
    [SKIP_OTHER_PROXY] = "other_proxy",
    [SKIP_ADDRESS_TYPE] = "address_type",
    [SKIP_NO_SERVICE] = "no_service",
};

int
skip_quiet(enum skip_reason r)
{
    return r >= SKIP_EXTERNAL_NAME && r < SKIP__COUNT;
}

/* Entries are keyed by all four parts; the value keeps them apart again
 * as [kind, reason, obj, what]. Keys and values are stored unchecked:
 * <what> may hold an API string cut in the middle of a UTF-8 sequence. */
struct skip_set {
    json_t *map;
    size_t count[SKIP_KIND__COUNT][SKIP__COUNT];
};

struct skip_set *
skip_set_new(void)
{
    struct skip_set *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->map = json_object();
    if (s->map == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void
skip_set_free(struct skip_set *s)
{
    if (s == NULL)
        return;
    json_decref(s->map);
    free(s);
}

static int
make_key(const struct skip_note *n, char **out)
{
    return asprintf(out, "%d\x1f%d\x1f%s\x1f%s", (int)n->kind, (int)n->reason,
                    n->obj ? n->obj : "", n->what ? n->what : "");
}

int
skip_set_add(struct skip_set *s, const struct skip_note *n)
{
    char *key;
    json_t *v;
    int rc = -1;

    if ((unsigned)n->kind >= SKIP_KIND__COUNT
        || (unsigned)n->reason >= SKIP__COUNT || make_key(n, &key) < 0)
        return -1;
    if (json_object_get(s->map, key) != NULL) {
        free(key);
        return 0;
    }
    v = json_pack("[iioo]", (int)n->kind, (int)n->reason,
                  json_string_nocheck(n->obj ? n->obj : ""),
                  json_string_nocheck(n->what ? n->what : ""));
    if (v != NULL && json_object_set_new_nocheck(s->map, key, v) == 0) {
        s->count[n->kind][n->reason]++;
        rc = 1;
    }
    free(key);
    return rc;
}

size_t
skip_set_size(const struct skip_set *s)
{
    return json_object_size(s->map);
}

size_t
skip_set_count(const struct skip_set *s, enum skip_kind kind,
               enum skip_reason reason)
{
    if ((unsigned)kind >= SKIP_KIND__COUNT || (unsigned)reason >= SKIP__COUNT)
        return 0;
    return s->count[kind][reason];
}

size_t
skip_set_each_new(const struct skip_set *cur, const struct skip_set *prev,
                  skip_fn fn, void *arg)
{
    const char *key;
    json_t *v;
    size_t n = 0;

    json_object_foreach(cur->map, key, v)
    {
        struct skip_note note;
        if (prev != NULL && json_object_get(prev->map, key) != NULL)
            continue;
        note.kind = (enum skip_kind)json_integer_value(json_array_get(v, 0));
        note.reason =
            (enum skip_reason)json_integer_value(json_array_get(v, 1));
        note.obj = json_string_value(json_array_get(v, 2));
        note.what = json_string_value(json_array_get(v, 3));
        fn(arg, &note);
        n++;
    }
    return n;
}

int
skip_log_pass(struct skip_log *l, enum skip_reason reason, double now,
              uint64_t *suppressed)
{
    if ((unsigned)reason >= SKIP__COUNT)
        reason = SKIP_MALFORMED;
    if (l->r[reason].start == 0 || now - l->r[reason].start >= SKIP_LOG_WINDOW
        || now < l->r[reason].start) {
        l->r[reason].start = now > 0 ? now : 1e-9;
        l->r[reason].lines = 0;
    }
    if (l->r[reason].lines >= SKIP_LOG_BURST) {
        l->r[reason].suppressed++;
        return 0;
    }
    l->r[reason].lines++;
    *suppressed = l->r[reason].suppressed;
    l->r[reason].suppressed = 0;
    return 1;
}

static enum log_level
level_of(enum skip_reason r)
{
    if (skip_quiet(r))
        return LOG_DEBUG;
    if (r == SKIP_UNSUPPORTED_PROTOCOL || r == SKIP_NO_NODE_PORT)
        return LOG_INFO;
    return LOG_WARN;
}

void
skip_log(struct skip_log *l, double now, const char *prefix,
         const struct skip_note *n)
{
    enum log_level lv = level_of(n->reason);
    const char *kind = (unsigned)n->kind < SKIP_KIND__COUNT
                           ? skip_kind_text[n->kind]
                           : "object";
    const char *reason =
        (unsigned)n->reason < SKIP__COUNT ? skip_reason_text[n->reason] : "?";
    uint64_t held;

    if (!log_enabled(lv) || !skip_log_pass(l, n->reason, now, &held))
        return;
    if (held > 0)
        log_write(lv,
                  "%s: %llu more skipped objects (%s) not logged; "
                  "ferry_api_objects_skipped_total counts them all",
                  prefix, (unsigned long long)held, reason);
    log_write(lv, "%s: skipping %s%s%s: %s (%s)", prefix, kind,
              n->obj && n->obj[0] ? " " : "",
              n->obj && n->obj[0] ? n->obj : " (unnamed)",
              n->what && n->what[0] ? n->what : "no detail", reason);
}
