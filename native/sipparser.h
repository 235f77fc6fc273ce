/*
 * opensipy SIP parser: one SIP message parsed in place over a caller's buffer.
 *
 * Nothing here allocates memory.  Every result is an (offset, length) pair
 * into the buffer that was parsed; the caller owns both the buffer and the
 * result structs, whose arrays have the fixed maxima below (exceeding one is
 * a parse error with its own reason, never a truncation).
 *
 * The part between CDEF-BEGIN and CDEF-END is also fed to cffi's cdef(), so
 * it holds only declarations and plain integer #defines.
 */
#ifndef OPENSIPY_SIPPARSER_H
#define OPENSIPY_SIPPARSER_H

#include <stdint.h>

/* CDEF-BEGIN */
#define SP_MAX_HDRS     256
#define SP_MAX_VIAS     64
#define SP_MAX_CONTACTS 32
#define SP_MAX_LUMPS    128
#define SP_MAX_MSG      1048576

/* parse flags */
#define SP_F_STREAM     1   /* stream transport: Content-Length is mandatory and frames the message */
#define SP_F_NOCHECK    2   /* split headers only: do not parse/validate the core header bodies */

/* error codes (negative return values); sp_strerror() names them */
#define SP_OK            0
#define SP_E_NEEDMORE   -1
#define SP_E_FIRSTLINE  -2
#define SP_E_VERSION    -3
#define SP_E_STATUS     -4
#define SP_E_HDRNAME    -5
#define SP_E_TRUNC      -6
#define SP_E_TOOMANY    -7
#define SP_E_CLEN       -8
#define SP_E_BODY       -9
#define SP_E_MISSING    -10
#define SP_E_DUP        -11
#define SP_E_CSEQ       -12
#define SP_E_VIA        -13
#define SP_E_NAMEADDR   -14
#define SP_E_URI        -15
#define SP_E_MAXFWD     -16
#define SP_E_DATE       -17
#define SP_E_RURI       -18
#define SP_E_MISMATCH   -19
#define SP_E_TOOBIG     -20
#define SP_E_LUMP       -21
#define SP_E_SPACE      -22
#define SP_E_PARAM      -23
#define SP_E_NOCLEN     -24
#define SP_E_RANGE      -25

/* header types (OpenSIPS-style names) */
#define HDR_ERROR_T            -1
#define HDR_OTHER_T             0
#define HDR_VIA_T               1
#define HDR_TO_T                2
#define HDR_FROM_T              3
#define HDR_CSEQ_T              4
#define HDR_CALLID_T            5
#define HDR_CONTACT_T           6
#define HDR_MAXFORWARDS_T       7
#define HDR_ROUTE_T             8
#define HDR_RECORDROUTE_T       9
#define HDR_PATH_T             10
#define HDR_CONTENTTYPE_T      11
#define HDR_CONTENTLENGTH_T    12
#define HDR_AUTHORIZATION_T    13
#define HDR_EXPIRES_T          14
#define HDR_PROXYAUTH_T        15
#define HDR_SUPPORTED_T        16
#define HDR_REQUIRE_T          17
#define HDR_PROXYREQUIRE_T     18
#define HDR_UNSUPPORTED_T      19
#define HDR_ALLOW_T            20
#define HDR_EVENT_T            21
#define HDR_ACCEPT_T           22
#define HDR_ACCEPTLANGUAGE_T   23
#define HDR_ORGANIZATION_T     24
#define HDR_PRIORITY_T         25
#define HDR_SUBJECT_T          26
#define HDR_USERAGENT_T        27
#define HDR_SERVER_T           28
#define HDR_CONTENTDISPOSITION_T 29
#define HDR_DIVERSION_T        30
#define HDR_RPID_T             31
#define HDR_REFER_TO_T         32
#define HDR_SESSION_EXPIRES_T  33
#define HDR_MIN_SE_T           34
#define HDR_SUBSCRIPTION_STATE_T 35
#define HDR_ACCEPTCONTACT_T    36
#define HDR_ALLOWEVENTS_T      37
#define HDR_CONTENTENCODING_T  38
#define HDR_REFERREDBY_T       39
#define HDR_REJECTCONTACT_T    40
#define HDR_REQUESTDISPOSITION_T 41
#define HDR_WWW_AUTHENTICATE_T 42
#define HDR_PROXY_AUTHENTICATE_T 43
#define HDR_DATE_T             44
#define HDR_IDENTITY_T         45
#define HDR_IDENTITY_INFO_T    46
#define HDR_PPI_T              47
#define HDR_PAI_T              48
#define HDR_PRIVACY_T          49
#define HDR_RETRY_AFTER_T      50
#define HDR_CALL_INFO_T        51
#define HDR_WARNING_T          52
#define HDR_MIN_EXPIRES_T      53
#define HDR_TIMESTAMP_T        54
#define HDR_ALERT_INFO_T       55
#define HDR_ERROR_INFO_T       56
#define HDR_IN_REPLY_TO_T      57
#define HDR_MIME_VERSION_T     58
#define HDR_REPLY_TO_T         59
#define HDR_CONTENT_LANGUAGE_T 60
#define HDR_ACCEPT_ENCODING_T  61
#define HDR_AUTHENTICATION_INFO_T 62
#define HDR_RSEQ_T             63
#define HDR_RACK_T             64
#define HDR_MAX_T              65

