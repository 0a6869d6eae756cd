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

    health_apply(c->health, proxy_svcs(p), proxy_nsvcs(p));
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
