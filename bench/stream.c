/*
 * One loopback TCP stream's rate: the ceiling a 1 MiB READ stream is compared with.
 *
 *     cc -O2 -o stream bench/stream.c
 *     stream SECONDS SEND_CPU RECV_CPU RECV_BYTES
 *
 * A sender pinned to SEND_CPU writes a 1 MiB buffer over and over (one copy, user -> socket);
 * a receiver pinned to RECV_CPU reads into a RECV_BYTES buffer (one copy, socket -> user):
 * the copies an iSCSI READ of page-cached data needs at least. The receiver's buffer size
 * matters on this machine: a buffer that stays in the CPU's cache (64 KiB) reads about twice as
 * fast as a 1 MiB one, so bench/profile.sh measures both and keeps the faster as the ceiling.
 * Prints GB/s (10^9 bytes per second) counted over SECONDS after a half-second warm-up.
 * Loopback only; bounded by SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SEND_BYTES (1 << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s SECONDS SEND_CPU RECV_CPU RECV_BYTES\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[1]);
    int send_cpu = atoi(argv[2]), recv_cpu = atoi(argv[3]);
    size_t recv_bytes = strtoul(argv[4], NULL, 10);
    if (secs <= 0 || secs > 60 || recv_bytes == 0 || recv_bytes > (64u << 20)) {
        fprintf(stderr, "SECONDS must be in (0, 60], RECV_BYTES in [1, 64 MiB]\n");
        return 2;
    }
    int srv = socket(AF_INET, SOCK_STREAM, 0);
    if (srv < 0)
        die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(srv, (struct sockaddr *)&addr, sizeof addr) || listen(srv, 1) ||
        getsockname(srv, (struct sockaddr *)&addr, &len))
        die("listen");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        pin(send_cpu);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr))
            _exit(1);
        char *buf = malloc(SEND_BYTES);
        if (!buf)
            _exit(1);
        memset(buf, 0xa5, SEND_BYTES);
        double end = now() + secs + 1.0;
        while (now() < end) {
            for (size_t off = 0; off < SEND_BYTES;) {
                ssize_t n = write(s, buf + off, SEND_BYTES - off);
                if (n <= 0)
                    _exit(0);
                off += (size_t)n;
            }
        }
        _exit(0);
    }
    pin(recv_cpu);
    int c = accept(srv, NULL, NULL);
    if (c < 0)
        die("accept");
    char *buf = malloc(recv_bytes);
    if (!buf)
        die("malloc");
    memset(buf, 0, recv_bytes);
    double warm = now() + 0.5;
    while (now() < warm)
        if (read(c, buf, recv_bytes) <= 0)
            die("read");
    long long got = 0;
    double start = now(), elapsed;
    for (;;) {
        ssize_t n = read(c, buf, recv_bytes);
        if (n <= 0)
            break;
        got += n;
        if (now() - start >= secs)
            break;
    }
    elapsed = now() - start;
    close(c);
    waitpid(child, NULL, 0);
    printf("%.2f\n", (double)got / elapsed / 1e9);
    return 0;
}
