/*
 * opensipy shared memory (see shm.h for the interface).
 *
 * Arena layout: [struct arena][block][block]...[end].  A block is
 *   header (32 bytes) | payload (size, multiple of 16) | footer (16 bytes)
 * The footer repeats the size so a freed block can merge with a free
 * predecessor; no two free blocks are ever adjacent.  Free blocks sit in
 * segregated lists: exact 16-byte classes up to 1 KiB, then one list per
 * power of two; a bitmap finds the first non-empty list.  The free-list
 * links live in the payload of free blocks.
 *
 * Accounting: used_size = payload bytes of live blocks (and the sum of the
 * per-module figures), real_used_size = used_size + per-block overhead +
 * the arena header, free_size = total_size - real_used_size.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define ARENA_MAGIC 0x6f70656e73697079ULL /* "opensipy" */
#define BLK_MAGIC 0x5348424bu             /* "SHBK" */
#define FTR_MAGIC 0x464f4f5453484d21ULL
#define ALIGNMENT 16
#define MIN_PAYLOAD 16
#define MAX_MODS 96
#define MOD_NAME_LEN 32
#define EXACT_CLASSES 65 /* payload 0..1024 in steps of 16 */
#define NBINS 128

typedef struct blk {
    uint64_t size;  /* payload bytes */
    uint32_t magic;
    uint16_t mod;
    uint16_t is_free;
    uint64_t pad[2];
} blk_t;

typedef struct {
    uint64_t size;
    uint64_t magic;
} ftr_t;

typedef struct {
    blk_t *prev;
    blk_t *next;
} links_t;

#define OVERHEAD (sizeof(blk_t) + sizeof(ftr_t))

struct shm_lock {
    pthread_mutex_t m;
    volatile int32_t owner;     /* pid of the holder, 0 when free (reports) */
    volatile int32_t owner_tid; /* its thread id: who may unlock */
    volatile int32_t broken;    /* could not be made consistent: unusable */
    int32_t pad;
};

struct arena {
    uint64_t magic;
    uint64_t size;
    char *heap;     /* first block */
    char *heap_end; /* one past the last block */
    struct shm_lock lock;
    uint64_t used;
    uint64_t real_used;
    uint64_t max_real_used;
    uint64_t fragments;
    int64_t start_ns;
    uint64_t bitmap[NBINS / 64];
    blk_t *bins[NBINS];
    int32_t nmods;
    struct {
        char name[MOD_NAME_LEN];
        uint64_t bytes;
    } mods[MAX_MODS];
};

static struct arena *A;
static pid_t my_pid;
static __thread int my_tid; /* reset in the child of a fork (atfork) */

static void after_fork_child(void)
{
    my_pid = getpid();
    my_tid = 0;
}

static inline pid_t self_pid(void)
{
    if (!my_pid)
        my_pid = getpid();
    return my_pid;
}

int64_t shm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int osy_timerfd_open(void)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}

int osy_timerfd_arm(int fd, int64_t ns)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (ns > 0) {
        its.it_value.tv_sec = (time_t)(ns / 1000000000LL);
        its.it_value.tv_nsec = (long)(ns % 1000000000LL);
    }
    return timerfd_settime(fd, 0, &its, NULL);
}

/* ------------------------------------------------------------------ locks */

/* Owner-dead reports are queued per thread and handed to _shm_owner_dead
 * (Python, in the server) only once the function that took the lock over
 * no longer holds a lock of its own: the allocator lock (a report that
 * logs and allocates would deadlock on it), a hash-table bucket, a
 * read-write lock's gate.  A user lock (shm_lock_get) is the caller's: the
 * report is made with it held, as before. */
#define PENDING_MAX 16
static __thread struct { const char *what; int pid; } pending[PENDING_MAX];
static __thread int npending, lost_reports;
static int fail_consistent; /* test hook: this many consistent() calls fail */

static void report_later(const char *what, int pid)
{
    if (npending < PENDING_MAX) {
        pending[npending].what = what;
        pending[npending].pid = pid;
        npending++;
    } else {
        lost_reports++;
    }
}

static void flush_reports(void)
{
    while (npending || lost_reports) {
        /* copy first: a report may lock (and queue) again */
        struct { const char *what; int pid; } q[PENDING_MAX];
        int n = npending, lost = lost_reports;
        memcpy(q, pending, sizeof(q[0]) * (size_t)n);
        npending = 0;
        lost_reports = 0;
        for (int i = 0; i < n; i++)
            _shm_owner_dead(q[i].what, q[i].pid);
        if (lost)
            _shm_owner_dead("more locks taken over from dead processes than "
                            "could be reported; not reported", lost);
    }
}

void shm_fail_consistent_for_tests(int n) { fail_consistent = n; }

static inline int self_tid(void)
{
    if (!my_tid)
        my_tid = (int)gettid();
    return my_tid;
}

static int lock_init(shm_lock_t *l)
{
    pthread_mutexattr_t a;
    int r;
    if ((r = pthread_mutexattr_init(&a)))
        return -r;
    if (!(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)))
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r)
        r = pthread_mutex_init(&l->m, &a);
    pthread_mutexattr_destroy(&a);
    l->owner = 0;
    l->owner_tid = 0;
    l->broken = 0;
    return -r;
}

