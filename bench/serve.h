/*
 * serve.h - `ferry-bench serve`: the benchmark backends.
 *
 * One libev loop serves every listener. Each listener has a mode:
 *   http    answer each request (read up to the blank line, 16 KiB cap)
 *           with a small text/plain body naming the server, then close;
 *   echo    send back what arrives, reading no more while a write is
 *           pending;
 *   fixed   answer each chunk a read returns with --size bytes;
 *   sink    read and drop;
 *   source  write as fast as the peer reads.
 * Buffers are bounded and allocated at most once per connection slot.
 */
#ifndef BENCH_SERVE_H
#define BENCH_SERVE_H

/* Parse serve's options (argv[0] is "serve") and run until SIGTERM,
 * SIGINT or --max-seconds. Returns the process exit status: 0 on a clean
 * stop, 1 when a listener cannot be bound, 2 on a usage error. */
int serve_main(int argc, char **argv);

#endif
