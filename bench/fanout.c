/*
 * The floor for WebSocket fan-out: the least a server can do to pass a
 * heartbeat to N WebSocket clients. One epoll thread; each UDP datagram is
 * wrapped once as {"type":"update","workers":{"w":DATAGRAM}} in one text
 * frame and sent to every client with one send(2) each; a client whose
 * socket is full misses it. No registry, no coalescing, no JSON parsing.
 * `muster bench ws` measures it with the same client it uses on musterd.
 *
 * The handshake answers the fixed key the bench client sends (RFC 6455's
 * sample key, whose accept value is in the RFC), so no SHA-1 is needed:
 * this is a measuring stick, not a server.
 *
 *   cc -O2 -o target/fanout bench/fanout.c
 *   target/fanout HTTP_PORT UDP_PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 65536

static int clients[MAX_CLIENTS];
static int nclients;

static int listen_on(int type, int port) {
    int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bind");
        exit(1);
    }
    if (type == SOCK_STREAM && listen(fd, 4096) < 0) {
        perror("listen");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fanout HTTP_PORT UDP_PORT\n");
        return 2;
    }
    int lfd = listen_on(SOCK_STREAM, atoi(argv[1]));
    int ufd = listen_on(SOCK_DGRAM, atoi(argv[2]));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = ufd;
    epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ev);
    static const char ok[] =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    static const char head[] = "{\"type\":\"update\",\"workers\":{\"w\":";
    static char dgram[65536], frame[65536 + 64];
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else if (fd == ufd) {
                ssize_t len;
                while ((len = recv(ufd, dgram, sizeof dgram, 0)) > 0) {
                    size_t plen = sizeof head - 1 + (size_t)len + 2, at = 0;
                    frame[at++] = (char)0x81;
                    if (plen < 126) {
                        frame[at++] = (char)plen;
                    } else {
                        frame[at++] = 126;
                        frame[at++] = (char)(plen >> 8);
                        frame[at++] = (char)plen;
                    }
                    memcpy(frame + at, head, sizeof head - 1);
                    at += sizeof head - 1;
                    memcpy(frame + at, dgram, (size_t)len);
                    at += (size_t)len;
                    frame[at++] = '}';
                    frame[at++] = '}';
                    for (int k = 0; k < nclients; k++)
                        (void)send(clients[k], frame, at, MSG_NOSIGNAL | MSG_DONTWAIT);
                }
            } else {
                /* A client: its upgrade request, or a pong, or its close. */
                char buf[4096];
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r <= 0) {
                    if (r < 0 && errno == EAGAIN)
                        continue;
                    for (int k = 0; k < nclients; k++)
                        if (clients[k] == fd) {
                            clients[k] = clients[--nclients];
                            break;
                        }
                    close(fd);
                } else if (r > 4 && memcmp(buf, "GET ", 4) == 0 && nclients < MAX_CLIENTS) {
                    (void)send(fd, ok, sizeof ok - 1, MSG_NOSIGNAL);
                    clients[nclients++] = fd;
                }
            }
        }
    }
}
