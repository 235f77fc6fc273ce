/*
 * opensipy tm: transaction cells in the shared-memory arena (see
 * modules/tm/README.md for the design).
 *
 * Memory comes from the _shm extension's allocator, whose functions are
 * handed over by address in tm_init() (two extensions cannot share a
 * static arena pointer otherwise).  The table, the cells and every buffer
 * are arena blocks, so they are valid in every forked process.
 *
 * The cffi declarations are in native/build_tm.py (they show the public
 * fields of the structs and hide the mutexes).
 */
#ifndef OPENSIPY_TM_H
#define OPENSIPY_TM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TM_MAX_BRANCHES = 12,
    TM_MAX_BUF = 1 << 20,      /* largest buffer a cell keeps */
    TM_MAX_KEY = 4096,
    TM_NLISTS = 8,
    TM_HOLDERS = 8,            /* processes whose references are tracked */
    /* cell flags */
    TM_F_INVITE = 1 << 0,
    TM_F_CANCELED = 1 << 1,
    TM_F_DELETED = 1 << 2,     /* unused: see tm_cell.deleted */
    TM_F_LOCAL = 1 << 3,       /* a final reply was generated locally */
    TM_F_IN_FAILURE = 1 << 4,
    TM_F_FINAL_SENT = 1 << 5,  /* a final reply went upstream */
    TM_F_NOCANCEL = 1 << 6,
    TM_F_ACKED = 1 << 7,
    TM_F_LOCAL_UAC = 1 << 8,   /* started by t_uac / MI: no UAS side */
    TM_F_DELCB = 1 << 9,       /* the end of the wait goes to Python
                                * (TMCB_TRANS_DELETED callbacks) */
    /* branch flags */
    TM_B_USED = 1 << 0,
    TM_B_PROVISIONAL = 1 << 1, /* got a provisional reply */
    TM_B_CANCEL_PENDING = 1 << 2, /* cancel when a provisional comes */
    TM_B_CANCEL_SENT = 1 << 3,
    TM_B_FINAL = 1 << 4,
    TM_B_TIMEOUT = 1 << 5,
    TM_B_DROPPED = 1 << 6,
    /* buffers (tm_set_buf which) */
    TM_BUF_REQ = 0, TM_BUF_RPL = 1, TM_BUF_BLOB = 2,
    TM_BUF_BR_REQ = 3, TM_BUF_BR_RPL = 4, TM_BUF_BR_CANCEL = 5,
    /* timers (which) */
    TM_TW_UAS_RETR = 0, TM_TW_WAIT = 1, TM_TW_BR_RETR = 2, TM_TW_BR_FR = 3,
    /* timer kinds: what happens when it fires */
    TM_K_RETR_REQ = 1,   /* C resends the branch request (A/E) */
    TM_K_RETR_RPL = 2,   /* C resends the last reply upstream (G) */
    TM_K_RETR_CANCEL = 3,/* C resends the branch CANCEL */
    TM_K_PY = 4,         /* handed back to Python (B/F/C, H) */
    TM_K_DELETE = 5,     /* C deletes the cell (wait / D / I / J / K) */
};

typedef struct tm_timer {
    struct tm_timer *next, *prev;
    int64_t due;        /* CLOCK_MONOTONIC ns */
    int64_t interval;   /* current retransmission interval, ns */
    int32_t list;       /* list index while linked, -1 otherwise */
    int32_t kind;
    uint32_t gen;       /* bumped by every start/stop */
    int32_t cap_t2;
    struct tm_cell *cell;
    int32_t which, branch;
} tm_timer_t;

typedef struct {
    int32_t fd;
    int32_t salen;
    int32_t si;          /* socket index (Python side) */
    int32_t conn;        /* TCP connection id (Python side; fd is -1) */
    uint8_t sa[32];
} tm_dst_t;

typedef struct {
    int32_t state;       /* fsm.STATE_IDS */
    int32_t status;      /* last status received; local 408 on timeout */
    int32_t flags;       /* TM_B_* */
    int32_t pad;
    tm_dst_t dst;
    char *req; uint32_t req_len;
    char *rpl; uint32_t rpl_len;
    char *cancel; uint32_t cancel_len;
    tm_timer_t retr;
    tm_timer_t fr;
} tm_branch_t;

