/*
 * Fuzz target for the SIP parser (libFuzzer entry point).  Every input is
 * parsed as a datagram, as a stream frame and header-split only; whatever
 * parses is then walked with every other entry point (URI, params, numbers,
 * Date, lumps, build, reply, framing) and the results are checked against
 * the buffer bounds: a violated invariant aborts, so it is a finding.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined by the Makefile, or
 * with corpus_main.c into a plain program for valgrind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sipparser.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static sp_msg msg;                       /* big: keep it off the stack */
static sp_via vias[SP_MAX_VIAS];
static sp_nameaddr nas[SP_MAX_CONTACTS];
static sp_param params[64];
static sp_uri uri;

static void in_range(sp_str s, int len)
{
    if (s.s >= 0)
        CHECK(s.l >= 0 && s.s + s.l <= len);
}

static void walk_uri(const char *buf, int len, sp_str s)
{
    if (s.s < 0)
        return;
    if (sp_parse_uri(buf, len, s.s, s.l, &uri) == SP_OK) {
        in_range(uri.user, len);
        in_range(uri.passwd, len);
        in_range(uri.host, len);
        in_range(uri.params, len);
        in_range(uri.headers, len);
        in_range(uri.opaque, len);
        CHECK(uri.port >= 0 && uri.port <= 65535);
        if (uri.params.s >= 0)
            sp_parse_params(buf, len, uri.params.s, uri.params.l, ';', params, 64);
    }
}

static void walk_bodies(const char *buf, int len, const sp_msg *m)
{
    int i, k, n;
    uint32_t v;
    for (i = 0; i < m->n_hdrs; i++) {
        const sp_hdr *h = &m->hdrs[i];
        CHECK(h->start >= 0 && h->start < h->end && h->end <= len);
        in_range(h->body, len);
        CHECK(h->type >= HDR_OTHER_T && h->type < HDR_MAX_T);
        n = sp_parse_via(buf, len, h->body.s, h->body.l, i, vias, SP_MAX_VIAS);
        for (k = 0; k < n; k++) {
            in_range(vias[k].host, len);
            in_range(vias[k].branch, len);
            in_range(vias[k].params, len);
            CHECK(vias[k].start <= vias[k].end && vias[k].end <= h->body.s + h->body.l);
        }
        n = sp_parse_nameaddrs(buf, len, h->body.s, h->body.l, i, 1, 1, nas, SP_MAX_CONTACTS);
        for (k = 0; k < n; k++) {
            in_range(nas[k].display, len);
            in_range(nas[k].uri, len);
            in_range(nas[k].params, len);
            walk_uri(buf, len, nas[k].uri);
        }
        n = sp_parse_params(buf, len, h->body.s, h->body.l, ',', params, 64);
        for (k = 0; k < n; k++) {
            in_range(params[k].name, len);
            in_range(params[k].value, len);
        }
        sp_parse_uint(buf, len, h->body.s, h->body.l, &v);
        sp_check_date(buf, len, h->body.s, h->body.l);
        CHECK(sp_find_hdr(m, buf, h->type, buf + h->name.s, h->name.l, 0) <= i);
    }
}

