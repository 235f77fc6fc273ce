/*
 * opensipy tm: the transaction table, matching, timer lists and UDP
 * retransmission (see tm.h and modules/tm/README.md).
 *
 * Locks and their order: bucket lock -> (nothing); cell lock -> timer lock.
 * The timer tick takes the timer lock alone, takes a reference on every
 * cell it unlinks a due entry of, and only then (timer lock released)
 * takes cell locks.  A cell is freed when its last reference goes; the
 * table holds one reference until the cell is deleted (unlinked from its
 * bucket, timers stopped).  A linked timer entry implies the table's
 * reference is still held, because deletion stops every timer (under the
 * timer lock) before dropping it.
 *
 * Locks are robust: a process that died holding one hands the next locker
 * EOWNERDEAD; the lock is made consistent and work goes on (every list
 * change is a few pointer stores made in an order that leaves the lists
 * walkable).
 */
#define _GNU_SOURCE
#include "tm.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CELL_MAGIC 0x43454c4cu /* "CELL" */
#define TABLE_MAGIC 0x544d5442u

typedef void *(*malloc_f)(size_t, int);
typedef int (*free_f)(void *);

typedef struct {
    pthread_mutex_t lock;
    tm_cell_t *head;
    uint32_t next_label;
    uint32_t entries;
} tm_bucket_t;

typedef struct {
    uint32_t magic;
    uint32_t size;
    int64_t inuse;
    int64_t t1, t2;
    int64_t list_delay[TM_NLISTS];
    pthread_mutex_t timer_lock;
    tm_timer_t *head[TM_NLISTS], *tail[TM_NLISTS];
    int64_t retransmissions;
    pthread_mutex_t zombie_lock;
    tm_cell_t *zombies;
    int64_t nzombies;
    tm_bucket_t b[];
} tm_table_t;

static tm_table_t *T;

static pid_t pid_cache; /* reset in every child by the atfork handler */

static void pid_after_fork(void) { pid_cache = getpid(); }

static inline pid_t my_pid(void)
{
    if (!pid_cache)
        pid_cache = getpid();
    return pid_cache;
}
static malloc_f mem_alloc;
static free_f mem_free;
static int mem_mod;

/* ------------------------------------------------------------------ locks */

static int robust_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int r;
    if ((r = pthread_mutexattr_init(&a)))
        return -r;
    if (!(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)))
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r)
        r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

static int recovered; /* locks taken over from dead processes (this process) */

static void lock_m(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        recovered++;
    }
}

static void unlock_m(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

int tm_locks_recovered(void) { return recovered; }

/* ------------------------------------------------------------------ table */

int64_t tm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint32_t fnv(uint32_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

uint32_t tm_hash(const char *callid, uint32_t clen, uint32_t cseq)
{
    if (!T)
        return 0;
    uint32_t h = fnv(2166136261u, callid, clen);
    char num[4] = {(char)(cseq >> 24), (char)(cseq >> 16), (char)(cseq >> 8),
                   (char)cseq};
    h = fnv(h, num, 4);
    return h % T->size;
}

int tm_init(uint32_t size, uintptr_t alloc_fn, uintptr_t free_fn, int mod,
            int64_t t1, int64_t t2, int64_t fr, int64_t fr_inv, int64_t wt)
{
    if (T)
        return -1;
    if (!size || size > (1u << 20) || !alloc_fn || !free_fn || t1 <= 0 ||
        t2 < t1)
        return -2;
    static int atfork_done;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, pid_after_fork);
        atfork_done = 1;
    }
    pid_cache = getpid();
    mem_alloc = (malloc_f)alloc_fn;
    mem_free = (free_f)free_fn;
    mem_mod = mod;
    tm_table_t *t = mem_alloc(sizeof(*t) + size * sizeof(tm_bucket_t), mod);
    if (!t)
        return -3;
    memset(t, 0, sizeof(*t) + size * sizeof(tm_bucket_t));
    t->size = size;
    t->t1 = t1;
    t->t2 = t2;
    int64_t d[TM_NLISTS] = {t1, 2 * t1, 4 * t1, t2, fr, fr_inv, wt, 0};
    memcpy(t->list_delay, d, sizeof(d));
    if (robust_init(&t->timer_lock) || robust_init(&t->zombie_lock)) {
        mem_free(t);
        return -3;
    }
    for (uint32_t i = 0; i < size; i++)
        if (robust_init(&t->b[i].lock)) {
            mem_free(t);
            return -3;
        }
    t->magic = TABLE_MAGIC;
    T = t;
    return 0;
}