typedef struct tm_cell {
    uint32_t magic;
    uint32_t hash;
    uint32_t label;
    int32_t ref;
    struct tm_cell *next, *prev;
    int32_t flags;
    int32_t method_id;
    int32_t uas_state;
    int32_t uas_status;
    int32_t nbranches;
    int32_t first_branch;
    int32_t relayed_branch;
    int32_t owner;       /* pid holding the cell lock */
    int32_t deleted;     /* unlinked from the table (set by C only; the
                          * flags are changed by Python under the cell
                          * lock, this one by tm_delete without it) */
    int32_t pad2;
    int64_t fr_timeout;  /* ns; 0 = the module's */
    int64_t fr_inv_timeout;
    int64_t created;
    uint32_t cseq;
    uint32_t key_len;
    char *key;
    char *req; uint32_t req_len;
    char *rpl; uint32_t rpl_len;
    char *blob; uint32_t blob_len;
    tm_dst_t uas_dst;
    tm_timer_t uas_retr;
    tm_timer_t wait;
    pthread_mutex_t lock;
    /* who holds the references: a process that dies holding some has
     * them taken back by tm_reap_dead() (refs beyond the slots, and the
     * table's own, are counted in anon) */
    struct { int32_t pid; int32_t n; } holders[TM_HOLDERS];
    int32_t anon;
    int32_t pad3;
    struct tm_cell *znext, *zprev; /* zombie list: deleted, still held */
    tm_branch_t br[TM_MAX_BRANCHES];
} tm_cell_t;

typedef struct {
    tm_cell_t *cell;
    int32_t which, branch;
    uint32_t gen;
    int32_t pad;
} tm_event_t;

/* the interface (cffi reads this block from here to #endif) */
int tm_init(uint32_t size, uintptr_t alloc_fn, uintptr_t free_fn, int mod,
            int64_t t1, int64_t t2, int64_t fr, int64_t fr_inv, int64_t wt);
void tm_reset_for_tests(void);
int tm_ready(void);
uint32_t tm_size(void);
int64_t tm_inuse(void);
int64_t tm_retransmissions(void);
uint32_t tm_bucket_entries(uint32_t i);
int tm_locks_recovered(void);
int64_t tm_now(void);
uint32_t tm_hash(const char *callid, uint32_t clen, uint32_t cseq);
int tm_ref(tm_cell_t *c);
int tm_unref(tm_cell_t *c);
int tm_cell_lock(tm_cell_t *c);
int tm_cell_unlock(tm_cell_t *c);
tm_cell_t *tm_lookup_req(const char *callid, uint32_t clen, uint32_t cseq,
                         const char *key, uint32_t klen, int method, int mode);
tm_cell_t *tm_lookup_or_new(const char *callid, uint32_t clen, uint32_t cseq,
                            const char *key, uint32_t klen, int method,
                            int *created);
tm_cell_t *tm_new_local(const char *callid, uint32_t clen, uint32_t cseq,
                        int method);
tm_cell_t *tm_lookup_reply(uint32_t hash, uint32_t label);
int tm_lookup_cseq(const char *callid, uint32_t clen, uint32_t cseq,
                   int method, tm_cell_t **out, int cap);
int tm_set_buf(tm_cell_t *c, int which, int branch, const char *data,
               uint32_t len);
int tm_set_dst(tm_cell_t *c, int branch, int fd, const uint8_t *sa,
               int salen, int si);
int tm_send(const tm_dst_t *d, const char *buf, uint32_t len);
int tm_timer_start(tm_cell_t *c, int which, int branch, int64_t delay,
                   int kind, int cap_t2);
int tm_timer_stop(tm_cell_t *c, int which, int branch);
int tm_timer_pending(tm_cell_t *c, int which, int branch);
int64_t tm_timer_gen(tm_cell_t *c, int which, int branch);
int tm_delete(tm_cell_t *c);
int tm_timer_tick(int64_t now, tm_event_t *out, int cap);
int64_t tm_timers_linked(void);
int tm_reap_dead(void);
int64_t tm_zombies(void);

#endif
