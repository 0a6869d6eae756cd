/*
 * ydoc.h - a YAML document loaded from a buffer, in time and memory
 * linear in its size.
 *
 * libyaml's own loader (yaml_parser_load) is not linear on hostile input:
 * its scanner walks every open flow collection for each token (100,000
 * nested "[" took over a minute), each new anchor and each %TAG directive
 * is checked against all earlier ones, and aliases let a small file name
 * a big subtree many times over. This loader builds its tree from
 * libyaml's events instead, and refuses, at the position where it
 * happens:
 *
 *  - lists and mappings nested deeper than the caller's max_depth, before
 *    the scanner reads much further;
 *  - more than YDOC_DIRECTIVES_MAX %YAML/%TAG directives (counted by a
 *    token pass first, since libyaml handles them before the first
 *    event);
 *  - aliases that would make the tree, with every alias expanded, larger
 *    than the nodes written plus the caller's alias_slack; a walk of the
 *    tree that follows aliases is bounded by that too (such a walk may go
 *    deeper than max_depth, where an alias puts a subtree under a deep
 *    parent, but no further than the slack allows);
 *  - an alias inside the node it names (a cycle), an alias to no anchor,
 *    and an anchor defined twice in one document.
 *
 * Anchors are looked up in a balanced tree (tsearch), so many anchors
 * cost O(n log n). Only the first document is loaded; ydoc_next() loads
 * the next one, to refuse it. Deep code never prints: errors go into a
 * caller's struct err with the line and column (the file name is left as
 * the caller set it).
 */
#ifndef CONF_YDOC_H
#define CONF_YDOC_H

#include <stddef.h>

#include "err.h"

#define YDOC_DIRECTIVES_MAX 16 /* %YAML and %TAG lines in a stream */

/* A position in the input, 1-based. */
struct ydoc_pos {
    int line;
    int col;
};

enum ydoc_type {
    YDOC_SCALAR,
    YDOC_LIST,
    YDOC_MAP,
};

/* A node of a loaded document. Read type, pos, plain and len; the other
 * fields belong to the loader. An alias is not a node of its own: its
 * parent points at the node it names (so its position is that node's). */
struct ydoc_node {
    enum ydoc_type type;
    struct ydoc_pos pos; /* where the node starts (its anchor, if any) */
    int plain;           /* a scalar written plainly: no quotes, no | or > */
    size_t len;          /* scalar: bytes; list: items; map: pairs */
    size_t off;          /* scalar: text offset; else first child's slot */
    size_t size;         /* nodes in the subtree, aliases expanded */
    int open;            /* a collection whose end was not read yet */
};

struct ydoc_limits {
    unsigned max_depth; /* lists and mappings, one inside the other */
    size_t alias_slack; /* nodes aliases may add to the ones written */
};

struct ydoc;

/* Load the first document of <buf> (<len> bytes, no NUL needed), which
 * must stay valid until ydoc_free(). Returns a new document (free with
 * ydoc_free()), or NULL with <e> set. An empty stream loads as a document
 * without a root. */
struct ydoc *ydoc_load(const char *buf, size_t len,
                       const struct ydoc_limits *lim, struct err *e);

/* Load the document after the current one, under the same limits.
 * Returns 0 when the stream ends there, 1 when a document follows (<*pos>
 * is where its root starts), -1 with <e> set when that document is not
 * valid YAML. Node pointers taken before the call are not valid after
 * it. */
int ydoc_next(struct ydoc *d, struct ydoc_pos *pos, struct err *e);

/* Free <d>; ydoc_free(NULL) does nothing. */
void ydoc_free(struct ydoc *d);

/* The root node, or NULL for an empty stream. */
const struct ydoc_node *ydoc_root(const struct ydoc *d);

/* The text of scalar <n>, NUL-terminated; it may hold NUL bytes of its
 * own ("\0" in double quotes): compare strlen() with n->len. */
const char *ydoc_str(const struct ydoc *d, const struct ydoc_node *n);

/* Item <i> of list <n>. */
const struct ydoc_node *ydoc_item(const struct ydoc *d,
                                  const struct ydoc_node *n, size_t i);

/* Key and value of pair <i> of mapping <n>. */
const struct ydoc_node *ydoc_key(const struct ydoc *d,
                                 const struct ydoc_node *n, size_t i);
const struct ydoc_node *ydoc_value(const struct ydoc *d,
                                   const struct ydoc_node *n, size_t i);

/* The value of the first pair of mapping <n> whose key is the scalar
 * <key>, or NULL (also when <n> is NULL or not a mapping). */
const struct ydoc_node *ydoc_get(const struct ydoc *d,
                                 const struct ydoc_node *n, const char *key);

/* Nonzero if <n> is a plain "", "~" or "null" (also "Null", "NULL"): no
 * value, in YAML. */
int ydoc_is_null(const struct ydoc *d, const struct ydoc_node *n);

/* "a scalar", "a list" or "a mapping", for messages. */
const char *ydoc_kind(const struct ydoc_node *n);

#endif
