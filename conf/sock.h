/*
 * sock.h - listening TCP sockets, set up one way for every listener ferry
 * owns: the data plane's, the admin server's and the node health ports.
 */
#ifndef CONF_SOCK_H
#define CONF_SOCK_H

#include "parse.h"

enum sock_flag {
    SOCK_F_REUSEPORT = 1 << 0, /* share the address with other sockets */
    SOCK_F_FREEBIND = 1 << 1,  /* bind before the address exists */
    SOCK_F_NODELAY = 1 << 2,   /* TCP_NODELAY, inherited by accepted ones */
    SOCK_F_BLOCKING = 1 << 3,  /* leave out SOCK_NONBLOCK */
};

/*
 * A TCP socket bound to <addr> with SO_REUSEADDR (IPv6: IPV6_V6ONLY, so
 * that "[::]:P" never takes IPv4's port too) and the options of <flags>
 * (enum sock_flag), listening with <backlog>; with <backlog> 0 it is
 * bound but not listening. Always close-on-exec. Returns the descriptor,
 * or -1 with errno set; every failing option is an error.
 */
int sock_listen(const struct saddr *addr, unsigned flags, int backlog);

#endif
