/*
 * ydoc.c - YAML documents from libyaml's events, with every cost bounded
 * (see ydoc.h for what is refused and why).
 *
 * The tree lives in three growable arrays: the nodes, the child slots
 * (each collection's children are contiguous, stored when it ends) and
 * the scalar text. While a collection is open its finished children wait
 * on a pending stack; the open collections themselves are a stack no
 * deeper than max_depth. Nothing recurses.
 */
#include <search.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ydoc.h"

#define ANCHOR_SHOW 40 /* bytes of an anchor name quoted in a message */

struct anchor {
    char *name;
    size_t node;
    struct ydoc_pos pos;
};

/* A collection being read: its node, and where its children start on
 * the pending stack. */
struct open_node {
    size_t node;
    size_t first;
};

struct ydoc {
    yaml_parser_t parser;
    struct ydoc_limits lim;
    const char *buf;
    size_t len;
    int ended; /* the stream's end was read */

    struct ydoc_node *nodes;
    size_t nnodes, cap_nodes;
    size_t *slots; /* children of every collection */
    size_t nslots, cap_slots;
    char *text; /* scalars, each NUL-terminated */
    size_t ntext, cap_text;

    /* The document being read. */
    size_t *pending;
    size_t npending, cap_pending;
    struct open_node *opens; /* lim.max_depth entries */
    size_t depth;
    void *anchors; /* tsearch tree of struct anchor */
    size_t written, expanded;
    size_t root;
    int has_root;
};

/* ---- growable arrays ---------------------------------------------------- */

/* Make room for <need> elements of <size> bytes in <*p>. Returns 0, or -1
 * when out of memory (<*p> is unchanged then). */
static int
grow(void **p, size_t *cap, size_t need, size_t size)
{
    size_t n = *cap ? *cap : 64;
    void *q;

    if (need <= *cap)
        return 0;
    while (n < need) {
        if (n > SIZE_MAX / 2 / size)
            return -1;
        n *= 2;
    }
    q = realloc(*p, n * size);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

#define GROW(d, arr, count, cap, extra)                                        \
    grow((void **)&(d)->arr, &(d)->cap, (d)->count + (extra), sizeof(*(d)->arr))

/* ---- errors -------------------------------------------------------------- */

static struct ydoc_pos
mark_pos(const yaml_mark_t *m)
{
    struct ydoc_pos p = {(int)m->line + 1, (int)m->column + 1};

    return p;
}

static int fail(struct err *e, struct ydoc_pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct err *e, struct ydoc_pos p, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set_at(e, p.line, p.col, "%s", msg);
}

/* Turn a byte offset (libyaml's reader errors carry no line) into a
 * position. */
static struct ydoc_pos
offset_pos(const char *buf, size_t len, size_t off)
{
    struct ydoc_pos p = {1, 1};
    size_t i;

    for (i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            p.line++;
            p.col = 1;
        } else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
            p.col++;
        }
    }
    return p;
}

static int
parser_fail(const yaml_parser_t *p, const char *buf, size_t len, struct err *e)
{
    struct ydoc_pos pos = mark_pos(&p->problem_mark);
    const char *problem = p->problem ? p->problem : "unknown error";

    if (p->error == YAML_MEMORY_ERROR)
        return err_set(e, "out of memory while parsing YAML");
    if (p->error == YAML_READER_ERROR)
        pos = offset_pos(buf, len, p->problem_offset);
    if (p->context != NULL)
        return fail(e, pos, "YAML syntax error: %s (%s)", problem, p->context);
    return fail(e, pos, "YAML syntax error: %s", problem);
}

/* ---- directives ---------------------------------------------------------- */

/* Nonzero if <buf> holds more '%' bytes than directives allowed: in UTF-8
 * and UTF-16 alike, every directive has one. */
static int
many_percents(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    unsigned n = 0;

    while (p < end && (p = memchr(p, '%', (size_t)(end - p))) != NULL) {
        if (++n > YDOC_DIRECTIVES_MAX)
            return 1;
        p++;
    }
    return 0;
}

