/*
 * udpbench.h - ferry-bench's UDP modes: a DNS-shaped load, one query
 * datagram and one answer datagram.
 *
 *   ferry-bench udp-serve --listen ADDR [--reply-size N] [--max-seconds S]
 *       answers every datagram with --reply-size bytes (default 128)
 *       whose first 8 are the query's, read and sent in batches
 *       (recvmmsg/sendmmsg) so that the backend is not what is measured;
 *       prints "ready" once bound.
 *   ferry-bench udp --target ADDR [--concurrency N] [--size N]
 *       [--reply-size N] [--duration S] [--count N] [--timeout S]
 *       [--label L] [--quiet]
 *       keeps --concurrency queries in flight, each from a socket (source
 *       port) of its own, the next sent when the answer comes; an answer
 *       not back within --timeout (default 1 s) is counted as a timeout
 *       and the query sent again. Prints one JSON object like the TCP
 *       modes' (unit "req").
 *
 * Every run ends at --duration or --count, or on SIGTERM, SIGINT.
 */
#ifndef BENCH_UDPBENCH_H
#define BENCH_UDPBENCH_H

/* argv[0] is the mode. Return the exit status: 0, 1 (setup failed) or 2
 * (usage). */
int udpbench_serve_main(int argc, char **argv);
int udpbench_client_main(int argc, char **argv);

#endif
