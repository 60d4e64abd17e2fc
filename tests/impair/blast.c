/*
 * UDP blaster for tests/impair/throughput.py: sends SIZE-byte datagrams to 127.0.0.1:PORT
 * (or [::1]:PORT with a "6" fourth argument) as fast as sendmmsg allows for SECONDS, then
 * prints how many it sent.  Used to find the relay's own forwarding limit, which a Python
 * sender cannot reach.
 *
 * Build: gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o blast blast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: blast PORT SIZE SECONDS [6]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    size_t size = (size_t)atoi(argv[2]);
    double duration = atof(argv[3]);
    int v6 = argc > 4 && !strcmp(argv[4], "6");
    static char payload[65536];
    if (size > sizeof payload)
        size = sizeof payload;
    memset(payload, 0xa5, sizeof payload);

    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        s6->sin6_addr = in6addr_loopback;
        len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *s4;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0) {
        perror("socket/connect");
        return 1;
    }
    int buf = 8 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long sent = 0;
    double end = seconds_now() + duration;
    while (seconds_now() < end) {
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n > 0)
            sent += n;
    }
    printf("%lld\n", sent);
    return 0;
}
