/*
 * ksvc.h - a Service decoded once, as the translator reads it.
 *
 * The cache keeps Services in this form instead of their JSON: only the
 * fields translation reads, each as translate.c took it from the JSON
 * (a string that is not one is NULL, a number that is not one reads 0),
 * so that every skip note and every result stays what it was; the
 * namespace and the port names and protocols interned (intern.h), the
 * rest in one block. Labels and annotations other than the few ferry and
 * kube-proxy read are dropped (kubectl's last-applied-configuration, a
 * copy of the whole object, among them), as are managedFields, the
 * selector and the rest of the status.
 */
#ifndef WATCHER_KSVC_H
#define WATCHER_KSVC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "jdoc.h"

/* spec.type, as far as translation tells types apart. */
#define KSVC_TYPE_OTHER         0
#define KSVC_TYPE_EXTERNAL_NAME 1
#define KSVC_TYPE_LOAD_BALANCER 2

/* The ferry.dev/ annotations translation reads (translate.h). */
enum ksvc_ann {
    KSVC_ANN_DATAPLANE = 0,
    KSVC_ANN_BALANCE,
    KSVC_ANN_RETRIES,
    KSVC_ANN_HEALTH_CHECK,
    KSVC_ANN_SEND_PROXY,
    KSVC_ANN_DRAIN_TIMEOUT,
    KSVC_ANN__COUNT,
};

/* Annotation names, by enum ksvc_ann. */
extern const char *const ksvc_ann_names[KSVC_ANN__COUNT];

struct ksvc_port {
    const char *name;      /* interned; "" when absent or not a string */
    const char *proto;     /* interned; "TCP" when absent or null, "" when
                            * not a string */
    int64_t port;          /* the number, 0 when not an integer */
    int64_t node_port;     /* the number, 0 when not an integer */
    uint8_t port_is_int;   /* "port" is an integer */
    uint8_t has_node_port; /* "nodePort" present and not null */
};

/* One entry of status.loadBalancer.ingress. */
struct ksvc_ingress {
    const char *ip; /* NULL: missing or not a string */
    uint8_t has_ip; /* "ip" present (of any JSON type) */
    uint8_t proxy;  /* ipMode "Proxy" */
};

/* A list of strings from the JSON: n is the array's size (0 when not an
 * array); an entry that is not a string is NULL. */
struct ksvc_strs {
    const char *const *v;
    size_t n;
};

struct ksvc {
    const char *ns; /* interned */
    const char *name;
    /* Unique to this decoding, as kslice.stamp: the translator's memo
     * keys on it. */
    uint64_t stamp;
    uint8_t has_spec;  /* spec is a JSON object */
    uint8_t type;      /* KSVC_TYPE_* */
    uint8_t itp_local; /* internalTrafficPolicy "Local" */
    uint8_t etp_local; /* externalTrafficPolicy "Local" */
    uint8_t client_ip; /* sessionAffinity "ClientIP" */
    uint8_t headless;  /* the headless label is set (a string) */
    uint8_t ports_ok;  /* spec.ports is a list, null or absent */
    /* sessionAffinityConfig.clientIP.timeoutSeconds and
     * healthCheckNodePort, 0 when not integers */
    int64_t affinity_timeout;
    int64_t hc_node_port;
    const char *cluster_ip; /* spec.clusterIP, NULL when not a string */
    struct ksvc_strs cluster_ips, external_ips, source_ranges;
    const struct ksvc_ingress *ingress;
    size_t ningress;
    const struct ksvc_port *ports;
    size_t nports;
    const char *proxy_name;           /* service-proxy-name label, or NULL */
    const char *ann[KSVC_ANN__COUNT]; /* NULL: absent or not a string */
};

/* Decode value <obj> of <d>, a Service whose metadata.namespace and
 * name are non-empty strings (kcache checked them). Returns a new
 * Service, or NULL when memory runs out. */
struct ksvc *ksvc_decode_doc(const struct jdoc *d, int obj);

/* The same from jansson's form (tests): written out and parsed again. */
struct ksvc *ksvc_decode(const json_t *obj);
void ksvc_free(struct ksvc *s);

/* Nonzero when <a> and <b> would translate the same. */
int ksvc_equal(const struct ksvc *a, const struct ksvc *b);

/* Bytes held by <s> (its block; interned strings not counted). */
size_t ksvc_bytes(const struct ksvc *s);

#endif