static void walk_build(const char *buf, int len, sp_msg *m)
{
    static const char data[] = "Via: SIP/2.0/UDP fuzz.example;branch=z9hG4bKf\r\nX: y\r\n";
    static char out[SP_MAX_MSG + 4096];
    int want, n;
    m->n_lumps = 0;
    m->lump_seq = 0;
    m->lump_bytes = 0;
    sp_lump_add(m, LUMP_INS_BEFORE, m->first_line_end, 0, 0, 47);
    if (m->n_hdrs > 0)
        sp_lump_add(m, LUMP_REPLACE, m->hdrs[0].body.s, m->hdrs[0].body.l, 47, 4);
    sp_lump_add(m, LUMP_INS_AFTER, m->hdrs_end, 0, 47, 6);
    sp_lump_add(m, LUMP_REPLACE, m->body_s, m->body_l, 0, 0);
    CHECK(sp_lump_add(m, LUMP_REPLACE, 0, len + 1, 0, 0) < 0);
    want = m->msg_len + m->lump_bytes;
    n = sp_build(m, buf, len, data, (int)sizeof(data) - 1, out, (int)sizeof(out));
    CHECK(n == want);
    CHECK(sp_build(m, buf, len, data, (int)sizeof(data) - 1, out, want - 1 < 0 ? 0 : want - 1) < 0 ||
          want == 0);
    if (m->is_request && m->checked) {
        n = sp_build_reply(m, buf, 486, "Busy Here", 9, "t1", 2, "X: 1\r\n", 6, "b", 1,
                           out, (int)sizeof(out));
        CHECK(n > 0);
        /* the To tag key: a CRC, or -1 for what the Python side builds */
        int64_t crc = sp_totag_crc(m, buf);
        CHECK(crc >= -1 && crc <= (int64_t)UINT32_MAX);
        CHECK(m->n_vias > 0 || crc == -1);
    }
}

/* ---- lump mode ----------------------------------------------------------
 *
 * An input whose first byte is NUL (never a SIP message) drives the lump
 * API: byte 1-2 give the length of a message (at most 4096, taken from the
 * bytes that follow), the rest is a stream of operations: add a lump of
 * each kind at an offset that is sometimes in range, just past the end,
 * negative or near INT32_MAX; checkpoint; roll back (to a checkpoint, or to
 * a bogus index); build (compared with a naive reference builder); build a
 * copy with one lump field corrupted; add a lump whose data lies anywhere.
 * After every operation the counters must match the lumps, a refused add
 * must leave the message untouched and no accepted lump may lie outside
 * the message, overlap a removed range or leave msg_len + lump_bytes
 * outside 0..INT32_MAX. */

#define LM_MSG   4096
#define LM_BLOB  (SP_MAX_LUMPS * 255 + 256)
#define LM_OUT   (LM_MSG + SP_MAX_LUMPS * 255 + 64)
#define LM_CPS   8

static sp_msg lm, lm_copy, lm_before;
static char lm_blob[LM_BLOB];
static char lm_out[LM_OUT], lm_ref[LM_OUT];

struct lm_in { const uint8_t *p, *e; };

static unsigned lm_byte(struct lm_in *in) { return in->p < in->e ? *in->p++ : 0; }

static uint32_t lm_u32(struct lm_in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)lm_byte(in) << (8 * i);
    return v;
}

/* a value for an offset or a length whose valid range is 0..lim */
static int lm_pick(struct lm_in *in, int lim)
{
    unsigned sel = lm_byte(in);
    unsigned v = lm_byte(in) | (lm_byte(in) << 8);
    switch (sel & 7) {
    case 0: case 1: case 2: case 3: return (int)(v % ((unsigned)lim + 1));
    case 4: return lim + 1 + (int)(v & 7);                  /* just past */
    case 5: return -1 - (int)(v & 7);                       /* negative */
    case 6: return INT32_MAX - (int)(v & 15);               /* huge */
    default: return INT32_MIN + (int)(v & 7);                /* most negative */
    }
}

static void lm_same(const sp_msg *a, const sp_msg *b)
{
    CHECK(a->n_lumps == b->n_lumps && a->lump_seq == b->lump_seq &&
          a->lump_bytes == b->lump_bytes);
    CHECK(memcmp(a->lumps, b->lumps, sizeof(sp_lump) * (size_t)a->n_lumps) == 0);
}