/* test-only: forget the table (its memory goes with the test arena) */
void tm_reset_for_tests(void) { T = NULL; }

int tm_ready(void) { return T != NULL; }
uint32_t tm_size(void) { return T ? T->size : 0; }
int64_t tm_inuse(void) { return T ? __atomic_load_n(&T->inuse, __ATOMIC_RELAXED) : 0; }
int64_t tm_retransmissions(void)
{
    return T ? __atomic_load_n(&T->retransmissions, __ATOMIC_RELAXED) : 0;
}

uint32_t tm_bucket_entries(uint32_t i)
{
    return (T && i < T->size) ? T->b[i].entries : 0;
}

/* ------------------------------------------------------------------ cells */

static inline int cell_ok(tm_cell_t *c) { return c && c->magic == CELL_MAGIC; }


/* one reference more, attributed to this process */
static void ref_take(tm_cell_t *c)
{
    int32_t pid = my_pid();
    for (int i = 0; i < TM_HOLDERS; i++)
        if (__atomic_load_n(&c->holders[i].pid, __ATOMIC_ACQUIRE) == pid) {
            __atomic_add_fetch(&c->holders[i].n, 1, __ATOMIC_ACQ_REL);
            goto done;
        }
    for (int i = 0; i < TM_HOLDERS; i++) {
        int32_t zero = 0;
        if (__atomic_load_n(&c->holders[i].pid, __ATOMIC_ACQUIRE) == 0 &&
            __atomic_compare_exchange_n(&c->holders[i].pid, &zero, pid, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            __atomic_add_fetch(&c->holders[i].n, 1, __ATOMIC_ACQ_REL);
            goto done;
        }
    }
    __atomic_add_fetch(&c->anon, 1, __ATOMIC_ACQ_REL);
done:
    __atomic_add_fetch(&c->ref, 1, __ATOMIC_ACQ_REL);
}

/* the attribution of one reference of this process goes (the count of
 * references itself is changed by the caller) */
static void ref_unattribute(tm_cell_t *c)
{
    int32_t pid = my_pid();
    for (int i = 0; i < TM_HOLDERS; i++)
        if (__atomic_load_n(&c->holders[i].pid, __ATOMIC_ACQUIRE) == pid) {
            int32_t n = __atomic_load_n(&c->holders[i].n, __ATOMIC_ACQUIRE);
            while (n > 0 && !__atomic_compare_exchange_n(
                       &c->holders[i].n, &n, n - 1, 0, __ATOMIC_ACQ_REL,
                       __ATOMIC_ACQUIRE))
                ;
            if (n > 0)
                return;
            break;
        }
    __atomic_sub_fetch(&c->anon, 1, __ATOMIC_ACQ_REL);
}

static void timer_init(tm_timer_t *t, tm_cell_t *c, int which, int branch)
{
    memset(t, 0, sizeof(*t));
    t->list = -1;
    t->cell = c;
    t->which = which;
    t->branch = branch;
}

static tm_cell_t *cell_new(uint32_t hash, uint32_t cseq, const char *key,
                           uint32_t klen, int method)
{
    tm_cell_t *c = mem_alloc(sizeof(*c), mem_mod);
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    if (klen) {
        c->key = mem_alloc(klen, mem_mod);
        if (!c->key) {
            mem_free(c);
            return NULL;
        }
        memcpy(c->key, key, klen);
    }
    if (robust_init(&c->lock)) {
        if (c->key)
            mem_free(c->key);
        mem_free(c);
        return NULL;
    }
    c->key_len = klen;
    c->hash = hash;
    c->cseq = cseq;
    c->method_id = method;
    c->relayed_branch = -1;
    c->created = tm_now();
    timer_init(&c->uas_retr, c, TM_TW_UAS_RETR, -1);
    timer_init(&c->wait, c, TM_TW_WAIT, -1);
    for (int i = 0; i < TM_MAX_BRANCHES; i++) {
        timer_init(&c->br[i].retr, c, TM_TW_BR_RETR, i);
        timer_init(&c->br[i].fr, c, TM_TW_BR_FR, i);
        c->br[i].dst.fd = -1;
    }
    c->uas_dst.fd = -1;
    c->magic = CELL_MAGIC;
    return c;
}

static void stop_all_locked(tm_cell_t *c);

static void cell_free(tm_cell_t *c)
{
    /* nothing may stay linked to freed memory (tm_delete stopped the
     * timers already; this also covers a cell never inserted) */
    lock_m(&T->timer_lock);
    stop_all_locked(c);
    unlock_m(&T->timer_lock);
    if (c->deleted) {
        lock_m(&T->zombie_lock);
        if (c->zprev)
            c->zprev->znext = c->znext;
        else if (T->zombies == c)
            T->zombies = c->znext;
        if (c->znext)
            c->znext->zprev = c->zprev;
        T->nzombies--;
        unlock_m(&T->zombie_lock);
    }
    c->magic = 0;
    char *bufs[] = {c->key, c->req, c->rpl, c->blob};
    for (unsigned i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (bufs[i])
            mem_free(bufs[i]);
    for (int i = 0; i < TM_MAX_BRANCHES; i++) {
        tm_branch_t *b = &c->br[i];
        if (b->req)
            mem_free(b->req);
        if (b->rpl)
            mem_free(b->rpl);
        if (b->cancel)
            mem_free(b->cancel);
    }
    pthread_mutex_destroy(&c->lock);
    mem_free(c);
    __atomic_sub_fetch(&T->inuse, 1, __ATOMIC_RELAXED);
}

int tm_ref(tm_cell_t *c)
{
    if (!cell_ok(c))
        return -1;
    ref_take(c);
    return __atomic_load_n(&c->ref, __ATOMIC_ACQUIRE);
}

int tm_unref(tm_cell_t *c)
{
    if (!cell_ok(c))
        return -1;
    ref_unattribute(c);
    int r = __atomic_sub_fetch(&c->ref, 1, __ATOMIC_ACQ_REL);
    if (r == 0)
        cell_free(c);
    return r;
}

/* drop the table's own reference (anonymous) */
static void unref_table(tm_cell_t *c)
{
    __atomic_sub_fetch(&c->anon, 1, __ATOMIC_ACQ_REL);
    if (__atomic_sub_fetch(&c->ref, 1, __ATOMIC_ACQ_REL) == 0)
        cell_free(c);
}

int tm_cell_lock(tm_cell_t *c)
{
    if (!cell_ok(c))
        return -1;
    lock_m(&c->lock);
    c->owner = getpid();
    return 0;
}

int tm_cell_unlock(tm_cell_t *c)
{
    if (!cell_ok(c))
        return -1;
    c->owner = 0;
    unlock_m(&c->lock);
    return 0;
}

#define METHOD_INVITE 1
#define METHOD_CANCEL 2
#define METHOD_ACK 4

/* does cell c match a request with this key and method?  mode 0: the same
 * method; mode 1: an ACK looking for its INVITE; mode 2: a CANCEL looking
 * for the transaction it cancels (any method but CANCEL and ACK) */
static inline int req_match(tm_cell_t *c, const char *key, uint32_t klen,
                            uint32_t cseq, int method, int mode)
{
    if (c->deleted || c->cseq != cseq || c->key_len != klen ||
        memcmp(c->key, key, klen))
        return 0;
    /* mode 3: a local (t_uac) transaction by its Call-ID (the key) */
    if (mode == 3)
        return (c->flags & TM_F_LOCAL_UAC) && c->method_id == method;
    if (c->flags & TM_F_LOCAL_UAC)
        return 0;
    if (mode == 1)
        return (c->flags & TM_F_INVITE) != 0;
    if (mode == 2)
        return c->method_id != METHOD_CANCEL && c->method_id != METHOD_ACK;
    return c->method_id == method;
}

tm_cell_t *tm_lookup_req(const char *callid, uint32_t clen, uint32_t cseq,
                         const char *key, uint32_t klen, int method, int mode)
{
    if (!T || klen > TM_MAX_KEY || mode < 0 || mode > 3)
        return NULL;
    tm_bucket_t *bk = &T->b[tm_hash(callid, clen, cseq)];
    tm_cell_t *found = NULL;
    lock_m(&bk->lock);
    for (tm_cell_t *c = bk->head; c; c = c->next)
        if (req_match(c, key, klen, cseq, method, mode)) {
            found = c;
            ref_take(c);
            break;
        }
    unlock_m(&bk->lock);
    return found;
}

/* find the transaction of a request, or create it; *created: 1 new,
 * 0 found (a retransmission), -1 out of memory (NULL returned) */
tm_cell_t *tm_lookup_or_new(const char *callid, uint32_t clen, uint32_t cseq,
                            const char *key, uint32_t klen, int method,
                            int *created)
{
    *created = -1;
    if (!T || klen > TM_MAX_KEY)
        return NULL;
    uint32_t h = tm_hash(callid, clen, cseq);
    tm_bucket_t *bk = &T->b[h];
    /* allocate before taking the bucket lock (the allocator has its own) */
    tm_cell_t *n = cell_new(h, cseq, key, klen, method);
    lock_m(&bk->lock);
    for (tm_cell_t *c = bk->head; c; c = c->next)
        if (req_match(c, key, klen, cseq, method, 0)) {
            ref_take(c);
            unlock_m(&bk->lock);
            if (n) {
                __atomic_add_fetch(&T->inuse, 1, __ATOMIC_RELAXED);
                n->ref = 1;
                n->anon = 1;
                __atomic_sub_fetch(&n->anon, 1, __ATOMIC_ACQ_REL);
                if (__atomic_sub_fetch(&n->ref, 1, __ATOMIC_ACQ_REL) == 0)
                    cell_free(n);
            }
            *created = 0;
            return c;
        }
    if (!n) {
        unlock_m(&bk->lock);
        return NULL;
    }
    if (method == METHOD_INVITE)
        n->flags |= TM_F_INVITE;
    n->label = bk->next_label++;
    n->ref = 1; /* the table's (anon) */
    n->anon = 1;
    ref_take(n); /* and the caller's */
    n->next = bk->head;
    n->prev = NULL;
    if (bk->head)
        bk->head->prev = n;
    __atomic_store_n(&bk->head, n, __ATOMIC_RELEASE);
    bk->entries++;
    __atomic_add_fetch(&T->inuse, 1, __ATOMIC_RELAXED);
    unlock_m(&bk->lock);
    *created = 1;
    return n;
}

/* the server transactions (no local ones) of a method with this CSeq
 * number in the bucket of (callid, cseq), each with a reference for the
 * caller (who checks the Call-ID in the stored request); at most cap */
int tm_lookup_cseq(const char *callid, uint32_t clen, uint32_t cseq,
                   int method, tm_cell_t **out, int cap)
{
    if (!T || cap <= 0)
        return 0;
    tm_bucket_t *bk = &T->b[tm_hash(callid, clen, cseq)];
    int n = 0;
    lock_m(&bk->lock);
    for (tm_cell_t *c = bk->head; c && n < cap; c = c->next)
        if (!c->deleted && !(c->flags & TM_F_LOCAL_UAC) && c->cseq == cseq &&
            c->method_id == method) {
            ref_take(c);
            out[n++] = c;
        }
    unlock_m(&bk->lock);
    return n;
}

/* a cell for a request this server sends itself (t_uac): no UAS side */
tm_cell_t *tm_new_local(const char *callid, uint32_t clen, uint32_t cseq,
                        int method)
{
    /* never matched against requests (LOCAL_UAC); the Call-ID is its key
     * for tm_lookup_req mode 3 */
    if (!T || clen > TM_MAX_KEY)
        return NULL;
    uint32_t h = tm_hash(callid, clen, cseq);
    tm_bucket_t *bk = &T->b[h];
    tm_cell_t *n = cell_new(h, cseq, callid, clen, method);
    if (!n)
        return NULL;
    n->flags |= TM_F_LOCAL_UAC | (method == METHOD_INVITE ? TM_F_INVITE : 0);
    lock_m(&bk->lock);
    n->label = bk->next_label++;
    n->ref = 1;
    n->anon = 1;
    ref_take(n);
    n->next = bk->head;
    n->prev = NULL;
    if (bk->head)
        bk->head->prev = n;
    __atomic_store_n(&bk->head, n, __ATOMIC_RELEASE);
    bk->entries++;
    __atomic_add_fetch(&T->inuse, 1, __ATOMIC_RELAXED);
    unlock_m(&bk->lock);
    return n;
}

tm_cell_t *tm_lookup_reply(uint32_t hash, uint32_t label)
{
    if (!T || hash >= T->size)
        return NULL;
    tm_bucket_t *bk = &T->b[hash];
    tm_cell_t *found = NULL;
    lock_m(&bk->lock);
    for (tm_cell_t *c = bk->head; c; c = c->next)
        if (c->label == label && !c->deleted) {
            found = c;
            ref_take(c);
            break;
        }
    unlock_m(&bk->lock);
    return found;
}

/* ------------------------------------------------------------------ buffers */

int tm_set_buf(tm_cell_t *c, int which, int branch, const char *data,
               uint32_t len)
{
    if (!cell_ok(c) || len > TM_MAX_BUF)
        return -2;
    char **pp;
    uint32_t *lp;
    if (which >= TM_BUF_BR_REQ) {
        if (branch < 0 || branch >= TM_MAX_BRANCHES)
            return -2;
        tm_branch_t *b = &c->br[branch];
        if (which == TM_BUF_BR_REQ) {
            pp = &b->req;
            lp = &b->req_len;
        } else if (which == TM_BUF_BR_RPL) {
            pp = &b->rpl;
            lp = &b->rpl_len;
        } else if (which == TM_BUF_BR_CANCEL) {
            pp = &b->cancel;
            lp = &b->cancel_len;
        } else {
            return -2;
        }
    } else if (which == TM_BUF_REQ) {
        pp = &c->req;
        lp = &c->req_len;
    } else if (which == TM_BUF_RPL) {
        pp = &c->rpl;
        lp = &c->rpl_len;
    } else if (which == TM_BUF_BLOB) {
        pp = &c->blob;
        lp = &c->blob_len;
    } else {
        return -2;
    }
    char *n = NULL;
    if (len) {
        n = mem_alloc(len, mem_mod);
        if (!n)
            return -1;
        memcpy(n, data, len);
    }
    char *old = *pp;
    *lp = 0;
    *pp = n;
    *lp = len;
    if (old)
        mem_free(old);
    return 0;
}

int tm_set_dst(tm_cell_t *c, int branch, int fd, const uint8_t *sa,
               int salen, int si)
{
    if (!cell_ok(c) || salen < 0 || salen > 32 || branch < -1 ||
        branch >= TM_MAX_BRANCHES)
        return -2;
    tm_dst_t *d = branch < 0 ? &c->uas_dst : &c->br[branch].dst;
    memcpy(d->sa, sa, (size_t)salen);
    d->salen = salen;
    d->fd = fd;
    d->si = si;
    return 0;
}

int tm_send(const tm_dst_t *d, const char *buf, uint32_t len)
{
    if (!d || d->fd < 0 || !buf || !len)
        return -1;
    ssize_t n = sendto(d->fd, buf, len, 0, (const struct sockaddr *)d->sa,
                       (socklen_t)d->salen);
    return n == (ssize_t)len ? 0 : -1;
}

/* ------------------------------------------------------------------ timers */

static tm_timer_t *timer_of(tm_cell_t *c, int which, int branch)
{
    if (which == TM_TW_UAS_RETR)
        return &c->uas_retr;
    if (which == TM_TW_WAIT)
        return &c->wait;
    if (branch < 0 || branch >= TM_MAX_BRANCHES)
        return NULL;
    if (which == TM_TW_BR_RETR)
        return &c->br[branch].retr;
    if (which == TM_TW_BR_FR)
        return &c->br[branch].fr;
    return NULL;
}

static void tl_unlink(tm_timer_t *t)
{
    int l = t->list;
    if (l < 0)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        T->head[l] = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        T->tail[l] = t->prev;
    t->next = t->prev = NULL;
    t->list = -1;
}

/* insert sorted by due, scanning from the tail (each list holds one delay
 * class, so this is almost always an append) */
static void tl_insert(tm_timer_t *t, int l)
{
    tm_timer_t *p = T->tail[l];
    while (p && p->due > t->due)
        p = p->prev;
    t->prev = p;
    t->next = p ? p->next : T->head[l];
    if (t->next)
        t->next->prev = t;
    else
        T->tail[l] = t;
    if (p)
        p->next = t;
    else
        T->head[l] = t;
    t->list = l;
}

static int list_for(int64_t delay)
{
    for (int l = 0; l < TM_NLISTS - 1; l++)
        if (T->list_delay[l] == delay)
            return l;
    return TM_NLISTS - 1;
}

/* (re)start a timer of cell c; delay in ns */
int tm_timer_start(tm_cell_t *c, int which, int branch, int64_t delay,
                   int kind, int cap_t2)
{
    if (!cell_ok(c) || delay < 0 || kind < TM_K_RETR_REQ || kind > TM_K_DELETE)
        return -2;
    tm_timer_t *t = timer_of(c, which, branch);
    if (!t)
        return -2;
    lock_m(&T->timer_lock);
    if (__atomic_load_n(&c->deleted, __ATOMIC_ACQUIRE)) {
        /* deleted (its timers stopped) while the caller held it: a timer
         * linked now would outlive the cell */
        unlock_m(&T->timer_lock);
        return -3;
    }
    tl_unlink(t);
    t->gen++;
    t->kind = kind;
    t->interval = delay;
    t->cap_t2 = cap_t2;
    t->due = tm_now() + delay;
    tl_insert(t, list_for(delay));
    unlock_m(&T->timer_lock);
    return 0;
}

int tm_timer_stop(tm_cell_t *c, int which, int branch)
{
    if (!cell_ok(c))
        return -2;
    tm_timer_t *t = timer_of(c, which, branch);
    if (!t)
        return -2;
    lock_m(&T->timer_lock);
    tl_unlink(t);
    t->gen++;
    unlock_m(&T->timer_lock);
    return 0;
}

int tm_timer_pending(tm_cell_t *c, int which, int branch)
{
    if (!cell_ok(c))
        return -2;
    tm_timer_t *t = timer_of(c, which, branch);
    return t ? t->list >= 0 : -2;
}

/* the generation of a timer: an event is still valid when it matches */
int64_t tm_timer_gen(tm_cell_t *c, int which, int branch)
{
    if (!cell_ok(c))
        return -1;
    tm_timer_t *t = timer_of(c, which, branch);
    return t ? (int64_t)t->gen : -1;
}

static void stop_all_locked(tm_cell_t *c)
{
    if (!T)
        return;
    tl_unlink(&c->uas_retr);
    c->uas_retr.gen++;
    tl_unlink(&c->wait);
    c->wait.gen++;
    for (int i = 0; i < TM_MAX_BRANCHES; i++) {
        tl_unlink(&c->br[i].retr);
        c->br[i].retr.gen++;
        tl_unlink(&c->br[i].fr);
        c->br[i].fr.gen++;
    }
}

/* unlink the cell from its bucket and stop its timers; drops the table's
 * reference (the cell is freed when the last user lets it go).  0 done,
 * 1 already deleted */
int tm_delete(tm_cell_t *c)
{
    if (!cell_ok(c) || !T)
        return -2;
    tm_bucket_t *bk = &T->b[c->hash];
    lock_m(&bk->lock);
    if (c->deleted) {
        unlock_m(&bk->lock);
        return 1;
    }
    __atomic_store_n(&c->deleted, 1, __ATOMIC_RELEASE);
    if (c->prev)
        c->prev->next = c->next;
    else
        bk->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    bk->entries--;
    unlock_m(&bk->lock);
    lock_m(&T->timer_lock);
    stop_all_locked(c);
    unlock_m(&T->timer_lock);
    lock_m(&T->zombie_lock);
    c->zprev = NULL;
    c->znext = T->zombies;
    if (T->zombies)
        T->zombies->zprev = c;
    T->zombies = c;
    T->nzombies++;
    unlock_m(&T->zombie_lock);
    unref_table(c);
    return 0;
}

int64_t tm_zombies(void)
{
    return T ? __atomic_load_n(&T->nzombies, __ATOMIC_RELAXED) : -1;
}

/* Deleted cells still referenced by a process that is gone: take those
 * references back (the timer runs this now and then).  Returns how many
 * references were taken back. */
int tm_reap_dead(void)
{
    enum { MAXR = 64 };
    tm_cell_t *cells[MAXR];
    int32_t counts[MAXR];
    int n = 0, total = 0;
    if (!T)
        return -1;
    lock_m(&T->zombie_lock);
    for (tm_cell_t *c = T->zombies; c && n < MAXR; c = c->znext) {
        int32_t got = 0;
        for (int i = 0; i < TM_HOLDERS; i++) {
            int32_t pid = __atomic_load_n(&c->holders[i].pid, __ATOMIC_ACQUIRE);
            if (pid <= 0 ||
                __atomic_load_n(&c->holders[i].n, __ATOMIC_ACQUIRE) <= 0)
                continue;
            if (kill(pid, 0) == 0 || errno != ESRCH)
                continue;
            got += __atomic_exchange_n(&c->holders[i].n, 0, __ATOMIC_ACQ_REL);
        }
        if (got > 0) {
            /* keep it alive until the zombie lock is let go */
            __atomic_add_fetch(&c->anon, 1, __ATOMIC_ACQ_REL);
            __atomic_add_fetch(&c->ref, 1, __ATOMIC_ACQ_REL);
            cells[n] = c;
            counts[n++] = got;
        }
    }
    unlock_m(&T->zombie_lock);
    for (int i = 0; i < n; i++) {
        __atomic_sub_fetch(&cells[i]->ref, counts[i], __ATOMIC_ACQ_REL);
        total += counts[i];
        unref_table(cells[i]); /* the temporary one: may free */
    }
    return total;
}

/* What fires: retransmissions are sent here; deletions done here; other
 * events are copied to out (at most cap; the rest wait for the next
 * tick), each with a reference on its cell that the caller must drop.
 * Returns the number of events in out. */
int tm_timer_tick(int64_t now, tm_event_t *out, int cap)
{
    if (!T || cap < 0)
        return -1;
    enum { BATCH = 256 };
    tm_timer_t *due[BATCH];
    uint32_t gens[BATCH];
    int n = 0, nout = 0;
    for (;;) {
        n = 0;
        lock_m(&T->timer_lock);
        for (int l = 0; l < TM_NLISTS && n < BATCH; l++) {
            while (n < BATCH && T->head[l] && T->head[l]->due <= now) {
                tm_timer_t *t = T->head[l];
                if ((t->kind == TM_K_PY ||
                     (t->kind == TM_K_DELETE && (t->cell->flags & TM_F_DELCB)))
                    && nout + n >= cap)
                    break;
                tl_unlink(t);
                ref_take(t->cell);
                gens[n] = t->gen;
                due[n++] = t;
            }
        }
        unlock_m(&T->timer_lock);
        if (!n)
            break;
        for (int i = 0; i < n; i++) {
            tm_timer_t *t = due[i];
            tm_cell_t *c = t->cell;
            if (t->kind == TM_K_PY ||
                (t->kind == TM_K_DELETE && (c->flags & TM_F_DELCB))) {
                out[nout].cell = c;
                out[nout].which = t->which;
                out[nout].branch = t->branch;
                out[nout].gen = gens[i];
                nout++;
                continue; /* the caller drops the reference */
            }
            if (t->kind == TM_K_DELETE) {
                if (t->gen == gens[i])
                    tm_delete(c);
                tm_unref(c);
                continue;
            }
            lock_m(&c->lock);
            if (t->gen == gens[i] && !c->deleted) {
                int sent = -1;
                if (t->kind == TM_K_RETR_RPL)
                    sent = tm_send(&c->uas_dst, c->rpl, c->rpl_len);
                else if (t->kind == TM_K_RETR_REQ && t->branch >= 0)
                    sent = tm_send(&c->br[t->branch].dst, c->br[t->branch].req,
                                   c->br[t->branch].req_len);
                else if (t->kind == TM_K_RETR_CANCEL && t->branch >= 0)
                    sent = tm_send(&c->br[t->branch].dst,
                                   c->br[t->branch].cancel,
                                   c->br[t->branch].cancel_len);
                if (!sent)
                    __atomic_add_fetch(&T->retransmissions, 1, __ATOMIC_RELAXED);
                int64_t iv = t->interval * 2;
                if (t->cap_t2 && iv > T->t2)
                    iv = T->t2;
                lock_m(&T->timer_lock);
                if (t->gen == gens[i] && t->list < 0) {
                    t->gen++;
                    t->interval = iv;
                    t->due = now + iv;
                    tl_insert(t, list_for(iv));
                }
                unlock_m(&T->timer_lock);
            }
            unlock_m(&c->lock);
            tm_unref(c);
        }
        if (n < BATCH)
            break;
    }
    return nout;
}

/* how many timer entries are linked (tests, MI) */
int64_t tm_timers_linked(void)
{
    if (!T)
        return -1;
    int64_t n = 0;
    lock_m(&T->timer_lock);
    for (int l = 0; l < TM_NLISTS; l++)
        for (tm_timer_t *t = T->head[l]; t; t = t->next)
            n++;
    unlock_m(&T->timer_lock);
    return n;
}
