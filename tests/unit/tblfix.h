/*
 * tblfix.h - a table service for unit tests: two backends on 127.0.0.1.
 * Include after <cmocka.h> and "table.h".
 */
#ifndef TESTS_UNIT_TBLFIX_H
#define TESTS_UNIT_TBLFIX_H

#include <stdio.h>
#include <string.h>

/* A service named <name> listening on <fe> with backends on 127.0.0.1
 * ports <be_port> and <be_port>+1; arrays live in the caller's storage. */
static inline void
make_service(struct tbl_service *s, const char *name, const char *fe,
             struct saddr *fes, struct tbl_backend *bes, uint16_t be_port)
{
    const char *why;
    int i;

    memset(s, 0, sizeof(*s));
    s->name = name;
    assert_int_equal(parse_hostport(fe, &fes[0], 0, &why), 0);
    s->frontends = fes;
    s->nfrontends = 1;
    for (i = 0; i < 2; i++) {
        memset(&bes[i], 0, sizeof(bes[i]));
        assert_int_equal(parse_ip("127.0.0.1", (uint16_t)(be_port + i),
                                  &bes[i].addr, &why),
                         0);
        /* Names outlive the call: tests compare the arrays later. */
        static char names[64][TBL_NAME_MAX];
        static unsigned next;
        char *nm = names[next++ % 64];
        snprintf(nm, TBL_NAME_MAX, "%.100s-%d", name, i);
        bes[i].name = nm;
        bes[i].weight = 1;
        bes[i].flags = TBL_BE_READY | TBL_BE_SERVING;
    }
    s->backends = bes;
    s->nbackends = 2;
    s->balance = TBL_BAL_LEASTCONN;
    s->connect_timeout_ms = 2000;
    s->idle_timeout_ms = 60000;
    s->retries = 3;
}

/* <n> services "svc-<i>" on 127.0.<i/200>.<i%200+1>:80 into <t>, then
 * frozen; names and arrays live in the caller's storage. */
static inline void
fill_table(struct table *t, size_t n, char (*names)[32],
           struct saddr (*fes)[1], struct tbl_backend (*bes)[2])
{
    struct tbl_service s;
    struct err e;
    char fe[32];
    size_t i;

    for (i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "svc-%zu", i);
        snprintf(fe, sizeof(fe), "127.0.%zu.%zu:80", i / 200, i % 200 + 1);
        make_service(&s, names[i], fe, fes[i], bes[i], 30000);
        assert_int_equal(table_add_service(t, &s, &e), 0);
    }
    table_freeze(t, 1);
}

#endif
