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
    if (sp_parse_uri(buf, s.s, s.l, &uri) == SP_OK) {
        in_range(uri.user, len);
        in_range(uri.passwd, len);
        in_range(uri.host, len);
        in_range(uri.params, len);
        in_range(uri.headers, len);
        in_range(uri.opaque, len);
        CHECK(uri.port >= 0 && uri.port <= 65535);
        if (uri.params.s >= 0)
            sp_parse_params(buf, uri.params.s, uri.params.l, ';', params, 64);
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
        n = sp_parse_via(buf, h->body.s, h->body.l, i, vias, SP_MAX_VIAS);
        for (k = 0; k < n; k++) {
            in_range(vias[k].host, len);
            in_range(vias[k].branch, len);
            in_range(vias[k].params, len);
            CHECK(vias[k].start <= vias[k].end && vias[k].end <= h->body.s + h->body.l);
        }
        n = sp_parse_nameaddrs(buf, h->body.s, h->body.l, i, 1, 1, nas, SP_MAX_CONTACTS);
        for (k = 0; k < n; k++) {
            in_range(nas[k].display, len);
            in_range(nas[k].uri, len);
            in_range(nas[k].params, len);
            walk_uri(buf, len, nas[k].uri);
        }
        n = sp_parse_params(buf, h->body.s, h->body.l, ',', params, 64);
        for (k = 0; k < n; k++) {
            in_range(params[k].name, len);
            in_range(params[k].value, len);
        }
        sp_parse_uint(buf, h->body.s, h->body.l, &v);
        sp_check_date(buf, h->body.s, h->body.l);
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
    n = sp_build(m, buf, data, out, (int)sizeof(out));
    CHECK(n == want);
    CHECK(sp_build(m, buf, data, out, want - 1 < 0 ? 0 : want - 1) < 0 || want == 0);
    if (m->is_request && m->checked) {
        n = sp_build_reply(m, buf, 486, "Busy Here", 9, "t1", 2, "X: 1\r\n", 6, "b", 1,
                           out, (int)sizeof(out));
        CHECK(n > 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int flags[] = {0, SP_F_STREAM, SP_F_NOCHECK};
    char *buf, esc[256];
    int len, f;
    if (size > 65536)
        return 0;
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
    sp_hdr_type(buf, len < 40 ? len : 40);
    sp_method_id(buf, len < 12 ? len : 12);
    sp_unescape(buf, len < 256 ? len : 256, esc);
    free(buf);
    return 0;
}
