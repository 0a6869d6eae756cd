/*
 * notify.h - telling a service manager (systemd's Type=notify) what the
 * process is doing, through the datagram socket named by NOTIFY_SOCKET.
 * Without that variable every call does nothing.
 */
#ifndef PROXY_OPS_NOTIFY_H
#define PROXY_OPS_NOTIFY_H

/* Send one state line ("READY=1", "RELOADING=1", "STATUS=...", several
 * separated by newlines), printf-style. Returns 0, or -1 when there is
 * no manager or the send failed (never fatal: the caller goes on). */
int notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "READY=1" with this process's PID as the main one (a process that took
 * over from another is not the one the manager started) and a STATUS. */
int notify_ready(const char *status);

#endif