/* method ids (OpenSIPS bit values) */
#define METHOD_UNDEF       0
#define METHOD_INVITE      1
#define METHOD_CANCEL      2
#define METHOD_ACK         4
#define METHOD_BYE         8
#define METHOD_INFO        16
#define METHOD_OPTIONS     32
#define METHOD_UPDATE      64
#define METHOD_REGISTER    128
#define METHOD_MESSAGE     256
#define METHOD_SUBSCRIBE   512
#define METHOD_NOTIFY      1024
#define METHOD_PRACK       2048
#define METHOD_REFER       4096
#define METHOD_PUBLISH     8192
#define METHOD_OTHER       16384

/* URI types */
#define ERROR_URI_T  0
#define SIP_URI_T    1
#define SIPS_URI_T   2
#define TEL_URI_T    3
#define TELS_URI_T   4
#define OTHER_URI_T  5

/* lump kinds; at one offset the output order is
 * INS_BEFORE (in the order added), then the replacement text of a DEL/REPLACE
 * starting there, then INS_AFTER (in the order added), then the original. */
#define LUMP_INS_BEFORE 0
#define LUMP_REPLACE    1
#define LUMP_INS_AFTER  2

typedef struct { int32_t s; int32_t l; } sp_str;   /* s == -1: absent */

typedef struct {
    int32_t type;          /* HDR_*_T */
    sp_str name;
    sp_str body;           /* value without surrounding LWS (may contain folding) */
    int32_t start;         /* first byte of the header line */
    int32_t end;           /* one past its last line terminator */
} sp_hdr;

typedef struct {
    int32_t hdr;           /* index into sp_msg.hdrs */
    int32_t start, end;    /* this value inside the header body */
    sp_str proto, version, transport, host, port_s;
    int32_t port;          /* 0 when absent */
    sp_str params;         /* everything after the sent-by, from the first ';' */
    sp_str branch, received, rport, maddr, ttl, i;  /* rport.l == 0: present without value */
} sp_via;

typedef struct {
    int32_t hdr;
    int32_t start, end;
    int32_t star;          /* Contact: * */
    int32_t bracket;       /* the URI was inside <> */
    sp_str display;        /* raw: quotes included */
    sp_str uri;
    sp_str params;         /* header params, after the URI/'>' from the first ';' */
    sp_str tag, expires, q;
} sp_nameaddr;

typedef struct {
    int32_t type;          /* *_URI_T */
    sp_str scheme, user, passwd, host, port_s;
    int32_t port;
    sp_str params, headers, opaque;
    sp_str transport, user_param, method, ttl, maddr, lr, r2, gr;
} sp_uri;

typedef struct { sp_str name; sp_str value; } sp_param;

typedef struct {
    int32_t kind;          /* LUMP_* */
    int32_t off;           /* offset in the original message */
    int32_t del;           /* bytes removed from off (LUMP_REPLACE only) */
    int32_t data_s;        /* new text in the caller's data blob */
    int32_t data_l;
    int32_t seq;
} sp_lump;

