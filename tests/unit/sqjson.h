/*
 * sqjson.h - JSON fixtures written with single quotes, for the unit
 * tests of the API object decoders. Include after <cmocka.h>.
 */
#ifndef TESTS_UNIT_SQJSON_H
#define TESTS_UNIT_SQJSON_H

#include <jansson.h>
#include <string.h>

/* <sq> with ' turned into ", in a static buffer. */
static inline const char *
dq(const char *sq)
{
    static char buf[4096];
    size_t i;

    assert_true(strlen(sq) < sizeof(buf));
    for (i = 0; sq[i] != '\0'; i++)
        buf[i] = sq[i] == '\'' ? '"' : sq[i];
    buf[i] = '\0';
    return buf;
}

/* The object <sq> spells; the test fails when it is not JSON. */
static inline json_t *
obj(const char *sq)
{
    json_error_t je;
    json_t *o = json_loads(dq(sq), 0, &je);

    if (o == NULL)
        fail_msg("fixture: %s: %s", je.text, sq);
    return o;
}

#endif