/* libyaml's parser checks each %TAG directive against every earlier one
 * before it returns the document's first event, so their number is
 * checked first, on tokens (only when the text could hold too many: a
 * second pass over a big file is not free). The pass stops where
 * collections nest deeper than the limit (the scanner's cost per token
 * grows with flow nesting; the event pass refuses it there, as events
 * nest at least as deep as these tokens) and at a scanner error (the
 * event pass reports it). */
static int
check_directives(const char *buf, size_t len, unsigned max_depth, struct err *e)
{
    yaml_parser_t p;
    yaml_token_t t;
    unsigned n = 0, depth = 0;
    int rc = 0, done = 0;

    if (!many_percents(buf, len))
        return 0;
    if (!yaml_parser_initialize(&p))
        return err_set(e, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    while (!done && yaml_parser_scan(&p, &t)) {
        switch (t.type) {
        case YAML_VERSION_DIRECTIVE_TOKEN:
        case YAML_TAG_DIRECTIVE_TOKEN:
            if (++n > YDOC_DIRECTIVES_MAX) {
                rc = fail(e, mark_pos(&t.start_mark),
                          "too many YAML directives (max %d)",
                          YDOC_DIRECTIVES_MAX);
                done = 1;
            }
            break;
        case YAML_FLOW_SEQUENCE_START_TOKEN:
        case YAML_FLOW_MAPPING_START_TOKEN:
        case YAML_BLOCK_SEQUENCE_START_TOKEN:
        case YAML_BLOCK_MAPPING_START_TOKEN:
            done = ++depth > max_depth;
            break;
        case YAML_FLOW_SEQUENCE_END_TOKEN:
        case YAML_FLOW_MAPPING_END_TOKEN:
        case YAML_BLOCK_END_TOKEN:
            depth -= depth > 0;
            break;
        case YAML_STREAM_END_TOKEN:
            done = 1;
            break;
        default:
            break;
        }
        yaml_token_delete(&t);
    }
    yaml_parser_delete(&p);
    return rc;
}

/* ---- anchors ------------------------------------------------------------- */

static int
anchor_cmp(const void *a, const void *b)
{
    return strcmp(((const struct anchor *)a)->name,
                  ((const struct anchor *)b)->name);
}

static void
anchor_free(void *p)
{
    struct anchor *a = p;

    free(a->name);
    free(a);
}

static void
anchors_clear(struct ydoc *d)
{
    if (d->anchors != NULL)
        tdestroy(d->anchors, anchor_free);
    d->anchors = NULL;
}

/* Name node <id> <name>. */
static int
anchor_add(struct ydoc *d, const char *name, size_t id, struct err *e)
{
    struct anchor *a = calloc(1, sizeof(*a)), **slot;
    const struct ydoc_node *n = &d->nodes[id];

    if (a == NULL || (a->name = strdup(name)) == NULL) {
        free(a);
        return err_set(e, "out of memory");
    }
    a->node = id;
    a->pos = n->pos;
    slot = tsearch(a, &d->anchors, anchor_cmp);
    if (slot == NULL) {
        anchor_free(a);
        return err_set(e, "out of memory");
    }
    if (*slot != a) {
        anchor_free(a);
        return fail(e, n->pos,
                    "anchor &%.*s is defined twice (first at "
                    "%d:%d)",
                    ANCHOR_SHOW, name, (*slot)->pos.line, (*slot)->pos.col);
    }
    return 0;
}

/* ---- building the tree --------------------------------------------------- */

static int
new_node(struct ydoc *d, enum ydoc_type type, const yaml_mark_t *m, size_t *id,
         struct err *e)
{
    struct ydoc_node *n;

    if (GROW(d, nodes, nnodes, cap_nodes, 1) < 0)
        return err_set(e, "out of memory");
    *id = d->nnodes++;
    n = &d->nodes[*id];
    memset(n, 0, sizeof(*n));
    n->type = type;
    n->pos = mark_pos(m);
    n->size = 1;
    d->written++;
    d->expanded++;
    return 0;
}

/* Give finished node <id> to the open collection, or make it the root. */
static int
attach(struct ydoc *d, size_t id, struct err *e)
{
    if (d->depth == 0) {
        d->root = id;
        d->has_root = 1;
        return 0;
    }
    if (GROW(d, pending, npending, cap_pending, 1) < 0)
        return err_set(e, "out of memory");
    d->pending[d->npending++] = id;
    return 0;
}

static int
on_scalar(struct ydoc *d, const yaml_event_t *ev, struct err *e)
{
    size_t id, n = ev->data.scalar.length;

    if (new_node(d, YDOC_SCALAR, &ev->start_mark, &id, e) < 0)
        return -1;
    if (n >= SIZE_MAX - d->ntext - 1
        || GROW(d, text, ntext, cap_text, n + 1) < 0)
        return err_set(e, "out of memory");
    d->nodes[id].plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    d->nodes[id].off = d->ntext;
    d->nodes[id].len = n;
    memcpy(d->text + d->ntext, ev->data.scalar.value, n);
    d->text[d->ntext + n] = '\0';
    d->ntext += n + 1;
    if (ev->data.scalar.anchor != NULL
        && anchor_add(d, (const char *)ev->data.scalar.anchor, id, e) < 0)
        return -1;
    return attach(d, id, e);
}

static int
on_start(struct ydoc *d, const yaml_event_t *ev, struct err *e)
{
    int map = ev->type == YAML_MAPPING_START_EVENT;
    const yaml_char_t *anchor =
        map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    size_t id;

    if (d->depth >= d->lim.max_depth)
        return fail(e, mark_pos(&ev->start_mark),
                    "lists and mappings nested too deeply (max %u)",
                    d->lim.max_depth);
    if (new_node(d, map ? YDOC_MAP : YDOC_LIST, &ev->start_mark, &id, e) < 0)
        return -1;
    d->nodes[id].open = 1;
    if (anchor != NULL && anchor_add(d, (const char *)anchor, id, e) < 0)
        return -1;
    d->opens[d->depth].node = id;
    d->opens[d->depth].first = d->npending;
    d->depth++;
    return 0;
}

/* The open collection ends: its children move from the pending stack to
 * its slots. */
static int
on_end(struct ydoc *d, struct err *e)
{
    struct open_node o = d->opens[--d->depth];
    size_t i, n = d->npending - o.first;
    struct ydoc_node *node = &d->nodes[o.node];

    if (GROW(d, slots, nslots, cap_slots, n) < 0)
        return err_set(e, "out of memory");
    node->off = d->nslots;
    node->len = node->type == YDOC_MAP ? n / 2 : n;
    for (i = 0; i < n; i++) {
        size_t kid = d->pending[o.first + i];
        d->slots[d->nslots++] = kid;
        /* Bounded by d->expanded, which the alias check caps. */
        node->size += d->nodes[kid].size;
    }
    node->open = 0;
    d->npending = o.first;
    return attach(d, o.node, e);
}

static int
on_alias(struct ydoc *d, const yaml_event_t *ev, struct err *e)
{
    struct anchor key, **found;
    struct ydoc_pos pos = mark_pos(&ev->start_mark);
    const struct ydoc_node *target;

    key.name = (char *)ev->data.alias.anchor;
    found = tfind(&key, &d->anchors, anchor_cmp);
    if (found == NULL)
        return fail(e, pos, "alias *%.*s names no anchor before it",
                    ANCHOR_SHOW, key.name);
    target = &d->nodes[(*found)->node];
    if (target->open)
        return fail(e, pos, "alias *%.*s is inside the node it names",
                    ANCHOR_SHOW, key.name);
    d->expanded += target->size;
    if (d->expanded - d->written > d->lim.alias_slack)
        return fail(e, pos,
                    "aliases expand the document to too many nodes (more "
                    "than %zu beyond the %zu written)",
                    d->lim.alias_slack, d->written);
    return attach(d, (*found)->node, e);
}

/* Read events up to the end of the next document. Returns 0 (d->has_root
 * says whether there was one), or -1 with <e> set. */
static int
load_next(struct ydoc *d, struct err *e)
{
    yaml_event_t ev;
    int rc = 0, done = 0;

    anchors_clear(d);
    d->npending = d->depth = 0;
    d->written = d->expanded = 0;
    d->has_root = 0;
    if (d->ended)
        return 0;
    while (!done) {
        if (!yaml_parser_parse(&d->parser, &ev))
            return parser_fail(&d->parser, d->buf, d->len, e);
        switch (ev.type) {
        case YAML_SCALAR_EVENT:
            rc = on_scalar(d, &ev, e);
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            rc = on_start(d, &ev, e);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            rc = on_end(d, e);
            break;
        case YAML_ALIAS_EVENT:
            rc = on_alias(d, &ev, e);
            break;
        case YAML_DOCUMENT_END_EVENT:
            done = 1;
            break;
        case YAML_STREAM_END_EVENT:
            d->ended = done = 1;
            break;
        default: /* stream and document starts */
            break;
        }
        yaml_event_delete(&ev);
        if (rc < 0)
            return -1;
    }
    anchors_clear(d);
    return 0;
}

/* ---- API ----------------------------------------------------------------- */

struct ydoc *
ydoc_load(const char *buf, size_t len, const struct ydoc_limits *lim,
          struct err *e)
{
    struct ydoc *d;

    if (buf == NULL)
        buf = "", len = 0;
    if (lim->max_depth == 0) {
        err_set(e, "bad YAML limits");
        return NULL;
    }
    if (check_directives(buf, len, lim->max_depth, e) < 0)
        return NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL
        || (d->opens = calloc(lim->max_depth, sizeof(*d->opens))) == NULL
        || !yaml_parser_initialize(&d->parser)) {
        if (d != NULL)
            free(d->opens);
        free(d);
        err_set(e, "out of memory");
        return NULL;
    }
    d->lim = *lim;
    d->buf = buf;
    d->len = len;
    yaml_parser_set_input_string(&d->parser, (const unsigned char *)buf, len);
    if (load_next(d, e) < 0) {
        ydoc_free(d);
        return NULL;
    }
    return d;
}

