/* Unit tests for address reconciliation (proxy/node/vip.c): the wanted
 * service addresses end up on the interface, those no longer wanted go,
 * an address someone else added is never touched, a new process adopts
 * and trims what an earlier one left, and `ferry cleanup` removes only
 * ferry's. Runs in a network namespace of its own (root; skipped with the
 * reason otherwise), on its loopback interface. */
#include <arpa/inet.h>
#include <ev.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vip.h"

static struct ev_loop *loop;

/* Nonzero when <ip> (a literal) is an address of "lo". */
static int
has_addr(const char *ip)
{
    struct ifaddrs *ifa, *i;
    char buf[INET6_ADDRSTRLEN];
    int found = 0;

    assert_int_equal(getifaddrs(&ifa), 0);
    for (i = ifa; i != NULL && !found; i = i->ifa_next) {
        const void *a;
        if (i->ifa_addr == NULL || strcmp(i->ifa_name, "lo") != 0)
            continue;
        if (i->ifa_addr->sa_family == AF_INET)
            a = &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr;
        else if (i->ifa_addr->sa_family == AF_INET6)
            a = &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(i->ifa_addr->sa_family, a, buf, sizeof(buf)) != NULL
            && strcmp(buf, ip) == 0)
            found = 1;
    }
    freeifaddrs(ifa);
    return found;
}

static struct saddr
ip(const char *s)
{
    struct saddr a;
    const char *why;

    assert_int_equal(parse_ip(s, 0, &a, &why), 0);
    return a;
}

/* Run the loop until <v> reports the kernel in step (bounded). */
static void
wait_sync(struct vip *v)
{
    double end = ev_time() + 10;

    do
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
    while (!vip_in_sync(v) && ev_time() < end && usleep(1000) == 0);
    assert_true(vip_in_sync(v));
}

static int
sh(const char *cmd)
{
    int rc = system(cmd);

    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int
setup(void **state)
{
    (void)state;
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
        return -1;
    loop = ev_loop_new(EVFLAG_AUTO);
    return loop != NULL ? 0 : -1;
}

static void
test_reconcile(void **state)
{
    struct saddr want1[] = {ip("198.18.5.1"), ip("198.18.5.2"),
                            ip("2001:2::5")};
    struct saddr want2[] = {ip("198.18.5.2"), ip("198.18.5.3")};
    struct saddr want3[] = {ip("198.18.5.3")};
    struct err e;
    struct vip *v;

    (void)state;
    err_clear(&e);
    v = vip_new(loop, "lo", &e);
    assert_non_null(v);
    assert_int_equal(vip_set(v, want1, 3), 0);
    wait_sync(v);
    assert_true(has_addr("198.18.5.1"));
    assert_true(has_addr("198.18.5.2"));
    assert_true(has_addr("2001:2::5"));

    /* Someone else's address, on the same interface. */
    assert_int_equal(sh("ip addr add 198.18.5.9/32 dev lo"), 0);
    assert_int_equal(vip_set(v, want2, 2), 0);
    wait_sync(v);
    assert_false(has_addr("198.18.5.1"));
    assert_true(has_addr("198.18.5.2"));
    assert_true(has_addr("198.18.5.3"));
    assert_false(has_addr("2001:2::5"));
    assert_true(has_addr("198.18.5.9"));

    /* A restart: the new process keeps what it still wants, removes
     * what the old one added and nobody wants now. */
    vip_free(v);
    v = vip_new(loop, "lo", &e);
    assert_non_null(v);
    assert_int_equal(vip_set(v, want3, 1), 0);
    wait_sync(v);
    assert_false(has_addr("198.18.5.2"));
    assert_true(has_addr("198.18.5.3"));
    assert_true(has_addr("198.18.5.9"));
    vip_free(v);

    /* ferry cleanup: ferry's addresses only. */
    assert_int_equal(vip_cleanup(&e), 1);
    assert_false(has_addr("198.18.5.3"));
    assert_true(has_addr("198.18.5.9"));
}

/* An address ferry wants that someone else already holds is left as it
 * is, and stays when ferry stops wanting it. */
static void
test_foreign_address_is_never_removed(void **state)
{
    struct saddr want[] = {ip("198.18.6.1")};
    struct err e;
    struct vip *v;

    (void)state;
    assert_int_equal(sh("ip addr add 198.18.6.1/32 dev lo"), 0);
    err_clear(&e);
    v = vip_new(loop, "lo", &e);
    assert_non_null(v);
    assert_int_equal(vip_set(v, want, 1), 0);
    wait_sync(v);
    assert_true(has_addr("198.18.6.1"));
    assert_int_equal(vip_set(v, NULL, 0), 0);
    wait_sync(v);
    assert_true(has_addr("198.18.6.1"));
    vip_free(v);
    assert_int_equal(vip_cleanup(&e), 0);
    assert_true(has_addr("198.18.6.1"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reconcile),
        cmocka_unit_test(test_foreign_address_is_never_removed),
    };

    if (geteuid() != 0) {
        printf("SKIP: needs root for a network namespace of its own\n");
        return 77; /* meson's "skipped" */
    }
    return cmocka_run_group_tests(tests, setup, NULL);
}
