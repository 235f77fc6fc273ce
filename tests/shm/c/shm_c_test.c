/*
 * Stand-alone test of native/shm.c, built by tests/shm/test_shm_native.py
 * with AddressSanitizer and UBSan (and runnable under valgrind):
 *   cc -g -fsanitize=address,undefined -Inative native/shm.c \
 *      tests/shm/c/shm_c_test.c -o shm_c_test -lpthread
 * Prints "N passed, 0 failed" and exits 0 when every check holds.
 */
#include "shm.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed, dead_reports, rebuilt, broken, alloc_in_report;

/* a report that allocates, as a logging path may: it deadlocked when the
 * report was made with the allocator lock held */
void _shm_owner_dead(const char *what, int pid)
{
    (void)pid;
    if (alloc_in_report) {
        void *p = shm_malloc_mod(64, 0);
        if (p)
            shm_free_ptr(p);
    }
    if (strstr(what, "rebuilt"))
        rebuilt++;
    else if (strstr(what, "INCONSISTENT"))
        broken++;
    else
        dead_reports++;
}

#define CHECK(c)                                                          \
    do {                                                                  \
        if (c)                                                            \
            passed++;                                                     \
        else {                                                            \
            failed++;                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,        \
                    __LINE__, #c);                                        \
        }                                                                 \
    } while (0)

static uint64_t used(void)
{
    struct shm_stats st;
    shm_get_stats(&st);
    return st.used_size;
}

static uint64_t mod_sum(void)
{
    uint64_t s = 0;
    for (int i = 0; i < shm_module_count(); i++)
        s += shm_module_bytes(i);
    return s;
}

static void test_random_allocs(void)
{
    enum { N = 512 };
    void *p[N] = {0};
    size_t sz[N] = {0};
    int mods[3] = {shm_module_id("a"), shm_module_id("b"), 0};
    uint64_t base = used();
    srand(1);
    for (int step = 0; step < 20000; step++) {
        int i = rand() % N;
        if (p[i]) {
            /* the content survived everything else */
            unsigned char *c = p[i];
            int ok = 1;
            for (size_t k = 0; k < sz[i]; k++)
                ok &= c[k] == (unsigned char)(i + k);
            if (!ok)
                CHECK(!"content preserved");
            if (rand() % 4 == 0) {
                size_t ns = (size_t)(rand() % 3000);
                void *q = shm_realloc_mod(p[i], ns, shm_block_module(p[i]));
                CHECK(q != NULL);
                size_t keep = ns < sz[i] ? ns : sz[i];
                for (size_t k = keep; k < ns; k++)
                    ((unsigned char *)q)[k] = (unsigned char)(i + k);
                p[i] = q;
                sz[i] = ns;
            } else {
                CHECK(shm_free_ptr(p[i]) == 0);
                p[i] = NULL;
            }
        } else {
            size_t s = (size_t)(rand() % 5 == 0 ? rand() % 70000 : rand() % 600);
            p[i] = shm_malloc_mod(s, mods[rand() % 3]);
            CHECK(p[i] != NULL);
            CHECK(shm_block_size(p[i]) >= s);
            sz[i] = s;
            for (size_t k = 0; k < s; k++)
                ((unsigned char *)p[i])[k] = (unsigned char)(i + k);
        }
        if (step % 2000 == 0) {
            CHECK(shm_check() == 0);
            CHECK(mod_sum() == used());
        }
    }
    for (int i = 0; i < N; i++)
        if (p[i])
            CHECK(shm_free_ptr(p[i]) == 0);
    CHECK(used() == base);
    CHECK(shm_check() == 0);
}

static void test_bad_pointers(void)
{
    void *p = shm_malloc_mod(100, 0);
    char local[64];
    CHECK(shm_free_ptr(local + 16) == -1);
    CHECK(shm_free_ptr((char *)p + 16) == -1);
    CHECK(shm_free_ptr(p) == 0);
    CHECK(shm_free_ptr(p) == -1);
    CHECK(shm_ptr_at(1) == NULL);
    CHECK(shm_ptr_at((uint64_t)1 << 40) == NULL);
    CHECK(shm_malloc_mod(16, 9999) == NULL);
    CHECK(shm_malloc_mod((size_t)-1, 0) == NULL);
    CHECK(shm_check() == 0);
}

