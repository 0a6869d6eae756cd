#include <string.h>

#include "admin.h"
#include "ctl.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "stats.h"
#include "proxy.h"

static void
ctl_on_applied(struct proxy *p, void *arg)
{
    struct ctl *c = arg;

    health_apply(c->health, p->svcs, p->nsvcs);
    admin_on_applied(c->admin);
    if (p->table != NULL)
        stats_set_generation(p->table->generation);
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
    p->on_applied = ctl_on_applied;
    p->on_applied_arg = c;
    return 0;
}

void
ctl_configure(struct ctl *c, const struct conf *conf)
{
    char msg[512];
    struct err e;

    err_clear(&e);
    worker_set_splice(&c->p->w,
                      conf->relay.splice == CONF_SPLICE_ALWAYS ? WORKER_SPLICE_ALWAYS
                      : conf->relay.splice == CONF_SPLICE_NEVER
                          ? WORKER_SPLICE_NEVER
                          : WORKER_SPLICE_AUTO,
                      conf->relay.pipe_budget);
    if (admin_configure(c->admin, &conf->admin, &e) < 0)
        log_error("%s; continuing without the admin server",
                  err_str(&e, msg, sizeof(msg)));
}

void
ctl_deinit(struct ctl *c)
{
    if (c->p != NULL && c->p->on_applied == ctl_on_applied) {
        c->p->on_applied = NULL;
        c->p->on_applied_arg = NULL;
    }
    admin_free(c->admin);
    health_free(c->health);
    memset(c, 0, sizeof(*c));
}
