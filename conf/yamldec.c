/*
 * yamldec.c - the key-table walker (see yamldec.h).
 *
 * decode_value() dispatches on the row's type: a mapping is matched key
 * by key against its section (a bitmask catches duplicates and missing
 * required keys), a list is sized and checked against its bounds before
 * anything is stored, and a scalar goes through the parser of its type.
 * Messages name the element being decoded: the walker keeps a short
 * context string ('backend #2 of service "web"') that each mapping
 * extends on the way in and restores on the way out.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "yamldec.h"

#define SHOW_MAX 48 /* bytes of user text quoted in a message */

/* ---- walker state and messages ------------------------------------------ */

struct dec {
    const struct ydoc *doc;
    struct err *e;
    const char *doc_name;        /* "config": the top level in messages */
    const struct ydoc_node *key; /* key of the value being decoded, if any */
    char ctx[160];               /* 'service "web"', or "" at top level */
};

/* Copy at most SHOW_MAX bytes of <s> into <out> with control bytes
 * replaced, so that any user text is safe and short inside a message. */
static const char *
show(const char *s, char *out, size_t outlen)
{
    size_t i, n = 0;

    for (i = 0; s[i] != '\0' && n + 4 < outlen && i < SHOW_MAX; i++)
        out[n++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i] != '\0' && n + 4 <= outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static int vfail(struct err *e, struct ydoc_pos p, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static int
vfail(struct err *e, struct ydoc_pos p, const char *fmt, va_list ap)
{
    e->line = p.line;
    e->col = p.col;
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    return -1;
}

int
yamldec_fail(struct err *e, struct ydoc_pos p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(e, p, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_at(struct dec *d, const struct ydoc_node *n, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

static int
fail_at(struct dec *d, const struct ydoc_node *n, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfail(d->e, n->pos, fmt, ap);
    va_end(ap);
    return -1;
}

/* " (in service "web")", or "" at top level. */
static const char *
where(const struct dec *d, char *out, size_t outlen)
{
    if (d->ctx[0] == '\0')
        out[0] = '\0';
    else
        snprintf(out, outlen, " (in %s)", d->ctx);
    return out;
}

static const char *
scalar(const struct dec *d, const struct ydoc_node *n)
{
    return ydoc_str(d->doc, n);
}

static int
is_null(const struct dec *d, const struct ydoc_node *n)
{
    return ydoc_is_null(d->doc, n);
}

/* ---- scalar values ----------------------------------------------------- */

static int
name_char_ok(char c, unsigned flags)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')
        return 1;
    return (flags & YD_ADDRCHARS) && (c == ':' || c == '[' || c == ']');
}

static int
parse_name(const struct yd_key *k, const char *s, char *dst, char *msg,
           size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max) {
        snprintf(msg, msglen, "must be %llu to %llu characters long",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!name_char_ok(s[i], k->flags)) {
            snprintf(msg, msglen, "may only contain %s",
                     (k->flags & YD_ADDRCHARS) ? "A-Z a-z 0-9 . _ - : [ ]"
                                               : "A-Z a-z 0-9 . _ -");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

static int
parse_enum(const struct yd_key *k, const char *s, uint64_t *dst, char *msg,
           size_t msglen)
{
    const char *const *names = k->sub;
    size_t i, n = 0;

    for (i = 0; names[i] != NULL; i++) {
        if (strcmp(s, names[i]) == 0) {
            *dst = i;
            return 0;
        }
    }
    n = (size_t)snprintf(msg, msglen, "expected one of");
    for (i = 0; names[i] != NULL && n < msglen; i++)
        n += (size_t)snprintf(msg + n, msglen - n, "%s %s", i ? "," : "",
                              names[i]);
    return -1;
}

static int
parse_number(const struct yd_key *k, const char *s, uint64_t *dst, char *msg,
             size_t msglen)
{
    const char *why = NULL;
    uint64_t v;

    if (k->type == YD_UINT) {
        /* parse_uint reports overflow as "not an integer"; an all-digit
         * string is a range problem, so check the range ourselves. */
        if (parse_uint(s, 0, UINT64_MAX, &v, &why) < 0
            && (strspn(s, "0123456789") != strlen(s) || s[0] == '0'))
            return snprintf(msg, msglen, "%s", why), -1;
        if (why != NULL || v < k->min || v > k->max) {
            snprintf(msg, msglen, "%s is out of range %llu..%llu", s,
                     (unsigned long long)k->min, (unsigned long long)k->max);
            return -1;
        }
    } else {
        if (parse_duration_ms(s, &v, &why) < 0)
            return snprintf(msg, msglen, "%s", why), -1;
        if (v < k->min)
            return snprintf(msg, msglen, "must be at least %llums",
                            (unsigned long long)k->min),
                   -1;
        if (v > k->max)
            return snprintf(msg, msglen, "is too long"), -1;
    }
    *dst = v;
    return 0;
}

/* "200-399" or "200", both ends within the row's [min, max]. */
static int
parse_range(const struct yd_key *k, const char *s, uint64_t *dst, char *msg,
            size_t msglen)
{
    char lo_s[8], *dash = strchr(s, '-');
    const char *why = NULL, *hi_s = s;
    uint64_t lo, hi;
    size_t n = dash ? (size_t)(dash - s) : strlen(s);

    if (n == 0 || n >= sizeof(lo_s))
        goto bad;
    memcpy(lo_s, s, n);
    lo_s[n] = '\0';
    if (dash != NULL)
        hi_s = dash + 1;
    if (parse_uint(lo_s, k->min, k->max, &lo, &why) < 0
        || parse_uint(hi_s, k->min, k->max, &hi, &why) < 0 || hi < lo)
        goto bad;
    *dst = lo << 16 | hi;
    return 0;
bad:
    snprintf(msg, msglen, "expected a status or a range like \"%llu-%llu\"",
             (unsigned long long)k->min, (unsigned long long)k->max);
    return -1;
}

/* An HTTP path for a request line: "/" first, then printable ASCII
 * without spaces, quotes or '#'. */
static int
parse_path(const struct yd_key *k, const char *s, char *dst, char *msg,
           size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max || s[0] != '/') {
        snprintf(msg, msglen,
                 "must start with \"/\" and be at most %llu "
                 "characters long",
                 (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '#' || c == '\\') {
            snprintf(msg, msglen,
                     "may only contain printable ASCII without "
                     "spaces, quotes, '#' or '\\'");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* Free text for paths, URLs and selectors: printable, bounded. */
static int
parse_string(const struct yd_key *k, const char *s, char *dst, char *msg,
             size_t msglen)
{
    size_t i, n = strlen(s);

    if (n < k->min || n > k->max) {
        snprintf(msg, msglen, "must be %llu to %llu characters long",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        return -1;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(msg, msglen, "contains a control character");
            return -1;
        }
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* Parse text <s> for scalar row <k> into <dst> (the field itself). On
 * failure, a reason without the key name goes to <msg>. */
static int
parse_value(const struct yd_key *k, const char *s, void *dst, char *msg,
            size_t msglen)
{
    const char *why = NULL;

    switch (k->type) {
    case YD_UINT:
    case YD_DURATION:
        return parse_number(k, s, dst, msg, msglen);
    case YD_ENUM:
        return parse_enum(k, s, dst, msg, msglen);
    case YD_NAME:
        return parse_name(k, s, dst, msg, msglen);
    case YD_ADDR:
        if (parse_hostport(s, dst, 0, &why) == 0)
            return 0;
        snprintf(msg, msglen, "%s", why);
        return -1;
    case YD_RANGE:
        return parse_range(k, s, dst, msg, msglen);
    case YD_PATH:
        return parse_path(k, s, dst, msg, msglen);
    case YD_STRING:
        return parse_string(k, s, dst, msg, msglen);
    case YD_IP:
        /* One spelling per address, as parse_hostport wants. */
        if (parse_ip(s, 0, dst, &why) == 0 && saddr_is_v4mapped(dst))
            why = "an IPv4-mapped IPv6 address: write the IPv4 form";
        else if (why == NULL)
            return 0;
        snprintf(msg, msglen, "%s", why);
        return -1;
    case YD_CIDR:
        if (parse_cidr(s, 0, dst, &why) == 0) {
            if (!saddr_is_v4mapped(&((struct cidr *)dst)->ip))
                return 0;
            why = "an IPv4-mapped IPv6 prefix: write the IPv4 form";
        }
        snprintf(msg, msglen, "%s", why);
        return -1;
    default:
        snprintf(msg, msglen, "not a scalar key");
        return -1;
    }
}

static int
decode_scalar(struct dec *d, const struct ydoc_node *n, const struct yd_key *k,
              void *base)
{
    char msg[ERR_MSG_MAX], txt[SHOW_MAX + 8], in[sizeof(d->ctx) + 8];
    const char *s;

    if (n->type != YDOC_SCALAR)
        return fail_at(d, n, "\"%s\": expected a scalar, got %s%s", k->name,
                       ydoc_kind(n), where(d, in, sizeof(in)));
    s = scalar(d, n);
    if (strlen(s) != n->len)
        return fail_at(d, n, "\"%s\": value contains a NUL character%s",
                       k->name, where(d, in, sizeof(in)));
    if (parse_value(k, s, (char *)base + k->offset, msg, sizeof(msg)) == 0)
        return 0;
    /* A range message already quotes the value. */
    if (strstr(msg, "out of range") != NULL)
        return fail_at(d, n, "\"%s\": %s%s", k->name, msg,
                       where(d, in, sizeof(in)));
    return fail_at(d, n, "\"%s\": %s, got \"%s\"%s", k->name, msg,
                   show(s, txt, sizeof(txt)), where(d, in, sizeof(in)));
}

/* ---- mappings and lists ------------------------------------------------ */

static int decode_value(struct dec *d, const struct ydoc_node *n,
                        const struct yd_key *k, void *base, size_t index);

/* Rows stored as a uint64_t, where YD_UNSET means "not in the file". */
static int
key_is_number(const struct yd_key *k)
{
    return k->type == YD_UINT || k->type == YD_DURATION || k->type == YD_ENUM
           || k->type == YD_RANGE;
}

/* Bytes a scalar row occupies, for copying a value as it is. */
static size_t
key_size(const struct yd_key *k)
{
    if (k->type == YD_NAME || k->type == YD_PATH || k->type == YD_STRING)
        return k->max + 1;
    if (k->type == YD_ADDR || k->type == YD_IP)
        return sizeof(struct saddr);
    if (k->type == YD_CIDR)
        return sizeof(struct cidr);
    return sizeof(uint64_t);
}

/* Nonzero if scalar row <k> was not given: YD_UNSET for a number, "" for a
 * string, no address family for an address. */
static int
key_is_unset(const struct yd_key *k, const void *p)
{
    if (key_is_number(k))
        return *(const uint64_t *)p == YD_UNSET;
    if (k->type == YD_ADDR || k->type == YD_IP || k->type == YD_CIDR)
        return ((const struct saddr *)p)->u.sa.sa_family == 0;
    return *(const char *)p == '\0';
}

void
yamldec_init(const struct yd_key *k, void *base)
{
    const struct yd_section *sec = k->sub;
    void *p = (char *)base + k->offset;
    size_t i;

    if (key_is_number(k))
        *(uint64_t *)p = YD_UNSET;
    else if (k->type == YD_MAP)
        for (i = 0; i < sec->nkeys; i++)
            yamldec_init(&sec->keys[i], p);
}

static int
find_key(const struct yd_section *sec, const char *name)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++)
        if (strcmp(sec->keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int
unknown_key(struct dec *d, const struct ydoc_node *kn,
            const struct yd_section *sec)
{
    char known[160], txt[SHOW_MAX + 8];
    size_t i, n = 0;

    known[0] = '\0';
    for (i = 0; i < sec->nkeys && n < sizeof(known); i++)
        n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s",
                              i ? ", " : "", sec->keys[i].name);
    return fail_at(d, kn, "unknown key \"%s\" %s%s (known: %s)",
                   show(scalar(d, kn), txt, sizeof(txt)),
                   d->ctx[0] ? "in " : "at top level", d->ctx, known);
}

/* Name the mapping <n> about to be decoded as an element of <sec>, for
 * messages: 'service "web"' or 'backend #2 of service "web"'. */
static void
enter(struct dec *d, const struct ydoc_node *n, const struct yd_section *sec,
      size_t index)
{
    char old[sizeof(d->ctx)], txt[SHOW_MAX + 8];
    int trunc = 0;
    const char *label = NULL;
    size_t i;

    memcpy(old, d->ctx, sizeof(old));
    for (i = 0; sec->label_key != NULL && i < n->len; i++) {
        const struct ydoc_node *kn = ydoc_key(d->doc, n, i);
        const struct ydoc_node *vn = ydoc_value(d->doc, n, i);
        if (kn->type == YDOC_SCALAR && vn->type == YDOC_SCALAR
            && strcmp(scalar(d, kn), sec->label_key) == 0)
            label = show(scalar(d, vn), txt, sizeof(txt));
    }
    if (sec->label_key == NULL)
        snprintf(d->ctx, sizeof(d->ctx), "%s", sec->what);
    else if (label != NULL)
        /* A long nesting path is cut short; the position says the rest. */
        trunc = snprintf(d->ctx, sizeof(d->ctx), "%s \"%s\"%s%s", sec->what,
                         label, old[0] ? " of " : "", old);
    else
        trunc = snprintf(d->ctx, sizeof(d->ctx), "%s #%zu%s%s", sec->what,
                         index + 1, old[0] ? " of " : "", old);
    (void)trunc;
}

static int
check_required(struct dec *d, const struct ydoc_node *n,
               const struct yd_section *sec, uint64_t seen)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++) {
        const struct yd_key *k = &sec->keys[i];

        if (!(k->flags & YD_REQUIRED) || (seen & (1ull << i)))
            continue;
        if (k->type == YD_LIST) {
            const struct yd_list *ls = k->sub;
            return fail_at(d, n, "%s has no %s",
                           d->ctx[0] ? d->ctx : d->doc_name, ls->what);
        }
        return fail_at(d, n, "%s: missing required key \"%s\"",
                       d->ctx[0] ? d->ctx : d->doc_name, k->name);
    }
    return 0;
}

static int
decode_pairs(struct dec *d, const struct ydoc_node *n,
             const struct yd_section *sec, void *base)
{
    char txt[SHOW_MAX + 8];
    uint64_t seen = 0;
    size_t j;

    for (j = 0; j < n->len; j++) {
        const struct ydoc_node *kn = ydoc_key(d->doc, n, j);
        const struct ydoc_node *vn = ydoc_value(d->doc, n, j);
        int i;

        if (kn->type != YDOC_SCALAR)
            return fail_at(d, kn, "expected a key, got %s", ydoc_kind(kn));
        i = find_key(sec, scalar(d, kn));
        if (i < 0)
            return unknown_key(d, kn, sec);
        if (seen & (1ull << i))
            return fail_at(d, kn, "duplicate key \"%s\"%s%s",
                           show(scalar(d, kn), txt, sizeof(txt)),
                           d->ctx[0] ? " in " : " at top level", d->ctx);
        seen |= 1ull << i;
        d->key = kn;
        if (decode_value(d, vn, &sec->keys[i], base, 0) < 0)
            return -1;
    }
    return check_required(d, n, sec, seen);
}

/* Decode mapping <n> through <sec> into <base>. A null value (a key with
 * nothing after it) is an empty mapping. */
static int
decode_map(struct dec *d, const struct ydoc_node *n, const struct yd_key *k,
           void *base, size_t index)
{
    const struct yd_section *sec = k->sub;
    char old[sizeof(d->ctx)], in[sizeof(d->ctx) + 8];
    struct ydoc_node empty;
    int rc;

    if (is_null(d, n)) {
        memset(&empty, 0, sizeof(empty));
        empty.type = YDOC_MAP;
        empty.pos = n->pos;
        n = &empty;
    }
    if (n->type != YDOC_MAP)
        return fail_at(d, n, "\"%s\": expected a mapping, got %s%s", k->name,
                       ydoc_kind(n), where(d, in, sizeof(in)));
    memcpy(old, d->ctx, sizeof(old));
    enter(d, n, sec, index);
    rc = decode_pairs(d, n, sec, (char *)base + k->offset);
    memcpy(d->ctx, old, sizeof(old));
    return rc;
}

static int
decode_list(struct dec *d, const struct ydoc_node *n, const struct yd_key *k,
            void *base)
{
    const struct yd_list *ls = k->sub;
    struct yd_arr *a = (void *)((char *)base + k->offset);
    char in[sizeof(d->ctx) + 8];
    size_t i, count = 0;
    int one = 0, null = is_null(d, n);

    if (n->type == YDOC_LIST) {
        count = n->len;
    } else if (n->type == YDOC_SCALAR && !null && ls->scalar_ok) {
        one = 1;
        count = 1;
    } else if (!null) {
        return fail_at(d, n, "\"%s\": expected a list, got %s%s", k->name,
                       ydoc_kind(n), where(d, in, sizeof(in)));
    }
    /* "key:" with nothing after it: point at the key. */
    if (count < k->min)
        return fail_at(d, null && d->key != NULL ? d->key : n, "%s has no %s",
                       d->ctx[0] ? d->ctx : d->doc_name, ls->what);
    if (count > k->max)
        return fail_at(d, n, "too many %s%s (at most %llu)", ls->what,
                       where(d, in, sizeof(in)), (unsigned long long)k->max);
    a->v = calloc(count, ls->elem_size);
    a->pos = calloc(count, sizeof(*a->pos));
    if (a->v == NULL || a->pos == NULL)
        return fail_at(d, n, "out of memory");
    for (i = 0; i < count; i++) {
        const struct ydoc_node *en = one ? n : ydoc_item(d->doc, n, i);
        void *elem = (char *)a->v + i * ls->elem_size;

        a->n = i + 1; /* so that a failure still frees what was decoded */
        a->pos[i] = en->pos;
        yamldec_init(&ls->elem, elem);
        if (decode_value(d, en, &ls->elem, elem, i) < 0)
            return -1;
    }
    return 0;
}

static int
decode_value(struct dec *d, const struct ydoc_node *n, const struct yd_key *k,
             void *base, size_t index)
{
    switch (k->type) {
    case YD_MAP:
        return decode_map(d, n, k, base, index);
    case YD_LIST:
        return decode_list(d, n, k, base);
    default:
        return decode_scalar(d, n, k, base);
    }
}

/* ---- after decoding: defaults, inheritance, cleanup -------------------- */

/* Defaults go through the same parser as the document, so a bad default
 * is caught by the unit tests rather than trusted. */
int
yamldec_fill_defaults(const struct yd_key *k, void *base, struct err *e)
{
    void *p = (char *)base + k->offset;
    char msg[ERR_MSG_MAX];
    size_t i;

    if (k->type == YD_MAP) {
        const struct yd_section *sec = k->sub;
        for (i = 0; i < sec->nkeys; i++)
            if (yamldec_fill_defaults(&sec->keys[i], p, e) < 0)
                return -1;
    } else if (k->type == YD_LIST) {
        const struct yd_list *ls = k->sub;
        const struct yd_arr *a = p;
        for (i = 0; i < a->n; i++)
            if (yamldec_fill_defaults(&ls->elem,
                                      (char *)a->v + i * ls->elem_size, e)
                < 0)
                return -1;
    } else if (k->def != NULL && key_is_unset(k, p)) {
        if (parse_value(k, k->def, p, msg, sizeof(msg)) < 0)
            return err_set(e, "bad built-in default for \"%s\": %s", k->name,
                           msg);
    }
    return 0;
}

void
yamldec_inherit(const struct yd_section *sec, void *dst, const void *src)
{
    size_t i;

    for (i = 0; i < sec->nkeys; i++) {
        const struct yd_key *k = &sec->keys[i];
        char *d = (char *)dst + k->offset;
        const char *s = (const char *)src + k->offset;

        if (k->type == YD_MAP)
            yamldec_inherit(k->sub, d, s);
        else if (k->type != YD_LIST && key_is_unset(k, d))
            memcpy(d, s, key_size(k));
    }
}

void
yamldec_free(const struct yd_key *k, void *base)
{
    void *p = (char *)base + k->offset;
    size_t i;

    if (k->type == YD_MAP) {
        const struct yd_section *sec = k->sub;
        for (i = 0; i < sec->nkeys; i++)
            yamldec_free(&sec->keys[i], p);
    } else if (k->type == YD_LIST) {
        const struct yd_list *ls = k->sub;
        struct yd_arr *a = p;
        for (i = 0; i < a->n; i++)
            yamldec_free(&ls->elem, (char *)a->v + i * ls->elem_size);
        free(a->v);
        free(a->pos);
        memset(a, 0, sizeof(*a));
    }
}

int
yamldec_decode(const struct ydoc *doc, const struct ydoc_node *n,
               const struct yd_key *k, void *base, const char *doc_name,
               struct err *e)
{
    struct ydoc_node empty;
    struct dec d;

    memset(&d, 0, sizeof(d));
    d.doc = doc;
    d.e = e;
    d.doc_name = doc_name;
    if (n == NULL) {
        /* An empty document: a null scalar at its start. */
        memset(&empty, 0, sizeof(empty));
        empty.type = YDOC_SCALAR;
        empty.plain = 1;
        empty.pos.line = empty.pos.col = 1;
        n = &empty;
    }
    return decode_value(&d, n, k, base, 0);
}
