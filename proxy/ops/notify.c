#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

int
notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun;
    char msg[1024];
    socklen_t len;
    va_list ap;
    int fd, n;
    ssize_t sent;

    if (path == NULL || path[0] == '\0'
        || strlen(path) >= sizeof(sun.sun_path))
        return -1;
    if (path[0] != '/' && path[0] != '@')
        return -1; /* neither a path nor an abstract name */
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(msg))
        return -1;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sent = sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sun,
                  len);
    close(fd);
    return sent == n ? 0 : -1;
}

int
notify_ready(const char *status)
{
    return notify("READY=1\nMAINPID=%ld\nSTATUS=%s", (long)getpid(), status);
}
