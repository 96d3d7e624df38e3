/*
 * The kernel's floor for a target's 4 KiB READ responses on loopback TCP, without iSCSI:
 * a sender on CPU 0 sends N "responses" (a 48-byte header, then 4 KiB from a random page of a
 * mapped file) in batches of B per system call; a receiver on CPU 1 reads them into one
 * buffer. Two ways to send a batch:
 *   writev   one writev of the headers and the mapped pages (the kernel copies every page
 *            into the socket: what portshift's target does today);
 *   splice   vmsplice of the same iovecs into a pipe (the pages are referenced, not copied),
 *            then splice from the pipe into the socket.
 * Prints the sender's user and system CPU per response (getrusage) and its system calls per
 * response. Used by bench/sendpath.sh; see BENCHMARKS.md. Loopback only, bounded by N.
 *
 *   sendpath MODE(writev|splice) N B FILE PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HDR 48
#define BLK 4096
#define MAXB 256

static void die(const char *what) { perror(what); exit(1); }

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    if (sched_setaffinity(0, sizeof s, &s) != 0) die("sched_setaffinity");
}

static double secs(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double us(struct timeval a, struct timeval b) {
    return (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_usec - a.tv_usec);
}

/* Drops the first n bytes of the iovec array (*v, *cnt). */
static void consume(struct iovec **v, int *cnt, size_t n) {
    while (n > 0 && *cnt > 0) {
        if (n >= (*v)->iov_len) {
            n -= (*v)->iov_len;
            (*v)++;
            (*cnt)--;
        } else {
            (*v)->iov_base = (char *)(*v)->iov_base + n;
            (*v)->iov_len -= n;
            n = 0;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: sendpath writev|splice N B FILE PORT\n");
        return 2;
    }
    int splice_mode = strcmp(argv[1], "splice") == 0;
    long n = atol(argv[2]);
    int batch = atoi(argv[3]);
    if (n <= 0 || batch <= 0 || batch > MAXB) {
        fprintf(stderr, "N must be > 0 and B in 1..%d\n", MAXB);
        return 2;
    }
    int fd = open(argv[4], O_RDONLY);
    if (fd < 0) die("open");
    off_t size = lseek(fd, 0, SEEK_END);
    long pages = size / BLK;
    if (pages < 1) { fprintf(stderr, "file too small\n"); return 2; }
    char *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) die("mmap");

    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[5]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1)) die("bind/listen");
    long total = n * (HDR + BLK);
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a)) die("connect");
        char *buf = malloc(1 << 20);
        long got = 0;
        while (got < total) {
            ssize_t r = recv(c, buf, 1 << 20, 0);
            if (r <= 0) break;
            got += r;
        }
        _exit(got == total ? 0 : 1);
    }
    pin(0);
    int s = accept(ls, NULL, NULL);
    if (s < 0) die("accept");
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int pp[2];
    if (pipe(pp)) die("pipe");
    if (fcntl(pp[1], F_SETPIPE_SZ, 1 << 20) < 0) die("F_SETPIPE_SZ");
    /* Headers are never rewritten while a batch may still reference them: one slot each. */
    char *hdrs = calloc(n < 65536 ? n : 65536, HDR);
    struct iovec iov[2 * MAXB];
    unsigned long long x = 88172645463325252ULL;
    long calls = 0;
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    double t0 = secs();
    for (long done = 0; done < n; done += batch) {
        int k = 0;
        size_t bytes = 0;
        for (int i = 0; i < batch && done + i < n; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            iov[k].iov_base = hdrs + HDR * ((done + i) % 65536);
            iov[k++].iov_len = HDR;
            iov[k].iov_base = map + BLK * (long)(x % pages);
            iov[k++].iov_len = BLK;
            bytes += HDR + BLK;
        }
        struct iovec *v = iov;
        int cnt = k;
        if (!splice_mode) {
            while (cnt > 0) {
                ssize_t w = writev(s, v, cnt);
                calls++;
                if (w <= 0) die("writev");
                consume(&v, &cnt, w);
            }
        } else {
            while (cnt > 0) {
                ssize_t w = vmsplice(pp[1], v, cnt, 0);
                calls++;
                if (w <= 0) die("vmsplice");
                consume(&v, &cnt, w);
                while (w > 0) {
                    ssize_t m = splice(pp[0], NULL, s, NULL, w, SPLICE_F_MOVE);
                    calls++;
                    if (m <= 0) die("splice");
                    w -= m;
                }
            }
        }
    }
    double t1 = secs();
    getrusage(RUSAGE_SELF, &r1);
    int st;
    waitpid(child, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "receiver did not get every byte\n");
        return 1;
    }
    printf("%s %d %.0f %.2f %.2f %.3f\n", argv[1], batch, n / (t1 - t0),
           us(r0.ru_utime, r1.ru_utime) / n, us(r0.ru_stime, r1.ru_stime) / n,
           (double)calls / n);
    return 0;
}
