/*
 * udpbench.h - ferry-bench's UDP modes: a DNS-shaped load, one query
 * datagram and one answer datagram.
 *
 *   ferry-bench udp-serve --listen ADDR [--listen ADDR ...] [--reply-size N]
 *       [--max-seconds S]
 *       answers every datagram (on up to 8 addresses) with --reply-size
 *       bytes (default 128) whose first 8 are the query's, read and sent
 *       in batches
 *       (recvmmsg/sendmmsg) so that the backend is not what is measured;
 *       prints "ready" once bound, and at exit one JSON line: the queries
 *       it answered and from how many distinct source ports.
 *   ferry-bench udp --target ADDR [--concurrency N] [--size N]
 *       [--reply-size N] [--duration S] [--count N] [--timeout S]
 *       [--rate R] [--spin-us N] [-t N] [--source-port fresh|pinned]
 *       [--label L] [--quiet]
 *       keeps up to --concurrency queries in flight. Closed loop (no
 *       --rate): each slot sends its next query when the answer comes.
 *       Open loop (--rate R): query k is due at k / R seconds, goes out
 *       from the first free slot and its latency is counted from when it
 *       was due, so waiting for a slot is latency too; those that found
 *       no free slot are counted as missed. --source-port pinned (the
 *       default): one socket per slot for the whole run; fresh: a new
 *       socket (source port) per query, closed when it is over. An
 *       answer not back within --timeout (default 1 s) is a timeout; an
 *       ICMP refusal ends the query as refused. -t N: N threads, each
 *       with its share of slots, count and rate, histograms merged.
 *       Prints one JSON object like the TCP modes' (unit "req").
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
