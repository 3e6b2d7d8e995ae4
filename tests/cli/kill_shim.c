/* Kill this process with SIGKILL at a chosen step. Built and used by
   tests/cli/queue_kill.rs. Configured by environment variables:
     PKSHIM_FN     lock | unlock | futex_wait | futex_wake | write1
     PKSHIM_N      which call of that function (1 = the first)
     PKSHIM_AT     before | after | protect | stop
     PKSHIM_FILE   (protect) the mapped file, e.g. /dev/shm/NAME
     PKSHIM_OFF, PKSHIM_LEN  (protect) the byte range of that mapping
     PKSHIM_PROT   (protect) ro | none
   "protect" makes the range read-only (or inaccessible) right after the
   Nth call returns; the next access to it faults, and the fault handler
   sends SIGKILL: the process dies at that very instruction. "stop" sends
   the process SIGSTOP right after the Nth call returns, as ^Z would. */
#define _GNU_SOURCE
#include <dlfcn.h>
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

static void protect(void) {
    const char *file = getenv("PKSHIM_FILE");
    long off = atol(getenv("PKSHIM_OFF")), len = atol(getenv("PKSHIM_LEN"));
    int prot = strcmp(getenv("PKSHIM_PROT"), "none") ? PROT_READ : PROT_NONE;
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    unsigned long start = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        size_t l = strlen(line), fl = strlen(file);
        if (l >= fl && !strcmp(line + l - fl, file)) { start = strtoul(line, 0, 16); break; }
    }
    if (maps) fclose(maps);
    if (!start) { fprintf(stderr, "shim: %s not mapped\n", file); _exit(99); }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fault;
    sigaction(SIGSEGV, &sa, 0);
    if (mprotect((void *)(start + off), len, prot)) { perror("shim: mprotect"); _exit(99); }
}

static void step(int hit, int before) {
    if (!hit) return;
    const char *at = getenv("PKSHIM_AT");
    if (!strcmp(at, "before") && before) die();
    if (!strcmp(at, "after") && !before) die();
    if (!strcmp(at, "protect") && !before) protect();
    if (!strcmp(at, "stop") && !before) syscall(SYS_kill, getpid(), SIGSTOP);
}

int pthread_mutex_lock(pthread_mutex_t *m) {
    static int (*real)(pthread_mutex_t *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_mutex_lock");
    int hit = wanted("lock");
    step(hit, 1);
    int r = real(m);
    step(hit, 0);
    return r;
}

int pthread_mutex_unlock(pthread_mutex_t *m) {
    static int (*real)(pthread_mutex_t *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_mutex_unlock");
    int hit = wanted("unlock");
    step(hit, 1);
    int r = real(m);
    step(hit, 0);
    return r;
}

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