static void lm_invariants(const sp_msg *m, int dlen)
{
    int64_t bytes = 0;
    CHECK(m->n_lumps >= 0 && m->n_lumps <= SP_MAX_LUMPS);
    for (int i = 0; i < m->n_lumps; i++) {
        const sp_lump *a = &m->lumps[i];
        CHECK(a->kind >= LUMP_INS_BEFORE && a->kind <= LUMP_INS_AFTER);
        CHECK(a->off >= 0 && a->del >= 0 && (int64_t)a->off + a->del <= m->msg_len);
        CHECK(a->kind == LUMP_REPLACE || a->del == 0);
        CHECK(a->data_s >= 0 && a->data_l >= 0 && (int64_t)a->data_s + a->data_l <= dlen);
        bytes += (int64_t)a->data_l - a->del;
        for (int j = 0; j < m->n_lumps; j++) {
            const sp_lump *b = &m->lumps[j];
            if (i == j || b->kind != LUMP_REPLACE)
                continue;
            if (a->kind == LUMP_REPLACE) {
                CHECK(a->off != b->off);
                CHECK(!((int64_t)a->off < (int64_t)b->off + b->del &&
                        (int64_t)b->off < (int64_t)a->off + a->del));
            } else {
                CHECK(!(a->off > b->off && (int64_t)a->off < (int64_t)b->off + b->del));
            }
        }
    }
    CHECK(bytes == m->lump_bytes);
    CHECK(m->msg_len + bytes >= 0 && m->msg_len + bytes <= INT32_MAX);
}

/* the obvious builder: at each offset the insertions before, the
 * replacement text starting there, the insertions after, then the
 * original octet unless a REPLACE removed it */
static int lm_reference(const sp_msg *m, const char *msg, const char *blob, char *out)
{
    static unsigned char removed[LM_MSG + 1], has[LM_MSG + 1];
    int order[SP_MAX_LUMPS], o = 0, n = m->n_lumps;
    for (int i = 0; i < n; i++) {            /* lumps by seq (order added) */
        int k = i;
        order[i] = i;
        while (k > 0 && m->lumps[order[k]].seq < m->lumps[order[k - 1]].seq) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
            k--;
        }
    }
    memset(removed, 0, (size_t)m->msg_len + 1);
    memset(has, 0, (size_t)m->msg_len + 1);
    for (int i = 0; i < n; i++) {
        const sp_lump *l = &m->lumps[i];
        has[l->off] = 1;
        if (l->kind == LUMP_REPLACE)
            memset(removed + l->off, 1, (size_t)l->del);
    }
    for (int pos = 0; pos <= m->msg_len; pos++) {
        if (has[pos])
            for (int kind = LUMP_INS_BEFORE; kind <= LUMP_INS_AFTER; kind++)
                for (int j = 0; j < n; j++) {
                    const sp_lump *l = &m->lumps[order[j]];
                    if (l->kind == kind && l->off == pos) {
                        memcpy(out + o, blob + l->data_s, (size_t)l->data_l);
                        o += l->data_l;
                    }
                }
        if (pos < m->msg_len && !removed[pos])
            out[o++] = msg[pos];
    }
    return o;
}

