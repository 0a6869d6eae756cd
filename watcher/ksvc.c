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
    const json_t *md, *labels, *ann, *spec, *ingress;
    const json_t *cluster_ips, *external_ips, *source_ranges, *ports;
};

static size_t
chars_of(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static void
src_init(struct src *j, const json_t *obj)
{
    j->md = json_object_get(obj, "metadata");
    j->labels = json_object_get(j->md, "labels");
    j->ann = json_object_get(j->md, "annotations");
    j->spec = json_object_get(obj, "spec");
    j->ingress = json_object_get(
        json_object_get(json_object_get(obj, "status"), "loadBalancer"),
        "ingress");
    j->cluster_ips = json_object_get(j->spec, "clusterIPs");
    j->external_ips = json_object_get(j->spec, "externalIPs");
    j->source_ranges = json_object_get(j->spec, "loadBalancerSourceRanges");
    j->ports = json_object_get(j->spec, "ports");
}

static size_t
strs_chars(const json_t *a)
{
    const json_t *v;
    size_t i, n = 0;

    json_array_foreach(a, i, v)
    {
        n += chars_of(json_string_value(v));
    }
    return n;
}

static void
plan_svc(const struct src *j, struct plan *p)
{
    const json_t *v;
    size_t i;

    memset(p, 0, sizeof(*p));
    p->nstrs = json_array_size(j->cluster_ips)
               + json_array_size(j->external_ips)
               + json_array_size(j->source_ranges);
    p->ningress = json_array_size(j->ingress);
    p->nports = json_array_size(j->ports);
    p->chars = chars_of(jstr(j->md, "name"))
               + chars_of(jstr(j->spec, "clusterIP"))
               + chars_of(jstr(j->labels, TRANSLATE_LABEL_PROXY_NAME))
               + strs_chars(j->cluster_ips) + strs_chars(j->external_ips)
               + strs_chars(j->source_ranges);
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        p->chars += chars_of(jstr(j->ann, ksvc_ann_names[i]));
    json_array_foreach(j->ingress, i, v)
    {
        p->chars += chars_of(jstr(v, "ip"));
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
fill_strs(struct ksvc_strs *out, const json_t *a, const char **v, char **c)
{
    const json_t *e;
    size_t i;

    out->v = v;
    out->n = json_array_size(a);
    json_array_foreach(a, i, e)
    {
        v[i] = put_chars(c, json_string_value(e));
    }
}

static void
fill_port(struct ksvc_port *p, const json_t *sp, int *oom)
{
    const json_t *v = json_object_get(sp, "protocol");
    const char *name = jstr(sp, "name");
    const char *proto;

    if (v == NULL || json_is_null(v))
        proto = "TCP";
    else
        proto = json_is_string(v) ? json_string_value(v) : "";
    p->name = intern_str_oom(name != NULL ? name : "", oom);
    p->proto = intern_str_oom(proto, oom);
    v = json_object_get(sp, "port");
    p->port_is_int = json_is_integer(v);
    p->port = json_integer_value(v);
    v = json_object_get(sp, "nodePort");
    p->has_node_port = v != NULL && !json_is_null(v);
    p->node_port = json_integer_value(v);
}

/* The fields of spec that are single values. */
static void
fill_spec(struct ksvc *s, const struct src *j)
{
    const json_t *sp = j->spec;
    const char *type = jstr(sp, "type");

    s->has_spec = json_is_object(sp);
    s->type = str_eq(type, "ExternalName")   ? KSVC_TYPE_EXTERNAL_NAME
              : str_eq(type, "LoadBalancer") ? KSVC_TYPE_LOAD_BALANCER
                                             : KSVC_TYPE_OTHER;
    s->itp_local = str_eq(jstr(sp, "internalTrafficPolicy"), "Local");
    s->etp_local = str_eq(jstr(sp, "externalTrafficPolicy"), "Local");
    s->client_ip = str_eq(jstr(sp, "sessionAffinity"), "ClientIP");
    s->affinity_timeout = json_integer_value(json_object_get(
        json_object_get(json_object_get(sp, "sessionAffinityConfig"),
                        "clientIP"),
        "timeoutSeconds"));
    s->hc_node_port =
        json_integer_value(json_object_get(sp, "healthCheckNodePort"));
    s->headless = jstr(j->labels, TRANSLATE_LABEL_HEADLESS) != NULL;
    s->ports_ok =
        j->ports == NULL || json_is_array(j->ports) || json_is_null(j->ports);
}

struct ksvc *
ksvc_decode(const json_t *obj)
{
    struct src j;
    struct plan p;
    struct ksvc *s;
    struct ksvc_ingress *ing;
    struct ksvc_port *ports;
    const char **strs;
    const json_t *v;
    char *block, *chars;
    size_t strs_sz, ing_sz, ports_sz, i;
    int oom = 0;

    src_init(&j, obj);
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
    s->ns = intern_str_oom(jstr(j.md, "namespace"), &oom);
    s->name = put_chars(&chars, jstr(j.md, "name"));
    if (s->name == NULL)
        s->name = ""; /* kcache refuses such objects */
    fill_spec(s, &j);
    s->cluster_ip = put_chars(&chars, jstr(j.spec, "clusterIP"));
    s->proxy_name =
        put_chars(&chars, jstr(j.labels, TRANSLATE_LABEL_PROXY_NAME));
    for (i = 0; i < KSVC_ANN__COUNT; i++)
        s->ann[i] = put_chars(&chars, jstr(j.ann, ksvc_ann_names[i]));
    fill_strs(&s->cluster_ips, j.cluster_ips, strs, &chars);
    strs += s->cluster_ips.n;
    fill_strs(&s->external_ips, j.external_ips, strs, &chars);
    strs += s->external_ips.n;
    fill_strs(&s->source_ranges, j.source_ranges, strs, &chars);
    json_array_foreach(j.ingress, i, v)
    {
        const json_t *ip = json_object_get(v, "ip");
        ing[i].has_ip = ip != NULL;
        ing[i].ip = put_chars(&chars, json_string_value(ip));
        ing[i].proxy = str_eq(jstr(v, "ipMode"), "Proxy");
    }
    s->ingress = ing;
    s->ningress = p.ningress;
    for (i = 0; i < p.nports; i++)
        fill_port(&ports[i], json_array_get(j.ports, i), &oom);
    s->ports = ports;
    s->nports = p.nports;
    if (oom) {
        ksvc_free(s);
        return NULL;
    }
    return s;
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