static void test_exhaustion(void)
{
    uint64_t base = used();
    void *held[4096];
    int n = 0;
    size_t s = 1 << 16;
    while (s >= 16 && n < 4096) {
        void *p = shm_malloc_mod(s, 0);
        if (p)
            held[n++] = p;
        else
            s /= 2;
    }
    CHECK(shm_malloc_mod(1 << 16, 0) == NULL);
    CHECK(shm_check() == 0);
    while (n)
        CHECK(shm_free_ptr(held[--n]) == 0);
    CHECK(used() == base);
    struct shm_stats st;
    shm_get_stats(&st);
    CHECK(st.fragments == 1);
}

static void test_hash(void)
{
    shm_ht_t *ht = shm_ht_new(8, shm_module_id("ht"));
    char out[512];
    CHECK(ht != NULL);
    for (int i = 0; i < 300; i++) {
        char k[32], v[300];
        int kl = snprintf(k, sizeof k, "key%d", i);
        memset(v, 'a' + i % 26, sizeof v);
        CHECK(shm_ht_put(ht, k, kl, v, 200 + i % 50, 0) == 0);
    }
    CHECK(shm_ht_len(ht) == 300);
    CHECK(shm_ht_get(ht, "key7", 4, out, sizeof out) == 207);
    CHECK(out[0] == 'h' && out[206] == 'h');
    CHECK(shm_ht_get(ht, "key7", 4, out, 10) == 207); /* too small: length */
    CHECK(shm_ht_get(ht, "nokey", 5, out, sizeof out) == -1);
    CHECK(shm_ht_del(ht, "key7", 4) == 1);
    CHECK(shm_ht_del(ht, "key7", 4) == 0);
    CHECK(shm_ht_put(ht, "exp", 3, "x", 1, 1000) == 0); /* 1 us */
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    CHECK(shm_ht_get(ht, "exp", 3, out, sizeof out) == -1);
    CHECK(shm_ht_len(ht) == 299);
    CHECK(shm_ht_purge(ht) == 1);
    int64_t total = 0;
    for (uint32_t b = 0; b < shm_ht_nbuckets(ht); b++) {
        int64_t need = shm_ht_dump_bucket(ht, b, NULL, 0);
        char *buf = malloc(need ? need : 1);
        CHECK(shm_ht_dump_bucket(ht, b, buf, need) == need);
        for (int64_t o = 0; o < need;) {
            uint32_t kl, vl;
            memcpy(&kl, buf + o, 4);
            memcpy(&vl, buf + o + 4, 4);
            o += 8 + kl + vl;
            total++;
        }
        free(buf);
    }
    CHECK(total == 299);
    CHECK(shm_ht_dump_bucket(ht, 99, out, sizeof out) == -1);
    CHECK(shm_ht_destroy(ht) == 0);
    CHECK(shm_module_bytes(shm_module_id("ht")) == 0);
    CHECK(shm_check() == 0);
}

