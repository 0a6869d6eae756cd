#include <stdlib.h>
#include <string.h>

#include "table.h"

/* The indexes of a table: open addressing over 64-bit hashes, linear
 * probing, at most half full. Tables are built once and never lose an
 * entry, so there is no deletion. A slot is a service's position and,
 * for frontends and service IPs, the key itself; a name is compared with
 * the service's own. A lookup costs one or two cache lines where a
 * chained hash walked several. */
struct tbl_slot {
    uint32_t hash; /* 0: empty; 32 bits make the slot 32 bytes, not 40 */
    uint32_t svc;
    uint32_t nplain; /* frontends: services there without server names */
    unsigned char key[20];
};

struct tbl_index {
    atomic_uint refs; /* tables sharing it; one changing it copies it */
    size_t cap, n;    /* cap: 0 or a power of two */
    struct tbl_slot *v;
};

static size_t
frontend_key(enum tbl_proto proto, const struct saddr *a,
             unsigned char key[20])
{
    memset(key, 0, 20);
    key[0] = (unsigned char)a->u.sa.sa_family;
    key[1] = (unsigned char)(saddr_port(a) >> 8);
    key[2] = (unsigned char)saddr_port(a);
    key[3] = (unsigned char)proto;
    if (a->u.sa.sa_family == AF_INET)
        memcpy(key + 4, &a->u.in.sin_addr, 4);
    else if (a->u.sa.sa_family == AF_INET6)
        memcpy(key + 4, &a->u.in6.sin6_addr, 16);
    return 20;
}

/* FNV-1a, then a finalizer that spreads every bit, folded to 32; never
 * 0. */
static uint32_t
hash_bytes(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h ^= h >> 32;
    return (uint32_t)h ? (uint32_t)h : 1;
}

/* The slot of <key> (20 bytes; with <t>: a service name, compared with
 * t's names), or NULL. */
static struct tbl_slot *
index_find(const struct tbl_index *ix, uint32_t h, const void *key,
           const struct table *t)
{
    size_t i, mask;

    if (ix == NULL || ix->cap == 0)
        return NULL;
    mask = ix->cap - 1;
    for (i = h & mask;; i = (i + 1) & mask) {
        struct tbl_slot *s = &ix->v[i];
        if (s->hash == 0)
            return NULL;
        if (s->hash == h
            && (t != NULL ? strcmp(table_service(t, s->svc)->name, key) == 0
                          : memcmp(s->key, key, sizeof(s->key)) == 0))
            return s;
    }
}

/* Room for <more> entries more in <*pix>. Returns 0, or -1 when out of
 * memory. */
static void index_free(struct tbl_index **pix);

/* Make <*pix> the caller's own: a copy if another table shares it.
 * Returns 0, or -1 when out of memory (<*pix> unchanged). */
static int
index_own(struct tbl_index **pix)
{
    struct tbl_index *ix = *pix, *c;

    if (ix == NULL || atomic_load_explicit(&ix->refs, memory_order_acquire) == 1)
        return 0;
    if ((c = calloc(1, sizeof(*c))) == NULL
        || (c->v = malloc(ix->cap * sizeof(*c->v))) == NULL) {
        free(c);
        return -1;
    }
    atomic_init(&c->refs, 1);
    memcpy(c->v, ix->v, ix->cap * sizeof(*c->v));
    c->cap = ix->cap;
    c->n = ix->n;
    index_free(pix);
    *pix = c;
    return 0;
}

/* <*dst> becomes <src>, shared (NULL: none). */
static void
index_share(struct tbl_index **dst, struct tbl_index *src)
{
    index_free(dst);
    if (src != NULL)
        atomic_fetch_add_explicit(&src->refs, 1, memory_order_relaxed);
    *dst = src;
}

static int
index_room(struct tbl_index **pix, size_t more)
{
    struct tbl_index *ix = *pix;
    struct tbl_slot *v;
    size_t cap, i, j;

    if (ix == NULL) {
        if ((ix = *pix = calloc(1, sizeof(*ix))) == NULL)
            return -1;
        atomic_init(&ix->refs, 1);
    }
    if (index_own(pix) < 0)
        return -1;
    ix = *pix;
    /* Three quarters full at most (half full, these were 4 MB at 10,000
     * Services: two tables' indexes by name and by frontend). */
    if ((ix->n + more) * 4 <= ix->cap * 3)
        return 0;
    for (cap = ix->cap ? ix->cap * 2 : 16; cap * 3 < (ix->n + more) * 4;
         cap *= 2)
        ;
    if ((v = calloc(cap, sizeof(*v))) == NULL)
        return -1;
    for (i = 0; i < ix->cap; i++) {
        if (ix->v[i].hash == 0)
            continue;
        for (j = ix->v[i].hash & (cap - 1); v[j].hash != 0;
             j = (j + 1) & (cap - 1))
            ;
        v[j] = ix->v[i];
    }
    free(ix->v);
    ix->v = v;
    ix->cap = cap;
    return 0;
}

/* A new entry for hash <h> (not in the index), <key> copied when not
 * NULL. Returns it, or NULL when out of memory. */
static struct tbl_slot *
index_add(struct tbl_index **pix, uint32_t h, const unsigned char *key,
          size_t svc)
{
    struct tbl_index *ix;
    struct tbl_slot *s;
    size_t i;

    if (index_room(pix, 1) < 0)
        return NULL;
    ix = *pix;
    for (i = h & (ix->cap - 1); ix->v[i].hash != 0; i = (i + 1) & (ix->cap - 1))
        ;
    s = &ix->v[i];
    s->hash = h;
    s->svc = (uint32_t)svc;
    s->nplain = 0;
    if (key != NULL)
        memcpy(s->key, key, sizeof(s->key));
    ix->n++;
    return s;
}

