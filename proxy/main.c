#include <stdio.h>

#include "main.h"

int
main_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry: not built yet\n");
    return 1;
}
