#include <arpa/inet.h> /* glibc's in.h before the kernel's (libc-compat) */
#include <errno.h>
#include <jansson.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nft.h"
#include "nftgen.h"
#include "nftsys.h"

/* The "nftables" array of a listing, or NULL with <e>. */
static json_t *
items(const char *text, json_t **root, struct err *e)
{
    json_error_t je;
    json_t *a;

    *root = json_loads(text ? text : "", JSON_REJECT_DUPLICATES, &je);
    if (*root == NULL) {
        err_set(e, "nftables listing: not JSON: %s", je.text);
        return NULL;
    }
    a = json_object_get(*root, "nftables");
    if (!json_is_array(a)) {
        err_set(e, "nftables listing: no \"nftables\" array");
        json_decref(*root);
        *root = NULL;
        return NULL;
    }
    return a;
}

static const char *
str_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}

void
nftsys_listing_free(struct nftsys_listing *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* Whether listing object <o> belongs to table inet ferry. */
static int
ours(json_t *o)
{
    const char *f = str_of(o, "family"), *t = str_of(o, "table");

    return f && t && strcmp(f, "inet") == 0 && strcmp(t, NFT_TABLE) == 0;
}

struct nftsys_obj *
nftsys_listing_add(struct nftsys_listing *l, enum nftsys_kind kind,
                   const char *name)
{
    struct nftsys_obj *o;
    size_t *cap = &l->cap;

    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct nftsys_obj *p;

        if (ncap > NFTSYS_OBJS_MAX)
            return NULL;
        p = realloc(l->v, ncap * sizeof(*p));
        if (p == NULL)
            return NULL;
        l->v = p;
        *cap = ncap;
    }
    o = &l->v[l->n++];
    memset(o, 0, sizeof(*o));
    o->kind = kind;
    snprintf(o->name, sizeof(o->name), "%s", name);
    return o;
}

/* Rules come after their chains in nft's listings; a rule of an unknown
 * chain is counted nowhere (the chain check then reports it). */
static void
count_rule(struct nftsys_listing *l, const char *chain, size_t *last)
{
    size_t i;

    if (*last < l->n && l->v[*last].kind == NFTSYS_CHAIN
        && strcmp(l->v[*last].name, chain) == 0) {
        l->v[*last].nrules++;
        return;
    }
    for (i = 0; i < l->n; i++) {
        if (l->v[i].kind == NFTSYS_CHAIN && strcmp(l->v[i].name, chain) == 0) {
            l->v[i].nrules++;
            *last = i;
            return;
        }
    }
}

int
nftsys_parse_table(const char *json, struct nftsys_listing *l, struct err *e)
{
    char layout[64];
    json_t *root, *a, *it;
    size_t i, last = 0;
    int rc = 0;

    a = items(json, &root, e);
    if (a == NULL)
        return -1;
    snprintf(layout, sizeof(layout), "ferry layout %d", NFT_LAYOUT);
    json_array_foreach(a, i, it)
    {
        json_t *o;
        const char *name;

        if ((o = json_object_get(it, "table")) != NULL) {
            const char *f = str_of(o, "family"), *t = str_of(o, "name");

            if (f && t && strcmp(f, "inet") == 0 && strcmp(t, NFT_TABLE) == 0)
                l->present = 1;
        } else if ((o = json_object_get(it, "chain")) != NULL
                   || (o = json_object_get(it, "set")) != NULL
                   || (o = json_object_get(it, "map")) != NULL) {
            int chain = json_object_get(it, "chain") != NULL;
            struct nftsys_obj *x;

            name = str_of(o, "name");
            if (!ours(o) || name == NULL || strlen(name) >= NFTSYS_NAME_MAX)
                continue;
            x = nftsys_listing_add(l, chain ? NFTSYS_CHAIN : NFTSYS_SET, name);
            if (x == NULL) {
                rc = err_set(e, "nftables listing: too many objects");
                break;
            }
            x->is_map = json_object_get(it, "map") != NULL;
            if (!chain && strcmp(name, NFTGEN_LAYOUT_SET) == 0) {
                const char *c = str_of(o, "comment");

                l->layout_ok = c != NULL && strcmp(c, layout) == 0;
            }
        } else if ((o = json_object_get(it, "rule")) != NULL) {
            name = str_of(o, "chain");
            if (name && ours(o))
                count_rule(l, name, &last);
        }
    }
    json_decref(root);
    return rc;
}

int
nftsys_count_elems(const char *json, const char *name, size_t *n, struct err *e)
{
    json_t *root, *a, *it;
    size_t i;

    *n = 0;
    a = items(json, &root, e);
    if (a == NULL)
        return -1;
    json_array_foreach(a, i, it)
    {
        json_t *o = json_object_get(it, "set");
        const char *nm;
        json_t *el;

        if (o == NULL)
            o = json_object_get(it, "map");
        if (o == NULL || !ours(o) || (nm = str_of(o, "name")) == NULL
            || strcmp(nm, name) != 0)
            continue;
        el = json_object_get(o, "elem");
        if (json_is_array(el))
            *n += json_array_size(el);
    }
    json_decref(root);
    return 0;
}

