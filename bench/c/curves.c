/* The C limit of pk-bench's curves: the same work as `pk-bench --curve`,
 * written straight on the system calls, printing the same JSON points:
 *   {"curve":"fork_rss","series":"C fork","x":259.3,"y":812.5}
 *
 * usage: curves [-q] CURVE X
 *   -q   quick: a smaller time budget and less work (a smoke run)
 * A curve this program has no series for prints nothing and exits 0.
 * Every point checks its own result and exits 1 when it is wrong.
 *
 * build: cc -O2 -pthread -o curves curves.c  (scripts/bench.sh does it) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;
static int quick;

#define DIE(msg) do { perror(msg); exit(1); } while (0)
#define FAIL(msg) do { fprintf(stderr, "curves: %s\n", msg); exit(1); } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void point(const char *curve, const char *series, double x, double y) {
    printf("{\"curve\":\"%s\",\"series\":\"%s\",\"x\":%g,\"y\":%.4f}\n", curve, series, x, y);
    fflush(stdout);
}

static double budget(void) { return quick ? 0.02 : 0.15; }

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds per operation, as pk-bench measures it: k grows tenfold until a
 * run takes a twentieth of the budget, then is set so a run takes about
 * the budget; the median of three runs over k. */
static double per_op(double (*run)(long k, void *arg), void *arg) {
    long k = 1;
    double t = run(k, arg);
    while (t < budget() / 20 && k < (1L << 32)) { k *= 10; t = run(k, arg); }
    long k2 = (long)(budget() * (double)k / (t > 1e-9 ? t : 1e-9));
    if (k2 < 1) k2 = 1;
    if (k2 > k * 40) k2 = k * 40;
    double s[3] = {run(k2, arg), run(k2, arg), run(k2, arg)};
    qsort(s, 3, sizeof s[0], cmp);
    return s[1] / (double)k2;
}

static void read_full(int fd, void *b, size_t n) {
    char *p = b;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) DIE("read");
        p += r; n -= (size_t)r;
    }
}

static void write_full(int fd, const void *b, size_t n) {
    const char *p = b;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) DIE("write");
        p += r; n -= (size_t)r;
    }
}

/* ---- fork_rss, spawn_rss: a parent holding x MiB of touched heap ---- */

static double hold(double mib) {
    size_t bytes = (size_t)(mib * 1048576.0);
    if (bytes) {
        char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) DIE("mmap");
        memset(m, 0x5a, bytes);
    }
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf", &kb) == 1) break;
    if (f) fclose(f);
    return kb / 1024.0;
}

