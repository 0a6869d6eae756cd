#include "jdoc.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"

/* The parse in progress. */
struct parser {
    struct jdoc *d;
    char *s;
    size_t len, pos;
    int line;          /* 1-based, of <pos> */
    size_t line_start; /* where that line starts */
    struct err *e;
};

static int
fail(struct parser *p, const char *what)
{
    size_t at = p->pos < p->len ? p->pos : p->len;

    if (at >= p->len)
        return err_set_at(p->e, p->line, (int)(at - p->line_start) + 1,
                          "%s near end of file", what);
    return err_set_at(p->e, p->line, (int)(at - p->line_start) + 1,
                      "%s near byte %zu", what, at);
}

static void
skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == '\n') {
            p->line++;
            p->line_start = p->pos + 1;
        } else if (c != ' ' && c != '\t' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

/* A new value of <type>; its number, or -1 when out of room. */
static long
push(struct parser *p, int type, size_t at, size_t len)
{
    struct jdoc *d = p->d;
    struct jval *v;

    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 256;
        if (d->n >= JDOC_MAX)
            return fail(p, "too many values");
        if (ncap > JDOC_MAX)
            ncap = JDOC_MAX;
        if ((v = realloc(d->v, ncap * sizeof(*v))) == NULL) {
            d->nomem = 1;
            return fail(p, "out of memory");
        }
        d->v = v;
        d->cap = ncap;
    }
    v = &d->v[d->n];
    v->type = (uint8_t)type;
    v->at = (uint32_t)at;
    v->len = (uint32_t)len;
    v->end = (uint32_t)(d->n + 1);
    return (long)d->n++;
}