static void lump_mode(const uint8_t *data, size_t size)
{
    struct lm_in in = {data + 1, data + size};
    struct { int n, dlen; } cps[LM_CPS];
    static sp_msg cp_msgs[LM_CPS];
    int ncp = 0, dlen = 0, mlen, ops = 0, n;
    char *msg;
    mlen = (int)((lm_byte(&in) | (lm_byte(&in) << 8)) % (LM_MSG + 1));
    if (mlen > in.e - in.p)
        mlen = (int)(in.e - in.p);
    msg = malloc(mlen ? (size_t)mlen : 1);   /* exact size: overreads are caught */
    if (!msg)
        return;
    memcpy(msg, in.p, (size_t)mlen);
    in.p += mlen;
    memset(&lm, 0, sizeof(lm));
    lm.msg_len = mlen;
    while (in.p < in.e && ops++ < 512) {
        unsigned op = lm_byte(&in) % 9;
        int rc, want;
        switch (op) {
        case 0: case 1: case 2: case 3: {   /* add: before, replace, after, delete */
            int kind = op == 3 ? LUMP_REPLACE : (int)op;
            int off = lm_pick(&in, mlen);
            int del = kind == LUMP_REPLACE ? lm_pick(&in, mlen - (off >= 0 && off <= mlen ? off : 0))
                                           : ((lm_byte(&in) & 7) == 7 ? 1 : 0);
            int dl = op == 3 ? 0 : (int)lm_byte(&in);
            int ds = dlen;
            for (int k = 0; k < dl; k++)
                lm_blob[dlen++] = (char)('a' + (ds + k) % 26);
            memcpy(&lm_before, &lm, sizeof(lm));
            rc = sp_lump_add(&lm, kind, off, del, ds, dl);
            if (rc) {
                dlen = ds;                   /* what the Python caller does */
                lm_same(&lm, &lm_before);
            } else {
                const sp_lump *l = &lm.lumps[lm.n_lumps - 1];
                CHECK(lm.n_lumps == lm_before.n_lumps + 1);
                CHECK(l->kind == kind && l->off == off && l->del == del &&
                      l->data_s == ds && l->data_l == dl);
                CHECK(off >= 0 && off <= mlen && del >= 0 && (int64_t)off + del <= mlen);
            }
            break;
        }
        case 4:                             /* checkpoint */
            if (ncp < LM_CPS) {
                cps[ncp].n = lm.n_lumps;
                cps[ncp].dlen = dlen;
                memcpy(&cp_msgs[ncp], &lm, sizeof(lm));
                ncp++;
            }
            break;
        case 5:                             /* rollback to the last checkpoint */
            if (ncp > 0) {
                ncp--;
                rc = sp_lump_rollback(&lm, cps[ncp].n);
                CHECK(rc >= 0 && rc <= cps[ncp].dlen);
                lm_same(&lm, &cp_msgs[ncp]);
                dlen = cps[ncp].dlen;
            }
            break;
        case 6: {                           /* rollback to an index that never was */
            int bad = (lm_byte(&in) & 1) ? lm.n_lumps + 1 + (int)(lm_byte(&in) & 15)
                                          : -1 - (int)(lm_byte(&in) & 15);
            memcpy(&lm_before, &lm, sizeof(lm));
            CHECK(sp_lump_rollback(&lm, bad) == SP_E_LUMP);
            lm_same(&lm, &lm_before);
            break;
        }
        case 7:                             /* build, checked against the reference */
            want = lm.msg_len + lm.lump_bytes;
            CHECK(want >= 0 && want <= LM_OUT);
            n = sp_build(&lm, msg, mlen, lm_blob, dlen, lm_out, LM_OUT);
            CHECK(n == want);
            CHECK(lm_reference(&lm, msg, lm_blob, lm_ref) == want);
            CHECK(memcmp(lm_out, lm_ref, (size_t)want) == 0);
            if (want > 0)
                CHECK(sp_build(&lm, msg, mlen, lm_blob, dlen, lm_out, want - 1) == SP_E_SPACE);
            CHECK(sp_build(&lm, msg, mlen - 1, lm_blob, dlen, lm_out, LM_OUT) == SP_E_LUMP);
            break;
        case 8: {                           /* a corrupted copy must be refused, never read */
            if (lm.n_lumps == 0)
                break;
            memcpy(&lm_copy, &lm, sizeof(lm));
            sp_lump *l = &lm_copy.lumps[lm_byte(&in) % (unsigned)lm.n_lumps];
            int32_t v = (int32_t)lm_u32(&in);
            switch (lm_byte(&in) % 6) {
            case 0: l->off = v; break;
            case 1: l->del = v; break;
            case 2: l->data_s = v; break;
            case 3: l->data_l = v; break;
            case 4: l->kind = v; break;
            default: lm_copy.n_lumps = v; break;
            }
            {
                int ok = lm_copy.n_lumps >= 0 && lm_copy.n_lumps <= SP_MAX_LUMPS &&
                         l->kind >= LUMP_INS_BEFORE && l->kind <= LUMP_INS_AFTER &&
                         l->off >= 0 && l->off <= mlen && l->del >= 0 &&
                         (int64_t)l->off + l->del <= mlen &&
                         (l->kind == LUMP_REPLACE || l->del == 0) &&
                         l->data_s >= 0 && l->data_l >= 0 &&
                         (int64_t)l->data_s + l->data_l <= dlen;
                char *out = malloc(LM_OUT);
                if (!out)
                    break;
                n = sp_build(&lm_copy, msg, mlen, lm_blob, dlen, out, LM_OUT);
                if (!ok)
                    CHECK(n < 0);
                CHECK(n <= LM_OUT);
                free(out);
            }
            break;
        }
        }
        lm_invariants(&lm, dlen);
    }
    /* a lump whose data lies anywhere: built only when it is inside the blob */
    {
        int ds = (int)lm_u32(&in), dl = (int)lm_u32(&in);
        memcpy(&lm_before, &lm, sizeof(lm));
        if (sp_lump_add(&lm, LUMP_INS_BEFORE, 0, 0, ds, dl) == SP_OK) {
            n = sp_build(&lm, msg, mlen, lm_blob, dlen, lm_out, LM_OUT);
            if ((int64_t)ds + dl > dlen)
                CHECK(n == SP_E_LUMP);
            CHECK(sp_lump_rollback(&lm, lm_before.n_lumps) >= 0);
            lm_same(&lm, &lm_before);
        } else {
            lm_same(&lm, &lm_before);
        }
    }
    free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int flags[] = {0, SP_F_STREAM, SP_F_NOCHECK};
    char *buf, esc[256];
    int len, f;
    if (size > 65536)
        return 0;
    if (size > 0 && data[0] == 0) {
        lump_mode(data, size);
        return 0;
    }
    len = (int)size;
    buf = malloc(size ? size : 1);        /* exact size: overreads are caught */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    for (f = 0; f < 3; f++) {
        sp_msg *m = &msg;
        if (sp_parse_msg(buf, len, flags[f], m) != SP_OK) {
            CHECK(m->err < 0 && (m->err_status == 0 || m->err_status == 400 ||
                                 m->err_status == 505));
            continue;
        }
        CHECK(m->msg_len <= len && m->body_s + m->body_l == m->msg_len);
        CHECK(m->first_line_end <= m->hdrs_end && m->hdrs_end < m->body_s);
        CHECK(m->n_hdrs >= 0 && m->n_hdrs <= SP_MAX_HDRS);
        in_range(m->method, len);
        in_range(m->ruri, len);
        in_range(m->reason, len);
        if (m->is_request)
            walk_uri(buf, len, m->ruri);
        walk_bodies(buf, len, m);
        walk_build(buf, len, m);
    }
    f = sp_frame(buf, len);
    CHECK(f <= len);
    /* spans outside the buffer are refused before anything is read */
    CHECK(sp_check_date(buf, len, len, 29) == SP_E_RANGE);
    {
        uint32_t u;
        CHECK(sp_parse_uint(buf, len, 1, INT32_MAX, &u) == SP_E_RANGE);
    }
    CHECK(sp_parse_uri(buf, len, -1, 2, &uri) == SP_E_RANGE && uri.type == ERROR_URI_T);
    CHECK(sp_parse_via(buf, len, 0, len + 1, 0, vias, SP_MAX_VIAS) == SP_E_RANGE);
    CHECK(sp_parse_nameaddrs(buf, len, len, 1, 0, 1, 1, nas, 1) == SP_E_RANGE);
    CHECK(sp_parse_params(buf, len, 0, -1, ';', params, 64) == SP_E_RANGE);
    sp_hdr_type(buf, len < 40 ? len : 40);
    sp_method_id(buf, len < 12 ? len : 12);
    CHECK(sp_unescape(buf, len < 256 ? len : 256, esc, (int)sizeof(esc)) <= 256);
    CHECK(sp_unescape(buf, len, esc, 8) <= 8);
    free(buf);
    return 0;
}