static double run_fork(long k, void *arg) {
    (void)arg;
    double t0 = now();
    for (long i = 0; i < k; i++) {
        pid_t p = fork();
        if (p < 0) DIE("fork");
        if (p == 0) _exit((int)(i & 0x7f));
        int st;
        if (waitpid(p, &st, 0) != p) DIE("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != (int)(i & 0x7f)) FAIL("bad exit status");
    }
    return now() - t0;
}

static double run_posix_spawn(long k, void *arg) {
    (void)arg;
    char *argv[] = {"/bin/true", NULL};
    double t0 = now();
    for (long i = 0; i < k; i++) {
        pid_t p;
        int e = posix_spawn(&p, "/bin/true", NULL, NULL, argv, environ);
        if (e) { errno = e; DIE("posix_spawn"); }
        int st;
        if (waitpid(p, &st, 0) != p) DIE("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) FAIL("/bin/true failed");
    }
    return now() - t0;
}

static double run_fork_exec(long k, void *arg) {
    (void)arg;
    char *argv[] = {"/bin/true", NULL};
    double t0 = now();
    for (long i = 0; i < k; i++) {
        pid_t p = fork();
        if (p < 0) DIE("fork");
        if (p == 0) { execve("/bin/true", argv, environ); _exit(127); }
        int st;
        if (waitpid(p, &st, 0) != p) DIE("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) FAIL("/bin/true failed");
    }
    return now() - t0;
}

/* ---- pool_map_items, pool_map_workers: the C baseline's pool, any size ---- */

#define MAXW 64
struct pool { int w; pid_t pid[MAXW]; int task[MAXW]; int res[MAXW]; };

static void worker(int tin, int rout) {
    int64_t cap = 0, *buf = NULL;
    for (;;) {
        int64_t h[2];
        ssize_t r = read(tin, h, sizeof h);
        if (r == 0) _exit(0);
        if (r != sizeof h) read_full(tin, (char *)h + (r > 0 ? r : 0), sizeof h - (size_t)(r > 0 ? r : 0));
        if (h[1] + 2 > cap) { cap = h[1] + 2; buf = realloc(buf, (size_t)cap * 8); if (!buf) _exit(1); }
        read_full(tin, buf + 2, (size_t)h[1] * 8);
        for (int64_t i = 0; i < h[1]; i++) buf[2 + i] *= buf[2 + i];
        buf[0] = h[0]; buf[1] = h[1];
        write_full(rout, buf, (size_t)(2 + h[1]) * 8);
    }
}

static void pool_start(struct pool *p, int w) {
    p->w = w;
    for (int i = 0; i < w; i++) {
        int t[2], r[2];
        if (pipe(t) || pipe(r)) DIE("pipe");
        pid_t pid = fork();
        if (pid < 0) DIE("fork");
        if (pid == 0) {
            for (int j = 0; j < i; j++) { close(p->task[j]); close(p->res[j]); }
            close(t[1]); close(r[0]);
            worker(t[0], r[1]);
        }
        close(t[0]); close(r[1]);
        p->pid[i] = pid; p->task[i] = t[1]; p->res[i] = r[0];
    }
}

static void pool_stop(struct pool *p) {
    for (int i = 0; i < p->w; i++) close(p->task[i]);
    for (int i = 0; i < p->w; i++) { waitpid(p->pid[i], NULL, 0); close(p->res[i]); }
}

struct map { struct pool *p; long n; int64_t *in, *out, *msg; };

static void send_chunk(struct map *m, int w, long *next, long chunk) {
    long c = m->n - *next < chunk ? m->n - *next : chunk;
    m->msg[0] = *next; m->msg[1] = c;
    memcpy(m->msg + 2, m->in + *next, (size_t)c * 8);
    write_full(m->p->task[w], m->msg, (size_t)(2 + c) * 8);
    *next += c;
}

/* map(square) of n items in chunks of ceil(n / (4 W)), as Python's
 * Pool.map makes them; two chunks in flight per worker when both fit in
 * its task pipe (64 KiB), else one: with a second chunk that does not
 * fit, the parent blocks writing it while the worker blocks writing a
 * result the parent is not reading. */
static void pool_map(struct map *m) {
    int w = m->p->w;
    long chunk = (m->n + 4L * w - 1) / (4L * w), next = 0, remaining = m->n;
    int depth = 2 * (chunk + 2) * 8 <= 65536 ? 2 : 1;
    int outstanding[MAXW] = {0};
    for (int i = 0; i < w; i++)
        while (outstanding[i] < depth && next < m->n) { send_chunk(m, i, &next, chunk); outstanding[i]++; }
    struct pollfd pf[MAXW];
    while (remaining > 0) {
        for (int i = 0; i < w; i++) pf[i] = (struct pollfd){.fd = m->p->res[i], .events = POLLIN};
        if (poll(pf, (nfds_t)w, -1) < 0) { if (errno == EINTR) continue; DIE("poll"); }
        for (int i = 0; i < w; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP))) continue;
            int64_t h[2];
            read_full(m->p->res[i], h, sizeof h);
            read_full(m->p->res[i], m->out + h[0], (size_t)h[1] * 8);
            remaining -= h[1];
            outstanding[i]--;
            if (next < m->n) { send_chunk(m, i, &next, chunk); outstanding[i]++; }
        }
    }
}

static double run_map(long k, void *arg) {
    struct map *m = arg;
    double t0 = now();
    for (long i = 0; i < k; i++) pool_map(m);
    double t = now() - t0;
    for (long i = 0; i < m->n; i++)
        if (m->out[i] != (int64_t)i * i) FAIL("pool: wrong result");
    return t;
}

static double pool_ns_per_item(long n, int w) {
    struct pool p;
    struct map m = {&p, n, malloc((size_t)n * 8), malloc((size_t)n * 8), malloc((size_t)(n + 2) * 8)};
    if (!m.in || !m.out || !m.msg) DIE("malloc");
    for (long i = 0; i < n; i++) m.in[i] = i;
    pool_start(&p, w);
    pool_map(&m); /* warm */
    double s = per_op(run_map, &m);
    pool_stop(&p);
    free(m.in); free(m.out); free(m.msg);
    return s * 1e9 / (double)n;
}

/* ---- queue_clients, queue_size: a bounded ring in shared memory under a
 * process-shared mutex and two condition variables ---- */

struct ring {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    uint64_t head, tail, cap, size, sum;
    char slot[];
};

