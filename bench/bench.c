/*
 * ferry-bench: a load generator and benchmark backends for ferry.
 *
 *   ferry-bench serve ...                 backends (see serve.h)
 *   ferry-bench connrate|rr|stream|idle   load (see loadgen.h)
 *   ferry-bench udp-serve | udp           UDP answers and queries (udpbench.h)
 *
 * The client modes print one JSON object per run on stdout and a readable
 * summary on stderr. Every run is bounded in time and in count, and talks
 * only to the address it is given.
 */
#include <stdio.h>
#include <string.h>

#include "loadgen.h"
#include "serve.h"
#include "udpbench.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: ferry-bench serve|connrate|rr|stream|idle|udp-serve|udp "
               "[options]\n"
               "       ferry-bench MODE --help\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return serve_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "udp-serve") == 0)
        return udpbench_serve_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "udp") == 0)
        return udpbench_client_main(argc - 1, argv + 1);
    return loadgen_main(argc - 1, argv + 1);
}
