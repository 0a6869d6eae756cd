#include "ksvc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "intern.h"
#include "jget.h"
#include "translate.h"

const char *const ksvc_ann_names[KSVC_ANN__COUNT] = {
    [KSVC_ANN_DATAPLANE] = TRANSLATE_ANN_DATAPLANE,
    [KSVC_ANN_BALANCE] = TRANSLATE_ANN_BALANCE,
    [KSVC_ANN_RETRIES] = TRANSLATE_ANN_RETRIES,
    [KSVC_ANN_HEALTH_CHECK] = TRANSLATE_ANN_HEALTH_CHECK,
    [KSVC_ANN_SEND_PROXY] = TRANSLATE_ANN_SEND_PROXY,
    [KSVC_ANN_DRAIN_TIMEOUT] = TRANSLATE_ANN_DRAIN_TIMEOUT,
};

/* The last stamp given (struct ksvc). */
static atomic_uint_fast64_t stamps;

/* Every array of the block starts aligned for pointers. */
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

/* What a Service's block holds, found before it is filled: the arrays,
 * then the characters of its strings. */
struct plan {
    size_t nstrs, ningress, nports, chars;
};

/* The fields of the Service object that are read. */
struct src {
    const struct jdoc *d;
    int md, labels, ann, spec, ingress;
    int cluster_ips, external_ips, source_ranges, ports;
};