static double queue_run(int k, size_t size, long total) {
    long per = total / k > 0 ? total / k : 1;
    if (size < 16) size = 16;
    uint64_t cap = (1u << 30) / size < 1024 ? (1u << 30) / size : 1024;
    size_t bytes = sizeof(struct ring) + cap * size;
    struct ring *q = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) DIE("mmap");
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&q->mu, &ma);
    pthread_cond_init(&q->not_full, &ca);
    pthread_cond_init(&q->not_empty, &ca);
    q->head = q->tail = q->sum = 0;
    q->cap = cap; q->size = size;
    pid_t pids[128];
    double t0 = now();
    for (int p = 0; p < k; p++) {
        if ((pids[p] = fork()) < 0) DIE("fork");
        if (pids[p] == 0) {
            char *msg = calloc(1, size);
            uint64_t who = (uint64_t)p;
            memcpy(msg, &who, 8);
            for (uint64_t i = 0; i < (uint64_t)per; i++) {
                memcpy(msg + 8, &i, 8);
                pthread_mutex_lock(&q->mu);
                while (q->tail - q->head == q->cap) pthread_cond_wait(&q->not_full, &q->mu);
                memcpy(q->slot + (q->tail % q->cap) * size, msg, size);
                q->tail++;
                pthread_cond_signal(&q->not_empty);
                pthread_mutex_unlock(&q->mu);
            }
            _exit(0);
        }
    }
    for (int c = 0; c < k; c++) {
        if ((pids[k + c] = fork()) < 0) DIE("fork");
        if (pids[k + c] == 0) {
            char *msg = malloc(size);
            uint64_t next[64] = {0}, seen = 0;
            for (long j = 0; j < per; j++) {
                pthread_mutex_lock(&q->mu);
                while (q->tail == q->head) pthread_cond_wait(&q->not_empty, &q->mu);
                memcpy(msg, q->slot + (q->head % q->cap) * size, size);
                q->head++;
                pthread_cond_signal(&q->not_full);
                pthread_mutex_unlock(&q->mu);
                uint64_t who, i;
                memcpy(&who, msg, 8);
                memcpy(&i, msg + 8, 8);
                if (who >= (uint64_t)k || i < next[who]) _exit(2);
                next[who] = i + 1;
                seen += i;
            }
            __atomic_fetch_add(&q->sum, seen, __ATOMIC_RELAXED);
            _exit(0);
        }
    }
    for (int i = 0; i < 2 * k; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st)) FAIL("queue: a client failed (order?)");
    }
    double s = now() - t0;
    if (q->sum != (uint64_t)k * ((uint64_t)per * (uint64_t)(per - 1) / 2)) FAIL("queue: lost or duplicated messages");
    munmap(q, bytes);
    return (double)(k * per) / s;
}

/* ---- ticket_buyers: k processes buy from one flock(2)-locked file ---- */

static long buy_all(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) DIE("open");
    long bought = 0;
    char buf[32];
    for (;;) {
        if (flock(fd, LOCK_EX)) DIE("flock");
        ssize_t r = pread(fd, buf, sizeof buf - 1, 0);
        if (r < 0) DIE("pread");
        buf[r] = 0;
        long c = atol(buf);
        if (c <= 0) { flock(fd, LOCK_UN); break; }
        int len = snprintf(buf, sizeof buf, "%ld\n", c - 1);
        if (pwrite(fd, buf, (size_t)len, 0) != len || ftruncate(fd, len)) DIE("pwrite");
        flock(fd, LOCK_UN);
        bought++;
    }
    close(fd);
    return bought;
}

static double tickets(int k, long total) {
    char path[256];
    const char *d = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/pk-curves-tickets.%d", d ? d : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) DIE("fopen");
    fprintf(f, "%ld\n", total);
    fclose(f);
    long *counts = mmap(NULL, 64 * sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED) DIE("mmap");
    pid_t pids[64];
    double t0 = now();
    for (int i = 0; i < k; i++) {
        if ((pids[i] = fork()) < 0) DIE("fork");
        if (pids[i] == 0) { counts[i] = buy_all(path); _exit(0); }
    }
    long sum = 0;
    for (int i = 0; i < k; i++) waitpid(pids[i], NULL, 0);
    double s = now() - t0;
    for (int i = 0; i < k; i++) sum += counts[i];
    unlink(path);
    if (sum != total) FAIL("tickets lost or sold twice");
    return (double)total / s;
}

/* ---- pipe_rtt_size, pipe_bw_size ---- */

struct rtt { int to, from; size_t size; char *msg, *back; };

static double run_rtt(long k, void *arg) {
    struct rtt *r = arg;
    double t0 = now();
    for (long i = 0; i < k; i++) {
        write_full(r->to, r->msg, r->size);
        read_full(r->from, r->back, r->size);
    }
    double t = now() - t0;
    if (memcmp(r->msg, r->back, r->size)) FAIL("pipe: wrong echo");
    return t;
}

