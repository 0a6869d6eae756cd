/*
 * nl.h - what every netlink reader of the node library shares.
 */
#ifndef PROXY_NODE_NL_H
#define PROXY_NODE_NL_H

#include <stddef.h>

/*
 * How many leading bytes of a received buffer <buf> (<len> bytes) are
 * whole netlink messages, each with a length that fits in what is left.
 * libmnl trusts nlmsg_len as a signed int, so a message claiming 2 GiB or
 * more would make its walk stand still or run off the buffer; only this
 * prefix is handed to mnl_cb_run(). Pure.
 */
size_t nl_whole(const void *buf, size_t len);

#endif