static size_t
chars_of(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static void
src_init(struct src *j, const struct jdoc *d, int obj)
{
    j->d = d;
    j->md = jdoc_get(d, obj, "metadata");
    j->labels = jdoc_get(d, j->md, "labels");
    j->ann = jdoc_get(d, j->md, "annotations");
    j->spec = jdoc_get(d, obj, "spec");
    j->ingress = jdoc_get(
        d, jdoc_get(d, jdoc_get(d, obj, "status"), "loadBalancer"),
        "ingress");
    j->cluster_ips = jdoc_get(d, j->spec, "clusterIPs");
    j->external_ips = jdoc_get(d, j->spec, "externalIPs");
    j->source_ranges = jdoc_get(d, j->spec, "loadBalancerSourceRanges");
    j->ports = jdoc_get(d, j->spec, "ports");
}

static size_t
strs_chars(const struct jdoc *d, int a)
{
    size_t n = 0;
    int v;

    jdoc_foreach(d, a, v)
    {
        n += chars_of(jdoc_str(d, v));
    }
    return n;
}

static void
plan_svc(const struct src *j, struct plan *p)
{
    const struct jdoc *d = j->d;
    size_t i;
    int v;

    memset(p, 0, sizeof(*p));
    p->nstrs = jdoc_size(d, j->cluster_ips) + jdoc_size(d, j->external_ips)
               + jdoc_size(d, j->source_ranges);
    p->ningress = jdoc_size(d, j->ingress);
    p->nports = jdoc_size(d, j->ports);
    p->chars = chars_of(jdoc_gets(d, j->md, "name"))
               + chars_of(jdoc_gets(d, j->spec, "clusterIP"))
               + chars_of(jdoc_gets(d, j->labels, TRANSLATE_LABEL_PROXY_NAME))
               + strs_chars(d, j->cluster_ips) + strs_chars(d, j->external_ips)
               + strs_chars(d, j->source_ranges);
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        p->chars += chars_of(jdoc_gets(d, j->ann, ksvc_ann_names[i]));
    jdoc_foreach(d, j->ingress, v)
    {
        p->chars += chars_of(jdoc_gets(d, v, "ip"));
    }
}

/* Copy <s> (or NULL) into the block's characters at *<c>. */
static const char *
put_chars(char **c, const char *s)
{
    size_t n;
    char *out = *c;

    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    memcpy(out, s, n);
    *c += n;
    return out;
}

/* The strings of array <a> into <out> (room for them), from *<v>. */
static void
fill_strs(struct ksvc_strs *out, const struct jdoc *d, int a, const char **v,
          char **c)
{
    size_t i = 0;
    int e;

    out->v = v;
    out->n = jdoc_size(d, a);
    jdoc_foreach(d, a, e)
    {
        v[i++] = put_chars(c, jdoc_str(d, e));
    }
}

static void
fill_port(struct ksvc_port *p, const struct jdoc *d, int sp, int *oom)
{
    int v = jdoc_get(d, sp, "protocol");
    const char *name = jdoc_gets(d, sp, "name");
    const char *proto;

    if (v < 0 || jdoc_type(d, v) == JD_NULL)
        proto = "TCP";
    else
        proto = jdoc_str(d, v) != NULL ? jdoc_str(d, v) : "";
    p->name = intern_str_oom(name != NULL ? name : "", oom);
    p->proto = intern_str_oom(proto, oom);
    v = jdoc_get(d, sp, "port");
    p->port_is_int = jdoc_type(d, v) == JD_INT;
    p->port = jdoc_int(d, v);
    v = jdoc_get(d, sp, "nodePort");
    p->has_node_port = v >= 0 && jdoc_type(d, v) != JD_NULL;
    p->node_port = jdoc_int(d, v);
}

/* The fields of spec that are single values. */
static void
fill_spec(struct ksvc *s, const struct src *j)
{
    const struct jdoc *d = j->d;
    int sp = j->spec;
    const char *type = jdoc_gets(d, sp, "type");

    s->has_spec = jdoc_type(d, sp) == JD_OBJ;
    s->type = str_eq(type, "ExternalName")   ? KSVC_TYPE_EXTERNAL_NAME
              : str_eq(type, "LoadBalancer") ? KSVC_TYPE_LOAD_BALANCER
                                             : KSVC_TYPE_OTHER;
    s->itp_local = str_eq(jdoc_gets(d, sp, "internalTrafficPolicy"), "Local");
    s->etp_local = str_eq(jdoc_gets(d, sp, "externalTrafficPolicy"), "Local");
    s->client_ip = str_eq(jdoc_gets(d, sp, "sessionAffinity"), "ClientIP");
    s->affinity_timeout = jdoc_int(
        d, jdoc_get(d,
                    jdoc_get(d, jdoc_get(d, sp, "sessionAffinityConfig"),
                             "clientIP"),
                    "timeoutSeconds"));
    s->hc_node_port = jdoc_int(d, jdoc_get(d, sp, "healthCheckNodePort"));
    s->headless = jdoc_gets(d, j->labels, TRANSLATE_LABEL_HEADLESS) != NULL;
    s->ports_ok = j->ports < 0 || jdoc_type(d, j->ports) == JD_ARR
                  || jdoc_type(d, j->ports) == JD_NULL;
}

struct ksvc *
ksvc_decode_doc(const struct jdoc *d, int obj)
{
    struct src j;
    struct plan p;
    struct ksvc *s;
    struct ksvc_ingress *ing;
    struct ksvc_port *ports;
    const char **strs;
    char *block, *chars;
    size_t strs_sz, ing_sz, ports_sz, i;
    int oom = 0, v;

    src_init(&j, d, obj);
    plan_svc(&j, &p);
    strs_sz = ALIGN8(p.nstrs * sizeof(*strs));
    ing_sz = ALIGN8(p.ningress * sizeof(*ing));
    ports_sz = ALIGN8(p.nports * sizeof(*ports));
    block =
        calloc(1, ALIGN8(sizeof(*s)) + strs_sz + ing_sz + ports_sz + p.chars);
    if (block == NULL)
        return NULL;
    s = (struct ksvc *)(void *)block;
    strs = (const char **)(void *)(block + ALIGN8(sizeof(*s)));
    ing = (struct ksvc_ingress *)(void *)((char *)strs + strs_sz);
    ports = (struct ksvc_port *)(void *)((char *)ing + ing_sz);
    chars = (char *)ports + ports_sz;
    s->stamp = atomic_fetch_add_explicit(&stamps, 1, memory_order_relaxed) + 1;
    s->ns = intern_str_oom(jdoc_gets(d, j.md, "namespace"), &oom);
    s->name = put_chars(&chars, jdoc_gets(d, j.md, "name"));
    if (s->name == NULL)
        s->name = ""; /* kcache refuses such objects */
    fill_spec(s, &j);
    s->cluster_ip = put_chars(&chars, jdoc_gets(d, j.spec, "clusterIP"));
    s->proxy_name =
        put_chars(&chars, jdoc_gets(d, j.labels, TRANSLATE_LABEL_PROXY_NAME));
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        s->ann[i] = put_chars(&chars, jdoc_gets(d, j.ann, ksvc_ann_names[i]));
    fill_strs(&s->cluster_ips, d, j.cluster_ips, strs, &chars);
    strs += s->cluster_ips.n;
    fill_strs(&s->external_ips, d, j.external_ips, strs, &chars);
    strs += s->external_ips.n;
    fill_strs(&s->source_ranges, d, j.source_ranges, strs, &chars);
    i = 0;
    jdoc_foreach(d, j.ingress, v)
    {
        int ip = jdoc_get(d, v, "ip");
        ing[i].has_ip = ip >= 0;
        ing[i].ip = put_chars(&chars, jdoc_str(d, ip));
        ing[i].proxy = str_eq(jdoc_gets(d, v, "ipMode"), "Proxy");
        i++;
    }
    s->ingress = ing;
    s->ningress = p.ningress;
    i = 0;
    jdoc_foreach(d, j.ports, v)
    {
        fill_port(&ports[i++], d, v, &oom);
    }
    s->ports = ports;
    s->nports = p.nports;
    if (oom) {
        ksvc_free(s);
        return NULL;
    }
    return s;
}

static void *
decode_any(const struct jdoc *d, int at)
{
    return ksvc_decode_doc(d, at);
}

struct ksvc *
ksvc_decode(const json_t *obj)
{
    return jdoc_decode_json(obj, decode_any);
}

void
ksvc_free(struct ksvc *s)
{
    size_t i;

    if (s == NULL)
        return;
    intern_put(s->ns);
    for (i = 0; i < s->nports; i++) {
        intern_put(s->ports[i].name);
        intern_put(s->ports[i].proto);
    }
    free(s);
}

size_t
ksvc_bytes(const struct ksvc *s)
{
    size_t n = ALIGN8(sizeof(*s)), i;

    n += ALIGN8((s->cluster_ips.n + s->external_ips.n + s->source_ranges.n)
                * sizeof(char *));
    n += ALIGN8(s->ningress * sizeof(*s->ingress));
    n += ALIGN8(s->nports * sizeof(*s->ports));
    n += chars_of(s->name) + chars_of(s->cluster_ip) + chars_of(s->proxy_name);
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        n += chars_of(s->ann[i]);
    for (i = 0; i < s->cluster_ips.n; i++)
        n += chars_of(s->cluster_ips.v[i]);
    for (i = 0; i < s->external_ips.n; i++)
        n += chars_of(s->external_ips.v[i]);
    for (i = 0; i < s->source_ranges.n; i++)
        n += chars_of(s->source_ranges.v[i]);
    for (i = 0; i < s->ningress; i++)
        n += chars_of(s->ingress[i].ip);
    return n;
}

/* Both NULL, or equal strings. */
static int
opt_eq(const char *a, const char *b)
{
    return a == b || str_eq(a, b);
}

static int
strs_eq(const struct ksvc_strs *a, const struct ksvc_strs *b)
{
    size_t i;

    if (a->n != b->n)
        return 0;
    for (i = 0; i < a->n; i++)
        if (!opt_eq(a->v[i], b->v[i]))
            return 0;
    return 1;
}

static int
port_eq(const struct ksvc_port *a, const struct ksvc_port *b)
{
    return opt_eq(a->name, b->name) && opt_eq(a->proto, b->proto)
           && a->port == b->port && a->node_port == b->node_port
           && a->port_is_int == b->port_is_int
           && a->has_node_port == b->has_node_port;
}

int
ksvc_equal(const struct ksvc *a, const struct ksvc *b)
{
    size_t i;

    if (!opt_eq(a->ns, b->ns) || !opt_eq(a->name, b->name)
        || a->has_spec != b->has_spec || a->type != b->type
        || a->itp_local != b->itp_local || a->etp_local != b->etp_local
        || a->client_ip != b->client_ip || a->headless != b->headless
        || a->ports_ok != b->ports_ok
        || a->affinity_timeout != b->affinity_timeout
        || a->hc_node_port != b->hc_node_port
        || !opt_eq(a->cluster_ip, b->cluster_ip)
        || !opt_eq(a->proxy_name, b->proxy_name)
        || !strs_eq(&a->cluster_ips, &b->cluster_ips)
        || !strs_eq(&a->external_ips, &b->external_ips)
        || !strs_eq(&a->source_ranges, &b->source_ranges)
        || a->ningress != b->ningress || a->nports != b->nports)
        return 0;
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        if (!opt_eq(a->ann[i], b->ann[i]))
            return 0;
    for (i = 0; i < a->ningress; i++)
        if (!opt_eq(a->ingress[i].ip, b->ingress[i].ip)
            || a->ingress[i].has_ip != b->ingress[i].has_ip
            || a->ingress[i].proxy != b->ingress[i].proxy)
            return 0;
    for (i = 0; i < a->nports; i++)
        if (!port_eq(&a->ports[i], &b->ports[i]))
            return 0;
    return 1;
}
