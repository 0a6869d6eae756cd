/*
 * loadgen.h - the client side of ferry-bench.
 *
 * Modes:
 *   connrate  open, send --size bytes, read --reply-size bytes, close; at
 *             --concurrency connections in flight;
 *   rr        ping-pong of --size / --reply-size bytes on --connections
 *             kept-alive connections;
 *   stream    bulk transfer over --connections: --direction up (to a
 *             sink), down (from a source) or both (through an echo);
 *   idle      open --connections, check each with a 1-byte echo, hold them.
 * Every run ends at --duration seconds or --count units (connections,
 * requests, bytes, connections), whichever comes first, or on SIGTERM.
 */
#ifndef BENCH_LOADGEN_H
#define BENCH_LOADGEN_H

/* Run one client mode (argv[0] is the mode). Returns the exit status: 0
 * when the run produced a result, 1 on a setup failure, 2 on a usage
 * error. Errors during the run are counted in the result, not fatal. */
int loadgen_main(int argc, char **argv);

#endif