/* after pthread_mutex_(try)lock returned r: make the lock ours.  A lock
 * taken over from a dead owner is made consistent; when that fails it is
 * let go unrecoverable (every later locker gets ENOTRECOVERABLE) rather
 * than used half-repaired. */
static int lock_taken(shm_lock_t *l, int r, const char *what)
{
    if (r == EOWNERDEAD) {
        int dead = l->owner;
        int c;
        if (fail_consistent > 0) {  /* test hook: as if consistent() failed */
            fail_consistent--;
            c = EINVAL;
        } else {
            c = pthread_mutex_consistent(&l->m);
        }
        if (c) {
            /* flagged first: glibc's trylock on a not-recoverable robust
             * mutex returns ENOTRECOVERABLE but leaves it locked by the
             * caller, so once broken it is never handed to pthread again */
            __atomic_store_n(&l->broken, 1, __ATOMIC_RELEASE);
            pthread_mutex_unlock(&l->m);
            report_later("lock of a dead process could not be made consistent; "
                         "it stays unusable", dead);
            return -ENOTRECOVERABLE;
        }
        l->owner = self_pid();
        l->owner_tid = self_tid();
        report_later(what, dead);
        return 1;
    }
    if (r)
        return -r;
    l->owner = self_pid();
    l->owner_tid = self_tid();
    return 0;
}

static inline int lock_broken(shm_lock_t *l)
{
    return __atomic_load_n(&l->broken, __ATOMIC_ACQUIRE);
}

static int lock_named(shm_lock_t *l, const char *what)
{
    if (lock_broken(l))
        return -ENOTRECOVERABLE;
    return lock_taken(l, pthread_mutex_lock(&l->m), what);
}

/* Only the holder clears the owner, and only while it still holds the
 * lock (after the unlock another process may already have written its
 * own pid there); a failed unlock puts it back.  A caller that does not
 * hold the lock gets -EPERM and the record keeps the real owner. */
static int unlock_l(shm_lock_t *l)
{
    int pid = l->owner, tid = l->owner_tid;
    if (tid != self_tid())
        return -EPERM;
    l->owner = 0;
    l->owner_tid = 0;
    int r = pthread_mutex_unlock(&l->m);
    if (r) {
        l->owner = pid;
        l->owner_tid = tid;
    }
    return -r;
}

int shm_lock_get(shm_lock_t *l)
{
    int r = lock_named(l, "lock");
    flush_reports();
    return r;
}

int shm_lock_try(shm_lock_t *l)
{
    if (lock_broken(l))
        return -ENOTRECOVERABLE;
    int r = pthread_mutex_trylock(&l->m);
    if (r == EBUSY)
        return 0;
    r = lock_taken(l, r, "lock");
    flush_reports();
    return r < 0 ? r : 1;
}

int shm_lock_release(shm_lock_t *l) { return unlock_l(l); }

int shm_lock_owner(shm_lock_t *l) { return l->owner; }

size_t shm_lock_sizeof(void) { return sizeof(shm_lock_t); }

/* -------------------------------------------------------------- allocator */

static inline int in_heap(const void *p, size_t len)
{
    const char *c = p;
    return A && c >= A->heap && c <= A->heap_end &&
           len <= (size_t)(A->heap_end - c);
}

static inline ftr_t *footer(blk_t *b)
{
    return (ftr_t *)((char *)(b + 1) + b->size);
}

static inline blk_t *next_blk(blk_t *b)
{
    return (blk_t *)((char *)footer(b) + sizeof(ftr_t));
}

static inline links_t *links(blk_t *b) { return (links_t *)(b + 1); }

static inline int bin_of(uint64_t size)
{
    if (size <= 1024)
        return (int)(size / ALIGNMENT);
    int b = EXACT_CLASSES + (63 - __builtin_clzll(size)) - 10;
    return b < NBINS ? b : NBINS - 1;
}

static void set_blk(blk_t *b, uint64_t size, int is_free, int mod)
{
    b->size = size;
    b->magic = BLK_MAGIC;
    b->is_free = (uint16_t)is_free;
    b->mod = (uint16_t)mod;
    ftr_t *f = footer(b);
    f->size = size;
    f->magic = FTR_MAGIC;
}

static void bin_insert(blk_t *b)
{
    int i = bin_of(b->size);
    links_t *l = links(b);
    l->prev = NULL;
    l->next = A->bins[i];
    if (l->next)
        links(l->next)->prev = b;
    A->bins[i] = b;
    A->bitmap[i / 64] |= 1ULL << (i % 64);
    A->fragments++;
}

static void bin_remove(blk_t *b)
{
    int i = bin_of(b->size);
    links_t *l = links(b);
    if (l->prev)
        links(l->prev)->next = l->next;
    else
        A->bins[i] = l->next;
    if (l->next)
        links(l->next)->prev = l->prev;
    if (!A->bins[i])
        A->bitmap[i / 64] &= ~(1ULL << (i % 64));
    A->fragments--;
}

/* a live (or, with want_free, free) block header at p, fully checked */
static blk_t *valid_blk(void *payload, int want_free)
{
    if (!A || ((uintptr_t)payload & (ALIGNMENT - 1)))
        return NULL;
    blk_t *b = (blk_t *)payload - 1;
    if (!in_heap(b, OVERHEAD + MIN_PAYLOAD) || b->magic != BLK_MAGIC ||
        b->is_free != (want_free ? 1 : 0) || (b->size & (ALIGNMENT - 1)) ||
        !in_heap(b, OVERHEAD + b->size))
        return NULL;
    ftr_t *f = footer(b);
    if (f->magic != FTR_MAGIC || f->size != b->size)
        return NULL;
    return b;
}

