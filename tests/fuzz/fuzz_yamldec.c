/*
 * fuzz_yamldec.c - libFuzzer target for the bounded YAML loader
 * (conf/ydoc.c) and the key-table decoder (conf/yamldec.c) on their own,
 * through a small schema of this file's (every row type, nested mappings,
 * lists of mappings and of scalars), not ferry's: ferry's schema refuses
 * most shapes after a few keys, so fuzz_config rarely reaches the
 * decoder's deeper paths or the loader's limits.
 *
 * The limits are small (8 levels, 200 nodes of aliases) so that inputs
 * reach them quickly. Checked: every document loads or is refused with a
 * message and a position; the tree, walked with every alias expanded,
 * stays within what was written plus the slack; decoding either fills the
 * struct or fails with a message and a position; nothing leaks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "yamldec.h"
#include "ydoc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLACK 200

struct check_in {
    uint64_t kind;
    uint64_t every_ms;
    uint64_t status;
    char path[16];
};

struct peer_in {
    char name[8];
    struct saddr addr;
    uint64_t weight;
    struct check_in check;
};

struct top_in {
    uint64_t count;
    char note[32];
    struct check_in check;
    struct yd_arr peers; /* struct peer_in */
    struct yd_arr ips;   /* struct saddr */
};

static const char *const kind_names[] = {"none", "tcp", "http", NULL};

static const struct yd_key check_keys[] = {
    {"kind", YD_ENUM, offsetof(struct check_in, kind), 0, 0, "none", kind_names,
     0},
    {"every", YD_DURATION, offsetof(struct check_in, every_ms), 10, 60000, "1s",
     NULL, 0},
    {"status", YD_RANGE, offsetof(struct check_in, status), 100, 599, "200-399",
     NULL, 0},
    {"path", YD_PATH, offsetof(struct check_in, path), 1, 15, NULL, NULL, 0},
};
static const struct yd_section check_section = {
    "section \"check\"", NULL, check_keys, YD_NKEYS(check_keys)};

static const struct yd_key peer_keys[] = {
    {"name", YD_NAME, offsetof(struct peer_in, name), 1, 7, NULL, NULL,
     YD_REQUIRED | YD_ADDRCHARS},
    {"addr", YD_ADDR, offsetof(struct peer_in, addr), 0, 0, NULL, NULL,
     YD_REQUIRED},
    {"weight", YD_UINT, offsetof(struct peer_in, weight), 0, 100, "1", NULL, 0},
    {"check", YD_MAP, offsetof(struct peer_in, check), 0, 0, NULL,
     &check_section, 0},
};
static const struct yd_section peer_section = {"peer", "name", peer_keys,
                                               YD_NKEYS(peer_keys)};
static const struct yd_list peer_list = {
    "peers",
    sizeof(struct peer_in),
    {"peers", YD_MAP, 0, 0, 0, NULL, &peer_section, 0},
    0};
static const struct yd_list ip_list = {"addresses",
                                       sizeof(struct saddr),
                                       {"ips", YD_IP, 0, 0, 0, NULL, NULL, 0},
                                       1};

static const struct yd_key top_keys[] = {
    {"count", YD_UINT, offsetof(struct top_in, count), 0, 1000, "0", NULL, 0},
    {"note", YD_STRING, offsetof(struct top_in, note), 0, 31, NULL, NULL, 0},
    {"check", YD_MAP, offsetof(struct top_in, check), 0, 0, NULL,
     &check_section, 0},
    {"peers", YD_LIST, offsetof(struct top_in, peers), 1, 16, NULL, &peer_list,
     YD_REQUIRED},
    {"ips", YD_LIST, offsetof(struct top_in, ips), 0, 4, NULL, &ip_list, 0},
};
static const struct yd_section top_section = {"", NULL, top_keys,
                                              YD_NKEYS(top_keys)};
static const struct yd_key top_key = {"",   YD_MAP,       0, 0, 0,
                                      NULL, &top_section, 0};

static const struct ydoc_limits lim = {8, SLACK};

/* Visit every node under <n>, aliases expanded; returns how many. An
 * alias may put its subtree deeper than max_depth, but the slack bounds
 * how much deeper. */
static size_t
walk(const struct ydoc *d, const struct ydoc_node *n)
{
    size_t i, count = 1;

    if (n->pos.line < 1 || n->pos.col < 1)
        abort();
    if (n->type == YDOC_SCALAR) {
        if (strlen(ydoc_str(d, n)) > n->len)
            abort();
        return 1;
    }
    for (i = 0; i < n->len; i++) {
        if (n->type == YDOC_LIST) {
            count += walk(d, ydoc_item(d, n, i));
        } else {
            count += walk(d, ydoc_key(d, n, i));
            count += walk(d, ydoc_value(d, n, i));
        }
    }
    if (count != n->size)
        abort();
    return count;
}

static void
decode(const struct ydoc *d)
{
    struct top_in t;
    struct err e;

    memset(&t, 0, sizeof(t));
    yamldec_init(&top_key, &t);
    err_clear(&e);
    if (yamldec_decode(d, ydoc_root(d), &top_key, &t, "doc", &e) == 0) {
        struct peer_in *p = t.peers.v;
        size_t i;

        if (yamldec_fill_defaults(&top_key, &t, &e) < 0)
            abort(); /* the defaults above are all valid */
        for (i = 0; i < t.peers.n; i++) {
            yamldec_inherit(&check_section, &p[i].check, &t.check);
            if (p[i].name[0] == '\0' || p[i].addr.u.sa.sa_family == 0
                || p[i].weight > 100 || p[i].check.every_ms < 10)
                abort();
        }
        if (t.peers.n < 1 || t.peers.n > 16 || t.ips.n > 4)
            abort();
    } else if (e.msg[0] == '\0' || e.line < 1) {
        abort(); /* a refusal says why and where */
    }
    yamldec_free(&top_key, &t);
    if (t.peers.v != NULL || t.ips.v != NULL)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ydoc_pos pos;
    struct ydoc *d;
    struct err e;
    char *copy;
    int i, more = 1;

    /* Exact-size heap copy, no NUL: the loader must honour <size>. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    err_clear(&e);
    d = ydoc_load(copy, size, &lim, &e);
    if (d == NULL) {
        if (e.msg[0] == '\0')
            abort();
        free(copy);
        return 0;
    }
    /* Up to four documents, each walked and decoded. */
    for (i = 0; i < 4 && more > 0; i++) {
        if (ydoc_root(d) != NULL
            && walk(d, ydoc_root(d)) > 4 * size + 8 + SLACK)
            abort();
        decode(d);
        more = ydoc_next(d, &pos, &e);
        if (more < 0 && e.msg[0] == '\0')
            abort();
    }
    ydoc_free(d);
    free(copy);
    return 0;
}
