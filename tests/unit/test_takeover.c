/* Unit tests for the takeover message parser (proxy/ops/takeover_msg.c):
 * the SOCK message the running ferry sends with each listening socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "takeover_msg.h"

static int
parse(const char *s, unsigned *w, struct saddr *a)
{
    const char *why = NULL;
    int rc = takeover_parse_sock(s, strlen(s), w, a, &why);

    if (rc < 0)
        assert_non_null(why);
    return rc;
}

static void
test_accepted(void **state)
{
    char buf[SADDR_STR_MAX];
    struct saddr a;
    unsigned w = 99;

    (void)state;
    assert_int_equal(parse("SOCK 0 127.0.0.1:8080", &w, &a), 0);
    assert_int_equal(w, 0);
    assert_string_equal(saddr_str(&a, buf, sizeof(buf)), "127.0.0.1:8080");
    assert_int_equal(parse("SOCK 63 [::1]:443", &w, &a), 0);
    assert_int_equal(w, 63);
    assert_string_equal(saddr_str(&a, buf, sizeof(buf)), "[::1]:443");
}

static void
test_rejected(void **state)
{
    static const char *const bad[] = {
        "",
        "SOCK",
        "SOCK ",
        "SOCK x 127.0.0.1:80",
        "SOCK -1 127.0.0.1:80",
        "SOCK 70000 127.0.0.1:80",
        "SOCK 99999999999999999999 127.0.0.1:80",
        "SOCK 1",
        "SOCK 1 ",
        "SOCK 1  127.0.0.1:80",
        "SOCK 1 127.0.0.1",
        "SOCK 1 127.0.0.1:0",
        "SOCK 1 localhost:80",
        "SOCK 1 127.0.0.1:80 extra",
        "sock 1 127.0.0.1:80",
        "END 3",
    };
    struct saddr a;
    unsigned w;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (parse(bad[i], &w, &a) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
}

static void
test_nul_and_length(void **state)
{
    const char with_nul[] = "SOCK 1 127.0.0.1:80\0junk";
    char big[TAKEOVER_MSG_MAX + 2];
    const char *why;
    struct saddr a;
    unsigned w;

    (void)state;
    assert_int_equal(takeover_parse_sock(with_nul, sizeof(with_nul) - 1, &w,
                                         &a, &why),
                     -1);
    memset(big, ' ', sizeof(big));
    memcpy(big, "SOCK 1 127.0.0.1:80", 19);
    assert_int_equal(takeover_parse_sock(big, sizeof(big), &w, &a, &why), -1);
    /* Only the given length counts: the rest of the buffer is not read. */
    assert_int_equal(takeover_parse_sock(big, 19, &w, &a, &why), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_nul_and_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