/* Four hex digits at <at>, or -1. */
static long
hex4(const struct parser *p, size_t at)
{
    long v = 0;
    int i, h;

    if (at + 4 > p->len)
        return -1;
    for (i = 0; i < 4; i++) {
        if ((h = hexval(p->s[at + i])) < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static size_t
put_utf8(char *out, long cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at <u> (<n> bytes left), 0 when it
 * is not one: no overlong forms, surrogates or code points past
 * U+10FFFF, as jansson checks. */
static size_t
utf8_len(const unsigned char *u, size_t n)
{
    size_t k, i;
    long cp;

    if (u[0] < 0x80)
        return 1;
    if (u[0] < 0xC2 || u[0] > 0xF4)
        return 0;
    k = u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    if (n < k)
        return 0;
    cp = u[0] & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
    for (i = 1; i < k; i++) {
        if ((u[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (u[i] & 0x3F);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10FFFF
        || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return k;
}

/* The string whose opening quote is at p->pos, unescaped in place and
 * NUL-terminated. */
static int
parse_string(struct parser *p)
{
    char *s = p->s;
    size_t start = ++p->pos, out = start, i = start, k;

    for (;;) {
        unsigned char c;

        /* The plain run, moved down only after an escape. */
        while (i < p->len && (c = (unsigned char)s[i]) >= 0x20 && c != '"'
               && c != '\\' && c < 0x80)
            i++;
        if (out != p->pos && i > p->pos)
            memmove(s + out, s + p->pos, i - p->pos);
        out += i - p->pos;
        p->pos = i;
        if (i >= p->len)
            return fail(p, "premature end of input in a string");
        c = (unsigned char)s[i];
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(p, "control character in a string");
        if (c >= 0x80) {
            if ((k = utf8_len((const unsigned char *)s + i, p->len - i)) == 0)
                return fail(p, "invalid UTF-8 in a string");
            memmove(s + out, s + i, k);
            out += k;
            p->pos = i += k;
            continue;
        }
        /* An escape. */
        if (i + 1 >= p->len)
            return fail(p, "premature end of input in a string");
        switch (s[i + 1]) {
        case '"': case '\\': case '/':
            s[out++] = s[i + 1];
            break;
        case 'b': s[out++] = '\b'; break;
        case 'f': s[out++] = '\f'; break;
        case 'n': s[out++] = '\n'; break;
        case 'r': s[out++] = '\r'; break;
        case 't': s[out++] = '\t'; break;
        case 'u': {
            long cp = hex4(p, i + 2), lo;

            if (cp < 0)
                return fail(p, "invalid \\u escape in a string");
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(p, "invalid Unicode escape (a lone low surrogate)");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (i + 2 + 6 > p->len || s[i + 2] != '\\' || s[i + 3] != 'u'
                    || (lo = hex4(p, i + 4)) < 0xDC00 || lo > 0xDFFF)
                    return fail(p, "invalid Unicode escape (a high surrogate "
                                   "without its low one)");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            if (cp == 0)
                return fail(p, "\\u0000 is not allowed in a string");
            out += put_utf8(s + out, cp);
            break;
        }
        default:
            return fail(p, "invalid escape in a string");
        }
        p->pos = i += 2;
    }
    s[out] = '\0'; /* at or before the closing quote */
    p->pos = i + 1;
    return (int)push(p, JD_STR, start, out - start) < 0 ? -1 : 0;
}

static int
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The number at <at>, <len> bytes, NUL-terminated in <buf>, or in a
 * copy to free when it does not fit; NULL when out of memory. */
static char *
num_text(const char *s, size_t at, size_t len, char *buf, size_t bufsz)
{
    char *t = len < bufsz ? buf : malloc(len + 1);

    if (t != NULL) {
        memcpy(t, s + at, len);
        t[len] = '\0';
    }
    return t;
}

static int
parse_number(struct parser *p)
{
    const char *s = p->s;
    size_t start = p->pos, i = p->pos;
    int real = 0, bad = 0;
    char buf[64], *t;

    if (i < p->len && s[i] == '-')
        i++;
    if (i < p->len && s[i] == '0') {
        i++;
    } else if (i < p->len && s[i] >= '1' && s[i] <= '9') {
        while (i < p->len && is_digit(s[i]))
            i++;
    } else {
        p->pos = i;
        return fail(p, "invalid number");
    }
    if (i < p->len && s[i] == '.') {
        real = 1;
        if (++i >= p->len || !is_digit(s[i])) {
            p->pos = i;
            return fail(p, "invalid number");
        }
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        real = 1;
        if (++i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || !is_digit(s[i])) {
            p->pos = i;
            return fail(p, "invalid number");
        }
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && is_digit(s[i])) { /* "01" */
        p->pos = i;
        return fail(p, "invalid number");
    }
    if ((t = num_text(s, start, i - start, buf, sizeof(buf))) == NULL) {
        p->d->nomem = 1;
        return fail(p, "out of memory");
    }
    errno = 0;
    if (real) {
        double v = strtod(t, NULL);
        bad = errno == ERANGE && isinf(v);
    } else {
        (void)strtoll(t, NULL, 10);
        bad = errno == ERANGE;
    }
    if (t != buf)
        free(t);
    if (bad)
        return fail(p, real ? "real number overflow" : "too big integer");
    p->pos = i;
    return push(p, real ? JD_REAL : JD_INT, start, i - start) < 0 ? -1 : 0;
}

static int
parse_literal(struct parser *p)
{
    static const struct {
        const char *w;
        size_t n;
        int type;
    } lit[] = {{"true", 4, JD_TRUE}, {"false", 5, JD_FALSE}, {"null", 4, JD_NULL}};
    size_t i;

    for (i = 0; i < sizeof(lit) / sizeof(lit[0]); i++)
        if (p->len - p->pos >= lit[i].n
            && memcmp(p->s + p->pos, lit[i].w, lit[i].n) == 0) {
            p->pos += lit[i].n;
            return push(p, lit[i].type, 0, 0) < 0 ? -1 : 0;
        }
    return fail(p, "invalid token");
}

/* The value at p->pos when it is not an array or object. */
static int
parse_scalar(struct parser *p)
{
    char c = p->s[p->pos];

    if (c == '"')
        return parse_string(p);
    if (c == '-' || is_digit(c))
        return parse_number(p);
    return parse_literal(p);
}

int
jdoc_parse(struct jdoc *d, char *text, size_t len, struct err *e)
{
    struct parser p = {d, text, len, 0, 1, 0, e};
    uint32_t stack[JDOC_DEPTH];
    size_t depth = 0;
    long top;
    char c;

    d->text = text;
    d->n = 0;
    d->nomem = 0;
    skip_ws(&p);
    if (p.pos >= len || (text[p.pos] != '{' && text[p.pos] != '['))
        return fail(&p, "'[' or '{' expected");
    for (;;) {
        /* A value. */
        skip_ws(&p);
        if (p.pos >= len)
            return fail(&p, "a value expected");
        c = text[p.pos];
        if (c == '{' || c == '[') {
            if (depth == JDOC_DEPTH)
                return fail(&p, "maximum parsing depth reached");
            if ((top = push(&p, c == '{' ? JD_OBJ : JD_ARR, p.pos, 0)) < 0)
                return -1;
            stack[depth++] = (uint32_t)top;
            p.pos++;
            skip_ws(&p);
            if (p.pos < len && text[p.pos] == (c == '{' ? '}' : ']')) {
                p.pos++;
                depth--;
                goto after_value; /* empty: its end is already next */
            }
            if (c == '{')
                goto key;
            continue;
        }
        if (parse_scalar(&p) < 0)
            return -1;
    after_value:
        if (depth == 0)
            break;
        top = stack[depth - 1];
        d->v[top].len++;
        skip_ws(&p);
        c = p.pos < len ? text[p.pos] : '\0';
        if (c == ',') {
            p.pos++;
            if (d->v[top].type == JD_ARR)
                continue;
            goto key;
        }
        if (c != (d->v[top].type == JD_OBJ ? '}' : ']'))
            return fail(&p, d->v[top].type == JD_OBJ ? "',' or '}' expected"
                                                     : "',' or ']' expected");
        p.pos++;
        d->v[top].end = (uint32_t)d->n;
        depth--;
        goto after_value;
    key:
        skip_ws(&p);
        if (p.pos >= len || text[p.pos] != '"')
            return fail(&p, "string or '}' expected");
        if (parse_string(&p) < 0)
            return -1;
        skip_ws(&p);
        if (p.pos >= len || text[p.pos] != ':')
            return fail(&p, "':' expected");
        p.pos++;
    }
    skip_ws(&p);
    if (p.pos != len)
        return fail(&p, "end of file expected");
    return 0;
}

void
jdoc_free(struct jdoc *d)
{
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

int
jdoc_get(const struct jdoc *d, int o, const char *key)
{
    const struct jval *v = d->v;
    size_t klen, m;
    int k, found = -1;

    if (o < 0 || v[o].type != JD_OBJ)
        return -1;
    klen = strlen(key);
    /* The length and the first byte tell most keys apart without a call
     * (a key's text ends with a NUL, so its first byte is there). */
    for (m = 0, k = o + 1; m < v[o].len; m++, k = (int)v[k + 1].end)
        if (v[k].len == klen && d->text[v[k].at] == key[0]
            && memcmp(d->text + v[k].at, key, klen) == 0)
            found = k + 1; /* the last one counts */
    return found;
}

const char *
jdoc_str(const struct jdoc *d, int i)
{
    return i >= 0 && d->v[i].type == JD_STR ? d->text + d->v[i].at : NULL;
}

const char *
jdoc_gets(const struct jdoc *d, int o, const char *key)
{
    return jdoc_str(d, jdoc_get(d, o, key));
}

long long
jdoc_int(const struct jdoc *d, int i)
{
    char buf[64];

    if (i < 0 || d->v[i].type != JD_INT || d->v[i].len >= sizeof(buf))
        return 0;
    memcpy(buf, d->text + d->v[i].at, d->v[i].len);
    buf[d->v[i].len] = '\0';
    return strtoll(buf, NULL, 10);
}

size_t
jdoc_size(const struct jdoc *d, int a)
{
    return a >= 0 && d->v[a].type == JD_ARR ? d->v[a].len : 0;
}

int
jdoc_first(const struct jdoc *d, int a)
{
    return a >= 0 && d->v[a].type == JD_ARR && d->v[a].len > 0 ? a + 1 : -1;
}

int
jdoc_next(const struct jdoc *d, int a, int i)
{
    uint32_t j = d->v[i].end;

    return j < d->v[a].end ? (int)j : -1;
}

static int
real_of(const struct jdoc *d, int i, double *out)
{
    char buf[64], *t = num_text(d->text, d->v[i].at, d->v[i].len, buf,
                                sizeof(buf));

    if (t == NULL)
        return -1;
    *out = strtod(t, NULL);
    if (t != buf)
        free(t);
    return 0;
}

json_t *
jdoc_to_json(const struct jdoc *d, int i)
{
    const struct jval *v = &d->v[i];
    json_t *out, *x;
    double r;
    size_t m;
    int k;

    switch (v->type) {
    case JD_NULL: return json_null();
    case JD_TRUE: return json_true();
    case JD_FALSE: return json_false();
    case JD_INT: return json_integer(jdoc_int(d, i));
    case JD_REAL: return real_of(d, i, &r) < 0 ? NULL : json_real(r);
    case JD_STR: return json_stringn_nocheck(d->text + v->at, v->len);
    case JD_ARR:
        if ((out = json_array()) == NULL)
            return NULL;
        jdoc_foreach(d, i, k)
        {
            if ((x = jdoc_to_json(d, k)) == NULL
                || json_array_append_new(out, x) < 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    default:
        if ((out = json_object()) == NULL)
            return NULL;
        for (m = 0, k = i + 1; m < v->len; m++, k = (int)d->v[k + 1].end)
            if ((x = jdoc_to_json(d, k + 1)) == NULL
                || json_object_set_new_nocheck(out, d->text + d->v[k].at, x)
                       < 0) {
                json_decref(out);
                return NULL;
            }
        return out;
    }
}

void *
jdoc_decode_json(const json_t *v,
                 void *(*decode)(const struct jdoc *d, int at))
{
    json_t *box = json_pack("[O]", v);
    char *text = box != NULL ? json_dumps(box, JSON_COMPACT) : NULL;
    struct jdoc d = {0};
    void *out = NULL;

    json_decref(box);
    /* jansson wrote the text: only memory can fail its parse. The box
     * is value 0, <v> value 1. */
    if (text != NULL && jdoc_parse(&d, text, strlen(text), NULL) == 0)
        out = decode(&d, 1);
    jdoc_free(&d);
    free(text);
    return out;
}