static void mark_free_and_merge(blk_t *b)
{
    /* free first: were we killed while merging, the merged block must not
     * be taken for a live one (see repair_locked) */
    __atomic_store_n(&b->is_free, 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    blk_t *n = next_blk(b);
    if ((char *)n < A->heap_end && n->is_free) {
        bin_remove(n);
        b->size += OVERHEAD + n->size;
    }
    if ((char *)b > A->heap) {
        ftr_t *pf = (ftr_t *)b - 1;
        blk_t *p = (blk_t *)((char *)pf - pf->size) - 1;
        if (p->is_free) {
            bin_remove(p);
            p->size += OVERHEAD + b->size;
            b = p;
        }
    }
    set_blk(b, b->size, 1, 0);
    bin_insert(b);
}

/* Make b (header already valid) a block of payload need followed by a
 * free block of the rest (returned, not yet in a list).  The stores are
 * ordered so that walking the headers gives a well-formed heap at every
 * instant (see repair_locked): the new block's header and b's new footer
 * are written inside b's payload first, then b's size (one store) commits
 * the split, then the old footer becomes the rest's. */
static blk_t *split_blk(blk_t *b, uint64_t need)
{
    uint64_t rest = b->size - need - OVERHEAD;
    blk_t *r = (blk_t *)((char *)(b + 1) + need + sizeof(ftr_t));
    ftr_t *bf = (ftr_t *)((char *)(b + 1) + need);
    r->size = rest;
    r->magic = BLK_MAGIC;
    r->is_free = 1;
    r->mod = 0;
    bf->size = need;
    bf->magic = FTR_MAGIC;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&b->size, need, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    ftr_t *rf = footer(r);
    rf->size = rest;
    rf->magic = FTR_MAGIC;
    return r;
}

/* carve a used block of size need out of free (already unlinked) block b */
static void take(blk_t *b, uint64_t need, int mod)
{
    blk_t *r = NULL;
    if (b->size >= need + OVERHEAD + MIN_PAYLOAD)
        r = split_blk(b, need);
    set_blk(b, b->size, 0, mod);
    if (r)
        mark_free_and_merge(r);
    A->used += b->size;
    A->real_used += b->size + OVERHEAD;
    if (A->real_used > A->max_real_used)
        A->max_real_used = A->real_used;
    A->mods[mod].bytes += b->size;
}

static void give_back(blk_t *b)
{
    A->used -= b->size;
    A->real_used -= b->size + OVERHEAD;
    if (b->mod < A->nmods)
        A->mods[b->mod].bytes -= b->size;
}

static inline uint64_t round_size(size_t size)
{
    if (size < MIN_PAYLOAD)
        return MIN_PAYLOAD;
    return ((uint64_t)size + ALIGNMENT - 1) & ~(uint64_t)(ALIGNMENT - 1);
}

static blk_t *find_free(uint64_t need)
{
    int i = bin_of(need);
    /* own list: exact classes hold only that size; larger ones first fit */
    for (blk_t *b = A->bins[i]; b; b = links(b)->next)
        if (b->size >= need)
            return b;
    for (int w = (i + 1) / 64; w < NBINS / 64; w++) {
        uint64_t bits = A->bitmap[w];
        if (w == (i + 1) / 64)
            bits &= ~0ULL << ((i + 1) % 64);
        if (bits)
            return A->bins[w * 64 + __builtin_ctzll(bits)];
    }
    return NULL;
}

static int check_locked(void);
static int repair_locked(void);

/* 0: the allocator lock is held; < 0: it could not be taken (the arena is
 * then left alone).  Reports are queued, made by alloc_unlock. */
static int alloc_lock(void)
{
    int r = lock_named(&A->lock, "shm allocator");
    if (r == 1 && check_locked()) {
        int e = repair_locked();
        if (e)
            report_later("shm arena found INCONSISTENT after the death of "
                         "the allocator lock's owner and not repaired; "
                         "code", e);
        else
            report_later("shm arena rebuilt from its block headers after "
                         "the death of the allocator lock's owner; blocks "
                         "it held stay allocated; code", 0);
    }
    if (r < 0)
        flush_reports();
    return r < 0 ? r : 0;
}

static void alloc_unlock(void)
{
    unlock_l(&A->lock);
    flush_reports();
}

void *shm_malloc_mod(size_t size, int mod)
{
    if (!A || mod < 0 || mod >= A->nmods || size > A->size)
        return NULL;
    uint64_t need = round_size(size);
    void *ret = NULL;
    if (alloc_lock())
        return NULL;
    blk_t *b = find_free(need);
    if (b) {
        bin_remove(b);
        take(b, need, mod);
        ret = b + 1;
    }
    alloc_unlock();
    return ret;
}

int shm_free_ptr(void *p)
{
    if (!A || alloc_lock())
        return -1;
    blk_t *b = valid_blk(p, 0);
    if (b) {
        give_back(b);
        mark_free_and_merge(b);
    }
    alloc_unlock();
    return b ? 0 : -1;
}

void *shm_realloc_mod(void *p, size_t size, int mod)
{
    if (!A || mod < 0 || mod >= A->nmods || size > A->size)
        return NULL;
    uint64_t need = round_size(size);
    if (alloc_lock())
        return NULL;
    blk_t *b = valid_blk(p, 0);
    if (!b) {
        alloc_unlock();
        return NULL;
    }
    if (need <= b->size && b->mod == mod) {
        if (b->size >= need + OVERHEAD + MIN_PAYLOAD) {
            give_back(b);
            mark_free_and_merge(split_blk(b, need));
            A->used += need;
            A->real_used += need + OVERHEAD;
            A->mods[mod].bytes += need;
        }
        alloc_unlock();
        return p;
    }
    blk_t *n = find_free(need);
    void *ret = NULL;
    if (n) {
        bin_remove(n);
        take(n, need, mod);
        ret = n + 1;
        memcpy(ret, p, b->size < need ? b->size : need);
        give_back(b);
        mark_free_and_merge(b);
    }
    alloc_unlock();
    return ret;
}

/* headers are read under the allocator lock: a realloc, free or merge in
 * another process rewrites them */
int shm_block_info(void *p, size_t *size, int *mod)
{
    if (!A || alloc_lock())
        return -1;
    blk_t *b = valid_blk(p, 0);
    if (b) {
        if (size)
            *size = b->size;
        if (mod)
            *mod = b->mod;
    }
    alloc_unlock();
    return b ? 0 : -1;
}

size_t shm_block_size(void *p)
{
    size_t size;
    return shm_block_info(p, &size, NULL) ? 0 : size;
}

int shm_block_module(void *p)
{
    int mod;
    return shm_block_info(p, NULL, &mod) ? -1 : mod;
}

void *shm_ptr_at(uint64_t offset)
{
    if (!A || offset >= A->size)
        return NULL;
    void *p = (char *)A + offset;
    return shm_block_info(p, NULL, NULL) ? NULL : p;
}

uint64_t shm_offset_of(void *p) { return (uint64_t)((char *)p - (char *)A); }

void shm_get_stats(struct shm_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (!A || alloc_lock())
        return;
    st->total_size = A->size;
    st->used_size = A->used;
    st->real_used_size = A->real_used;
    st->max_used_size = A->max_real_used;
    st->free_size = A->size - A->real_used;
    st->fragments = A->fragments;
    alloc_unlock();
}

uint64_t shm_largest_free(void)
{
    uint64_t best = 0;
    if (!A || alloc_lock())
        return 0;
    for (int i = NBINS - 1; i >= 0 && !best; i--)
        for (blk_t *b = A->bins[i]; b; b = links(b)->next)
            if (b->size > best)
                best = b->size;
    alloc_unlock();
    return best;
}

static int check_locked(void)
{
    uint64_t used = 0, nused = 0, nfree = 0, mods[MAX_MODS] = {0};
    int prev_free = 0;
    char *c = A->heap;
    while (c < A->heap_end) {
        blk_t *b = (blk_t *)c;
        if (!in_heap(b, OVERHEAD) || b->magic != BLK_MAGIC ||
            (b->size & (ALIGNMENT - 1)) || !in_heap(b, OVERHEAD + b->size))
            return -1;
        ftr_t *f = footer(b);
        if (f->magic != FTR_MAGIC || f->size != b->size)
            return -2;
        if (b->is_free) {
            if (prev_free)
                return -3;
            nfree++;
        } else {
            if (b->mod >= A->nmods)
                return -4;
            used += b->size;
            nused++;
            mods[b->mod] += b->size;
        }
        prev_free = b->is_free;
        c = (char *)next_blk(b);
    }
    if (c != A->heap_end)
        return -5;
    uint64_t listed = 0;
    for (int i = 0; i < NBINS; i++) {
        int bit = (A->bitmap[i / 64] >> (i % 64)) & 1;
        if (bit != (A->bins[i] != NULL))
            return -6;
        for (blk_t *b = A->bins[i]; b; b = links(b)->next) {
            if (!in_heap(b, OVERHEAD) || !b->is_free || bin_of(b->size) != i)
                return -7;
            if (++listed > nfree)
                return -8;
        }
    }
    if (listed != nfree || nfree != A->fragments || used != A->used)
        return -9;
    if (A->real_used != (uint64_t)(A->heap - (char *)A) + used + nused * OVERHEAD)
        return -11;
    for (int i = 0; i < A->nmods; i++)
        if (mods[i] != A->mods[i].bytes)
            return -10;
    return 0;
}

/* After the allocator lock's owner died mid-operation: the block headers
 * are kept well formed at every instant (split_blk, single-store merges),
 * so walk them, rewrite the footers, merge free neighbours and rebuild
 * the free lists and the figures. */
static int repair_locked(void)
{
    char *c = A->heap;
    while (c < A->heap_end) {
        blk_t *b = (blk_t *)c;
        if (!in_heap(b, OVERHEAD) || b->magic != BLK_MAGIC ||
            (b->size & (ALIGNMENT - 1)) || !in_heap(b, OVERHEAD + b->size) ||
            (!b->is_free && b->mod >= A->nmods))
            return -1;
        c = (char *)next_blk(b);
    }
    if (c != A->heap_end)
        return -2;
    memset(A->bins, 0, sizeof(A->bins));
    memset(A->bitmap, 0, sizeof(A->bitmap));
    A->fragments = 0;
    A->used = 0;
    for (int i = 0; i < A->nmods; i++)
        A->mods[i].bytes = 0;
    uint64_t nused = 0;
    blk_t *run = NULL; /* free block being extended */
    for (c = A->heap; c < A->heap_end;) {
        blk_t *b = (blk_t *)c;
        c = (char *)next_blk(b);
        if (b->is_free) {
            if (run)
                run->size += OVERHEAD + b->size;
            else
                run = b;
            continue;
        }
        if (run) {
            set_blk(run, run->size, 1, 0);
            bin_insert(run);
            run = NULL;
        }
        set_blk(b, b->size, 0, b->mod);
        A->used += b->size;
        A->mods[b->mod].bytes += b->size;
        nused++;
    }
    if (run) {
        set_blk(run, run->size, 1, 0);
        bin_insert(run);
    }
    A->real_used = (uint64_t)(A->heap - (char *)A) + A->used + nused * OVERHEAD;
    if (A->real_used > A->max_real_used)
        A->max_real_used = A->real_used;
    return check_locked();
}

int shm_check(void)
{
    if (!A)
        return -100;
    if (alloc_lock())
        return -101;
    int r = check_locked();
    alloc_unlock();
    return r;
}

/* ------------------------------------------------------------------ arena */

static int map_arena(size_t size)
{
    size_t hdr = (sizeof(struct arena) + ALIGNMENT - 1) & ~(size_t)(ALIGNMENT - 1);
    if (size < hdr + 4096)
        return -3;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -2;
    struct arena *a = m;
    memset(a, 0, sizeof(*a));
    a->magic = ARENA_MAGIC;
    a->size = size;
    a->heap = (char *)a + hdr;
    a->heap_end = (char *)a + (size & ~(size_t)(ALIGNMENT - 1));
    if (lock_init(&a->lock)) {
        munmap(m, size);
        return -2;
    }
    a->start_ns = shm_now_ns();
    strcpy(a->mods[0].name, "core");
    a->nmods = 1;
    A = a;
    blk_t *b = (blk_t *)a->heap;
    set_blk(b, (uint64_t)(a->heap_end - a->heap) - OVERHEAD, 1, 0);
    bin_insert(b);
    a->real_used = hdr;
    a->max_real_used = hdr;
    return 0;
}

int shm_init(size_t size)
{
    static int atfork_done;
    if (A)
        return -1;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    my_pid = getpid();
    return map_arena(size);
}

int shm_reinit_for_tests(size_t size)
{
    struct arena *old = A;
    A = NULL;
    int r = shm_init(size);
    if (r)
        A = old;
    return r;
}

int shm_ready(void) { return A != NULL; }
uintptr_t shm_base_addr(void) { return (uintptr_t)A; }
size_t shm_arena_size(void) { return A ? A->size : 0; }
int64_t shm_start_ns(void) { return A ? A->start_ns : 0; }

int shm_module_id(const char *name)
{
    size_t len = strlen(name);
    if (!A || !len || len >= MOD_NAME_LEN)
        return -1;
    int id = -1;
    if (alloc_lock())
        return -1;
    for (int i = 0; i < A->nmods; i++)
        if (!strcmp(A->mods[i].name, name)) {
            id = i;
            break;
        }
    if (id < 0 && A->nmods < MAX_MODS) {
        id = A->nmods;
        memcpy(A->mods[id].name, name, len + 1);
        A->mods[id].bytes = 0;
        A->nmods = id + 1;
    }
    alloc_unlock();
    return id;
}

int shm_module_count(void) { return A ? A->nmods : 0; }

const char *shm_module_name(int id)
{
    return (A && id >= 0 && id < A->nmods) ? A->mods[id].name : NULL;
}

uint64_t shm_module_bytes(int id)
{
    return (A && id >= 0 && id < A->nmods) ? A->mods[id].bytes : 0;
}

/* -------------------------------------------------------------- lock sets */

shm_lock_t *shm_lockset_new(int n, int mod)
{
    if (n <= 0)
        return NULL;
    shm_lock_t *set = shm_malloc_mod((size_t)n * sizeof(shm_lock_t), mod);
    if (!set)
        return NULL;
    for (int i = 0; i < n; i++)
        if (lock_init(&set[i])) {
            shm_free_ptr(set);
            return NULL;
        }
    return set;
}

shm_lock_t *shm_lock_at(shm_lock_t *set, int n, int i)
{
    return (i >= 0 && i < n) ? &set[i] : NULL;
}

/* -------------------------------------------------------- read-write locks
 *
 * A gate mutex plus RW_SLOTS reader slots, all robust.  A reader takes the
 * gate, grabs a free slot (trylock round the slots, starting from a slot
 * picked by its pid; when all are busy it waits on that one), and lets the
 * gate go: it holds only its slot while reading.  A writer takes the gate
 * (so no new reader can start: writers are not starved), then takes every
 * slot in turn, which waits out the readers in place; it releases them all
 * at the end.  A process that dies as reader leaves its slot owner-dead, as
 * writer the gate and slots: the kernel hands the next locker EOWNERDEAD and
 * we simply carry on (nothing in a slot needs repair).  Not recursive: a
 * reader asking again while a writer waits deadlocks, as with pthread's
 * writer-preferring rwlocks.
 */
#define RW_SLOTS 32

struct shm_rwlock {
    shm_lock_t gate;
    shm_lock_t slot[RW_SLOTS];
};

shm_rwlock_t *shm_rwlock_new(int mod)
{
    shm_rwlock_t *rw = shm_malloc_mod(sizeof(*rw), mod);
    if (!rw)
        return NULL;
    if (lock_init(&rw->gate))
        goto fail;
    for (int i = 0; i < RW_SLOTS; i++)
        if (lock_init(&rw->slot[i]))
            goto fail;
    return rw;
fail:
    shm_free_ptr(rw);
    return NULL;
}

int shm_rw_rlock(shm_rwlock_t *rw)
{
    int r = lock_named(&rw->gate, "rwlock (writer)");
    if (r < 0) {
        flush_reports();
        return r;
    }
    int start = (int)(self_pid() % RW_SLOTS), got = -1;
    for (int k = 0; k < RW_SLOTS && got < 0; k++) {
        int i = (start + k) % RW_SLOTS;
        if (lock_broken(&rw->slot[i]))
            continue;
        int t = pthread_mutex_trylock(&rw->slot[i].m);
        if (t == EBUSY)
            continue;
        if (lock_taken(&rw->slot[i], t, "rwlock (reader)") >= 0)
            got = i;
    }
    if (got < 0) {
        int e = lock_named(&rw->slot[start], "rwlock (reader)");
        got = e >= 0 ? start : e;
    }
    unlock_l(&rw->gate);
    flush_reports();
    return got;
}

int shm_rw_runlock(shm_rwlock_t *rw, int slot)
{
    if (slot < 0 || slot >= RW_SLOTS)
        return -EINVAL;
    return unlock_l(&rw->slot[slot]);
}

int shm_rw_wlock(shm_rwlock_t *rw)
{
    int r = lock_named(&rw->gate, "rwlock (writer)");
    if (r < 0) {
        flush_reports();
        return r;
    }
    for (int i = 0; i < RW_SLOTS; i++) {
        if ((r = lock_named(&rw->slot[i], "rwlock (reader)")) < 0) {
            while (--i >= 0)
                unlock_l(&rw->slot[i]);
            unlock_l(&rw->gate);
            flush_reports();
            return r;
        }
    }
    flush_reports();
    return 0;
}

/* 0, or the first error (-EPERM: the caller is not the writer); the
 * slots are released before the gate either way */
int shm_rw_wunlock(shm_rwlock_t *rw)
{
    int r = 0;
    for (int i = RW_SLOTS - 1; i >= 0; i--) {
        int e = unlock_l(&rw->slot[i]);
        if (e && !r)
            r = e;
    }
    int e = unlock_l(&rw->gate);
    return r ? r : e;
}

/* ---------------------------------------------------------------- atomics */

int64_t shm_atomic_add(int64_t *p, int64_t v)
{
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}

int64_t shm_atomic_get(int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

void shm_atomic_set(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

int64_t shm_atomic_xchg(int64_t *p, int64_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

int shm_atomic_cas(int64_t *p, int64_t expected, int64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ------------------------------------------------------------- hash table
 *
 * Entries are single arena blocks (header, key, value).  Every change to a
 * bucket list is one pointer store made after the new entry is complete,
 * so a process killed inside a bucket lock leaves a well-formed list (at
 * worst an unlinked block that is never freed).  Blocks are allocated
 * before and freed after the bucket lock is held, so the allocator lock is
 * never taken inside a bucket lock.
 */
typedef struct ht_entry {
    struct ht_entry *next;
    int64_t expires; /* CLOCK_MONOTONIC ns; 0 = never */
    uint32_t hash;
    uint32_t klen;
    uint64_t vlen;
    char data[];
} ht_entry_t;

typedef struct {
    shm_lock_t lock;
    ht_entry_t *head;
} ht_bucket_t;

struct shm_ht {
    uint32_t magic;
    uint32_t nbuckets;
    int32_t mod;
    int32_t users;   /* operations in progress (shm_ht_destroy waits them out) */
    int64_t count;   /* entries linked, expired ones included */
    int64_t expiring; /* of which have an expiry time */
    ht_bucket_t b[];
};

#define HT_MAGIC 0x48544231u

static inline uint32_t ht_hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

static inline int ht_ok(shm_ht_t *ht)
{
    return ht && __atomic_load_n(&ht->magic, __ATOMIC_ACQUIRE) == HT_MAGIC;
}

/* Every operation registers as a user before it looks at the table and
 * takes its bucket lock with bk_lock, which fails (and lets the lock go)
 * when the lock cannot be taken or the table was destroyed meanwhile: an
 * operation never goes on unlocked, nor on a dead table. */
static int ht_enter(shm_ht_t *ht)
{
    if (!ht_ok(ht))   /* never count into a table already gone */
        return 0;
    __atomic_add_fetch(&ht->users, 1, __ATOMIC_ACQ_REL);
    if (ht_ok(ht))
        return 1;
    __atomic_sub_fetch(&ht->users, 1, __ATOMIC_ACQ_REL);
    return 0;
}

static void ht_leave(shm_ht_t *ht)
{
    __atomic_sub_fetch(&ht->users, 1, __ATOMIC_ACQ_REL);
    flush_reports();
}

static int bk_lock(shm_ht_t *ht, ht_bucket_t *bk)
{
    int r = lock_named(&bk->lock, "hash table bucket");
    if (r < 0)
        return r > -3 ? -EIO : r;   /* keep clear of -1/-2 */
    if (!ht_ok(ht)) {
        unlock_l(&bk->lock);
        return -2;
    }
    return 0;
}

shm_ht_t *shm_ht_new(uint32_t nbuckets, int mod)
{
    if (!nbuckets || nbuckets > (1u << 26))
        return NULL;
    shm_ht_t *ht = shm_malloc_mod(sizeof(*ht) + nbuckets * sizeof(ht_bucket_t), mod);
    if (!ht)
        return NULL;
    memset(ht, 0, sizeof(*ht));
    ht->nbuckets = nbuckets;
    ht->mod = mod;
    for (uint32_t i = 0; i < nbuckets; i++) {
        ht->b[i].head = NULL;
        if (lock_init(&ht->b[i].lock)) {
            shm_free_ptr(ht);
            return NULL;
        }
    }
    __atomic_store_n(&ht->magic, HT_MAGIC, __ATOMIC_RELEASE);
    return ht;
}

/* The table is marked dead first (new operations fail), then each bucket
 * is emptied under its lock (an operation inside it finishes first; one
 * waiting for it sees the table dead), then the block is freed once no
 * operation is inside any more.  An operation whose process died inside
 * leaves its count behind: after 2 s it is taken for dead. */
int shm_ht_destroy(shm_ht_t *ht)
{
    if (!ht)
        return -1;
    uint32_t want = HT_MAGIC;
    if (!__atomic_compare_exchange_n(&ht->magic, &want, 0, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return -1;
    int r = 0;
    for (uint32_t i = 0; i < ht->nbuckets; i++) {
        ht_bucket_t *bk = &ht->b[i];
        int e = lock_named(&bk->lock, "hash table bucket");
        ht_entry_t *d = bk->head;
        bk->head = NULL;
        if (e >= 0)
            unlock_l(&bk->lock);
        else if (!r)
            r = e;   /* unusable lock: nobody else can be inside either */
        while (d) {
            ht_entry_t *n = d->next;
            shm_free_ptr(d);
            d = n;
        }
    }
    int64_t deadline = shm_now_ns() + 2000000000LL;
    while (__atomic_load_n(&ht->users, __ATOMIC_ACQUIRE) > 0 && shm_now_ns() < deadline)
        sched_yield();
    flush_reports();
    int f = shm_free_ptr(ht);
    return r ? r : f;
}

uint32_t shm_ht_nbuckets(shm_ht_t *ht) { return ht_ok(ht) ? ht->nbuckets : 0; }

static inline int expired(ht_entry_t *e, int64_t *now)
{
    if (!e->expires)
        return 0;
    if (!*now)
        *now = shm_now_ns();
    return e->expires <= *now;
}

/* the link pointing at the entry for key, or at the list's NULL end */
static ht_entry_t **ht_find(ht_bucket_t *bk, uint32_t h, const char *key, size_t klen)
{
    ht_entry_t **pp = &bk->head;
    for (ht_entry_t *e = *pp; e; pp = &e->next, e = *pp)
        if (e->hash == h && e->klen == klen && !memcmp(e->data, key, klen))
            return pp;
    return pp;
}

/* 0 ok; -1 out of memory; -2 bad (or meanwhile destroyed) table or
 * entry; < -2: -errno of the bucket lock; the table is unchanged unless 0 */
int shm_ht_put(shm_ht_t *ht, const char *key, size_t klen, const char *val,
               size_t vlen, int64_t ttl_ns)
{
    if (klen > UINT32_MAX || vlen > UINT32_MAX || vlen > A->size || !ht_enter(ht))
        return -2;
    ht_entry_t *n = shm_malloc_mod(sizeof(*n) + klen + vlen, ht->mod);
    if (!n) {
        ht_leave(ht);
        return -1;
    }
    uint32_t h = ht_hash(key, klen);
    n->hash = h;
    n->klen = (uint32_t)klen;
    n->vlen = vlen;
    n->expires = ttl_ns > 0 ? shm_now_ns() + ttl_ns : 0;
    memcpy(n->data, key, klen);
    memcpy(n->data + klen, val, vlen);
    ht_bucket_t *bk = &ht->b[h % ht->nbuckets];
    int r = bk_lock(ht, bk);
    if (r < 0) {
        shm_free_ptr(n);
        ht_leave(ht);
        return r;
    }
    ht_entry_t **pp = ht_find(bk, h, key, klen), *old = *pp;
    if (old) {
        n->next = old->next;
        if (old->expires)
            __atomic_sub_fetch(&ht->expiring, 1, __ATOMIC_RELAXED);
    } else {
        n->next = NULL;
        __atomic_add_fetch(&ht->count, 1, __ATOMIC_RELAXED);
    }
    if (n->expires)
        __atomic_add_fetch(&ht->expiring, 1, __ATOMIC_RELAXED);
    __atomic_store_n(pp, n, __ATOMIC_RELEASE);
    unlock_l(&bk->lock);
    if (old)
        shm_free_ptr(old);
    ht_leave(ht);
    return 0;
}

/* value length; -1 absent or expired; -2 bad table; < -2: -errno of the
 * bucket lock */
int64_t shm_ht_get(shm_ht_t *ht, const char *key, size_t klen, char *out, size_t cap)
{
    if (!ht_enter(ht))
        return -2;
    uint32_t h = ht_hash(key, klen);
    ht_bucket_t *bk = &ht->b[h % ht->nbuckets];
    int64_t ret = -1, now = 0;
    int r = bk_lock(ht, bk);
    if (r < 0) {
        ht_leave(ht);
        return r;
    }
    ht_entry_t *e = *ht_find(bk, h, key, klen);
    if (e && !expired(e, &now)) {
        ret = (int64_t)e->vlen;
        if (e->vlen <= cap)
            memcpy(out, e->data + e->klen, e->vlen);
    }
    unlock_l(&bk->lock);
    ht_leave(ht);
    return ret;
}

static void unlink_entry(shm_ht_t *ht, ht_entry_t **pp, ht_entry_t *e)
{
    __atomic_store_n(pp, e->next, __ATOMIC_RELEASE);
    __atomic_sub_fetch(&ht->count, 1, __ATOMIC_RELAXED);
    if (e->expires)
        __atomic_sub_fetch(&ht->expiring, 1, __ATOMIC_RELAXED);
}

/* 1 removed, 0 absent; -2 bad table; < -2: -errno of the bucket lock */
int shm_ht_del(shm_ht_t *ht, const char *key, size_t klen)
{
    if (!ht_enter(ht))
        return -2;
    uint32_t h = ht_hash(key, klen);
    ht_bucket_t *bk = &ht->b[h % ht->nbuckets];
    int64_t now = 0;
    int found = 0;
    int r = bk_lock(ht, bk);
    if (r < 0) {
        ht_leave(ht);
        return r;
    }
    ht_entry_t **pp = ht_find(bk, h, key, klen), *e = *pp;
    if (e) {
        found = !expired(e, &now);
        unlink_entry(ht, pp, e);
    }
    unlock_l(&bk->lock);
    if (e)
        shm_free_ptr(e);
    ht_leave(ht);
    return found;
}

/* entries; -2 bad table; < -2: -errno of a bucket lock */
int64_t shm_ht_len(shm_ht_t *ht)
{
    if (!ht_enter(ht))
        return -2;
    if (!__atomic_load_n(&ht->expiring, __ATOMIC_RELAXED)) {
        int64_t n = __atomic_load_n(&ht->count, __ATOMIC_RELAXED);
        ht_leave(ht);
        return n;
    }
    int64_t n = 0, now = shm_now_ns();
    for (uint32_t i = 0; i < ht->nbuckets; i++) {
        ht_bucket_t *bk = &ht->b[i];
        int r = bk_lock(ht, bk);
        if (r < 0) {
            ht_leave(ht);
            return r;
        }
        for (ht_entry_t *e = bk->head; e; e = e->next)
            n += !expired(e, &now);
        unlock_l(&bk->lock);
    }
    ht_leave(ht);
    return n;
}

/* entries removed; -2 bad table; < -2: -errno of a bucket lock (what was
 * removed before it stays removed) */
int64_t shm_ht_purge(shm_ht_t *ht)
{
    if (!ht_enter(ht))
        return -2;
    int64_t removed = 0, now = shm_now_ns();
    int r = 0;
    for (uint32_t i = 0; i < ht->nbuckets && !r; i++) {
        if (!__atomic_load_n(&ht->expiring, __ATOMIC_RELAXED))
            break;
        ht_bucket_t *bk = &ht->b[i];
        ht_entry_t *dead = NULL;
        if ((r = bk_lock(ht, bk)) < 0)
            break;
        ht_entry_t **pp = &bk->head;
        while (*pp) {
            ht_entry_t *e = *pp;
            if (expired(e, &now)) {
                unlink_entry(ht, pp, e);
                e->next = dead; /* e is private now */
                dead = e;
            } else {
                pp = &e->next;
            }
        }
        unlock_l(&bk->lock);
        while (dead) {
            ht_entry_t *n = dead->next;
            shm_free_ptr(dead);
            dead = n;
            removed++;
        }
    }
    ht_leave(ht);
    return r < 0 ? r : removed;
}

/* bytes needed; -1 bad bucket index; -2 bad table; < -2: -errno of the
 * bucket lock */
int64_t shm_ht_dump_bucket(shm_ht_t *ht, uint32_t i, char *out, size_t cap)
{
    if (!ht_enter(ht))
        return -2;
    if (i >= ht->nbuckets) {
        ht_leave(ht);
        return -1;
    }
    ht_bucket_t *bk = &ht->b[i];
    int64_t now = 0;
    size_t need = 0;
    int r = bk_lock(ht, bk);
    if (r < 0) {
        ht_leave(ht);
        return r;
    }
    for (ht_entry_t *e = bk->head; e; e = e->next)
        if (!expired(e, &now))
            need += 8 + e->klen + e->vlen;
    if (need <= cap) {
        char *o = out;
        for (ht_entry_t *e = bk->head; e; e = e->next) {
            if (expired(e, &now))
                continue;
            uint32_t kl = e->klen, vl = (uint32_t)e->vlen;
            memcpy(o, &kl, 4);
            memcpy(o + 4, &vl, 4);
            memcpy(o + 8, e->data, e->klen + e->vlen);
            o += 8 + e->klen + e->vlen;
        }
    }
    unlock_l(&bk->lock);
    ht_leave(ht);
    return (int64_t)need;
}

/* test hook: the lock of key's bucket */
shm_lock_t *shm_ht_bucket_lock_for_tests(shm_ht_t *ht, const char *key, size_t klen)
{
    if (!ht_ok(ht))
        return NULL;
    return &ht->b[ht_hash(key, klen) % ht->nbuckets].lock;
}
