#include <stdio.h>

#include "hist.h"
#include "loadgen.h"

int
loadgen_main(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "ferry-bench: mode '%s' not built yet\n", argv[0]);
    return 2;
}
