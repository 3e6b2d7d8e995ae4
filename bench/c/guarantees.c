/* What posixkit's Process start + join guarantees cost in C: the loop of
 * ../shared/bench/c/fork_wait.c (fork, _exit(i & 0x7f), wait, check the
 * status) plus, at each child, the system calls that make
 * `Builder::new().name("bench").start(|| code)` + `join(None)` safe:
 *   - unshare(CLONE_THREAD): the kernel says whether another thread runs
 *     (a fork of a threaded process can leave a lock held for ever);
 *   - sigaction(SIGCHLD) read: whether anything but our own wait could
 *     reap the child;
 *   - pidfd_open after the fork, poll(2) on it, waitid(P_PIDFD), close: a
 *     signal or a wait can never reach another process that reused the
 *     pid;
 *   - in the child, prctl(PR_SET_PDEATHSIG) and getppid(): killed with its
 *     parent, however the parent dies (the pk-* binaries turn it on);
 *     prctl(PR_SET_NAME): its name in ps;
 *   - getpid twice (the parent's pid for the checks above).
 * It prints the figure under pk-bench's name, so the two compare as
 * `process_start_join_us` side by side; fork_wait_us is the bare loop.
 *
 * build: cc -O2 -o guarantees guarantees.c
 * run:   ./guarantees          (REPS repetitions, default 7; BENCH_SCALE) */
#define _GNU_SOURCE
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DIE(msg) do { perror(msg); exit(1); } while (0)

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long scaled(long base) {
    const char *s = getenv("BENCH_SCALE");
    double f = s ? atof(s) : 1.0;
    long n = (long)(base * (f > 0 ? f : 1.0));
    return n > 1 ? n : 1;
}

/* fork + wait as fork_wait.c, with the calls of the guarantees */
static double guarded(long n) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int code = (int)(i & 0x7f);
        pid_t me = (pid_t)syscall(SYS_getpid);
        if (syscall(SYS_unshare, CLONE_THREAD) != 0) DIE("unshare");
        struct sigaction sa;
        if (sigaction(SIGCHLD, NULL, &sa) != 0) DIE("sigaction");
        pid_t p = fork();
        if (p < 0) DIE("fork");
        if (p == 0) {
            if (syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 ||
                syscall(SYS_getppid) != me)
                _exit(1);
            syscall(SYS_prctl, PR_SET_NAME, "bench", 0, 0, 0);
            _exit(code);
        }
        int fd = (int)syscall(SYS_pidfd_open, p, 0);
        if (fd < 0) DIE("pidfd_open");
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, -1) != 1) DIE("poll");
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PIDFD, (id_t)fd, &si, WEXITED) != 0) DIE("waitid");
        if (si.si_code != CLD_EXITED || si.si_status != code) {
            fprintf(stderr, "bad exit status\n");
            exit(1);
        }
        close(fd);
        syscall(SYS_getpid);
    }
    return (now_ns() - t0) / n / 1e3;
}

int main(void) {
    const char *r = getenv("REPS");
    int reps = r ? atoi(r) : 7;
    if (reps < 1 || reps > 99) reps = 7;
    double v[99];
    guarded(200); /* warm-up */
    for (int k = 0; k < reps; k++) v[k] = guarded(scaled(3000));
    qsort(v, (size_t)reps, sizeof v[0], cmp_dbl);
    printf("process_start_join_us %.2f\n",
           reps % 2 ? v[reps / 2] : 0.5 * (v[reps / 2 - 1] + v[reps / 2]));
    return 0;
}