/* Drop this table's reference to <*pix>. */
static void
index_free(struct tbl_index **pix)
{
    struct tbl_index *ix = *pix;

    *pix = NULL;
    if (ix == NULL
        || atomic_fetch_sub_explicit(&ix->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(ix->v);
    free(ix);
}

const char *const tbl_balance_names[TBL_BAL__COUNT + 1] = {
    [TBL_BAL_ROUNDROBIN] = "roundrobin",
    [TBL_BAL_LEASTCONN] = "leastconn",
    [TBL_BAL_RANDOM] = "random",
    [TBL_BAL_P2C] = "p2c",
    [TBL_BAL_MAGLEV] = "maglev",
    [TBL_BAL__COUNT] = NULL,
};

const char *const tbl_check_type_names[TBL_CHECK__COUNT + 1] = {
    [TBL_CHECK_NONE] = "none",
    [TBL_CHECK_TCP] = "tcp",
    [TBL_CHECK_HTTP] = "http",
    [TBL_CHECK__COUNT] = NULL,
};

const char *const tbl_send_proxy_names[TBL_SEND_PROXY__COUNT + 1] = {
    [TBL_SEND_PROXY_NONE] = "none",
    [TBL_SEND_PROXY_V1] = "v1",
    [TBL_SEND_PROXY_V2] = "v2",
    [TBL_SEND_PROXY__COUNT] = NULL,
};

const char *
tbl_balance_name(enum tbl_balance b)
{
    return (unsigned)b < TBL_BAL__COUNT ? tbl_balance_names[b] : "?";
}

int
tbl_balance_parse(const char *s, enum tbl_balance *out)
{
    int i;

    for (i = 0; i < TBL_BAL__COUNT; i++) {
        if (strcmp(s, tbl_balance_names[i]) == 0) {
            *out = (enum tbl_balance)i;
            return 0;
        }
    }
    return -1;
}

const char *
tbl_check_type_name(enum tbl_check_type t)
{
    return (unsigned)t < TBL_CHECK__COUNT ? tbl_check_type_names[t] : "?";
}

const char *const tbl_proto_names[TBL_PROTO__COUNT + 1] = {
    [TBL_PROTO_TCP] = "tcp",
    [TBL_PROTO_UDP] = "udp",
    [TBL_PROTO_SCTP] = "sctp",
    [TBL_PROTO__COUNT] = NULL,
};

static atomic_uint_fast64_t table_serials;

struct table *
table_new(void)
{
    struct table *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    atomic_init(&t->refs, 1);
    t->serial = atomic_fetch_add_explicit(&table_serials, 1,
                                          memory_order_relaxed)
                + 1;
    return t;
}

/* A name (or a check's path) the same in <a> and <b>; NULL (a
 * template's, never set) is "". */
static int
names_equal(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* What a struct tbl_arrays owns: up to TBL_ARRAYS arrays, each with its
 * pointer and length, in the order svc_slots() and ksvc_slots() list;
 * the last two are the name and the health check's path, each with its
 * NUL. */
#define TBL_ARRAYS 10
#define SLOT_NAME  8
#define SLOT_PATH  9 /* the health check's */

/* The arrays are in the same block as this header, after it: one
 * allocation a service where there were four (at 10,000 Services, a
 * table's arrays took 20,000 headers of 168 bytes and 40,000 more
 * malloc()s). */
struct tbl_arrays {
    atomic_uint refs;
    uint32_t n[TBL_ARRAYS];
    void *p[TBL_ARRAYS];
};

static void
svc_slots(const struct tbl_service *s, void **p, size_t *n)
{
    p[0] = s->frontends, n[0] = s->nfrontends;
    p[1] = s->backends, n[1] = s->nbackends;
    p[2] = s->allow, n[2] = s->nallow;
    p[3] = s->deny, n[3] = s->ndeny;
    p[4] = s->sni, n[4] = s->nsni;
    p[5] = s->excluded, n[5] = s->nexcluded;
    p[6] = p[7] = NULL, n[6] = n[7] = 0;
    p[SLOT_NAME] = (void *)s->name;
    n[SLOT_NAME] = s->name != NULL ? strlen(s->name) + 1 : 0;
    p[SLOT_PATH] = (void *)s->check.path;
    n[SLOT_PATH] = s->check.path != NULL ? strlen(s->check.path) + 1 : 0;
}

static void
ksvc_slots(const struct tbl_ksvc *k, void **p, size_t *n)
{
    p[0] = k->cluster_ips, n[0] = k->ncluster_ips;
    p[1] = k->external_ips, n[1] = k->nexternal_ips;
    p[2] = k->lb_ips, n[2] = k->nlb_ips;
    p[3] = k->source_ranges, n[3] = k->nsource_ranges;
    p[4] = k->cluster_eps, n[4] = k->ncluster_eps;
    p[5] = k->local_eps, n[5] = k->nlocal_eps;
    p[6] = k->cluster_excluded, n[6] = k->ncluster_excluded;
    p[7] = k->local_excluded, n[7] = k->nlocal_excluded;
    p[SLOT_NAME] = (void *)k->name;
    n[SLOT_NAME] = k->name != NULL ? strlen(k->name) + 1 : 0;
    p[SLOT_PATH] = (void *)k->check.path;
    n[SLOT_PATH] = k->check.path != NULL ? strlen(k->check.path) + 1 : 0;
}

/* Nonzero when <a> owns exactly the arrays <p>, <n>: a copy of a table's
 * service whose arrays nobody replaced. */
static int
arrays_own(const struct tbl_arrays *a, void *const *p, const size_t *n)
{
    size_t i;

    if (a == NULL || memcmp(a->p, p, sizeof(a->p)) != 0)
        return 0;
    for (i = 0; i < TBL_ARRAYS; i++)
        if (a->n[i] != n[i])
            return 0;
    return 1;
}

static void
arrays_unref(struct tbl_arrays *a)
{
    if (a == NULL
        || atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(a);
}

/* Bytes the names of <n> backends at <be> take, NULs included. */
static size_t
names_size(const struct tbl_backend *be, size_t n)
{
    size_t i, sum = 0;

    for (i = 0; i < n; i++)
        sum += strnlen(be[i].name ? be[i].name : "", TBL_NAME_MAX - 1) + 1;
    return sum;
}

/* Copy the names of the <n> backends at <be> into <to> (room from
 * names_size()) and point the backends at the copies. */
static void
names_copy(struct tbl_backend *be, size_t n, char *to)
{
    size_t i, len;

    for (i = 0; i < n; i++) {
        const char *name = be[i].name ? be[i].name : ""; /* lent none */
        len = strnlen(name, TBL_NAME_MAX - 1);
        memcpy(to, name, len);
        to[len] = '\0';
        be[i].name = to;
        to += len + 1;
    }
}

/* A new owner of copies of the arrays <p> (<n> elements of <size[i]>
 * bytes each), which it writes back into <p>; or NULL. The arrays whose
 * bit is set in <be_mask> are of struct tbl_backend: their names are
 * copied too, after the array in the same block. */
static struct tbl_arrays *
arrays_copy(void **p, const size_t *n, const size_t *size, unsigned be_mask)
{
    size_t i, at[TBL_ARRAYS], names[TBL_ARRAYS],
        total = sizeof(struct tbl_arrays);
    struct tbl_arrays *a;

    for (i = 0; i < TBL_ARRAYS; i++) {
        if (n[i] > UINT32_MAX || n[i] > (SIZE_MAX / 2 - total) / size[i])
            return NULL;
        names[i] = n[i] > 0 && be_mask & (1u << i) ? names_size(p[i], n[i]) : 0;
        total = (total + 7) & ~(size_t)7; /* each array 8-aligned */
        at[i] = total;
        total += n[i] * size[i] + names[i];
    }
    if ((a = malloc(total)) == NULL)
        return NULL;
    atomic_init(&a->refs, 1);
    for (i = 0; i < TBL_ARRAYS; i++) {
        a->n[i] = (uint32_t)n[i];
        a->p[i] = n[i] > 0 ? (char *)a + at[i] : NULL;
        if (n[i] == 0)
            continue;
        memcpy(a->p[i], p[i], n[i] * size[i]);
        if (names[i] > 0)
            names_copy(a->p[i], n[i], (char *)a->p[i] + n[i] * size[i]);
    }
    memcpy(p, a->p, sizeof(a->p));
    return a;
}

/* The arrays for a copy of a service whose arrays are <p>, <n> and owner
 * <own>: <own> itself when it owns them, else new copies (written into
 * <p>). NULL when memory runs out. */
static struct tbl_arrays *
arrays_for(struct tbl_arrays *own, void **p, const size_t *n,
           const size_t *size, unsigned be_mask)
{
    if (arrays_own(own, p, n)) {
        atomic_fetch_add_explicit(&own->refs, 1, memory_order_relaxed);
        return own;
    }
    return arrays_copy(p, n, size, be_mask);
}

struct tbl_arrays *
tbl_arrays_ref(struct tbl_arrays *a)
{
    if (a != NULL)
        atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    return a;
}

void
tbl_arrays_unref(struct tbl_arrays *a)
{
    arrays_unref(a);
}

int
tbl_service_hold(struct tbl_service *dst, const struct tbl_service *src)
{
    static const size_t size[TBL_ARRAYS] = {
        sizeof(struct saddr), sizeof(struct tbl_backend),
        sizeof(struct cidr),  sizeof(struct cidr),
        sizeof(struct tbl_sni), sizeof(struct tbl_excluded), 1, 1, 1, 1};
    void *p[TBL_ARRAYS];
    size_t n[TBL_ARRAYS];
    struct tbl_arrays *a;

    svc_slots(src, p, n);
    if ((a = arrays_for(src->arrays, p, n, size, 1u << 1)) == NULL)
        return -1;
    *dst = *src;
    dst->arrays = a;
    dst->frontends = p[0];
    dst->backends = p[1];
    dst->allow = p[2];
    dst->deny = p[3];
    dst->sni = p[4];
    dst->excluded = p[5];
    dst->name = p[SLOT_NAME] != NULL ? p[SLOT_NAME] : "";
    dst->check.path = p[SLOT_PATH];
    return 0;
}

void
tbl_service_release(struct tbl_service *s)
{
    arrays_unref(s->arrays);
    s->arrays = NULL;
}

int
tbl_ksvc_hold(struct tbl_ksvc *dst, const struct tbl_ksvc *src)
{
    static const size_t size[TBL_ARRAYS] = {
        sizeof(struct saddr), sizeof(struct saddr),
        sizeof(struct saddr), sizeof(struct cidr),
        sizeof(struct tbl_backend), sizeof(struct tbl_backend),
        sizeof(struct tbl_excluded), sizeof(struct tbl_excluded), 1, 1};
    void *p[TBL_ARRAYS];
    size_t n[TBL_ARRAYS];
    struct tbl_arrays *a;

    ksvc_slots(src, p, n);
    if ((a = arrays_for(src->arrays, p, n, size, 1u << 4 | 1u << 5)) == NULL)
        return -1;
    *dst = *src;
    dst->arrays = a;
    dst->cluster_ips = p[0];
    dst->external_ips = p[1];
    dst->lb_ips = p[2];
    dst->source_ranges = p[3];
    dst->cluster_eps = p[4];
    dst->local_eps = p[5];
    dst->cluster_excluded = p[6];
    dst->local_excluded = p[7];
    dst->name = p[SLOT_NAME] != NULL ? p[SLOT_NAME] : "";
    dst->check.path = p[SLOT_PATH];
    return 0;
}

void
tbl_ksvc_release(struct tbl_ksvc *k)
{
    arrays_unref(k->arrays);
    k->arrays = NULL;
}

static void
service_free(struct tbl_service *s)
{
    arrays_unref(s->arrays);
}

static void
ksvc_free(struct tbl_ksvc *k)
{
    arrays_unref(k->arrays);
}

static int page_room(struct tbl_page ***pages, size_t *cap, size_t n);

/* ---- chunks and pages ----------------------------------------------------
 *
 * The services of a table are in chunks of TBL_CHUNK, and the chunks in
 * pages of TBL_PAGE, which tables made from one another share: a table
 * that changes or appends to a shared page or chunk first makes it its
 * own (a copy holding the same chunks, or the same arrays). One code for
 * both kinds of entry: each holds its arrays through a struct tbl_arrays
 * pointer. A table's page pointers past its last page are NULL. */

struct chunk_kind {
    size_t size;   /* of a chunk */
    size_t v;      /* where its entries start */
    size_t esize;  /* of an entry */
    size_t arrays; /* where an entry's arrays pointer is */
};

static const struct chunk_kind skind = {
    sizeof(struct tbl_schunk), offsetof(struct tbl_schunk, v),
    sizeof(struct tbl_service), offsetof(struct tbl_service, arrays)};
static const struct chunk_kind kkind = {
    sizeof(struct tbl_kchunk), offsetof(struct tbl_kchunk, v),
    sizeof(struct tbl_ksvc), offsetof(struct tbl_ksvc, arrays)};

/* Entry <i> of chunk <c>. */
static void *
chunk_entry(struct tbl_chunk *c, const struct chunk_kind *k, size_t i)
{
    return (char *)c + k->v + i * k->esize;
}

static struct tbl_arrays **
entry_arrays(struct tbl_chunk *c, const struct chunk_kind *k, size_t i)
{
    return (struct tbl_arrays **)(void *)((char *)chunk_entry(c, k, i)
                                          + k->arrays);
}

static void
chunk_unref(struct tbl_chunk *c, const struct chunk_kind *k)
{
    uint32_t i;

    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; i < c->n; i++)
        arrays_unref(*entry_arrays(c, k, i));
    free(c);
}

static void
page_unref(struct tbl_page *p, const struct chunk_kind *k)
{
    uint32_t i;

    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; i < p->n; i++)
        chunk_unref(p->c[i], k);
    free(p);
}

/* *<slot> made the caller's own: a copy of it if another table shares
 * it. Returns it, or NULL when out of memory (*slot unchanged). */
static struct tbl_chunk *
chunk_own(struct tbl_chunk **slot, const struct chunk_kind *k)
{
    struct tbl_chunk *c = *slot, *o;
    uint32_t i;

    if (atomic_load_explicit(&c->refs, memory_order_acquire) == 1)
        return c;
    if ((o = malloc(k->size)) == NULL)
        return NULL;
    memcpy(o, c, k->v + c->n * k->esize);
    atomic_init(&o->refs, 1);
    for (i = 0; i < c->n; i++) /* a table's: holding shares the arrays */
        (void)tbl_arrays_ref(*entry_arrays(o, k, i));
    chunk_unref(c, k);
    return *slot = o;
}

/* The same for a page: the copy holds the same chunks. */
static struct tbl_page *
page_own(struct tbl_page **slot, const struct chunk_kind *k)
{
    struct tbl_page *p = *slot, *o;
    uint32_t i;

    if (atomic_load_explicit(&p->refs, memory_order_acquire) == 1)
        return p;
    if ((o = malloc(sizeof(*o))) == NULL)
        return NULL;
    atomic_init(&o->refs, 1);
    o->n = p->n;
    for (i = 0; i < p->n; i++) {
        o->c[i] = p->c[i];
        atomic_fetch_add_explicit(&o->c[i]->refs, 1, memory_order_relaxed);
    }
    page_unref(p, k);
    return *slot = o;
}

/* Chunk <ci> of <pages> made the caller's own, with its page; NULL when
 * out of memory. */
static struct tbl_chunk *
chunk_own_at(struct tbl_page **pages, size_t ci, const struct chunk_kind *k)
{
    struct tbl_page *p = page_own(&pages[ci / TBL_PAGE], k);

    return p == NULL ? NULL : chunk_own(&p->c[ci % TBL_PAGE], k);
}

/* The chunk, of the caller's own, where entry <n> of <*pages> (n
 * entries so far, room for <*cap> pages) goes; NULL when out of memory.
 * A page or chunk left empty by an append that failed after this is
 * taken again by the next one. */
static struct tbl_chunk *
chunk_append(struct tbl_page ***pages, size_t *cap, size_t n,
             const struct chunk_kind *k)
{
    size_t ci = n / TBL_CHUNK, pi = ci / TBL_PAGE;
    struct tbl_page *p;
    struct tbl_chunk *c;

    if (page_room(pages, cap, pi < 4 ? 4 : (pi + 1) * 2) < 0)
        return NULL;
    if ((p = (*pages)[pi]) != NULL && p->n > ci % TBL_PAGE)
        return chunk_own_at(*pages, ci, k);
    if ((c = malloc(k->size)) == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    c->n = 0;
    if (p == NULL) {
        if ((p = malloc(sizeof(*p))) == NULL) {
            free(c);
            return NULL;
        }
        atomic_init(&p->refs, 1);
        p->n = 0;
        (*pages)[pi] = p;
    } else if ((p = page_own(&(*pages)[pi], k)) == NULL) {
        free(c);
        return NULL;
    }
    p->c[p->n++] = c;
    return c;
}

/* Share the pages of <from>'s first <n> entries into <to> (room made). */
static void
pages_share(struct tbl_page **to, struct tbl_page *const *from, size_t n)
{
    size_t i;

    for (i = 0; i * TBL_CHUNK * TBL_PAGE < n; i++) {
        to[i] = from[i];
        atomic_fetch_add_explicit(&to[i]->refs, 1, memory_order_relaxed);
    }
}

static void
pages_free(struct tbl_page **pages, size_t cap, const struct chunk_kind *k)
{
    size_t i;

    for (i = 0; i < cap && pages[i] != NULL; i++)
        page_unref(pages[i], k);
    free(pages);
}

struct table *
table_ref(struct table *t)
{
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void
table_unref(struct table *t)
{
    if (t == NULL)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    pages_free(t->spages, t->cap, &skind);
    pages_free(t->kpages, t->kcap, &kkind);
    free(t->listeners);
    table_unref(t->kernel);
    index_free(&t->by_name);
    index_free(&t->by_frontend);
    index_free(&t->by_vip);
    free(t->vips);
    free(t->dsvcs);
    free(t->dksvcs);
    free(t->lpos);
    free(t);
}

int
table_add_vip(struct table *t, const struct saddr *a, struct err *e)
{
    struct saddr ip = *a;
    unsigned char key[20];
    uint32_t h;

    if (t->frozen)
        return err_set(e, "table is frozen");
    saddr_set_port(&ip, 0);
    frontend_key(TBL_PROTO_TCP, &ip, key);
    h = hash_bytes(key, sizeof(key));
    if (index_find(t->by_vip, h, key, NULL) != NULL)
        return 0;
    if (t->nvips == t->vipcap) {
        size_t ncap = t->vipcap ? t->vipcap * 2 : 16;
        struct saddr *n = realloc(t->vips, ncap * sizeof(*n));
        if (n == NULL)
            return err_set(e, "out of memory");
        t->vips = n;
        t->vipcap = ncap;
    }
    if (index_add(&t->by_vip, h, key, t->nvips) == NULL)
        return err_set(e, "out of memory");
    t->vips[t->nvips++] = ip;
    return 0;
}

void
table_freeze(struct table *t, uint64_t generation)
{
    t->generation = generation;
    t->frozen = 1;
}

/* Room for <n> page pointers in <*pages> (room for <*cap>), the new
 * ones NULL. */
static int
page_room(struct tbl_page ***pages, size_t *cap, size_t n)
{
    struct tbl_page **v;

    if (n <= *cap)
        return 0;
    if ((v = realloc(*pages, n * sizeof(*v))) == NULL)
        return -1;
    memset(v + *cap, 0, (n - *cap) * sizeof(*v));
    *pages = v;
    *cap = n;
    return 0;
}

/* Pages for <n> entries. */
static size_t
pages_for(size_t n)
{
    return (n + TBL_CHUNK * TBL_PAGE - 1) / (TBL_CHUNK * TBL_PAGE);
}

int
table_reserve(struct table *t, size_t nservices)
{
    if (t->frozen || nservices <= t->nservices)
        return 0;
    if (page_room(&t->spages, &t->cap, pages_for(nservices)) < 0)
        return -1;
    /* Most services have one frontend. */
    if (index_room(&t->by_name, nservices - t->nservices) < 0
        || index_room(&t->by_frontend, nservices - t->nservices) < 0)
        return -1;
    return 0;
}

int
table_reserve_ksvcs(struct table *t, size_t nksvcs)
{
    if (t->frozen || nksvcs <= t->nksvcs)
        return 0;
    return page_room(&t->kpages, &t->kcap, pages_for(nksvcs));
}

const struct tbl_service *
table_find(const struct table *t, const char *name)
{
    const struct tbl_slot *e =
        index_find(t->by_name, hash_bytes(name, strlen(name)), name, t);

    return e != NULL ? table_service(t, e->svc) : NULL;
}

const struct tbl_service *
table_find_frontend_proto(const struct table *t, enum tbl_proto proto,
                          const struct saddr *a)
{
    unsigned char key[20];
    const struct tbl_slot *e;

    frontend_key(proto, a, key);
    e = index_find(t->by_frontend, hash_bytes(key, sizeof(key)), key, NULL);
    return e != NULL ? table_service(t, e->svc) : NULL;
}

const struct tbl_service *
table_find_frontend(const struct table *t, const struct saddr *a)
{
    return table_find_frontend_proto(t, TBL_PROTO_TCP, a);
}

/* Index the service at position <i> by name and frontends. */
static int
index_service(struct table *t, size_t i)
{
    const struct tbl_service *s = table_service(t, i);
    unsigned char key[20];
    size_t j;

    if (index_own(&t->by_name) < 0 || index_own(&t->by_frontend) < 0)
        return -1;
    if (index_add(&t->by_name, hash_bytes(s->name, strlen(s->name)), NULL, i)
        == NULL)
        return -1;
    for (j = 0; j < s->nfrontends; j++) {
        uint32_t h;
        struct tbl_slot *f;
        frontend_key(s->proto, &s->frontends[j], key);
        h = hash_bytes(key, sizeof(key));
        f = index_find(t->by_frontend, h, key, NULL);
        /* A service may list one frontend twice; index it once. Services
         * with server names share one; the first added stays. */
        if (f == NULL) {
            if ((f = index_add(&t->by_frontend, h, key, i)) == NULL)
                return -1;
        } else if (f->svc == i) {
            continue;
        }
        if (s->nsni == 0)
            f->nplain++;
    }
    return 0;
}

/* Whether <s> is the default_service of address <a>. */
static int
is_default(const struct table *t, const struct tbl_service *s,
           const struct saddr *a)
{
    const struct tbl_listener *l = table_find_listener(t, a);

    return l != NULL && strcmp(l->default_service, s->name) == 0;
}

/* The service keeping <svc> off <a>, or NULL if it may listen there
 * beside those already there: services with server names share with
 * each other, and with one without: the address's default_service. */
static const struct tbl_service *
frontend_taken(const struct table *t, const struct tbl_service *svc,
               const struct saddr *a)
{
    unsigned char key[20];
    const struct tbl_slot *f;
    const struct tbl_service *first;

    frontend_key(svc->proto, a, key);
    f = index_find(t->by_frontend, hash_bytes(key, sizeof(key)), key, NULL);
    if (f == NULL)
        return NULL;
    first = table_service(t, f->svc);
    if (svc->nsni == 0)
        return f->nplain == 0 && is_default(t, svc, a) ? NULL : first;
    /* A first one without names was let in as the only one there. */
    return first->nsni > 0 || is_default(t, first, a) ? NULL : first;
}

int
table_add_service(struct table *t, const struct tbl_service *svc,
                  struct err *e)
{
    struct tbl_service copy, *slot;
    struct tbl_chunk *c;
    char a[SADDR_STR_MAX];
    size_t i;

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (svc->name[0] == '\0')
        return err_set(e, "service has no name");
    if (table_find(t, svc->name) != NULL)
        return err_set(e, "duplicate service name \"%s\"", svc->name);
    for (i = 0; i < svc->nfrontends; i++) {
        const struct tbl_service *o =
            frontend_taken(t, svc, &svc->frontends[i]);
        if (o != NULL)
            return err_set(e, "listen address %s already used by service "
                              "\"%s\"",
                           saddr_str(&svc->frontends[i], a, sizeof(a)),
                           o->name);
    }
    if ((c = chunk_append(&t->spages, &t->cap, t->nservices, &skind))
        == NULL)
        return err_set(e, "out of memory");
    slot = chunk_entry(c, &skind, t->nservices % TBL_CHUNK);
    if (tbl_service_hold(&copy, svc) < 0)
        return err_set(e, "out of memory");
    if (copy.reach != TBL_REACH_REDIRECT
        && table_pos_push(&t->lpos, &t->nlpos, &t->lcap_pos, t->nservices) < 0) {
        tbl_service_release(&copy);
        return err_set(e, "out of memory");
    }
    copy.pos = (uint32_t)t->nservices;
    *slot = copy;
    c->n++;
    t->nservices++;
    t->naffinity += copy.affinity_timeout_ms != 0;
    t->ndispatch += copy.reach == TBL_REACH_DISPATCH;
    t->nsnisvcs += copy.nsni != 0;
    if (index_service(t, t->nservices - 1) < 0)
        return err_set(e, "out of memory");
    return 0;
}

int
table_add_services_of(struct table *t, const struct table *src,
                      struct err *e)
{

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (t->nservices != 0 || t->nlisteners != 0)
        return err_set(e, "table is not empty");
    if (page_room(&t->spages, &t->cap, pages_for(src->nservices)) < 0)
        return err_set(e, "out of memory");
    if (src->nlpos > 0) {
        if ((t->lpos = malloc(src->nlpos * sizeof(*t->lpos))) == NULL)
            return err_set(e, "out of memory");
        memcpy(t->lpos, src->lpos, src->nlpos * sizeof(*t->lpos));
        t->nlpos = t->lcap_pos = src->nlpos;
    }
    t->naffinity = src->naffinity;
    t->ndispatch = src->ndispatch;
    t->nsnisvcs = src->nsnisvcs;
    index_share(&t->by_name, src->by_name);
    index_share(&t->by_frontend, src->by_frontend);
    pages_share(t->spages, src->spages, src->nservices);
    t->nservices = src->nservices;
    return 0;
}

int
table_pos_push(size_t **v, size_t *n, size_t *cap, size_t i)
{
    size_t *nv;

    if (*n == *cap) {
        if ((nv = realloc(*v, (*cap ? *cap * 2 : 8) * sizeof(**v))) == NULL)
            return -1;
        *v = nv;
        *cap = *cap ? *cap * 2 : 8;
    }
    (*v)[(*n)++] = i;
    return 0;
}

/* Note position <i> in <*v> (<*n> of them, room for <*cap>), once. */
static int
note_pos(size_t **v, size_t *n, size_t *cap, size_t i)
{
    size_t j;

    for (j = 0; j < *n; j++)
        if ((*v)[j] == i)
            return 0;
    return table_pos_push(v, n, cap, i);
}

struct table *
table_derive(const struct table *src)
{
    struct table *t = table_new();
    struct err e;

    if (t == NULL)
        return NULL;
    if (table_add_services_of(t, src, &e) < 0
        || table_reserve_ksvcs(t, src->nksvcs) < 0)
        goto oom;
    pages_share(t->kpages, src->kpages, src->nksvcs);
    t->nksvcs = src->nksvcs;
    if (src->nvips > 0) {
        if ((t->vips = malloc(src->nvips * sizeof(*t->vips))) == NULL)
            goto oom;
        index_share(&t->by_vip, src->by_vip);
        memcpy(t->vips, src->vips, src->nvips * sizeof(*t->vips));
        t->nvips = t->vipcap = src->nvips;
    }
    if (src->nlisteners > 0) {
        t->listeners = malloc(src->nlisteners * sizeof(*t->listeners));
        if (t->listeners == NULL)
            goto oom;
        memcpy(t->listeners, src->listeners,
               src->nlisteners * sizeof(*t->listeners));
        t->nlisteners = t->lcap = src->nlisteners;
    }
    t->kernel = table_ref(src->kernel);
    t->base = src->serial;
    return t;
oom:
    table_unref(t);
    return NULL;
}

int
table_replace_service(struct table *t, size_t i, const struct tbl_service *svc,
                      struct err *e)
{
    struct tbl_service *old;
    struct tbl_service copy;
    struct tbl_chunk *c;

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (t->base == 0 || i >= t->nservices)
        return err_set(e, "not a derived table's service");
    if ((c = chunk_own_at(t->spages, i / TBL_CHUNK, &skind)) == NULL)
        return err_set(e, "out of memory");
    old = chunk_entry(c, &skind, i % TBL_CHUNK);
    if (!names_equal(old->name, svc->name) || old->proto != svc->proto
        || old->reach != svc->reach || old->nsni != 0 || svc->nsni != 0
        || !tbl_saddrs_equal(old->frontends, old->nfrontends, svc->frontends,
                             svc->nfrontends))
        return err_set(e, "service \"%s\" is not the same shape", svc->name);
    if (tbl_service_hold(&copy, svc) < 0)
        return err_set(e, "out of memory");
    if (note_pos(&t->dsvcs, &t->ndsvcs, &t->dscap, i) < 0) {
        tbl_service_release(&copy);
        return err_set(e, "out of memory");
    }
    copy.pos = (uint32_t)i;
    t->naffinity -= old->affinity_timeout_ms != 0;
    t->naffinity += copy.affinity_timeout_ms != 0;
    service_free(old);
    *old = copy;
    return 0;
}

int
table_replace_ksvc(struct table *t, size_t i, const struct tbl_ksvc *k,
                   struct err *e)
{
    struct tbl_ksvc *old;
    struct tbl_ksvc copy;
    struct tbl_chunk *c;

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (t->base == 0 || i >= t->nksvcs)
        return err_set(e, "not a derived table's kernel service");
    if ((c = chunk_own_at(t->kpages, i / TBL_CHUNK, &kkind)) == NULL)
        return err_set(e, "out of memory");
    old = chunk_entry(c, &kkind, i % TBL_CHUNK);
    if (!names_equal(old->name, k->name) || old->proto != k->proto)
        return err_set(e, "kernel service \"%s\" is not the same", k->name);
    if (tbl_ksvc_hold(&copy, k) < 0)
        return err_set(e, "out of memory");
    if (note_pos(&t->dksvcs, &t->ndksvcs, &t->dkcap, i) < 0) {
        tbl_ksvc_release(&copy);
        return err_set(e, "out of memory");
    }
    ksvc_free(old);
    *old = copy;
    return 0;
}

int
table_add_listener(struct table *t, const struct tbl_listener *l,
                   struct err *e)
{
    char a[SADDR_STR_MAX];

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (table_find_listener(t, &l->addr) != NULL)
        return err_set(e, "listener %s is given twice",
                       saddr_str(&l->addr, a, sizeof(a)));
    if (t->nlisteners == t->lcap) {
        size_t ncap = t->lcap ? t->lcap * 2 : 4;
        struct tbl_listener *n = realloc(t->listeners, ncap * sizeof(*n));
        if (n == NULL)
            return err_set(e, "out of memory");
        t->listeners = n;
        t->lcap = ncap;
    }
    t->listeners[t->nlisteners++] = *l;
    return 0;
}

/* Listener entries are few (one per shared address): a scan. */
const struct tbl_listener *
table_find_listener(const struct table *t, const struct saddr *a)
{
    size_t i;

    for (i = 0; i < t->nlisteners; i++)
        if (saddr_cmp(&t->listeners[i].addr, a) == 0)
            return &t->listeners[i];
    return NULL;
}

int
table_add_ksvc(struct table *t, const struct tbl_ksvc *k, struct err *e)
{
    struct tbl_ksvc c, *slot;
    struct tbl_chunk *ch;

    if (t->frozen)
        return err_set(e, "table is frozen");
    if (k->name[0] == '\0')
        return err_set(e, "kernel service has no name");
    if ((ch = chunk_append(&t->kpages, &t->kcap, t->nksvcs, &kkind)) == NULL
        || tbl_ksvc_hold(&c, k) < 0)
        return err_set(e, "out of memory");
    slot = chunk_entry(ch, &kkind, t->nksvcs % TBL_CHUNK);
    *slot = c;
    ch->n++;
    t->nksvcs++;
    return 0;
}

int
tbl_saddrs_equal(const struct saddr *a, size_t na, const struct saddr *b,
                 size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (saddr_cmp(&a[i], &b[i]) != 0)
            return 0;
    return 1;
}

static int
backends_equal(const struct tbl_backend *a, size_t na,
               const struct tbl_backend *b, size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (!tbl_backend_equal(&a[i], &b[i]))
            return 0;
    return 1;
}

static int
excluded_equal(const struct tbl_excluded *a, size_t na,
               const struct tbl_excluded *b, size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (saddr_cmp(&a[i].addr, &b[i].addr) != 0
            || a[i].reason != b[i].reason
            || strcmp(a[i].name, b[i].name) != 0)
            return 0;
    return 1;
}

/* Nonzero when <a> and <b> are copies of one table entry's arrays. */
static int
svc_share(const struct tbl_service *a, const struct tbl_service *b)
{
    void *p[TBL_ARRAYS], *q[TBL_ARRAYS];
    size_t n[TBL_ARRAYS], m[TBL_ARRAYS];

    if (a->arrays == NULL || a->arrays != b->arrays)
        return 0;
    svc_slots(a, p, n);
    svc_slots(b, q, m);
    return arrays_own(a->arrays, p, n) && arrays_own(b->arrays, q, m);
}

static int
ksvc_share(const struct tbl_ksvc *a, const struct tbl_ksvc *b)
{
    void *p[TBL_ARRAYS], *q[TBL_ARRAYS];
    size_t n[TBL_ARRAYS], m[TBL_ARRAYS];

    if (a->arrays == NULL || a->arrays != b->arrays)
        return 0;
    ksvc_slots(a, p, n);
    ksvc_slots(b, q, m);
    return arrays_own(a->arrays, p, n) && arrays_own(b->arrays, q, m);
}

int
tbl_ksvc_equal(const struct tbl_ksvc *a, const struct tbl_ksvc *b)
{
    size_t i;

    if (!names_equal(a->name, b->name) || a->proto != b->proto
        || a->port != b->port || a->node_port != b->node_port
        || a->affinity_s != b->affinity_s
        || a->external_local != b->external_local
        || a->hc_node_port != b->hc_node_port
        || !tbl_check_equal(&a->check, &b->check)
        || a->redirect != b->redirect
        || a->nsource_ranges != b->nsource_ranges)
        return 0;
    if (ksvc_share(a, b))
        return 1;
    for (i = 0; i < a->nsource_ranges; i++)
        if (a->source_ranges[i].prefix != b->source_ranges[i].prefix
            || saddr_cmp(&a->source_ranges[i].ip, &b->source_ranges[i].ip)
                   != 0)
            return 0;
    return tbl_saddrs_equal(a->cluster_ips, a->ncluster_ips, b->cluster_ips,
                        b->ncluster_ips)
           && tbl_saddrs_equal(a->external_ips, a->nexternal_ips,
                           b->external_ips, b->nexternal_ips)
           && tbl_saddrs_equal(a->lb_ips, a->nlb_ips, b->lb_ips, b->nlb_ips)
           && backends_equal(a->cluster_eps, a->ncluster_eps, b->cluster_eps,
                             b->ncluster_eps)
           && backends_equal(a->local_eps, a->nlocal_eps, b->local_eps,
                             b->nlocal_eps)
           && excluded_equal(a->cluster_excluded, a->ncluster_excluded,
                             b->cluster_excluded, b->ncluster_excluded)
           && excluded_equal(a->local_excluded, a->nlocal_excluded,
                             b->local_excluded, b->nlocal_excluded);
}

/* Every field of a service but its frontend and backend lists: a policy
 * field added to struct tbl_service goes here, and so reaches both
 * tbl_service_equal() and the data plane's svc_matches(). */
int
tbl_service_policy_equal(const struct tbl_service *a,
                         const struct tbl_service *b)
{
    /* The origin changes no balancing, but a runtime service kept across
     * tables keeps its spec, and /metrics reads the origin from it. */
    return names_equal(a->name, b->name) && a->origin == b->origin
           && a->balance == b->balance
           && a->connect_timeout_ms == b->connect_timeout_ms
           && a->idle_timeout_ms == b->idle_timeout_ms
           && a->retries == b->retries && a->max_conns == b->max_conns
           && a->affinity_timeout_ms == b->affinity_timeout_ms
           && a->drain_timeout_ms == b->drain_timeout_ms
           && a->send_proxy == b->send_proxy
           && a->accept_proxy == b->accept_proxy
           && a->accept_proxy_timeout_ms == b->accept_proxy_timeout_ms
           && tbl_cidrs_equal(a->allow, a->nallow, b->allow, b->nallow)
           && tbl_cidrs_equal(a->deny, a->ndeny, b->deny, b->ndeny)
           && a->max_conns_per_source == b->max_conns_per_source
           && a->conn_rate_per_source == b->conn_rate_per_source
           && tbl_check_equal(&a->check, &b->check)
           && a->hc_node_port == b->hc_node_port && a->reach == b->reach
           && a->proto == b->proto
           && a->udp_idle_timeout_ms == b->udp_idle_timeout_ms
           && a->udp_responses == b->udp_responses
           && a->max_flows == b->max_flows;
}

int
tbl_cidrs_equal(const struct cidr *a, size_t na, const struct cidr *b,
                size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (a[i].prefix != b[i].prefix || saddr_cmp(&a[i].ip, &b[i].ip) != 0)
            return 0;
    return 1;
}

int
tbl_backend_equal(const struct tbl_backend *a, const struct tbl_backend *b)
{
    return saddr_cmp(&a->addr, &b->addr) == 0 && a->weight == b->weight
           && a->flags == b->flags && strcmp(a->name, b->name) == 0;
}

int
tbl_service_equal(const struct tbl_service *a, const struct tbl_service *b)
{
    size_t i;

    if (a->nfrontends != b->nfrontends || a->nbackends != b->nbackends
        || !tbl_service_policy_equal(a, b))
        return 0;
    if (svc_share(a, b))
        return 1;
    for (i = 0; i < a->nfrontends; i++)
        if (saddr_cmp(&a->frontends[i], &b->frontends[i]) != 0)
            return 0;
    if (a->nsni != b->nsni)
        return 0;
    for (i = 0; i < a->nsni; i++)
        if (strcmp(a->sni[i].name, b->sni[i].name) != 0)
            return 0;
    for (i = 0; i < a->nbackends; i++)
        if (!tbl_backend_equal(&a->backends[i], &b->backends[i]))
            return 0;
    return excluded_equal(a->excluded, a->nexcluded, b->excluded,
                          b->nexcluded);
}

const char *const tbl_excl_text[TBL_EXCL__COUNT] = {
    [TBL_EXCL_NOT_READY] = "not ready",
    [TBL_EXCL_TERMINATING] = "terminating while ready endpoints exist",
    [TBL_EXCL_OTHER_NODE] = "on another node, under a Local traffic policy",
    [TBL_EXCL_TOPOLOGY] = "topology hints name another zone or node",
};

int
tbl_check_equal(const struct tbl_check *a, const struct tbl_check *b)
{
    if (a->type != b->type)
        return 0;
    if (a->type == TBL_CHECK_NONE)
        return 1;
    return a->interval_ms == b->interval_ms && a->timeout_ms == b->timeout_ms
           && a->rise == b->rise && a->fall == b->fall && a->port == b->port
           && a->status_min == b->status_min && a->status_max == b->status_max
           && names_equal(a->path, b->path);
}