/* ---------------------------------------------------- legacy iptables */

/* Whether the kernel has x_tables table <table> for the family whose
 * names file is <names> (reading it loads nothing). */
static int
legacy_has_table(const char *names, const char *table)
{
    char line[64];
    FILE *f = fopen(names, "re");
    int found = 0;

    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        found = strcmp(line, table) == 0;
    }
    fclose(f);
    return found;
}

/* Walk the entries of one table: a user chain starts with an ERROR
 * target whose data is the chain's name. */
static int
walk_entries(const char *base, size_t size, size_t target_off_field,
             size_t next_off_field, const char *chain)
{
    size_t off = 0, clen = strlen(chain);

    while (size - off >= next_off_field + sizeof(uint16_t)) {
        const char *en = base + off, *t;
        uint16_t toff, next, tsize;
        struct xt_entry_target th;

        memcpy(&toff, en + target_off_field, sizeof(toff));
        memcpy(&next, en + next_off_field, sizeof(next));
        if (next == 0 || next > size - off || (size_t)toff + sizeof(th) > next)
            break;
        /* Copied out: offsets from a buffer need not be aligned. */
        t = en + toff;
        memcpy(&th, t, sizeof(th));
        tsize = th.u.target_size;
        if ((size_t)toff + tsize <= next && tsize > sizeof(th) + clen
            && strncmp(th.u.user.name, XT_ERROR_TARGET, sizeof(th.u.user.name))
                   == 0
            && memcmp(t + offsetof(struct xt_entry_target, data), chain,
                      clen + 1)
                   == 0)
            return 1;
        off += next;
    }
    return 0;
}

static int
legacy_v4(const char *table, const char *chain)
{
    struct ipt_getinfo info;
    struct ipt_get_entries *ent;
    socklen_t len = sizeof(info);
    int fd, found = 0;

    fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0)
        return 0;
    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", table);
    if (getsockopt(fd, SOL_IP, IPT_SO_GET_INFO, &info, &len) == 0
        && info.size < (64u << 20)) {
        len = (socklen_t)(sizeof(*ent) + info.size);
        ent = calloc(1, len);
        if (ent != NULL) {
            snprintf(ent->name, sizeof(ent->name), "%s", table);
            ent->size = info.size;
            if (getsockopt(fd, SOL_IP, IPT_SO_GET_ENTRIES, ent, &len) == 0)
                found = walk_entries((const char *)ent->entrytable, ent->size,
                                     offsetof(struct ipt_entry, target_offset),
                                     offsetof(struct ipt_entry, next_offset),
                                     chain);
            free(ent);
        }
    }
    close(fd);
    return found;
}

static int
legacy_v6(const char *table, const char *chain)
{
    struct ip6t_getinfo info;
    struct ip6t_get_entries *ent;
    socklen_t len = sizeof(info);
    int fd, found = 0;

    fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0)
        return 0;
    memset(&info, 0, sizeof(info));
    snprintf(info.name, sizeof(info.name), "%s", table);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_GET_INFO, &info, &len) == 0
        && info.size < (64u << 20)) {
        len = (socklen_t)(sizeof(*ent) + info.size);
        ent = calloc(1, len);
        if (ent != NULL) {
            snprintf(ent->name, sizeof(ent->name), "%s", table);
            ent->size = info.size;
            if (getsockopt(fd, SOL_IPV6, IP6T_SO_GET_ENTRIES, ent, &len) == 0)
                found = walk_entries((const char *)ent->entrytable, ent->size,
                                     offsetof(struct ip6t_entry, target_offset),
                                     offsetof(struct ip6t_entry, next_offset),
                                     chain);
            free(ent);
        }
    }
    close(fd);
    return found;
}

int
nftsys_xt_has_chain(const void *entries, size_t size, int v6, const char *chain)
{
    if (v6)
        return walk_entries(entries, size,
                            offsetof(struct ip6t_entry, target_offset),
                            offsetof(struct ip6t_entry, next_offset), chain);
    return walk_entries(entries, size,
                        offsetof(struct ipt_entry, target_offset),
                        offsetof(struct ipt_entry, next_offset), chain);
}

int
nftsys_legacy_find(const char *chain, char *found, size_t foundlen)
{
    static const char *const tables[] = {"nat", "filter"};
    size_t i;

    for (i = 0; i < 2; i++) {
        if (legacy_has_table("/proc/net/ip_tables_names", tables[i])
            && legacy_v4(tables[i], chain)) {
            snprintf(found, foundlen, "iptables-legacy chain %s (table %s)",
                     chain, tables[i]);
            return 1;
        }
        if (legacy_has_table("/proc/net/ip6_tables_names", tables[i])
            && legacy_v6(tables[i], chain)) {
            snprintf(found, foundlen, "ip6tables-legacy chain %s (table %s)",
                     chain, tables[i]);
            return 1;
        }
    }
    return 0;
}
