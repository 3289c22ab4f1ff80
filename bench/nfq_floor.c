/* The NFQUEUE floor (BENCHMARKS.md): the least a libnetfilter_queue consumer can do. It takes every
 * packet from one queue and accepts it at once, one verdict per packet, as the library's own example
 * does. Queue settings match the fast path's (whole packets, the same queue length and receive
 * buffer), so the two differ only in what they do per packet.
 *
 * Usage: nfq_floor QUEUE MAXLEN RCVBUF. Prints "ready" once bound and, on SIGTERM or SIGINT,
 * "handled N". Built by bench/bench_nfqueue.py with: cc -O2 nfq_floor.c -lnetfilter_queue */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

static volatile sig_atomic_t stopping;
static unsigned long long handled;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data) {
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    handled++;
    return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s QUEUE MAXLEN RCVBUF\n", argv[0]);
        return 2;
    }
    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)atoi(argv[1]), on_packet, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0) { perror("nfq_set_mode"); return 1; }
    if (nfq_set_queue_maxlen(qh, (uint32_t)atoi(argv[2])) < 0) { perror("nfq_set_queue_maxlen"); return 1; }
    int fd = nfq_fd(h);
    int rcvbuf = atoi(argv[3]);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    /* Lost netlink messages are the kernel's to count (queue_user_dropped); keep reading. */
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);
    static char buf[0xffff + 4096] __attribute__((aligned));
    while (!stopping) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == ENOBUFS) continue;
            perror("recv");
            break;
        }
        nfq_handle_packet(h, buf, (int)n);
    }
    printf("handled %llu\n", handled);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