static void test_dead_owner(void)
{
    shm_lock_t *l = shm_lockset_new(1, 0);
    shm_rwlock_t *rw = shm_rwlock_new(0);
    int64_t *flag = shm_malloc_mod(8, 0);
    *flag = 0;
    pid_t pid = fork();
    if (pid == 0) {
        shm_lock_get(l);
        shm_rw_rlock(rw);
        shm_atomic_set(flag, 1);
        pause();
        _exit(0);
    }
    while (shm_atomic_get(flag) != 1)
        usleep(1000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    int before = dead_reports;
    CHECK(shm_lock_get(l) == 1);            /* recovered */
    CHECK(dead_reports == before + 1);
    CHECK(shm_lock_owner(l) == getpid());
    CHECK(shm_lock_release(l) == 0);
    CHECK(shm_lock_get(l) == 0);             /* ordinary again */
    CHECK(shm_lock_release(l) == 0);
    CHECK(shm_rw_wlock(rw) == 0);            /* dead reader's slot freed */
    CHECK(dead_reports == before + 2);
    CHECK(shm_rw_wunlock(rw) == 0);
    int s = shm_rw_rlock(rw);
    CHECK(s >= 0);
    CHECK(shm_rw_runlock(rw, s) == 0);
    CHECK(shm_lock_try(l) == 1);
    CHECK(shm_lock_release(l) == 0);
    shm_free_ptr(flag);
    shm_free_ptr(rw);
    shm_free_ptr(l);
}

static void test_cross_process(void)
{
    uint64_t base = used();
    int64_t *cnt = shm_malloc_mod(8, 0);
    void *blk = shm_malloc_mod(1000, 0);
    *cnt = 0;
    for (int c = 0; c < 3; c++)
        if (fork() == 0) {
            for (int i = 0; i < 100000; i++)
                shm_atomic_add(cnt, 1);
            if (c == 0)
                shm_free_ptr(blk);
            _exit(0);
        }
    for (int c = 0; c < 3; c++)
        wait(NULL);
    CHECK(*cnt == 300000);
    CHECK(shm_block_size(blk) == 0);
    shm_free_ptr(cnt);
    CHECK(used() == base);
    CHECK(shm_check() == 0);
}

/* children hammering the allocator are killed at random moments, often
 * inside the allocator lock: the next locker must find (or rebuild) a
 * consistent arena every time */
static void deadlock(int sig)
{
    (void)sig;
    static const char m[] = "deadlock: an owner-dead report allocated under "
                            "the allocator lock\n";
    if (write(2, m, sizeof(m) - 1) < 0) {}
    _exit(3);
}

static void test_killed_inside_allocator(void)
{
    int recovered = 0;
    srand(3);
    signal(SIGALRM, deadlock);
    alarm(120);
    alloc_in_report = 1;
    for (int round = 0; round < 40; round++) {
        int64_t *go = shm_malloc_mod(8, 0);
        *go = 0;
        pid_t pid = fork();
        if (pid == 0) {
            void *p[64] = {0};
            unsigned x = (unsigned)round;
            shm_atomic_set(go, 1);
            for (;;) {
                x = x * 1103515245u + 12345u;
                int i = (int)((x >> 8) % 64);
                if (p[i]) {
                    shm_free_ptr(p[i]);
                    p[i] = NULL;
                } else {
                    p[i] = shm_malloc_mod((x >> 16) % 3000, 0);
                }
            }
        }
        while (shm_atomic_get(go) != 1)
            usleep(100);
        usleep((useconds_t)(200 + rand() % 3000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        int before = dead_reports;
        CHECK(shm_check() == 0);
        recovered += dead_reports > before;
        void *q = shm_malloc_mod(100, 0);
        CHECK(q != NULL);
        shm_free_ptr(q);
        shm_free_ptr(go);
        CHECK(shm_check() == 0);
        CHECK(mod_sum() == used());
    }
    alloc_in_report = 0;
    alarm(0);
    CHECK(recovered > 0);
    CHECK(broken == 0);
    fprintf(stderr, "allocator lock taken over from a killed owner %d times "
            "out of 40, arena rebuilt %d times\n", recovered, rebuilt);
}

/* a child takes the lock and dies holding it */
static void die_holding(shm_lock_t *l)
{
    pid_t pid = fork();
    if (pid == 0) {
        shm_lock_get(l);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
}

/* locks that cannot be made consistent stay unusable, and the hash table
 * fails instead of going on without its bucket lock; a non-owner's unlock
 * keeps the owner */
static void test_unusable_locks(void)
{
    shm_lock_t *l = shm_lockset_new(1, 0);
    die_holding(l);
    shm_fail_consistent_for_tests(1);
    CHECK(shm_lock_get(l) == -ENOTRECOVERABLE);
    CHECK(shm_lock_get(l) == -ENOTRECOVERABLE);
    CHECK(shm_lock_try(l) == -ENOTRECOVERABLE);
    shm_free_ptr(l);

    l = shm_lockset_new(1, 0);
    int64_t *flag = shm_malloc_mod(8, 0);
    *flag = 0;
    pid_t pid = fork();
    if (pid == 0) {
        shm_lock_get(l);
        shm_atomic_set(flag, 1);
        while (shm_atomic_get(flag) != 2)
            usleep(1000);
        _exit(shm_lock_release(l) == 0 ? 0 : 1);
    }
    while (shm_atomic_get(flag) != 1)
        usleep(1000);
    CHECK(shm_lock_release(l) == -EPERM);
    CHECK(shm_lock_owner(l) == pid);
    shm_atomic_set(flag, 2);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(shm_lock_owner(l) == 0);
    shm_free_ptr(flag);
    shm_free_ptr(l);

    int mod = shm_module_id("ht_broken");
    shm_ht_t *ht = shm_ht_new(2, mod);
    char out[16];
    CHECK(shm_ht_put(ht, "a", 1, "v", 1, 0) == 0);
    CHECK(shm_ht_put(ht, "b", 1, "v", 1, 1000000000LL) == 0);
    shm_lock_t *bl = shm_ht_bucket_lock_for_tests(ht, "a", 1);
    die_holding(bl);
    shm_fail_consistent_for_tests(1);
    CHECK(shm_ht_put(ht, "a", 1, "w", 1, 0) == -ENOTRECOVERABLE);
    CHECK(shm_ht_get(ht, "a", 1, out, sizeof out) == -ENOTRECOVERABLE);
    CHECK(shm_ht_del(ht, "a", 1) == -ENOTRECOVERABLE);
    CHECK(shm_ht_len(ht) == -ENOTRECOVERABLE);
    CHECK(shm_ht_destroy(ht) == -ENOTRECOVERABLE);   /* freed all the same */
    CHECK(shm_module_bytes(mod) == 0);
    CHECK(shm_ht_put(ht, "a", 1, "w", 1, 0) == -2);
    CHECK(shm_check() == 0);
}

/* the timerfd helpers: one expiry after the delay, none after a disarm,
 * the same timer seen from a forked child */
static void test_timerfd(void)
{
    int fd = osy_timerfd_open();
    CHECK(fd >= 0);
    uint64_t n = 0;
    CHECK(read(fd, &n, sizeof n) == -1 && errno == EAGAIN);   /* not armed */
    CHECK(osy_timerfd_arm(fd, 5000000) == 0);                 /* 5 ms */
    struct pollfd p = { .fd = fd, .events = POLLIN };
    CHECK(poll(&p, 1, 2000) == 1);
    CHECK(read(fd, &n, sizeof n) == sizeof n && n == 1);
    CHECK(osy_timerfd_arm(fd, 5000000) == 0);
    CHECK(osy_timerfd_arm(fd, 0) == 0);                       /* disarmed */
    CHECK(poll(&p, 1, 50) == 0);
    pid_t pid = fork();
    if (pid == 0)
        _exit(osy_timerfd_arm(fd, 1000000) == 0 ? 0 : 1);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(poll(&p, 1, 2000) == 1);                  /* armed by the child */
    CHECK(read(fd, &n, sizeof n) == sizeof n && n == 1);
    CHECK(osy_timerfd_arm(-1, 1000) == -1 && errno == EBADF);
    close(fd);
}

int main(void)
{
    CHECK(shm_init(8 << 20) == 0);
    CHECK(shm_init(8 << 20) == -1);
    test_random_allocs();
    test_bad_pointers();
    test_exhaustion();
    test_hash();
    test_dead_owner();
    test_cross_process();
    test_unusable_locks();
    test_killed_inside_allocator();
    test_timerfd();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