typedef struct {
    int32_t err;           /* SP_OK or SP_E_* */
    int32_t err_pos;       /* offset where it was found, -1 unknown */
    int32_t err_status;    /* status to answer: 400, 505; 0 = drop silently */
    int32_t is_request;
    int32_t method_id;     /* METHOD_* of a request, or of the CSeq of a reply */
    sp_str method, ruri, version, reason;
    int32_t status;
    int32_t first_line_end;  /* one past the first line's terminator */
    int32_t hdrs_end;      /* offset of the empty line ending the headers */
    int32_t body_s, body_l;
    int32_t msg_len;       /* octets the message takes in the buffer */
    int32_t content_length;   /* -1: no header */
    int32_t max_forwards;     /* -1: no header */
    uint32_t cseq_num;
    sp_str cseq_method;
    int32_t cseq_method_id;
    int32_t checked;       /* core bodies were parsed (no SP_F_NOCHECK) */
    int32_t n_hdrs;
    int32_t first[HDR_MAX_T];  /* index of the first header of each type, -1 none */
    int32_t count[HDR_MAX_T];
    sp_hdr hdrs[SP_MAX_HDRS];
    int32_t n_vias;
    sp_via vias[SP_MAX_VIAS];
    sp_nameaddr hfrom, hto;
    int32_t n_contacts;
    int32_t contact_star;
    sp_nameaddr contacts[SP_MAX_CONTACTS];
    sp_uri ruri_parsed;
    int32_t n_lumps;
    int32_t lump_seq;
    int32_t lump_bytes;    /* net size change of the lumps */
    sp_lump lumps[SP_MAX_LUMPS];
} sp_msg;

const char *sp_strerror(int err);
int sp_parse_msg(const char *buf, int len, int flags, sp_msg *m);
int sp_frame(const char *buf, int len);
int sp_hdr_type(const char *name, int len);
int sp_method_id(const char *name, int len);
int sp_find_hdr(const sp_msg *m, const char *buf, int type, const char *name, int nlen, int from);
/* The helpers below read buf[s .. s+l) of a buffer of len octets: a span
 * outside it (or a negative s, l or len) is refused with SP_E_RANGE. */
int sp_parse_via(const char *buf, int len, int s, int l, int hdr, sp_via *out, int max);
int sp_parse_nameaddrs(const char *buf, int len, int s, int l, int hdr, int list, int star_ok,
                       sp_nameaddr *out, int max);
int sp_parse_uri(const char *buf, int len, int s, int l, sp_uri *u);
int sp_parse_params(const char *buf, int len, int s, int l, int sep, sp_param *out, int max);
int sp_parse_uint(const char *buf, int len, int s, int l, uint32_t *out);
int sp_check_date(const char *buf, int len, int s, int l);
/* decodes %HH escapes of in[0 .. l) into out (room for outmax octets);
 * the decoded length, or SP_E_SPACE when it does not fit */
int sp_unescape(const char *in, int l, char *out, int outmax);
/* lumps: offsets are into the original message (0 .. msg_len), data_s/data_l
 * into the caller's data blob; sp_lump_add refuses what would not build and
 * keeps msg_len + lump_bytes within 0 .. INT32_MAX */
int sp_lump_add(sp_msg *m, int kind, int off, int del, int data_s, int data_l);
/* take back the lumps from index n on (n: an n_lumps seen before); returns
 * the length of the data blob the remaining lumps use, or SP_E_LUMP when n
 * is not between 0 and the current n_lumps (nothing changed) */
int sp_lump_rollback(sp_msg *m, int n);
/* applies the lumps to buf (buflen octets, at least msg_len) with their text
 * in data (dlen octets); every lump is checked against both first */
int sp_build(const sp_msg *m, const char *buf, int buflen, const char *data, int dlen,
             char *out, int outmax);
int sp_build_reply(const sp_msg *m, const char *buf, int code, const char *reason, int rlen,
                   const char *totag, int tlen, const char *extra, int elen,
                   const char *body, int blen, char *out, int outmax);
/* CRC-32 (zlib's) of "Call-ID|From tag|CSeq number|top Via host:port|
 * branch" of a parsed request (buf: its octets): the suffix of the To tags
 * of local replies, the same for every retransmission; -1 when the message
 * was not checked or lacks the Via, From or CSeq (the caller builds the key
 * itself then) */
int64_t sp_totag_crc(const sp_msg *m, const char *buf);
/* CDEF-END */

#endif
