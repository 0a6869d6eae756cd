/*
 * test_sock.c - listening sockets: an IPv6 listener is v6-only, which is
 * why the config lets "[::]:P" and "0.0.0.0:P" stand side by side.
 */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "parse.h"
#include "sock.h"

static void
test_ipv6_is_v6only(void **state)
{
    const char *why;
    struct saddr a;
    socklen_t len = sizeof(int);
    int fd, on = 0;

    (void)state;
    assert_int_equal(parse_ip("::1", 0, &a, &why), 0);
    fd = sock_listen(&a, 0, 1);
    if (fd < 0 && (errno == EADDRNOTAVAIL || errno == EAFNOSUPPORT))
        skip(); /* no ::1 on this host */
    assert_true(fd >= 0);
    assert_int_equal(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len), 0);
    assert_int_equal(on, 1);
    close(fd);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv6_is_v6only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
