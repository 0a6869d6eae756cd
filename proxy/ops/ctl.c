#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "ctl.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "stats.h"

static void
ctl_on_applied(struct proxy *p, void *arg)
{
    struct ctl *c = arg;
    const struct table *t = proxy_table(p);
    struct svc **v;
    size_t i;

    /* No service had a check, and none of those changed has one: the
     * checks stay as they are (a Kubernetes node applies a table per
     * change, and this would look at every service of the cluster). */
    if (proxy_applied_delta(p) && health_svcs_checked(c->health) == 0) {
        for (i = 0; i < t->ndsvcs; i++)
            if (table_service(t, t->dsvcs[i])->check.type != TBL_CHECK_NONE)
                break;
        if (i == t->ndsvcs)
            goto checked;
    }
    if ((v = proxy_svcs_flat(p)) == NULL)
        log_error("health: out of memory: checks not updated");
    else
        health_apply(c->health, v, proxy_nsvcs(p));
    free(v);
checked:
    admin_on_applied(c->admin);
    if (proxy_table(p) != NULL)
        stats_set_generation(proxy_table(p)->generation);
}

int
ctl_init(struct ctl *c, struct ev_loop *loop, struct proxy *p)
{
    memset(c, 0, sizeof(*c));
    c->p = p;
    c->health = health_new(loop);
    c->admin = c->health ? admin_new(loop, p, c->health) : NULL;
    if (c->admin == NULL) {
        health_free(c->health);
        c->health = NULL;
        return -1;
    }
    proxy_on_applied(p, ctl_on_applied, c);
    return 0;
}

void
ctl_configure(struct ctl *c, const struct conf *conf)
{
    char msg[ERR_STR_MAX];
    struct err e;

    err_clear(&e);
    proxy_set_relay(c->p, &conf->relay);
    admin_set_metrics(c->admin, &conf->metrics);
    if (admin_configure(c->admin, &conf->admin, &e) < 0)
        log_error("%s; continuing without the admin server",
                  err_str(&e, msg, sizeof(msg)));
}

void
ctl_deinit(struct ctl *c)
{
    if (c->p != NULL)
        proxy_on_applied(c->p, NULL, NULL);
    admin_free(c->admin);
    health_free(c->health);
    memset(c, 0, sizeof(*c));
}
