/*
 * jdoc.h - a JSON text parsed in place into one flat array of values.
 *
 * jansson makes a node for every value and a hash table for every
 * object, and reads its input a character at a time: about 75 MB/s, so
 * a watch event of an EndpointSlice with 25 endpoints (5 KB) took 65 µs
 * and a first list at 250,000 endpoints most of a second. The decoders
 * of the kinds kept decoded (kslice.h, ksvc.h) read a jdoc instead: the
 * text is checked as jansson checks it (the same texts are accepted;
 * tests/fuzz holds the two to it), its strings are unescaped where they
 * lie, and each value is one struct jval in an array that the next
 * parse reuses.
 *
 * Values are numbered from 0 (the root) in the order of the text. An
 * object's members are its key (a string) followed by its value; an
 * array's elements follow it. jval.end is the number of the first value
 * after this one's (so a member or element leads to the next one), and
 * every lookup is a walk over the members: objects of API objects are
 * small. A key given twice reads as its last value, as in jansson.
 */
#ifndef WATCHER_JDOC_H
#define WATCHER_JDOC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum jtype { JD_NULL = 0, JD_FALSE, JD_TRUE, JD_INT, JD_REAL, JD_STR, JD_ARR,
             JD_OBJ };

struct jval {
    uint8_t type; /* enum jtype */
    /* JD_STR: its bytes at <at> in the text, unescaped and followed by a
     * NUL, <len> of them; JD_INT, JD_REAL: where the number's text is.
     * JD_ARR, JD_OBJ: <len> elements or members. */
    uint32_t at, len;
    uint32_t end;
};

struct jdoc {
    char *text; /* the caller's, changed by the parse */
    struct jval *v;
    size_t n, cap;
    int nomem; /* the last parse failed for want of memory */
};

/* Values past this many, or nesting deeper than JDOC_DEPTH, are refused. */
#define JDOC_MAX   (UINT32_MAX / 2)
#define JDOC_DEPTH 2048 /* jansson's own limit */

/* Parse the <len> bytes at <text> (changed in place: strings are
 * unescaped into it; it must stay alive and unchanged while <d> is read)
 * into <d>, reusing its array. The text is one object or array, with
 * only white space around it. Returns 0, or -1 with <e> saying what is
 * wrong and where (line, column, as jansson does); d->nomem then tells
 * a text that was refused from memory that ran out. */
int jdoc_parse(struct jdoc *d, char *text, size_t len, struct err *e);

/* Give the array back. The document is empty after. */
void jdoc_free(struct jdoc *d);

/* Member <key> of object <o>; -1 when <o> is -1, not an object, or has
 * no such member. */
int jdoc_get(const struct jdoc *d, int o, const char *key);

/* The string of value <i>, or NULL (-1, not a string). */
const char *jdoc_str(const struct jdoc *d, int i);

/* Member <key> of <o> as a string, or NULL. */
const char *jdoc_gets(const struct jdoc *d, int o, const char *key);

/* Value <i> as an integer: 0 when it is not one (json_integer_value()). */
long long jdoc_int(const struct jdoc *d, int i);

/* The type of <i>, JD_NULL for -1. */
static inline int
jdoc_type(const struct jdoc *d, int i)
{
    return i < 0 ? -1 : d->v[i].type;
}

/* Elements of array <a>, 0 when it is not an array (json_array_size()). */
size_t jdoc_size(const struct jdoc *d, int a);

/* The first element of array <a>, then the one after <i>; -1 at the end
 * or when <a> is not an array. */
int jdoc_first(const struct jdoc *d, int a);
int jdoc_next(const struct jdoc *d, int a, int i);

/* For each element <i> of array <a>. */
#define jdoc_foreach(d, a, i)                                                \
    for ((i) = jdoc_first((d), (a)); (i) >= 0; (i) = jdoc_next((d), (a), (i)))

/* <decode> of jansson value <v> (any type), parsed into a jdoc through
 * its text: for callers that hold JSON and a decoder that reads a jdoc
 * (tests). NULL when out of memory, or when <decode> returns NULL. */
void *jdoc_decode_json(const json_t *v,
                       void *(*decode)(const struct jdoc *d, int at));

/* Value <i> and everything in it as a new jansson value (tests, and the
 * few small parts the callers want as JSON), or NULL when out of
 * memory. */
json_t *jdoc_to_json(const struct jdoc *d, int i);

#endif