int
ydoc_next(struct ydoc *d, struct ydoc_pos *pos, struct err *e)
{
    if (load_next(d, e) < 0)
        return -1;
    if (!d->has_root)
        return 0;
    *pos = d->nodes[d->root].pos;
    return 1;
}

void
ydoc_free(struct ydoc *d)
{
    if (d == NULL)
        return;
    anchors_clear(d);
    yaml_parser_delete(&d->parser);
    free(d->nodes);
    free(d->slots);
    free(d->text);
    free(d->pending);
    free(d->opens);
    free(d);
}

const struct ydoc_node *
ydoc_root(const struct ydoc *d)
{
    return d->has_root ? &d->nodes[d->root] : NULL;
}

const char *
ydoc_str(const struct ydoc *d, const struct ydoc_node *n)
{
    /* An empty scalar may be a caller's stand-in for "no value". */
    return n->type == YDOC_SCALAR && n->len > 0 ? d->text + n->off : "";
}

const struct ydoc_node *
ydoc_item(const struct ydoc *d, const struct ydoc_node *n, size_t i)
{
    return &d->nodes[d->slots[n->off + i]];
}

const struct ydoc_node *
ydoc_key(const struct ydoc *d, const struct ydoc_node *n, size_t i)
{
    return &d->nodes[d->slots[n->off + 2 * i]];
}

const struct ydoc_node *
ydoc_value(const struct ydoc *d, const struct ydoc_node *n, size_t i)
{
    return &d->nodes[d->slots[n->off + 2 * i + 1]];
}

const struct ydoc_node *
ydoc_get(const struct ydoc *d, const struct ydoc_node *n, const char *key)
{
    size_t i, klen = strlen(key);

    if (n == NULL || n->type != YDOC_MAP)
        return NULL;
    for (i = 0; i < n->len; i++) {
        const struct ydoc_node *k = ydoc_key(d, n, i);
        if (k->type == YDOC_SCALAR && k->len == klen
            && memcmp(ydoc_str(d, k), key, klen) == 0)
            return ydoc_value(d, n, i);
    }
    return NULL;
}

int
ydoc_is_null(const struct ydoc *d, const struct ydoc_node *n)
{
    const char *s;

    if (n->type != YDOC_SCALAR || !n->plain)
        return 0;
    s = ydoc_str(d, n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0
           || strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

const char *
ydoc_kind(const struct ydoc_node *n)
{
    switch (n->type) {
    case YDOC_SCALAR:
        return "a scalar";
    case YDOC_LIST:
        return "a list";
    default:
        return "a mapping";
    }
}
