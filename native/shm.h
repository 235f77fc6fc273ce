/*
 * opensipy shared memory: one arena mapped MAP_SHARED|MAP_ANONYMOUS before
 * the first fork (so it sits at the same address in every child), a
 * boundary-tag allocator with segregated free lists and per-module
 * accounting, robust process-shared locks, lock sets, read-write locks,
 * atomic counters and a shared hash table.
 *
 * Every function that takes a pointer into the arena checks it; bad input
 * yields an error code, never a write outside the arena.
 *
 * The declarations below are also the cffi cdef (native/build_shm.py reads
 * the part between the CDEF markers), so keep them free of preprocessor
 * directives.
 */
#ifndef OPENSIPY_SHM_H
#define OPENSIPY_SHM_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
typedef struct shm_lock shm_lock_t;
typedef struct shm_rwlock shm_rwlock_t;
typedef struct shm_ht shm_ht_t;

struct shm_stats {
    uint64_t total_size;
    uint64_t used_size;
    uint64_t real_used_size;
    uint64_t max_used_size;
    uint64_t free_size;
    uint64_t fragments;
};

/* arena: 0 ok; -1 already initialised; -2 mmap failed; -3 size too small */
int shm_init(size_t size);
/* test-only: map a fresh arena; the old one stays mapped (never unmapped)
 * so that stale objects cannot fault; their pointers no longer validate. */
int shm_reinit_for_tests(size_t size);
int shm_ready(void);
uintptr_t shm_base_addr(void);
size_t shm_arena_size(void);

int shm_module_id(const char *name);        /* -1: table full / bad name */
int shm_module_count(void);
const char *shm_module_name(int id);        /* NULL when out of range */
uint64_t shm_module_bytes(int id);

void *shm_malloc_mod(size_t size, int mod); /* NULL: out of memory */
int shm_free_ptr(void *p);                  /* 0 ok; -1 not a live block */
void *shm_realloc_mod(void *p, size_t size, int mod); /* NULL: oom / bad */
/* headers are read under the allocator lock */
size_t shm_block_size(void *p);             /* 0 when p is not a live block */
int shm_block_module(void *p);              /* -1 when p is not a live block */
int shm_block_info(void *p, size_t *size, int *mod); /* 0, or -1: not live */
void *shm_ptr_at(uint64_t offset);          /* NULL when no live block there */
uint64_t shm_offset_of(void *p);
void shm_get_stats(struct shm_stats *st);
uint64_t shm_largest_free(void);            /* largest free payload */
int shm_check(void);                        /* 0 consistent; < 0 broken */

int64_t shm_start_ns(void);                 /* CLOCK_MONOTONIC at shm_init */
int64_t shm_now_ns(void);

/* A one-shot CLOCK_MONOTONIC timer as a file descriptor (timerfd): made
 * before fork and shared by the processes that inherit it (the UDP
 * receivers of a socket: net/udp.py).  open: non-blocking, close-on-exec;
 * -1 with errno on error.  arm: expire once ns nanoseconds from now (ns <= 0
 * disarms); 0, or -1 with errno. */
int osy_timerfd_open(void);
int osy_timerfd_arm(int fd, int64_t ns);

/* locks: 0 ok, 1 ok after taking over from a dead owner, < 0 -errno
 * (-ENOTRECOVERABLE: a dead owner's lock could not be made consistent, it
 * stays unusable).  Release: -EPERM when the caller is not the holder (the
 * owner stays recorded). */
size_t shm_lock_sizeof(void);
shm_lock_t *shm_lockset_new(int n, int mod); /* n locks; NULL: oom */
shm_lock_t *shm_lock_at(shm_lock_t *set, int n, int i); /* NULL: bad i */
int shm_lock_get(shm_lock_t *l);
int shm_lock_try(shm_lock_t *l);            /* 1 taken, 0 busy, < 0 error */
int shm_lock_release(shm_lock_t *l);
int shm_lock_owner(shm_lock_t *l);

shm_rwlock_t *shm_rwlock_new(int mod);
int shm_rw_rlock(shm_rwlock_t *rw);         /* >= 0 slot held; < 0 error */
int shm_rw_runlock(shm_rwlock_t *rw, int slot);
int shm_rw_wlock(shm_rwlock_t *rw);
int shm_rw_wunlock(shm_rwlock_t *rw);

int64_t shm_atomic_add(int64_t *p, int64_t v);  /* returns the new value */
int64_t shm_atomic_get(int64_t *p);
void shm_atomic_set(int64_t *p, int64_t v);
int64_t shm_atomic_xchg(int64_t *p, int64_t v); /* returns the old value */
int shm_atomic_cas(int64_t *p, int64_t expected, int64_t desired);

/* Hash table.  Every operation fails rather than go on without its bucket
 * lock: -2 is a bad (or meanwhile destroyed) table, below -2 the -errno of
 * a bucket lock that cannot be taken (the table is unchanged). */
shm_ht_t *shm_ht_new(uint32_t nbuckets, int mod);
/* 0; -1 not a live table; < -2 a bucket lock was unusable (freed anyway) */
int shm_ht_destroy(shm_ht_t *ht);
uint32_t shm_ht_nbuckets(shm_ht_t *ht);
/* ttl_ns <= 0: never expires.  0 ok; -1 out of memory (table unchanged) */
int shm_ht_put(shm_ht_t *ht, const char *key, size_t klen,
               const char *val, size_t vlen, int64_t ttl_ns);
/* value length (copied when it fits in cap); -1 when absent or expired */
int64_t shm_ht_get(shm_ht_t *ht, const char *key, size_t klen,
                   char *out, size_t cap);
int shm_ht_del(shm_ht_t *ht, const char *key, size_t klen); /* 1/0 */
int64_t shm_ht_len(shm_ht_t *ht);
int64_t shm_ht_purge(shm_ht_t *ht);         /* number of entries removed */
/* snapshot of one bucket under its lock, entries laid out as
 * u32 klen, u32 vlen, key, value; returns the bytes needed (copied only
 * when it fits in cap); -1 for a bad bucket index */
int64_t shm_ht_dump_bucket(shm_ht_t *ht, uint32_t i, char *out, size_t cap);

/* test hooks: the lock of key's bucket (to hold it from a test); make the
 * next n pthread_mutex_consistent calls of this process fail */
shm_lock_t *shm_ht_bucket_lock_for_tests(shm_ht_t *ht, const char *key, size_t klen);
void shm_fail_consistent_for_tests(int n);
/* CDEF-END */

/* called (with the pid of the dead owner, 0 if unknown) whenever a lock is
 * taken over from a process that died holding it; defined by the binding
 * (extern "Python+C" in the cffi module, or by a C test driver).  Never
 * called with the allocator lock, a bucket lock or a rwlock gate held: the
 * report is queued and made when the operation has let them go. */
void _shm_owner_dead(const char *what, int pid);

#endif