static double pipe_rtt(size_t size) {
    int a[2], b[2];
    if (pipe(a) || pipe(b)) DIE("pipe");
    pid_t p = fork();
    if (p < 0) DIE("fork");
    if (p == 0) {
        close(a[1]); close(b[0]);
        char *buf = malloc(size);
        for (;;) {
            size_t got = 0;
            while (got < size) {
                ssize_t n = read(a[0], buf + got, size - got);
                if (n == 0) _exit(0);
                if (n < 0) _exit(1);
                got += (size_t)n;
            }
            write_full(b[1], buf, size);
        }
    }
    close(a[0]); close(b[1]);
    struct rtt r = {a[1], b[0], size, malloc(size), malloc(size)};
    for (size_t i = 0; i < size; i++) r.msg[i] = (char)i;
    double s = per_op(run_rtt, &r);
    close(a[1]);
    int st;
    waitpid(p, &st, 0);
    close(b[0]);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) FAIL("pipe: the echo child failed");
    return s * 1e6;
}

static double pipe_bw_once(size_t chunk) {
    long total = (long)((quick ? 32L << 20 : 256L << 20) / chunk * chunk);
    int a[2];
    if (pipe(a)) DIE("pipe");
    char *buf = malloc(chunk);
    memset(buf, 'y', chunk);
    pid_t p = fork();
    if (p < 0) DIE("fork");
    if (p == 0) {
        close(a[0]);
        for (long done = 0; done < total; done += (long)chunk) write_full(a[1], buf, chunk);
        _exit(0);
    }
    double t0 = now();
    close(a[1]);
    long got = 0;
    for (;;) {
        ssize_t r = read(a[0], buf, chunk);
        if (r < 0) DIE("read");
        if (r == 0) break;
        got += r;
    }
    double s = now() - t0;
    close(a[0]);
    waitpid(p, NULL, 0);
    free(buf);
    if (got != total) FAIL("pipe: short transfer");
    return (double)total / s / 1e9;
}

static double pipe_bw(size_t chunk) {
    double s[3] = {pipe_bw_once(chunk), pipe_bw_once(chunk), pipe_bw_once(chunk)};
    qsort(s, 3, sizeof s[0], cmp);
    return s[1];
}

int main(int argc, char **argv) {
    int i = 1;
    if (i < argc && strcmp(argv[i], "-q") == 0) { quick = 1; i++; }
    if (argc - i != 2) { fprintf(stderr, "usage: curves [-q] CURVE X\n"); return 2; }
    const char *c = argv[i];
    double x = atof(argv[i + 1]);
    if (!strcmp(c, "fork_rss")) {
        double rss = hold(x);
        point(c, "C fork", rss, per_op(run_fork, NULL) * 1e6);
    } else if (!strcmp(c, "spawn_rss")) {
        double rss = hold(x);
        point(c, "C posix_spawn", rss, per_op(run_posix_spawn, NULL) * 1e6);
        point(c, "C fork+exec", rss, per_op(run_fork_exec, NULL) * 1e6);
    } else if (!strcmp(c, "pool_map_items")) {
        point(c, "C", x, pool_ns_per_item((long)x, 2));
    } else if (!strcmp(c, "pool_map_workers")) {
        if (x < 1 || x > MAXW) FAIL("workers out of range");
        point(c, "C", x, pool_ns_per_item(quick ? 10000 : 100000, (int)x));
    } else if (!strcmp(c, "queue_clients")) {
        if (x < 1 || x > 64) FAIL("clients out of range");
        point(c, "C", x, queue_run((int)x, 16, quick ? 20000 : 200000));
    } else if (!strcmp(c, "queue_size")) {
        long bytes = quick ? 32L << 20 : 256L << 20, hi = quick ? 20000 : 200000;
        long n = bytes / (long)x;
        n = n < 2000 ? 2000 : n > hi ? hi : n;
        point(c, "C", x, queue_run(1, (size_t)x, n));
    } else if (!strcmp(c, "ticket_buyers")) {
        if (x < 1 || x > 64) FAIL("buyers out of range");
        point(c, "C flock", x, tickets((int)x, quick ? 5000 : 50000));
    } else if (!strcmp(c, "pipe_rtt_size")) {
        point(c, "C", x, pipe_rtt((size_t)x));
    } else if (!strcmp(c, "pipe_bw_size")) {
        point(c, "C, default buffer", x, pipe_bw((size_t)x));
    }
    return 0;
}
