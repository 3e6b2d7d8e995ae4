/* Kill this process with SIGKILL at a chosen step. Built and used by
   tests/cli/queue_kill.rs. Configured by environment variables:
     PKSHIM_FN     lock | unlock (the Nth write to the queue's lock words,
                   see arm) | futex_wait | futex_wake | write1
     PKSHIM_N      which call of that function (1 = the first)
     PKSHIM_AT     before | after | protect | stop
     PKSHIM_FILE   the queue's file, e.g. /dev/shm/NAME (lock, unlock, protect)
     PKSHIM_OFF    (protect) the offset of the page to protect
     PKSHIM_PROT   (protect) ro | none
   "protect" makes the page at PKSHIM_OFF read-only (or inaccessible) as
   soon as the queue file is mapped; the next access to it faults, and the
   fault handler sends SIGKILL: the process dies at that very instruction.
   "stop" sends the process SIGSTOP right after the Nth lock, as ^Z
   would. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ucontext.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/futex.h>

static int count;

static void die(void) { syscall(SYS_kill, getpid(), SIGKILL); for (;;) pause(); }

static void on_fault(int sig) { (void)sig; die(); }

static int wanted(const char *fn) {
    const char *f = getenv("PKSHIM_FN");
    if (!f || strcmp(f, fn)) return 0;
    const char *n = getenv("PKSHIM_N");
    return ++count == (n ? atoi(n) : 1);
}

static void step(int hit, int before) {
    if (!hit) return;
    const char *at = getenv("PKSHIM_AT");
    if (!strcmp(at, "before") && before) die();
    if (!strcmp(at, "after") && !before) die();
    if (!strcmp(at, "stop") && !before) syscall(SYS_kill, getpid(), SIGSTOP);
}

/* The queue's locks are words of its header page, and the put and get
   paths write nothing else there: its first write is the lock's
   compare-and-swap, its second the unlock. "lock" and "unlock" kill at
   those writes: right after the queue file is mapped, the header page is
   made read-only; each write faults, is let through (the page made
   writable for one instruction, stepped with the trap flag, then
   read-only again) and counted, and the process dies before the Nth
   (PKSHIM_AT=before) or right after it (after), or stops after it (stop). */
static char *header;
static int writes, target_write, die_before, stop_after;

static void lock_fault(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    char *a = si->si_addr;
    if (!header || a < header || a >= header + 4096) die();
    if (++writes == target_write && die_before) die();
    mprotect(header, 4096, PROT_READ | PROT_WRITE);
    ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_EFL] |= 0x100;
}

static void lock_step(int sig, siginfo_t *si, void *ctx) {
    (void)sig; (void)si;
    ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_EFL] &= ~0x100L;
    if (writes == target_write) {
        if (stop_after) { syscall(SYS_kill, getpid(), SIGSTOP); return; }
        die();
    }
    mprotect(header, 4096, PROT_READ);
}

static int is_target(int fd) {
    const char *file = getenv("PKSHIM_FILE");
    if (!file || fd < 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    return !strcmp(path, file);
}

static void arm(char *base) {
    const char *f = getenv("PKSHIM_FN");
    const char *at = getenv("PKSHIM_AT");
    if (!f || !at) return;
    if (!strcmp(at, "protect")) {
        long off = atol(getenv("PKSHIM_OFF"));
        int prot = strcmp(getenv("PKSHIM_PROT"), "none") ? PROT_READ : PROT_NONE;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_fault;
        sigaction(SIGSEGV, &sa, 0);
        if (mprotect(base + off, 4096, prot)) { perror("shim: mprotect"); _exit(99); }
        return;
    }
    int lock = !strcmp(f, "lock"), unlock = !strcmp(f, "unlock");
    if (!lock && !unlock) return;
    const char *n = getenv("PKSHIM_N");
    int nth = n ? atoi(n) : 1;
    target_write = lock ? 2 * nth - 1 : 2 * nth;
    die_before = !strcmp(at, "before");
    stop_after = !strcmp(at, "stop");
    header = base;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sa.sa_sigaction = lock_fault;
    sigaction(SIGSEGV, &sa, 0);
    sa.sa_sigaction = lock_step;
    sigaction(SIGTRAP, &sa, 0);
    if (mprotect(header, 4096, PROT_READ)) { perror("shim: mprotect"); _exit(99); }
}

static int armed;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "mmap");
    void *r = real(addr, len, prot, flags, fd, off);
    if (r != MAP_FAILED && !armed && off == 0 && is_target(fd)) {
        armed = 1;
        arm(r);
    }
    return r;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

long syscall(long nr, ...) {
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    int hit = 0;
    if (nr == SYS_futex && a[1] == FUTEX_WAIT_BITSET) hit = wanted("futex_wait");
    if (nr == SYS_futex && a[1] == FUTEX_WAKE_OP) hit = wanted("futex_wake");
    step(hit, 1);
    static long (*real)(long, ...);
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    long r = real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    step(hit, 0);
    return r;
}

ssize_t write(int fd, const void *buf, size_t n) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = dlsym(RTLD_NEXT, "write");
    int hit = fd == 1 && wanted("write1");
    step(hit, 1);
    ssize_t r = real(fd, buf, n);
    step(hit, 0);
    return r;
}
