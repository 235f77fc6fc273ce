/*
 * opensipy SIP parser (see sipparser.h).
 *
 * Design rules: no allocation, every read checked against the end of the
 * region being parsed, results are offsets into the caller's buffer.
 * Grammar references are to RFC 3261 section 25 unless noted.
 */
#include <string.h>
#include "sipparser.h"

typedef const unsigned char uc;

/* ---- character classes ------------------------------------------------ */

#define C_TOKEN  1   /* token: alnum - . ! % * _ + ` ' ~ */
#define C_HOST   2   /* hostname chars: alnum - . _ */
#define C_URIC   4   /* chars allowed anywhere in a URI (escapes checked apart) */
#define C_HEX    8
#define C_PVAL  16   /* unquoted generic-param value: token plus : [ ] / ? @ */
#define C_DIGIT 32

static unsigned char cls[256];
static unsigned char lct[256];   /* ASCII lower-case map */
static int inited;

static void set_chars(const char *s, unsigned char f)
{
    for (; *s; s++)
        cls[(unsigned char)*s] |= f;
}

static void hnames_init(void);

static void init(void)
{
    int c;
    for (c = 0; c < 256; c++) {
        lct[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            cls[c] |= C_TOKEN | C_HOST | C_URIC | C_PVAL;
        if (c >= '0' && c <= '9')
            cls[c] |= C_HEX | C_DIGIT;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            cls[c] |= C_HEX;
    }
    set_chars("-.!%*_+`'~", C_TOKEN | C_PVAL);
    set_chars(":[]/?@", C_PVAL);
    set_chars("-._", C_HOST);
    set_chars("-_.!~*'();/?:@&=+$,[]%#", C_URIC);
    hnames_init();
    inited = 1;
}

#define INIT() do { if (!inited) init(); } while (0)
#define IS(c, f) (cls[(unsigned char)(c)] & (f))
#define IS_LWS(c) ((c) == ' ' || (c) == '\t' || (c) == '\r' || (c) == '\n')
#define IS_WS(c) ((c) == ' ' || (c) == '\t')

#define lower(c) (lct[(unsigned char)(c)])

static int ieqn(uc *a, int alen, const char *b, int blen)
{
    int i;
    if (blen != alen)
        return 0;
    for (i = 0; i < alen; i++)
        if (lct[a[i]] != (unsigned char)b[i])
            return 0;
    return 1;
}

/* case-insensitive compare with a lower-case literal */
#define ieq(a, alen, lit) ieqn((a), (alen), (lit), (int)sizeof(lit) - 1)

static int skip_lws(uc *b, int p, int e)
{
    while (p < e && IS_LWS(b[p]))
        p++;
    return p;
}

static int skip_token(uc *b, int p, int e)
{
    while (p < e && IS(b[p], C_TOKEN))
        p++;
    return p;
}

/* p at '"': returns one past the closing quote, or -1 when unterminated */
static int skip_quoted(uc *b, int p, int e)
{
    p++;
    while (p < e) {
        if (b[p] == '\\') {
            if (p + 1 >= e)
                return -1;
            p += 2;
            continue;
        }
        if (b[p] == '"')
            return p + 1;
        p++;
    }
    return -1;
}

static void str_none(sp_str *s) { s->s = -1; s->l = 0; }
static void str_set(sp_str *s, int a, int l) { s->s = a; s->l = l; }

/* ---- names: headers and methods ------------------------------------- */

struct hname { const char *n; int type; };

static const struct hname hnames[] = {
    {"via", HDR_VIA_T}, {"v", HDR_VIA_T},
    {"to", HDR_TO_T}, {"t", HDR_TO_T},
    {"from", HDR_FROM_T}, {"f", HDR_FROM_T},
    {"cseq", HDR_CSEQ_T},
    {"call-id", HDR_CALLID_T}, {"i", HDR_CALLID_T},
    {"contact", HDR_CONTACT_T}, {"m", HDR_CONTACT_T},
    {"max-forwards", HDR_MAXFORWARDS_T},
    {"route", HDR_ROUTE_T},
    {"record-route", HDR_RECORDROUTE_T},
    {"path", HDR_PATH_T},
    {"content-type", HDR_CONTENTTYPE_T}, {"c", HDR_CONTENTTYPE_T},
    {"content-length", HDR_CONTENTLENGTH_T}, {"l", HDR_CONTENTLENGTH_T},
    {"authorization", HDR_AUTHORIZATION_T},
    {"expires", HDR_EXPIRES_T},
    {"proxy-authorization", HDR_PROXYAUTH_T},
    {"supported", HDR_SUPPORTED_T}, {"k", HDR_SUPPORTED_T},
    {"require", HDR_REQUIRE_T},
    {"proxy-require", HDR_PROXYREQUIRE_T},
    {"unsupported", HDR_UNSUPPORTED_T},
    {"allow", HDR_ALLOW_T},
    {"event", HDR_EVENT_T}, {"o", HDR_EVENT_T},
    {"accept", HDR_ACCEPT_T},
    {"accept-language", HDR_ACCEPTLANGUAGE_T},
    {"organization", HDR_ORGANIZATION_T},
    {"priority", HDR_PRIORITY_T},
    {"subject", HDR_SUBJECT_T}, {"s", HDR_SUBJECT_T},
    {"user-agent", HDR_USERAGENT_T},
    {"server", HDR_SERVER_T},
    {"content-disposition", HDR_CONTENTDISPOSITION_T},
    {"diversion", HDR_DIVERSION_T},
    {"remote-party-id", HDR_RPID_T},
    {"refer-to", HDR_REFER_TO_T}, {"r", HDR_REFER_TO_T},
    {"session-expires", HDR_SESSION_EXPIRES_T}, {"x", HDR_SESSION_EXPIRES_T},
    {"min-se", HDR_MIN_SE_T},
    {"subscription-state", HDR_SUBSCRIPTION_STATE_T},
    {"accept-contact", HDR_ACCEPTCONTACT_T}, {"a", HDR_ACCEPTCONTACT_T},
    {"allow-events", HDR_ALLOWEVENTS_T}, {"u", HDR_ALLOWEVENTS_T},
    {"content-encoding", HDR_CONTENTENCODING_T}, {"e", HDR_CONTENTENCODING_T},
    {"referred-by", HDR_REFERREDBY_T}, {"b", HDR_REFERREDBY_T},
    {"reject-contact", HDR_REJECTCONTACT_T}, {"j", HDR_REJECTCONTACT_T},
    {"request-disposition", HDR_REQUESTDISPOSITION_T}, {"d", HDR_REQUESTDISPOSITION_T},
    {"www-authenticate", HDR_WWW_AUTHENTICATE_T},
    {"proxy-authenticate", HDR_PROXY_AUTHENTICATE_T},
    {"date", HDR_DATE_T},
    {"identity", HDR_IDENTITY_T}, {"y", HDR_IDENTITY_T},
    {"identity-info", HDR_IDENTITY_INFO_T}, {"n", HDR_IDENTITY_INFO_T},
    {"p-preferred-identity", HDR_PPI_T},
    {"p-asserted-identity", HDR_PAI_T},
    {"privacy", HDR_PRIVACY_T},
    {"retry-after", HDR_RETRY_AFTER_T},
    {"call-info", HDR_CALL_INFO_T},
    {"warning", HDR_WARNING_T},
    {"min-expires", HDR_MIN_EXPIRES_T},
    {"timestamp", HDR_TIMESTAMP_T},
    {"alert-info", HDR_ALERT_INFO_T},
    {"error-info", HDR_ERROR_INFO_T},
    {"in-reply-to", HDR_IN_REPLY_TO_T},
    {"mime-version", HDR_MIME_VERSION_T},
    {"reply-to", HDR_REPLY_TO_T},
    {"content-language", HDR_CONTENT_LANGUAGE_T},
    {"accept-encoding", HDR_ACCEPT_ENCODING_T},
    {"authentication-info", HDR_AUTHENTICATION_INFO_T},
    {"rseq", HDR_RSEQ_T},
    {"rack", HDR_RACK_T},
};
#define N_HNAMES ((int)(sizeof(hnames) / sizeof(hnames[0])))
#define HBUCKETS 256
static short hhead[HBUCKETS];
static short hnext[N_HNAMES];
static unsigned char hlen[N_HNAMES];

static short hcompact[256];      /* one-letter compact forms */

static unsigned hhash(const unsigned char *s, int len)
{
    /* over the lower-cased first, third and last octets and the length */
    return ((unsigned)len * 31u + lct[s[0]] * 7u + lct[s[len - 1]] * 3u +
            (len > 2 ? lct[s[2]] : 0)) & (HBUCKETS - 1);
}

static void hnames_init(void)
{
    int i;
    for (i = 0; i < HBUCKETS; i++)
        hhead[i] = -1;
    for (i = 0; i < 256; i++)
        hcompact[i] = HDR_OTHER_T;
    for (i = N_HNAMES - 1; i >= 0; i--) {
        unsigned h;
        hlen[i] = (unsigned char)strlen(hnames[i].n);
        if (hlen[i] == 1) {
            hcompact[(unsigned char)hnames[i].n[0]] = (short)hnames[i].type;
            hcompact[(unsigned char)hnames[i].n[0] - 32] = (short)hnames[i].type;
        }
        h = hhash((const unsigned char *)hnames[i].n, hlen[i]);
        hnext[i] = hhead[h];
        hhead[h] = (short)i;
    }
}

static int htype(uc *name, int len)
{
    int i;
    if (len == 1)
        return hcompact[name[0]];
    if (len <= 0 || len > 32)
        return HDR_OTHER_T;
    for (i = hhead[hhash(name, len)]; i >= 0; i = hnext[i])
        if (hlen[i] == len && ieqn(name, len, hnames[i].n, len))
            return hnames[i].type;
    return HDR_OTHER_T;
}

int sp_hdr_type(const char *name, int len)
{
    INIT();
    return htype((uc *)name, len);
}

static int mid(uc *p, int len)
{
    /* methods are case-sensitive (RFC 3261 7.1) */
#define M(str, id) if (len == (int)sizeof(str) - 1 && memcmp(p, str, len) == 0) return id
    switch (len) {
    case 3: M("ACK", METHOD_ACK); M("BYE", METHOD_BYE); break;
    case 4: M("INFO", METHOD_INFO); break;
    case 5: M("PRACK", METHOD_PRACK); M("REFER", METHOD_REFER); break;
    case 6: M("INVITE", METHOD_INVITE); M("CANCEL", METHOD_CANCEL);
            M("UPDATE", METHOD_UPDATE); M("NOTIFY", METHOD_NOTIFY); break;
    case 7: M("OPTIONS", METHOD_OPTIONS); M("MESSAGE", METHOD_MESSAGE);
            M("PUBLISH", METHOD_PUBLISH); break;
    case 8: M("REGISTER", METHOD_REGISTER); break;
    case 9: M("SUBSCRIBE", METHOD_SUBSCRIBE); break;
    }
#undef M
    return METHOD_OTHER;
}

int sp_method_id(const char *name, int len)
{
    return len > 0 ? mid((uc *)name, len) : METHOD_UNDEF;
}

const char *sp_strerror(int err)
{
    switch (err) {
    case SP_OK: return "ok";
    case SP_E_NEEDMORE: return "incomplete message";
    case SP_E_FIRSTLINE: return "bad first line";
    case SP_E_VERSION: return "unsupported SIP version";
    case SP_E_STATUS: return "bad status code";
    case SP_E_HDRNAME: return "bad header line";
    case SP_E_TRUNC: return "header section not terminated";
    case SP_E_TOOMANY: return "too many headers or values";
    case SP_E_CLEN: return "bad Content-Length";
    case SP_E_BODY: return "body shorter than Content-Length";
    case SP_E_MISSING: return "mandatory header missing";
    case SP_E_DUP: return "single-value header repeated";
    case SP_E_CSEQ: return "bad CSeq";
    case SP_E_VIA: return "bad Via";
    case SP_E_NAMEADDR: return "bad name-addr (From/To/Contact)";
    case SP_E_URI: return "bad URI";
    case SP_E_MAXFWD: return "bad Max-Forwards";
    case SP_E_DATE: return "bad Date";
    case SP_E_RURI: return "bad Request-URI";
    case SP_E_MISMATCH: return "CSeq method does not match the request method";
    case SP_E_TOOBIG: return "message too big";
    case SP_E_LUMP: return "conflicting or out-of-range change";
    case SP_E_SPACE: return "output buffer too small";
    case SP_E_PARAM: return "bad parameter";
    case SP_E_NOCLEN: return "Content-Length missing on a stream";
    case SP_E_RANGE: return "offset or length outside the buffer";
    }
    return "unknown error";
}

/* ---- numbers ---------------------------------------------------------- */

/* digits only (LWS around allowed), value must fit in 32 bits */
static int parse_uint(const char *buf, int s, int l, uint32_t *out)
{
    uc *b = (uc *)buf;
    int p = skip_lws(b, s, s + l), e = s + l, d = 0;
    uint64_t v = 0;
    INIT();
    while (e > p && IS_LWS(b[e - 1]))
        e--;
    if (p >= e)
        return -1;
    for (; p < e; p++) {
        if (!IS(b[p], C_DIGIT))
            return -1;
        v = v * 10 + (b[p] - '0');
        if (v > 0xffffffffu)
            return -1;
        d++;
    }
    *out = (uint32_t)v;
    return 0;
}

/* ---- generic params: ;name[=value] walker ---------------------------- */

#define PK_VIA 1
#define PK_NA  2

static void param_hit(int kind, void *t, uc *b, int ns, int nl, int vs, int vl, int name_end)
{
    sp_str *dst = NULL;
    if (kind == PK_VIA) {
        sp_via *v = (sp_via *)t;
        if (ieq(b + ns, nl, "branch")) dst = &v->branch;
        else if (ieq(b + ns, nl, "received")) dst = &v->received;
        else if (ieq(b + ns, nl, "rport")) dst = &v->rport;
        else if (ieq(b + ns, nl, "maddr")) dst = &v->maddr;
        else if (ieq(b + ns, nl, "ttl")) dst = &v->ttl;
        else if (ieq(b + ns, nl, "i")) dst = &v->i;
    } else {
        sp_nameaddr *n = (sp_nameaddr *)t;
        if (ieq(b + ns, nl, "tag")) dst = &n->tag;
        else if (ieq(b + ns, nl, "expires")) dst = &n->expires;
        else if (ieq(b + ns, nl, "q")) dst = &n->q;
    }
    if (dst && dst->s < 0) {
        if (vs >= 0) str_set(dst, vs, vl);
        else str_set(dst, name_end, 0);
    }
}

/* p: position after the element; walks ";name[=value]" sequences.
 * Returns the position after the last param (before any LWS) or <0. */
static int walk_params(uc *b, int p, int e, sp_str *params, int kind, void *t)
{
    int q, ns, nl, vs, vl;
    str_none(params);
    for (;;) {
        q = skip_lws(b, p, e);
        if (q >= e || b[q] != ';')
            return p;
        if (params->s < 0)
            params->s = q + 1;
        q = skip_lws(b, q + 1, e);
        ns = q;
        q = skip_token(b, q, e);
        if (q == ns)
            return SP_E_PARAM;
        nl = q - ns;
        vs = -1; vl = 0;
        {
            int r = skip_lws(b, q, e);
            if (r < e && b[r] == '=') {
                r = skip_lws(b, r + 1, e);
                if (r < e && b[r] == '"') {
                    int qe = skip_quoted(b, r, e);
                    if (qe < 0)
                        return SP_E_PARAM;
                    vs = r; vl = qe - r;
                    q = qe;
                } else {
                    int v0 = r;
                    while (r < e && IS(b[r], C_PVAL))
                        r++;
                    if (r == v0)
                        return SP_E_PARAM;
                    vs = v0; vl = r - v0;
                    q = r;
                }
            }
        }
        param_hit(kind, t, b, ns, nl, vs, vl, ns + nl);
        params->l = q - params->s;
        p = q;
    }
}

static int parse_params(const char *buf, int s, int l, int sep, sp_param *out, int max)
{
    uc *b = (uc *)buf;
    int p = s, e = s + l, n = 0;
    INIT();
    for (;;) {
        int ns, q;
        p = skip_lws(b, p, e);
        if (p >= e)
            return n;
        if (b[p] == sep) {
            p++;
            continue;
        }
        ns = p;
        q = skip_token(b, p, e);
        if (q == ns)
            return SP_E_PARAM;
        if (n >= max)
            return SP_E_TOOMANY;
        str_set(&out[n].name, ns, q - ns);
        str_none(&out[n].value);
        p = skip_lws(b, q, e);
        if (p < e && b[p] == '=') {
            p = skip_lws(b, p + 1, e);
            if (p < e && b[p] == '"') {
                int qe = skip_quoted(b, p, e);
                if (qe < 0)
                    return SP_E_PARAM;
                str_set(&out[n].value, p, qe - p);
                p = qe;
            } else {
                int v0 = p;
                while (p < e && b[p] != sep && !IS_LWS(b[p]) && b[p] != '"')
                    p++;
                str_set(&out[n].value, v0, p - v0);
            }
        } else {
            p = q;
        }
        n++;
        p = skip_lws(b, p, e);
        if (p < e && b[p] != sep)
            return SP_E_PARAM;
    }
}

/* ---- URI -------------------------------------------------------------- */

static int uri_host_port(uc *b, int p, int e, sp_uri *u)
{
    int h0 = p;
    if (p < e && b[p] == '[') {
        int colons = 0;
        p++;
        while (p < e && b[p] != ']') {
            if (b[p] == ':')
                colons++;
            else if (!IS(b[p], C_HEX) && b[p] != '.')
                return SP_E_URI;
            p++;
        }
        if (p >= e || colons < 2)
            return SP_E_URI;
        p++;
    } else {
        while (p < e && IS(b[p], C_HOST))
            p++;
    }
    if (p == h0)
        return SP_E_URI;
    str_set(&u->host, h0, p - h0);
    if (p < e && b[p] == ':') {
        int d0 = ++p;
        uint32_t v = 0;
        while (p < e && IS(b[p], C_DIGIT) && p - d0 < 6) {
            v = v * 10 + (b[p] - '0');
            p++;
        }
        if (p == d0 || p - d0 > 5 || v > 65535)
            return SP_E_URI;
        str_set(&u->port_s, d0, p - d0);
        u->port = (int32_t)v;
    }
    if (p < e && b[p] != ';' && b[p] != '?')
        return SP_E_URI;
    return p;
}

static int uri_params(uc *b, int p, int e, sp_uri *u)
{
    /* p at ';' or '?' or e */
    if (p < e && b[p] == ';') {
        int ps = p + 1;
        p = ps;
        while (p <= e) {
            int ns = p, eq = -1;
            while (p < e && b[p] != ';' && b[p] != '?') {
                if (b[p] == '=' && eq < 0)
                    eq = p;
                p++;
            }
            {
                int ne = eq >= 0 ? eq : p;
                int nl = ne - ns, vs = eq >= 0 ? eq + 1 : ne, vl = eq >= 0 ? p - eq - 1 : 0;
                sp_str *dst = NULL;
                if (nl == 0)
                    return SP_E_URI;
                if (ieq(b + ns, nl, "transport")) dst = &u->transport;
                else if (ieq(b + ns, nl, "user")) dst = &u->user_param;
                else if (ieq(b + ns, nl, "method")) dst = &u->method;
                else if (ieq(b + ns, nl, "ttl")) dst = &u->ttl;
                else if (ieq(b + ns, nl, "maddr")) dst = &u->maddr;
                else if (ieq(b + ns, nl, "lr")) dst = &u->lr;
                else if (ieq(b + ns, nl, "r2")) dst = &u->r2;
                else if (ieq(b + ns, nl, "gr")) dst = &u->gr;
                if (dst && dst->s < 0)
                    str_set(dst, vs, vl);
            }
            if (p >= e || b[p] == '?')
                break;
            p++; /* ';' */
        }
        str_set(&u->params, ps, p - ps);
    }
    if (p < e && b[p] == '?') {
        str_set(&u->headers, p + 1, e - p - 1);
        p = e;
    }
    return p;
}

static int parse_uri(const char *buf, int s, int l, sp_uri *u)
{
    uc *b = (uc *)buf;
    int p = s, e = s + l, q, at = -1;
    INIT();
    memset(u, 0, sizeof(*u));
    str_none(&u->scheme); str_none(&u->user); str_none(&u->passwd);
    str_none(&u->host); str_none(&u->port_s); str_none(&u->params);
    str_none(&u->headers); str_none(&u->opaque); str_none(&u->transport);
    str_none(&u->user_param); str_none(&u->method); str_none(&u->ttl);
    str_none(&u->maddr); str_none(&u->lr); str_none(&u->r2); str_none(&u->gr);
    u->type = ERROR_URI_T;
    if (l <= 0)
        return SP_E_URI;
    /* every char must be a URI char; escapes must be %HH */
    for (q = s; q < e; q++) {
        if (!IS(b[q], C_URIC))
            return SP_E_URI;
        if (b[q] == '%' && (q + 2 >= e || !IS(b[q + 1], C_HEX) || !IS(b[q + 2], C_HEX)))
            return SP_E_URI;
    }
    /* scheme */
    if (!((b[p] >= 'a' && b[p] <= 'z') || (b[p] >= 'A' && b[p] <= 'Z')))
        return SP_E_URI;
    while (p < e && (IS(b[p], C_HOST) || b[p] == '+') && b[p] != '_')
        p++;
    if (p >= e || b[p] != ':')
        return SP_E_URI;
    str_set(&u->scheme, s, p - s);
    p++;
    if (p >= e)
        return SP_E_URI;
    str_set(&u->opaque, p, e - p);
    if (ieq(b + s, p - 1 - s, "sip")) u->type = SIP_URI_T;
    else if (ieq(b + s, p - 1 - s, "sips")) u->type = SIPS_URI_T;
    else if (ieq(b + s, p - 1 - s, "tel")) u->type = TEL_URI_T;
    else if (ieq(b + s, p - 1 - s, "tels")) u->type = TELS_URI_T;
    else {
        u->type = OTHER_URI_T;
        return SP_OK;
    }
    if (u->type == TEL_URI_T || u->type == TELS_URI_T) {
        int n0 = p;
        while (p < e && b[p] != ';' && b[p] != '?')
            p++;
        if (p == n0)
            return SP_E_URI;
        str_set(&u->user, n0, p - n0);
        p = uri_params(b, p, e, u);
        return p < 0 ? p : SP_OK;
    }
    for (q = p; q < e; q++)
        if (b[q] == '@') {
            at = q;
            break;
        }
    if (at >= 0) {
        int c = -1;
        for (q = p; q < at; q++)
            if (b[q] == ':') {
                c = q;
                break;
            }
        if (c >= 0) {
            str_set(&u->user, p, c - p);
            str_set(&u->passwd, c + 1, at - c - 1);
        } else {
            str_set(&u->user, p, at - p);
        }
        if (u->user.l == 0)
            return SP_E_URI;
        p = at + 1;
    }
    p = uri_host_port(b, p, e, u);
    if (p < 0)
        return p;
    p = uri_params(b, p, e, u);
    if (p < 0)
        return p;
    return SP_OK;
}

/* scheme ":" something, no LWS: the cheap check done on name-addr URIs */
static int uri_scheme_ok(uc *b, int s, int l)
{
    int p = s, e = s + l;
    if (l < 2 || !((b[p] >= 'a' && b[p] <= 'z') || (b[p] >= 'A' && b[p] <= 'Z')))
        return 0;
    while (p < e && ((b[p] >= 'a' && b[p] <= 'z') || (b[p] >= 'A' && b[p] <= 'Z') ||
                     IS(b[p], C_DIGIT) || b[p] == '+' || b[p] == '-' || b[p] == '.'))
        p++;
    return p < e - 1 && b[p] == ':';
}

/* ---- Via -------------------------------------------------------------- */

static int parse_via(const char *buf, int s, int l, int hdr, sp_via *out, int max)
{
    uc *b = (uc *)buf;
    int p = s, e = s + l, n = 0, q;
    INIT();
    for (;;) {
        sp_via *v;
        p = skip_lws(b, p, e);
        if (p >= e)
            return SP_E_VIA;
        if (n >= max)
            return SP_E_TOOMANY;
        v = &out[n];
        memset(v, 0, sizeof(*v));
        str_none(&v->port_s); str_none(&v->params); str_none(&v->branch);
        str_none(&v->received); str_none(&v->rport); str_none(&v->maddr);
        str_none(&v->ttl); str_none(&v->i);
        v->hdr = hdr;
        v->start = p;
        q = skip_token(b, p, e);
        if (q == p) return SP_E_VIA;
        str_set(&v->proto, p, q - p);
        p = skip_lws(b, q, e);
        if (p >= e || b[p] != '/') return SP_E_VIA;
        p = skip_lws(b, p + 1, e);
        q = skip_token(b, p, e);
        if (q == p) return SP_E_VIA;
        str_set(&v->version, p, q - p);
        p = skip_lws(b, q, e);
        if (p >= e || b[p] != '/') return SP_E_VIA;
        p = skip_lws(b, p + 1, e);
        q = skip_token(b, p, e);
        if (q == p) return SP_E_VIA;
        str_set(&v->transport, p, q - p);
        p = skip_lws(b, q, e);
        if (p == q || p >= e) return SP_E_VIA;
        /* sent-by */
        q = p;
        if (b[p] == '[') {
            int colons = 0;
            p++;
            while (p < e && b[p] != ']') {
                if (b[p] == ':') colons++;
                else if (!IS(b[p], C_HEX) && b[p] != '.') return SP_E_VIA;
                p++;
            }
            if (p >= e || colons < 2) return SP_E_VIA;
            p++;
        } else {
            while (p < e && IS(b[p], C_HOST))
                p++;
        }
        if (p == q) return SP_E_VIA;
        str_set(&v->host, q, p - q);
        q = skip_lws(b, p, e);
        if (q < e && b[q] == ':') {
            uint32_t pv = 0;
            int d0;
            q = skip_lws(b, q + 1, e);
            d0 = q;
            while (q < e && IS(b[q], C_DIGIT) && q - d0 < 6) {
                pv = pv * 10 + (b[q] - '0');
                q++;
            }
            if (q == d0 || q - d0 > 5 || pv > 65535) return SP_E_VIA;
            str_set(&v->port_s, d0, q - d0);
            v->port = (int32_t)pv;
            p = q;
        }
        p = walk_params(b, p, e, &v->params, PK_VIA, v);
        if (p < 0) return SP_E_VIA;
        v->end = p;
        n++;
        p = skip_lws(b, p, e);
        if (p >= e)
            return n;
        if (b[p] != ',')
            return SP_E_VIA;
        p++;
    }
}

/* ---- name-addr / addr-spec lists (To, From, Contact, Route, ...) ----- */

static int parse_nameaddrs(const char *buf, int s, int l, int hdr, int list, int star_ok,
                       sp_nameaddr *out, int max)
{
    uc *b = (uc *)buf;
    int p = s, e = s + l, n = 0, q;
    INIT();
    for (;;) {
        sp_nameaddr *na;
        p = skip_lws(b, p, e);
        if (p >= e)
            return SP_E_NAMEADDR;
        if (n >= max)
            return SP_E_TOOMANY;
        na = &out[n];
        memset(na, 0, sizeof(*na));
        str_none(&na->display); str_none(&na->uri); str_none(&na->params);
        str_none(&na->tag); str_none(&na->expires); str_none(&na->q);
        na->hdr = hdr;
        na->start = p;
        /* "Contact: *" alone is the star; "* <sip:x>" is a name-addr whose
         * display name is the token "*" */
        if (b[p] == '*' && star_ok
                && (skip_lws(b, p + 1, e) >= e || b[skip_lws(b, p + 1, e)] == ',')) {
            na->star = 1;
            p++;
            na->end = p;
            str_none(&na->params);
        } else {
            if (b[p] == '"') {
                q = skip_quoted(b, p, e);
                if (q < 0)
                    return SP_E_NAMEADDR;
                str_set(&na->display, p, q - p);
                p = skip_lws(b, q, e);
                if (p >= e || b[p] != '<')
                    return SP_E_NAMEADDR;
            } else {
                q = p;
                while (q < e && (IS(b[q], C_TOKEN) || IS_LWS(b[q])))
                    q++;
                if (q < e && b[q] == '<') {
                    int de = q;
                    while (de > p && IS_LWS(b[de - 1]))
                        de--;
                    if (de > p)
                        str_set(&na->display, p, de - p);
                    p = q;
                }
            }
            if (b[p] == '<') {
                int us = ++p;
                while (p < e && b[p] != '>') {
                    if (b[p] <= 0x20 || b[p] == '<' || b[p] == '"')
                        return SP_E_NAMEADDR;
                    p++;
                }
                if (p >= e)
                    return SP_E_NAMEADDR;
                str_set(&na->uri, us, p - us);
                na->bracket = 1;
                p++;
            } else {
                int us = p;
                while (p < e && !IS_LWS(b[p]) && b[p] != ';' && b[p] != ',') {
                    if (b[p] == '?' || b[p] == '<' || b[p] == '>' || b[p] == '"')
                        return SP_E_NAMEADDR;
                    p++;
                }
                str_set(&na->uri, us, p - us);
            }
            if (!uri_scheme_ok(b, na->uri.s, na->uri.l))
                return SP_E_NAMEADDR;
            p = walk_params(b, p, e, &na->params, PK_NA, na);
            if (p < 0)
                return SP_E_NAMEADDR;
            na->end = p;
        }
        n++;
        p = skip_lws(b, p, e);
        if (p >= e)
            return n;
        if (b[p] != ',' || !list)
            return SP_E_NAMEADDR;
        p++;
    }
}

/* ---- Date: rfc1123-date = wkday "," SP date1 SP time SP "GMT" -------- */

static int check_date(const char *buf, int s, int l)
{
    static const char *wk[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const char *d = buf + s;
    int i, ok;
    static const char pat[] = "www, 00 mmm 0000 00:00:00 GMT";   /* 0: a digit */
    INIT();
    if (l != (int)sizeof(pat) - 1)
        return SP_E_DATE;
    for (i = 0; i < l; i++) {
        char c = pat[i];
        if (c == '0') {
            if (!IS(d[i], C_DIGIT))
                return SP_E_DATE;
        } else if (c != 'w' && c != 'm' && d[i] != c) {
            return SP_E_DATE;
        }
    }
    for (ok = 0, i = 0; i < 7; i++)
        if (memcmp(d, wk[i], 3) == 0)
            ok = 1;
    if (!ok)
        return SP_E_DATE;
    for (ok = 0, i = 0; i < 12; i++)
        if (memcmp(d + 8, mo[i], 3) == 0)
            ok = 1;
    return ok ? SP_OK : SP_E_DATE;
}

int sp_unescape(const char *in, int l, char *out, int outmax)
{
    int i, o = 0;
    INIT();
    if (l < 0 || outmax < 0)
        return SP_E_RANGE;
    for (i = 0; i < l; i++) {
        if (in[i] == '%' && i + 2 < l &&
            IS(in[i + 1], C_HEX) && IS(in[i + 2], C_HEX)) {
            int h = in[i + 1], lo = in[i + 2];
            h = h <= '9' ? h - '0' : lower(h) - 'a' + 10;
            lo = lo <= '9' ? lo - '0' : lower(lo) - 'a' + 10;
            if (o >= outmax)
                return SP_E_SPACE;
            out[o++] = (char)(h * 16 + lo);
            i += 2;
        } else {
            if (o >= outmax)
                return SP_E_SPACE;
            out[o++] = in[i];
        }
    }
    return o;
}

/* ---- the public entry points: the span is checked against the buffer -- */

/* buf[s .. s+l) lies inside a buffer of len octets (no overflow: l is
 * compared with what is left after s) */
static int span_ok(int len, int s, int l)
{
    return len >= 0 && s >= 0 && l >= 0 && s <= len && l <= len - s;
}

int sp_parse_uint(const char *buf, int len, int s, int l, uint32_t *out)
{
    return span_ok(len, s, l) ? parse_uint(buf, s, l, out) : SP_E_RANGE;
}

int sp_parse_params(const char *buf, int len, int s, int l, int sep, sp_param *out, int max)
{
    return span_ok(len, s, l) ? parse_params(buf, s, l, sep, out, max) : SP_E_RANGE;
}

int sp_parse_uri(const char *buf, int len, int s, int l, sp_uri *u)
{
    if (!span_ok(len, s, l)) {
        parse_uri(buf, 0, 0, u);      /* leaves u empty, typed ERROR_URI_T */
        return SP_E_RANGE;
    }
    return parse_uri(buf, s, l, u);
}

int sp_parse_via(const char *buf, int len, int s, int l, int hdr, sp_via *out, int max)
{
    return span_ok(len, s, l) ? parse_via(buf, s, l, hdr, out, max) : SP_E_RANGE;
}

int sp_parse_nameaddrs(const char *buf, int len, int s, int l, int hdr, int list, int star_ok,
                       sp_nameaddr *out, int max)
{
    return span_ok(len, s, l) ? parse_nameaddrs(buf, s, l, hdr, list, star_ok, out, max)
                              : SP_E_RANGE;
}

int sp_check_date(const char *buf, int len, int s, int l)
{
    return span_ok(len, s, l) ? check_date(buf, s, l) : SP_E_RANGE;
}

/* ---- the message -------------------------------------------------------- */

static int first_line(uc *b, int p, int e, sp_msg *m)
{
    int le, q, eol;
    uc *nl = memchr(b + p, '\n', e - p);
    if (!nl)
        return SP_E_TRUNC;
    eol = (int)(nl - b);
    le = eol;
    if (le > p && b[le - 1] == '\r')
        le--;
    m->first_line_end = eol + 1;
    if (le - p >= 5 && ieq(b + p, 4, "sip/") && IS(b[p + 4], C_DIGIT)) {
        int d0, code = 0;
        m->is_request = 0;
        q = p;
        while (q < le && b[q] != ' ')
            q++;
        str_set(&m->version, p, q - p);
        if (!ieq(b + p, q - p, "sip/2.0"))
            return SP_E_VERSION;
        if (q >= le)
            return SP_E_STATUS;
        d0 = ++q;
        while (q < le && IS(b[q], C_DIGIT) && q - d0 < 4) {
            code = code * 10 + (b[q] - '0');
            q++;
        }
        if (q - d0 != 3 || code < 100 || code > 699)
            return SP_E_STATUS;
        if (q < le && b[q] != ' ')
            return SP_E_STATUS;
        m->status = code;
        if (q < le)
            q++;
        str_set(&m->reason, q, le - q);
        return SP_OK;
    }
    m->is_request = 1;
    q = skip_token(b, p, le);
    if (q == p || q >= le || b[q] != ' ')
        return SP_E_FIRSTLINE;
    str_set(&m->method, p, q - p);
    m->method_id = mid(b + p, q - p);
    p = ++q;
    while (q < le && b[q] > 0x20 && b[q] != 0x7f)
        q++;
    if (q == p || q >= le || b[q] != ' ')
        return SP_E_FIRSTLINE;
    str_set(&m->ruri, p, q - p);
    p = ++q;
    str_set(&m->version, p, le - p);
    /* "SIP" "/" 1*DIGIT "." 1*DIGIT */
    if (le - p < 7 || !ieq(b + p, 4, "sip/"))
        return SP_E_FIRSTLINE;
    q = p + 4;
    {
        int d0 = q;
        while (q < le && IS(b[q], C_DIGIT)) q++;
        if (q == d0 || q >= le || b[q] != '.') return SP_E_FIRSTLINE;
        d0 = ++q;
        while (q < le && IS(b[q], C_DIGIT)) q++;
        if (q == d0 || q != le) return SP_E_FIRSTLINE;
    }
    if (!ieq(b + p, le - p, "sip/2.0"))
        return SP_E_VERSION;
    return SP_OK;
}

static int split_headers(uc *b, int p, int e, sp_msg *m)
{
    int i;
    for (i = 0; i < HDR_MAX_T; i++) {
        m->first[i] = -1;
        m->count[i] = 0;
    }
    m->n_hdrs = 0;
    for (;;) {
        int q, vs, ve, he, t;
        sp_hdr *h;
        if (p >= e)
            return SP_E_TRUNC;
        if (b[p] == '\n') {
            m->hdrs_end = p;
            m->body_s = p + 1;
            return SP_OK;
        }
        if (b[p] == '\r') {
            if (p + 1 >= e)
                return SP_E_TRUNC;
            if (b[p + 1] == '\n') {
                m->hdrs_end = p;
                m->body_s = p + 2;
                return SP_OK;
            }
            m->err_pos = p;
            return SP_E_HDRNAME;
        }
        q = skip_token(b, p, e);
        if (q == p) {
            m->err_pos = p;
            return SP_E_HDRNAME;
        }
        t = htype(b + p, q - p);
        vs = q;
        while (vs < e && IS_WS(b[vs]))
            vs++;
        if (vs >= e)
            return SP_E_TRUNC;
        if (b[vs] != ':') {
            m->err_pos = p;
            return SP_E_HDRNAME;
        }
        vs++;
        he = vs;
        for (;;) {
            uc *nl = memchr(b + he, '\n', e - he);
            if (!nl)
                return SP_E_TRUNC;
            he = (int)(nl - b) + 1;
            if (he >= e)
                return SP_E_TRUNC;
            if (!IS_WS(b[he]))
                break;
        }
        if (m->n_hdrs >= SP_MAX_HDRS)
            return SP_E_TOOMANY;
        while (vs < he && IS_LWS(b[vs]))
            vs++;
        ve = he;
        while (ve > vs && IS_LWS(b[ve - 1]))
            ve--;
        h = &m->hdrs[m->n_hdrs];
        h->type = t;
        str_set(&h->name, p, q - p);
        str_set(&h->body, vs, ve - vs);
        h->start = p;
        h->end = he;
        if (m->first[t] < 0)
            m->first[t] = m->n_hdrs;
        m->count[t]++;
        m->n_hdrs++;
        p = he;
    }
}

static int check_cseq(uc *b, sp_msg *m)
{
    sp_hdr *h = &m->hdrs[m->first[HDR_CSEQ_T]];
    int p = h->body.s, e = h->body.s + h->body.l, d0;
    uint64_t v = 0;
    d0 = p;
    while (p < e && IS(b[p], C_DIGIT)) {
        v = v * 10 + (b[p] - '0');
        if (v > 0xffffffffu)
            return SP_E_CSEQ;
        p++;
    }
    if (p == d0)
        return SP_E_CSEQ;
    m->cseq_num = (uint32_t)v;
    d0 = p;
    p = skip_lws(b, p, e);
    if (p == d0)
        return SP_E_CSEQ;
    d0 = p;
    p = skip_token(b, p, e);
    if (p == d0 || p != e)
        return SP_E_CSEQ;
    str_set(&m->cseq_method, d0, p - d0);
    m->cseq_method_id = mid(b + d0, p - d0);
    return SP_OK;
}

static int check_bodies(uc *b, sp_msg *m)
{
    int i, r;
    static const int single[] = {HDR_CALLID_T, HDR_TO_T, HDR_FROM_T, HDR_CSEQ_T,
                                 HDR_MAXFORWARDS_T};
    static const int needed[] = {HDR_VIA_T, HDR_FROM_T, HDR_TO_T, HDR_CALLID_T, HDR_CSEQ_T};
    for (i = 0; i < (int)(sizeof(single) / sizeof(single[0])); i++)
        if (m->count[single[i]] > 1) {
            m->err_pos = m->hdrs[m->first[single[i]]].start;
            return SP_E_DUP;
        }
    for (i = 0; i < (int)(sizeof(needed) / sizeof(needed[0])); i++)
        if (m->count[needed[i]] == 0)
            return SP_E_MISSING;
    if (m->hdrs[m->first[HDR_CALLID_T]].body.l == 0)
        return SP_E_MISSING;
    r = check_cseq(b, m);
    if (r < 0)
        return r;
    if (m->is_request) {
        if (m->cseq_method.l != m->method.l ||
            memcmp(b + m->cseq_method.s, b + m->method.s, m->method.l) != 0)
            return SP_E_MISMATCH;
    } else {
        m->method_id = m->cseq_method_id;
    }
    if (m->count[HDR_MAXFORWARDS_T]) {
        sp_hdr *h = &m->hdrs[m->first[HDR_MAXFORWARDS_T]];
        uint32_t v;
        if (parse_uint((const char *)b, h->body.s, h->body.l, &v) < 0 || v > 0x7fffffff)
            return SP_E_MAXFWD;
        m->max_forwards = (int32_t)v;
    }
    m->n_vias = 0;
    m->n_contacts = 0;
    for (i = 0; i < m->n_hdrs; i++) {
        sp_hdr *h = &m->hdrs[i];
        switch (h->type) {
        case HDR_VIA_T:
            r = parse_via((const char *)b, h->body.s, h->body.l, i,
                             m->vias + m->n_vias, SP_MAX_VIAS - m->n_vias);
            if (r < 0) {
                m->err_pos = h->start;
                return r;
            }
            m->n_vias += r;
            break;
        case HDR_FROM_T:
        case HDR_TO_T:
            r = parse_nameaddrs((const char *)b, h->body.s, h->body.l, i, 0, 0,
                                   h->type == HDR_FROM_T ? &m->hfrom : &m->hto, 1);
            if (r < 0) {
                m->err_pos = h->start;
                return r;
            }
            break;
        case HDR_CONTACT_T:
            r = parse_nameaddrs((const char *)b, h->body.s, h->body.l, i, 1, 1,
                                   m->contacts + m->n_contacts, SP_MAX_CONTACTS - m->n_contacts);
            if (r < 0) {
                m->err_pos = h->start;
                return r;
            }
            {
                int k;
                for (k = 0; k < r; k++)
                    if (m->contacts[m->n_contacts + k].star)
                        m->contact_star = 1;
            }
            m->n_contacts += r;
            break;
        case HDR_DATE_T:
            r = check_date((const char *)b, h->body.s, h->body.l);
            if (r < 0) {
                m->err_pos = h->start;
                return r;
            }
            break;
        }
    }
    if (m->contact_star && m->n_contacts != 1)
        return SP_E_NAMEADDR;
    if (m->is_request) {
        r = parse_uri((const char *)b, m->ruri.s, m->ruri.l, &m->ruri_parsed);
        if (r < 0 || m->ruri_parsed.headers.s >= 0)
            return SP_E_RURI;
    }
    return SP_OK;
}

static int finish(sp_msg *m, int err)
{
    m->err = err;
    if (err == SP_OK)
        m->err_status = 0;
    else if (!m->is_request)
        m->err_status = 0;              /* a malformed reply is dropped */
    else if (err == SP_E_VERSION)
        m->err_status = 505;
    else
        m->err_status = 400;
    return err;
}

int sp_parse_msg(const char *buf, int len, int flags, sp_msg *m)
{
    uc *b = (uc *)buf;
    int p = 0, r, avail;
    INIT();
    m->err = 0; m->err_pos = -1; m->err_status = 0;
    m->is_request = 1;  /* until the first line says otherwise: errors before it answer 400 */
    m->method_id = METHOD_UNDEF;
    str_none(&m->method); str_none(&m->ruri); str_none(&m->version); str_none(&m->reason);
    str_none(&m->cseq_method);
    m->status = 0; m->first_line_end = 0; m->hdrs_end = 0; m->body_s = 0; m->body_l = 0;
    m->msg_len = 0; m->content_length = -1; m->max_forwards = -1; m->cseq_num = 0;
    m->cseq_method_id = METHOD_UNDEF; m->checked = 0; m->n_hdrs = 0; m->n_vias = 0;
    m->n_contacts = 0; m->contact_star = 0; m->n_lumps = 0; m->lump_seq = 0; m->lump_bytes = 0;
    m->ruri_parsed.type = ERROR_URI_T;
    m->hfrom.uri.s = -1; m->hto.uri.s = -1;
    if (len < 0 || len > SP_MAX_MSG)
        return finish(m, SP_E_TOOBIG);
    /* RFC 3261 7.5: ignore CRLFs before the start-line */
    while (p < len && (b[p] == '\r' || b[p] == '\n'))
        p++;
    if (p >= len)
        return finish(m, (flags & SP_F_STREAM) ? SP_E_NEEDMORE : SP_E_FIRSTLINE);
    r = first_line(b, p, len, m);
    if (r < 0) {
        if (r == SP_E_TRUNC && (flags & SP_F_STREAM))
            r = SP_E_NEEDMORE;
        m->err_pos = p;
        return finish(m, r);
    }
    r = split_headers(b, m->first_line_end, len, m);
    if (r < 0) {
        if (r == SP_E_TRUNC && (flags & SP_F_STREAM))
            r = SP_E_NEEDMORE;
        return finish(m, r);
    }
    /* framing */
    if (m->count[HDR_CONTENTLENGTH_T] > 1)
        return finish(m, SP_E_DUP);
    if (m->count[HDR_CONTENTLENGTH_T] == 1) {
        sp_hdr *h = &m->hdrs[m->first[HDR_CONTENTLENGTH_T]];
        uint32_t v;
        if (parse_uint(buf, h->body.s, h->body.l, &v) < 0 || v > SP_MAX_MSG) {
            m->err_pos = h->start;
            return finish(m, SP_E_CLEN);
        }
        m->content_length = (int32_t)v;
    }
    avail = len - m->body_s;
    if (flags & SP_F_STREAM) {
        if (m->content_length < 0)
            return finish(m, SP_E_NOCLEN);
        if (m->content_length > avail)
            return finish(m, SP_E_NEEDMORE);
        m->body_l = m->content_length;
    } else if (m->content_length < 0) {
        m->body_l = avail;
    } else {
        if (m->content_length > avail)
            return finish(m, SP_E_BODY);
        m->body_l = m->content_length;
    }
    m->msg_len = m->body_s + m->body_l;
    if (!(flags & SP_F_NOCHECK)) {
        r = check_bodies(b, m);
        if (r < 0)
            return finish(m, r);
        m->checked = 1;
    } else if (m->count[HDR_CSEQ_T]) {
        /* cheap and needed by everyone; a bad CSeq shows when it is read */
        if (check_cseq(b, m) == SP_OK && !m->is_request)
            m->method_id = m->cseq_method_id;
    }
    return finish(m, SP_OK);
}

/* how many octets the next message in a stream buffer takes: >0 that many,
 * 0 need more data, <0 a framing error (the connection should be closed) */
int sp_frame(const char *buf, int len)
{
    uc *b = (uc *)buf;
    int p = 0, cl = -1, body_s = -1;
    INIT();
    while (p < len && (b[p] == '\r' || b[p] == '\n'))
        p++;
    if (p >= len)
        return 0;
    for (;;) {
        uc *nl = memchr(b + p, '\n', len - p);
        int ls = p, le, q;
        if (!nl)
            break;
        le = (int)(nl - b);
        p = le + 1;
        /* a header line in the section: is it Content-Length? */
        q = skip_token(b, ls, le);
        if (q > ls) {
            int t = htype(b + ls, q - ls);
            int c = q;
            while (c < le && IS_WS(b[c])) c++;
            if (t == HDR_CONTENTLENGTH_T && c < le && b[c] == ':') {
                uint32_t v;
                int ve = le;
                if (ve > c + 1 && b[ve - 1] == '\r') ve--;
                if (parse_uint(buf, c + 1, ve - c - 1, &v) < 0 || v > SP_MAX_MSG)
                    return SP_E_CLEN;
                if (cl >= 0 && (uint32_t)cl != v)
                    return SP_E_CLEN;
                cl = (int)v;
            }
        }
        if (p < len && b[p] == '\n') {
            body_s = p + 1;
            break;
        }
        if (p + 1 < len && b[p] == '\r' && b[p + 1] == '\n') {
            body_s = p + 2;
            break;
        }
        if (p >= len)
            break;
    }
    if (body_s < 0)
        return len > SP_MAX_MSG ? SP_E_TOOBIG : 0;
    if (cl < 0)
        return SP_E_NOCLEN;
    if (body_s + cl > SP_MAX_MSG)
        return SP_E_TOOBIG;
    if (len < body_s + cl)
        return 0;
    return body_s + cl;
}

int sp_find_hdr(const sp_msg *m, const char *buf, int type, const char *name, int nlen, int from)
{
    int i;
    INIT();
    if (from < 0)
        from = 0;
    for (i = from; i < m->n_hdrs; i++) {
        const sp_hdr *h = &m->hdrs[i];
        if (h->type != type)
            continue;
        if (type != HDR_OTHER_T)
            return i;
        if (h->name.l == nlen) {
            int k;
            for (k = 0; k < nlen; k++)
                if (lower((uc)buf[h->name.s + k]) != lower((uc)name[k]))
                    break;
            if (k == nlen)
                return i;
        }
    }
    return -1;
}

/* ---- lumps and building ------------------------------------------------ */

/* One lump is acceptable on its own: a known kind, off inside the message,
 * del only for REPLACE and not past the end, data_s/data_l non-negative.
 * Every comparison is against what is left (msg_len - off), never a sum
 * that could overflow. */
static int lump_ok(int msg_len, int kind, int off, int del, int data_s, int data_l)
{
    return kind >= LUMP_INS_BEFORE && kind <= LUMP_INS_AFTER && msg_len >= 0 &&
           off >= 0 && off <= msg_len && del >= 0 && del <= msg_len - off &&
           (kind == LUMP_REPLACE || del == 0) && data_s >= 0 && data_l >= 0;
}

int sp_lump_add(sp_msg *m, int kind, int off, int del, int data_s, int data_l)
{
    int i;
    int64_t bytes;
    if (!lump_ok(m->msg_len, kind, off, del, data_s, data_l))
        return SP_E_LUMP;
    if (m->n_lumps < 0 || m->n_lumps >= SP_MAX_LUMPS)
        return SP_E_TOOMANY;
    /* the built message must stay addressable with an int */
    bytes = (int64_t)m->lump_bytes + data_l - del;
    if ((int64_t)m->msg_len + bytes < 0 || (int64_t)m->msg_len + bytes > INT32_MAX)
        return SP_E_TOOBIG;
    for (i = 0; i < m->n_lumps; i++) {
        const sp_lump *o = &m->lumps[i];
        if (kind == LUMP_REPLACE && o->kind == LUMP_REPLACE) {
            if (o->off == off)
                return SP_E_LUMP;
            /* overlap: o starts before our end and we start before its end
             * (off - o->off < o->del: both sides small, no overflow) */
            if (o->off < off ? off - o->off < o->del : o->off - off < del)
                return SP_E_LUMP;
        }
        /* an insertion strictly inside a removed range has nowhere to go */
        if (kind == LUMP_REPLACE && o->kind != LUMP_REPLACE && o->off > off &&
            o->off - off < del)
            return SP_E_LUMP;
        if (kind != LUMP_REPLACE && o->kind == LUMP_REPLACE && off > o->off &&
            off - o->off < o->del)
            return SP_E_LUMP;
    }
    m->lumps[m->n_lumps].kind = kind;
    m->lumps[m->n_lumps].off = off;
    m->lumps[m->n_lumps].del = del;
    m->lumps[m->n_lumps].data_s = data_s;
    m->lumps[m->n_lumps].data_l = data_l;
    m->lumps[m->n_lumps].seq = m->lump_seq++;
    m->n_lumps++;
    m->lump_bytes = (int32_t)bytes;
    return SP_OK;
}

int sp_lump_rollback(sp_msg *m, int n)
{
    int i;
    int64_t bytes = 0, dend = 0;
    if (m->n_lumps < 0 || m->n_lumps > SP_MAX_LUMPS || n < 0 || n > m->n_lumps)
        return SP_E_LUMP;
    /* the counters are recomputed from the lumps that stay, never taken
     * from the caller */
    for (i = 0; i < n; i++) {
        const sp_lump *l = &m->lumps[i];
        bytes += (int64_t)l->data_l - l->del;
        if (l->data_l > 0 && (int64_t)l->data_s + l->data_l > dend)
            dend = (int64_t)l->data_s + l->data_l;
    }
    if (dend > INT32_MAX || bytes < INT32_MIN || bytes > INT32_MAX)
        return SP_E_LUMP;
    if (n < m->n_lumps)
        m->lump_seq = m->lumps[n].seq;
    m->n_lumps = n;
    m->lump_bytes = (int32_t)bytes;
    return (int)dend;
}

static int lump_before(const sp_lump *a, const sp_lump *b)
{
    if (a->off != b->off) return a->off < b->off;
    if (a->kind != b->kind) return a->kind < b->kind;
    return a->seq < b->seq;
}

int sp_build(const sp_msg *m, const char *buf, int buflen, const char *data, int dlen,
             char *out, int outmax)
{
    int idx[SP_MAX_LUMPS];
    int n = m->n_lumps, i, j, pos = 0, o = 0;
    if (n < 0 || n > SP_MAX_LUMPS || m->msg_len < 0 || buflen < m->msg_len || dlen < 0 ||
        outmax < 0 || (dlen > 0 && !data))
        return SP_E_LUMP;
    /* every lump is checked here too: the struct is the caller's memory */
    for (i = 0; i < n; i++) {
        const sp_lump *l = &m->lumps[i];
        if (!lump_ok(m->msg_len, l->kind, l->off, l->del, l->data_s, l->data_l) ||
            l->data_s > dlen || l->data_l > dlen - l->data_s)
            return SP_E_LUMP;
    }
    for (i = 0; i < n; i++) {
        int k = i;
        idx[i] = i;
        while (k > 0 && lump_before(&m->lumps[idx[k]], &m->lumps[idx[k - 1]])) {
            int t = idx[k];
            idx[k] = idx[k - 1];
            idx[k - 1] = t;
            k--;
        }
    }
    for (j = 0; j < n; j++) {
        const sp_lump *l = &m->lumps[idx[j]];
        if (l->off > pos) {
            int c = l->off - pos;
            if (c > outmax - o) return SP_E_SPACE;
            memcpy(out + o, buf + pos, c);
            o += c;
            pos = l->off;
        }
        if (l->data_l > outmax - o) return SP_E_SPACE;
        if (l->data_l)
            memcpy(out + o, data + l->data_s, l->data_l);
        o += l->data_l;
        if (l->kind == LUMP_REPLACE && l->del > pos - l->off)
            pos = l->off + l->del;
    }
    if (m->msg_len > pos) {
        int c = m->msg_len - pos;
        if (c > outmax - o) return SP_E_SPACE;
        memcpy(out + o, buf + pos, c);
        o += c;
    }
    return o;
}

static int put(char *out, int o, int outmax, const char *s, int l)
{
    if (o < 0 || l < 0 || o + l > outmax)
        return SP_E_SPACE;
    memcpy(out + o, s, l);
    return o + l;
}

static int put_int(char *out, int o, int outmax, unsigned v)
{
    char t[12];
    int n = 0;
    do {
        t[sizeof(t) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < 11);
    return put(out, o, outmax, t + sizeof(t) - n, n);
}

int sp_build_reply(const sp_msg *m, const char *buf, int code, const char *reason, int rlen,
                   const char *totag, int tlen, const char *extra, int elen,
                   const char *body, int blen, char *out, int outmax)
{
    int o = 0, i;
    INIT();
    if (code < 100 || code > 699 || !m->is_request)
        return SP_E_STATUS;
    o = put(out, o, outmax, "SIP/2.0 ", 8);
    o = put_int(out, o, outmax, (unsigned)code);
    o = put(out, o, outmax, " ", 1);
    o = put(out, o, outmax, reason, rlen);
    o = put(out, o, outmax, "\r\n", 2);
    for (i = 0; i < m->n_hdrs && o >= 0; i++) {
        const sp_hdr *h = &m->hdrs[i];
        if (h->type != HDR_VIA_T && h->type != HDR_FROM_T && h->type != HDR_TO_T &&
            h->type != HDR_CALLID_T && h->type != HDR_CSEQ_T)
            continue;
        o = put(out, o, outmax, buf + h->name.s, h->name.l);
        o = put(out, o, outmax, ": ", 2);
        o = put(out, o, outmax, buf + h->body.s, h->body.l);
        if (h->type == HDR_TO_T && code > 100 && tlen > 0) {
            sp_nameaddr to;
            int r = parse_nameaddrs(buf, h->body.s, h->body.l, i, 0, 0, &to, 1);
            if (r == 1 && to.tag.s < 0) {
                o = put(out, o, outmax, ";tag=", 5);
                o = put(out, o, outmax, totag, tlen);
            }
        }
        o = put(out, o, outmax, "\r\n", 2);
    }
    if (elen > 0)
        o = put(out, o, outmax, extra, elen);
    o = put(out, o, outmax, "Content-Length: ", 16);
    o = put_int(out, o, outmax, (unsigned)(blen > 0 ? blen : 0));
    o = put(out, o, outmax, "\r\n\r\n", 4);
    if (blen > 0)
        o = put(out, o, outmax, body, blen);
    return o;
}

/* ---- the To tag suffix ----------------------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_add(uint32_t c, const char *p, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)p[i]) & 0xFF] ^ (c >> 8);
    return c;
}

static uint32_t crc_str(uint32_t c, const char *buf, sp_str s)
{
    return s.s < 0 || s.l <= 0 ? c : crc_add(c, buf + s.s, s.l);
}

static uint32_t crc_uint(uint32_t c, uint32_t v)
{
    char d[10];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        c = crc_add(c, &d[--n], 1);
    return c;
}

int64_t sp_totag_crc(const sp_msg *m, const char *buf)
{
    if (!crc_table[1])
        crc_init();
    if (!m->checked || m->n_vias < 1 || m->first[HDR_FROM_T] < 0
            || m->first[HDR_CSEQ_T] < 0 || m->cseq_method.s < 0)
        return -1;
    const sp_via *v = &m->vias[0];
    if (v->port < 0)
        return -1;
    uint32_t c = 0xFFFFFFFFu;
    int ci = m->first[HDR_CALLID_T];
    if (ci >= 0 && ci < m->n_hdrs) {
        sp_str id = m->hdrs[ci].body;
        /* a folded Call-ID: the caller unfolds it as msg.callid does */
        if (id.s >= 0 && id.l > 0 && memchr(buf + id.s, '\n', (size_t)id.l))
            return -1;
        c = crc_str(c, buf, id);
    }
    c = crc_add(c, "|", 1);
    c = crc_str(c, buf, m->hfrom.tag);
    c = crc_add(c, "|", 1);
    c = crc_uint(c, m->cseq_num);
    c = crc_add(c, "|", 1);
    c = crc_str(c, buf, v->host);
    c = crc_add(c, ":", 1);
    c = crc_uint(c, (uint32_t)v->port);
    c = crc_add(c, "|", 1);
    c = crc_str(c, buf, v->branch);
    return (int64_t)(c ^ 0xFFFFFFFFu);
}
