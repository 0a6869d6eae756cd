/*
 * yamldec.h - decode a YAML document into C structs through key tables.
 *
 * A schema is a tree of static tables: a struct yd_section lists the keys
 * one mapping may hold (struct yd_key: name, type, offsetof() into the
 * struct being filled, bounds, default as text), a YD_MAP row points at
 * the section of a nested mapping, and a YD_LIST row at a struct yd_list
 * that says how to decode each element. One generic walker checks the
 * document against the tables: unknown keys, duplicate keys, missing
 * required keys, wrong node kinds and out-of-range values are errors with
 * the FILE:LINE:COL of the node at fault and the element it belongs to
 * ('in backend #2 of service "web"').
 *
 * Values land in plain "input" structs where a number left out of the
 * document holds YD_UNSET, a string is "" and an address has no family,
 * so that defaults (yamldec_fill_defaults) and inheritance from another
 * section (yamldec_inherit) can run once the whole document is read:
 *
 *     struct in r;
 *     memset(&r, 0, sizeof(r));
 *     yamldec_init(&root_key, &r);
 *     if (yamldec_decode(doc, ydoc_root(doc), &root_key, &r, "config", e)
 *         == 0 && yamldec_fill_defaults(&root_key, &r, e) == 0)
 *         ... use r ...
 *     yamldec_free(&root_key, &r);
 *
 * The walker recurses along the schema, never deeper than it; its work is
 * linear in the document with aliases expanded, which ydoc bounds.
 */
#ifndef CONF_YAMLDEC_H
#define CONF_YAMLDEC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "ydoc.h"

#define YD_UNSET UINT64_MAX /* a number the document left out */

/* A decoded list; its length is checked before anything is stored. */
struct yd_arr {
    void *v;              /* n elements of the list's elem_size */
    struct ydoc_pos *pos; /* where each element starts */
    size_t n;
};

enum yd_type {
    YD_UINT,     /* uint64_t, decimal, within [min, max] */
    YD_DURATION, /* uint64_t milliseconds, within [min, max] */
    YD_ENUM,     /* uint64_t index into sub, a NULL-terminated name list */
    YD_NAME,     /* char[max + 1]; min..max chars of [A-Za-z0-9._-] */
    YD_ADDR,     /* struct saddr, "IPv4:port" or "[IPv6]:port" (parse.h) */
    YD_RANGE,    /* uint64_t lo << 16 | hi from "lo-hi" or "n", in [min, max] */
    YD_PATH,     /* char[max + 1]: "/..." of printable ASCII, no spaces */
    YD_STRING,   /* char[max + 1]: min..max printable characters */
    YD_IP,       /* struct saddr, an IP literal without a port, not
                  * IPv4-mapped */
    YD_CIDR,     /* struct cidr, "IP/prefix" without host bits */
    YD_MAP,      /* nested mapping; sub is its struct yd_section */
    YD_LIST,     /* struct yd_arr of min..max elements; sub: yd_list */
};

#define YD_REQUIRED  0x01u /* must be present */
#define YD_ADDRCHARS 0x02u /* YD_NAME may also hold ':', '[' and ']' */

struct yd_key {
    const char *name;
    enum yd_type type;
    size_t offset; /* of the field in the struct being decoded */
    uint64_t min, max;
    const char *def; /* default as text, parsed like the document; or NULL */
    const void *sub;
    unsigned flags;
};

struct yd_section {
    const char *what;      /* "service", or "section \"log\"" */
    const char *label_key; /* key naming a list element, or NULL */
    const struct yd_key *keys;
    size_t nkeys; /* at most 64: the decoder tracks them in a bitmask */
};

struct yd_list {
    const char *what; /* noun for "has no ...": "backends" */
    size_t elem_size;
    struct yd_key elem; /* how to decode one element, at offset 0 */
    int scalar_ok;      /* a lone scalar is a list of one */
};

#define YD_NKEYS(a) (sizeof(a) / sizeof((a)[0]))

/* Mark every number under row <k> of <base> as not given. Call it on a
 * zeroed struct before yamldec_decode(). */
void yamldec_init(const struct yd_key *k, void *base);

/* Decode node <n> of <doc> (NULL: an empty document) through row <k> into
 * <base>. <doc_name> names the top level in messages ("config has no
 * services"). Returns 0, or -1 with <e> set; either way, free what was
 * stored with yamldec_free(). */
int yamldec_decode(const struct ydoc *doc, const struct ydoc_node *n,
                   const struct yd_key *k, void *base, const char *doc_name,
                   struct err *e);

/* Fill every value under row <k> that the document left out with the
 * row's default, parsed as if the document had said it. Returns 0, or -1
 * with <e> set (a bad built-in default). */
int yamldec_fill_defaults(const struct yd_key *k, void *base, struct err *e);

/* Copy every value of section <sec> that <dst> left out from <src>, key
 * by key, nested sections included (lists are not inherited). */
void yamldec_inherit(const struct yd_section *sec, void *dst, const void *src);

/* Free the lists stored under row <k> of <base>. */
void yamldec_free(const struct yd_key *k, void *base);

/* Set <e> to message <fmt> at <p>. Returns -1. */
int yamldec_fail(struct err *e, struct ydoc_pos p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
