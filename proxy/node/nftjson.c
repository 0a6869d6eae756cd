#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "nftjson.h"

static int
only_keys(json_t *o, const char *const *keys, const char *where, struct err *e)
{
    const char *k;
    json_t *v;

    json_object_foreach(o, k, v)
    {
        size_t i;

        for (i = 0; keys[i]; i++)
            if (strcmp(k, keys[i]) == 0)
                break;
        if (keys[i] == NULL)
            return err_set(e, "%s: unknown key \"%.64s\"", where, k);
    }
    return 0;
}

static int
get_uint(json_t *o, const char *key, uint64_t max, uint64_t *out,
         const char *where, struct err *e)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0
        || (uint64_t)json_integer_value(v) > max)
        return err_set(e, "%s: \"%s\" must be an integer 0..%llu", where, key,
                       (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* The array under <key> into <out> (NULL when absent), at most <max>
 * items. Returns 0 or -1 with <e>. */
static int
get_array(json_t *o, const char *key, size_t max, json_t **out,
          const char *where, struct err *e)
{
    json_t *v = json_object_get(o, key);

    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_array(v))
        return err_set(e, "%s: \"%s\" must be an array", where, key);
    if (json_array_size(v) > max)
        return err_set(e, "%s: \"%s\" has %zu items, at most %zu", where, key,
                       json_array_size(v), max);
    *out = v;
    return 0;
}

static int
ips(json_t *o, const char *key, struct saddr **out, size_t *n,
    const char *where, struct err *e)
{
    json_t *a, *it;
    size_t i;

    *out = NULL;
    *n = 0;
    if (get_array(o, key, NFT_IPS_MAX, &a, where, e) < 0)
        return -1;
    if (a == NULL)
        return 0;
    *out = calloc(json_array_size(a) + 1, sizeof(**out));
    if (*out == NULL)
        return err_set(e, "out of memory");
    json_array_foreach(a, i, it)
    {
        const char *why;

        if (!json_is_string(it)
            || parse_ip(json_string_value(it), 0, &(*out)[i], &why) < 0)
            return err_set(e, "%s: \"%s\"[%zu] is not an IP address", where,
                           key, i);
        (*n)++;
    }
    return 0;
}

static int
cidrs(json_t *o, const char *key, size_t max, struct cidr *out, size_t *n,
      const char *where, struct err *e)
{
    json_t *a, *it;
    size_t i;

    *n = 0;
    if (get_array(o, key, max, &a, where, e) < 0)
        return -1;
    if (a == NULL)
        return 0;
    json_array_foreach(a, i, it)
    {
        const char *why = "not a string";

        if (!json_is_string(it)
            || nft_cidr_parse(json_string_value(it), &out[i], &why) < 0)
            return err_set(e, "%s: \"%s\"[%zu]: %s", where, key, i, why);
        (*n)++;
    }
    return 0;
}

static int
endpoints(json_t *o, const char *key, struct nft_ep **out, size_t *n,
          const char *where, struct err *e)
{
    static const char *const keys[] = {"ip", "port", "weight", "remote",
                                       NULL};
    json_t *a, *it;
    size_t i;

    *out = NULL;
    *n = 0;
    if (get_array(o, key, NFT_EPS_MAX, &a, where, e) < 0)
        return -1;
    if (a == NULL)
        return 0;
    *out = calloc(json_array_size(a) + 1, sizeof(**out));
    if (*out == NULL)
        return err_set(e, "out of memory");
    json_array_foreach(a, i, it)
    {
        json_t *ip = json_object_get(it, "ip");
        json_t *remote = json_object_get(it, "remote");
        uint64_t port = 0, weight = 1;
        const char *why;

        if (!json_is_object(it) || only_keys(it, keys, where, e) < 0)
            return err_set(e,
                           "%s: \"%s\"[%zu] must be an object with ip, "
                           "port, weight and remote",
                           where, key, i);
        if (remote != NULL && !json_is_boolean(remote))
            return err_set(e, "%s: \"%s\"[%zu]: \"remote\" must be true or "
                              "false",
                           where, key, i);
        (*out)[i].remote = remote != NULL && json_is_true(remote);
        if (get_uint(it, "port", 65535, &port, where, e) < 0
            || get_uint(it, "weight", NFT_WEIGHT_MAX, &weight, where, e) < 0)
            return -1;
        if (!json_is_string(ip) || port == 0
            || parse_ip(json_string_value(ip), (uint16_t)port, &(*out)[i].addr,
                        &why)
                   < 0)
            return err_set(e, "%s: \"%s\"[%zu] needs an IP and a port", where,
                           key, i);
        (*out)[i].weight = (uint32_t)weight;
        (*n)++;
    }
    return 0;
}

static void
svc_fields_free(struct nft_svc *s)
{
    free((char *)s->id);
    free(s->cluster_ips);
    free(s->external_ips);
    free(s->lb_ips);
    free(s->source_ranges);
    free(s->cluster_eps);
    free(s->local_eps);
}

static int
service(json_t *o, size_t idx, struct nft_svc *s, struct err *e)
{
    static const char *const keys[] = {"id",
                                       "protocol",
                                       "port",
                                       "node_port",
                                       "cluster_ips",
                                       "external_ips",
                                       "lb_ips",
                                       "source_ranges",
                                       "affinity_timeout",
                                       "external_traffic_policy",
                                       "cluster_endpoints",
                                       "local_endpoints",
                                       "redirect_port",
                                       NULL};
    char where[NFT_ID_MAX + 48];
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *proto = json_string_value(json_object_get(o, "protocol"));
    const char *etp = NULL;
    json_t *v;
    uint64_t port = 0, np = 0, aff = 0, rp = 0;

    memset(s, 0, sizeof(*s));
    if (!json_is_object(o))
        return err_set(e, "services[%zu]: not an object", idx);
    if (id == NULL || strlen(id) >= NFT_ID_MAX)
        return err_set(e,
                       "services[%zu]: \"id\" must be a string under %d "
                       "bytes",
                       idx, NFT_ID_MAX);
    snprintf(where, sizeof(where), "services[%zu] (%.*s)", idx, NFT_ID_MAX - 1,
             id);
    if ((s->id = strdup(id)) == NULL)
        return err_set(e, "%s: out of memory", where);
    if (only_keys(o, keys, where, e) < 0)
        return -1;
    if (proto == NULL || nft_proto_parse(proto, &s->proto) < 0)
        return err_set(e, "%s: \"protocol\" must be tcp, udp or sctp", where);
    if (get_uint(o, "port", 65535, &port, where, e) < 0
        || get_uint(o, "node_port", 65535, &np, where, e) < 0
        || get_uint(o, "affinity_timeout", NFT_AFFINITY_MAX_S, &aff, where, e)
               < 0
        || get_uint(o, "redirect_port", 65535, &rp, where, e) < 0)
        return -1;
    s->redirect_port = (uint16_t)rp;
    s->port = (uint16_t)port;
    s->node_port = (uint16_t)np;
    s->affinity_s = (uint32_t)aff;
    v = json_object_get(o, "external_traffic_policy");
    if (v != NULL) {
        etp = json_string_value(v);
        if (etp == NULL
            || (strcmp(etp, "Local") != 0 && strcmp(etp, "Cluster") != 0))
            return err_set(e,
                           "%s: \"external_traffic_policy\" must be "
                           "Cluster or Local",
                           where);
        s->external_local = strcmp(etp, "Local") == 0;
    }
    s->source_ranges = calloc(NFT_RANGES_MAX, sizeof(*s->source_ranges));
    if (s->source_ranges == NULL)
        return err_set(e, "out of memory");
    if (ips(o, "cluster_ips", &s->cluster_ips, &s->ncluster_ips, where, e) < 0
        || ips(o, "external_ips", &s->external_ips, &s->nexternal_ips, where, e)
               < 0
        || ips(o, "lb_ips", &s->lb_ips, &s->nlb_ips, where, e) < 0
        || cidrs(o, "source_ranges", NFT_RANGES_MAX, s->source_ranges,
                 &s->nsource_ranges, where, e)
               < 0
        || endpoints(o, "cluster_endpoints", &s->cluster_eps, &s->ncluster_eps,
                     where, e)
               < 0
        || endpoints(o, "local_endpoints", &s->local_eps, &s->nlocal_eps, where,
                     e)
               < 0)
        return -1;
    return nft_svc_check(s, e);
}

static int
config(json_t *o, struct nft_conf *c, struct err *e)
{
    static const char *const keys[] = {"masquerade",         "cluster_cidrs",
                                       "nodeport_addresses", "masquerade_mark",
                                       "service_cidrs",      "own_chains",
                                       NULL};
    json_t *own;
    const char *m;
    struct saddr *np = NULL;
    uint64_t mark = 0;
    size_t n = 0;

    memset(c, 0, sizeof(*c));
    if (!json_is_object(o))
        return err_set(e, "config: not an object");
    if (only_keys(o, keys, "config", e) < 0)
        return -1;
    m = json_string_value(json_object_get(o, "masquerade"));
    if (json_object_get(o, "masquerade") != NULL) {
        if (m != NULL && strcmp(m, "cidr") == 0)
            c->masq = NFT_MASQ_CIDR;
        else if (m != NULL && strcmp(m, "all") == 0)
            c->masq = NFT_MASQ_ALL;
        else if (m != NULL && strcmp(m, "none") == 0)
            c->masq = NFT_MASQ_NONE;
        else
            return err_set(e, "config: \"masquerade\" must be cidr, all or "
                              "none");
    }
    if (get_uint(o, "masquerade_mark", UINT32_MAX, &mark, "config", e) < 0)
        return -1;
    c->masq_mark = (uint32_t)mark;
    own = json_object_get(o, "own_chains");
    if (own != NULL && !json_is_boolean(own))
        return err_set(e, "config: \"own_chains\" must be true or false");
    c->own_chains = own != NULL && json_is_true(own);
    if (cidrs(o, "cluster_cidrs", NFT_CIDRS_MAX, c->cluster_cidrs,
              &c->ncluster_cidrs, "config", e)
        < 0)
        return -1;
    if (cidrs(o, "service_cidrs", NFT_CIDRS_MAX, c->service_cidrs,
              &c->nservice_cidrs, "config", e)
        < 0)
        return -1;
    if (ips(o, "nodeport_addresses", &np, &n, "config", e) < 0) {
        free(np);
        return -1;
    }
    if (n)
        memcpy(c->nodeport_addrs, np, n * sizeof(*np));
    c->nnodeport_addrs = n;
    free(np);
    return nft_conf_check(c, e);
}

void
nftjson_free(struct nftjson_doc *d)
{
    size_t i;

    for (i = 0; i < d->nsvcs; i++)
        svc_fields_free(&d->svcs[i]);
    free(d->svcs);
    memset(d, 0, sizeof(*d));
}

int
nftjson_parse(const char *buf, size_t len, struct nftjson_doc *out,
              struct err *e)
{
    static const char *const keys[] = {"config", "services", NULL};
    json_error_t je;
    json_t *root, *svcs, *it;
    size_t i;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (len > NFTJSON_MAX_BYTES)
        return err_set(e, "description over %zu bytes", NFTJSON_MAX_BYTES);
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL)
        return err_set_at(e, je.line, je.column, "not JSON: %s", je.text);
    if (!json_is_object(root) || only_keys(root, keys, "top level", e) < 0) {
        json_decref(root);
        return err_set(e, "top level: must be an object with \"config\" "
                          "and \"services\"");
    }
    if (json_object_get(root, "config") != NULL) {
        out->has_conf = 1;
        rc = config(json_object_get(root, "config"), &out->conf, e);
    }
    svcs = json_object_get(root, "services");
    if (rc == 0 && svcs != NULL && !json_is_array(svcs))
        rc = err_set(e, "\"services\" must be an array");
    else if (rc == 0 && json_array_size(svcs) > NFT_SVCS_MAX)
        rc = err_set(e, "\"services\": more than %d", NFT_SVCS_MAX);
    if (rc == 0 && svcs != NULL && json_array_size(svcs) > 0) {
        out->svcs = calloc(json_array_size(svcs), sizeof(*out->svcs));
        if (out->svcs == NULL)
            rc = err_set(e, "out of memory");
        json_array_foreach(svcs, i, it)
        {
            if (rc < 0)
                break;
            rc = service(it, i, &out->svcs[i], e);
            out->nsvcs = i + 1; /* freed whole, even half filled */
        }
    }
    json_decref(root);
    if (rc < 0)
        nftjson_free(out);
    return rc;
}
