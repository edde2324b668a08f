/* dotaudit fast record scanner (loaded with ctypes; no Python headers needed).
 *
 * Most packets of a gateway capture belong to flows already decided to be uninteresting
 * (HTTPS, QUIC, ...).  For those the Python flow table only notes the packet's timestamp and
 * whether it carries TCP FIN or RST.  This scanner walks the classic-pcap records or pcapng
 * Enhanced Packet Blocks of one read buffer, does exactly that bookkeeping itself for packets of
 * "muted" flows (a hash set of the flows' wire keys kept in step with the Python table), and
 * hands every other record back to Python by offset with its frame number.  Frame numbers,
 * timestamps (computed with the same IEEE operations as the Python reader) and the per-input
 * totals stay exactly what the pure-Python path gives; the tests compare both paths.
 *
 * The muted-packet test mirrors FlowTable.packet's fast path: Ethernet, at most one 802.1Q tag,
 * IPv4 without options and not a fragment, or IPv6 without extension headers, TCP or UDP, key
 * bytes (addresses then ports) inside the captured bytes.  Anything else goes to Python.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEYMAX 36

typedef struct {
    uint64_t hash;     /* 0 = empty */
    int32_t id;
    uint8_t proto;
    uint8_t len;
    uint8_t key[KEYMAX];
} slot_t;

typedef struct {
    slot_t *slots;
    uint64_t mask;
    uint64_t count;
    double *lts;       /* last timestamp per muted-flow id */
    uint8_t *closed;   /* FIN or RST seen per muted-flow id */
    uint64_t *lseq;    /* (input << 40 | frame) of the packet that set lts */
    uint64_t input;
    int32_t cap_ids;
    /* totals of the current input (all records, handed over or not) */
    uint64_t frames;
    uint64_t bytes;
    double lo, hi, last;
    uint64_t muted_packets;
} scanner_t;

static uint64_t hash_key(int proto, const uint8_t *k, int len) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(proto * 0x100 + len);
    for (int i = 0; i < len; i++) {
        h ^= k[i];
        h *= 0x100000001B3ULL;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 32;
    return h ? h : 1;
}

scanner_t *sc_new(int32_t cap_ids) {
    scanner_t *s = calloc(1, sizeof(scanner_t));
    if (!s) return NULL;
    s->mask = 4095;
    s->slots = calloc(s->mask + 1, sizeof(slot_t));
    s->lts = calloc((size_t)cap_ids, sizeof(double));
    s->closed = calloc((size_t)cap_ids, 1);
    s->lseq = calloc((size_t)cap_ids, sizeof(uint64_t));
    s->cap_ids = cap_ids;
    if (!s->slots || !s->lts || !s->closed || !s->lseq) {
        free(s->slots); free(s->lts); free(s->closed); free(s->lseq); free(s);
        return NULL;
    }
    return s;
}

void sc_free(scanner_t *s) {
    if (!s) return;
    free(s->slots); free(s->lts); free(s->closed); free(s->lseq); free(s);
}

double *sc_lts(scanner_t *s) { return s->lts; }
uint8_t *sc_closed(scanner_t *s) { return s->closed; }
uint64_t *sc_lseq(scanner_t *s) { return s->lseq; }
uint64_t sc_count(scanner_t *s) { return s->count; }

static slot_t *find(scanner_t *s, uint64_t h, int proto, const uint8_t *k, int len) {
    uint64_t i = h & s->mask;
    for (;;) {
        slot_t *sl = &s->slots[i];
        if (!sl->hash) return NULL;
        if (sl->hash == h && sl->proto == proto && sl->len == len && !memcmp(sl->key, k, (size_t)len))
            return sl;
        i = (i + 1) & s->mask;
    }
}

static void put(slot_t *slots, uint64_t mask, const slot_t *src) {
    uint64_t i = src->hash & mask;
    while (slots[i].hash) i = (i + 1) & mask;
    slots[i] = *src;
}

static int grow(scanner_t *s) {
    uint64_t nmask = s->mask * 2 + 1;
    slot_t *n = calloc(nmask + 1, sizeof(slot_t));
    if (!n) return 0;
    for (uint64_t i = 0; i <= s->mask; i++)
        if (s->slots[i].hash) put(n, nmask, &s->slots[i]);
    free(s->slots);
    s->slots = n;
    s->mask = nmask;
    return 1;
}

/* Mute one direction key of a flow; returns 1 on success, 0 if it cannot (then Python keeps
 * handling that flow's packets itself). */
int sc_mute(scanner_t *s, int proto, const uint8_t *k, int len, int32_t id) {
    if (len > KEYMAX || len <= 0 || id < 0 || id >= s->cap_ids) return 0;
    if ((s->count + 1) * 2 > s->mask + 1 && !grow(s)) return 0;
    uint64_t h = hash_key(proto, k, len);
    slot_t *sl = find(s, h, proto, k, len);
    if (sl) { sl->id = id; return 1; }
    slot_t n;
    memset(&n, 0, sizeof n);
    n.hash = h; n.id = id; n.proto = (uint8_t)proto; n.len = (uint8_t)len;
    memcpy(n.key, k, (size_t)len);
    put(s->slots, s->mask, &n);
    s->count++;
    return 1;
}

/* Remove a key (backward-shift deletion keeps the probe sequences intact). */
void sc_unmute(scanner_t *s, int proto, const uint8_t *k, int len) {
    if (len > KEYMAX || len <= 0) return;
    uint64_t h = hash_key(proto, k, len);
    slot_t *sl = find(s, h, proto, k, len);
    if (!sl) return;
    uint64_t i = (uint64_t)(sl - s->slots);
    uint64_t j = i;
    for (;;) {
        s->slots[i].hash = 0;
        for (;;) {
            j = (j + 1) & s->mask;
            if (!s->slots[j].hash) { s->count--; return; }
            uint64_t home = s->slots[j].hash & s->mask;
            /* can slot j move to i?  only if its home is not cyclically in (i, j] */
            if (i <= j ? (i < home && home <= j) : (i < home || home <= j)) continue;
            break;
        }
        s->slots[i] = s->slots[j];
        i = j;
    }
}

/* Ids of muted flows idle past their timeout (FlowTable.sweep's rules for an uninteresting
 * flow): UDP last seen before cut_udp; TCP before cut_closed once FIN/RST was seen, else before
 * cut_open.  An id may appear twice (one slot per direction).  Returns how many were written. */
int64_t sc_expired(scanner_t *s, double cut_udp, double cut_closed, double cut_open, int32_t *out, int64_t cap) {
    int64_t k = 0;
    for (uint64_t i = 0; i <= s->mask && k < cap; i++) {
        const slot_t *sl = &s->slots[i];
        if (!sl->hash) continue;
        double lt = s->lts[sl->id];
        int gone = sl->proto == 17 ? lt < cut_udp : (s->closed[sl->id] ? lt < cut_closed : lt < cut_open);
        if (gone) out[k++] = sl->id;
    }
    return k;
}

/* The fast-path test and bookkeeping for one Ethernet frame; 1 if it belonged to a muted flow. */
static int muted_frame(scanner_t *s, const uint8_t *d, uint32_t n, double ts) {
    if (n < 14) return 0;
    uint32_t off = (d[12] == 0x81 && d[13] == 0) ? 18 : 14;
    if (off + 1 > n) return 0;
    unsigned et = ((unsigned)d[off - 2] << 8) | d[off - 1];
    const uint8_t *key;
    int len, proto;
    uint32_t flags_at;
    if (et == 0x0800) {
        if (off + 24 > n) return 0;
        if (d[off] != 0x45 || (d[off + 6] & 0x3F) || d[off + 7]) return 0;
        proto = d[off + 9];
        key = d + off + 12; len = 12; flags_at = off + 33;
    } else if (et == 0x86DD) {
        if (off + 44 > n) return 0;
        proto = d[off + 6];
        key = d + off + 8; len = 36; flags_at = off + 53;
    } else {
        return 0;
    }
    if (proto != 6 && proto != 17) return 0;
    if (proto == 6 && flags_at >= n) return 0;
    if (!s->count) return 0;
    slot_t *sl = find(s, hash_key(proto, key, len), proto, key, len);
    if (!sl) return 0;
    s->lts[sl->id] = ts;
    s->lseq[sl->id] = (s->input << 40) | s->frames;
    if (proto == 6 && (d[flags_at] & 0x05)) s->closed[sl->id] = 1;
    return 1;
}

static inline uint32_t rd32(const uint8_t *p, int swap) {
    uint32_t v;
    memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

static inline void account(scanner_t *s, double ts, uint64_t orig) {
    s->frames++;
    s->bytes += orig;
    if (ts < s->lo) s->lo = ts;
    if (ts > s->hi) s->hi = ts;
    s->last = ts;
}

void sc_reset(scanner_t *s, double inf, uint64_t input) {
    s->input = input;
    s->frames = 0; s->bytes = 0; s->lo = inf; s->hi = -inf; s->last = 0.0; s->muted_packets = 0;
}
/* A record the Python reader handed over itself (pcapng blocks the scanner does not walk). */
void sc_account(scanner_t *s, double ts, uint64_t orig) { account(s, ts, orig); }
uint64_t sc_frames(scanner_t *s) { return s->frames; }
uint64_t sc_bytes(scanner_t *s) { return s->bytes; }
double sc_lo(scanner_t *s) { return s->lo; }
double sc_hi(scanner_t *s) { return s->hi; }
double sc_last(scanner_t *s) { return s->last; }
uint64_t sc_muted_packets(scanner_t *s) { return s->muted_packets; }

/* One record: account it, then keep it (muted flow) or hand it to Python.  Returns 1 when the
 * walk must stop after it: a sweep frame (every 8192nd), where Python expires idle flows before
 * the scanner may go on. */
static inline int step(scanner_t *s, double ts, uint32_t orig, int mute, const uint8_t *frame_bytes,
                       uint32_t caplen, int64_t pos, int64_t *out, double *hi_out, int64_t *k) {
    account(s, ts, orig);
    uint64_t frame = s->frames;
    if (mute && (frame & 8191) && caplen >= orig && muted_frame(s, frame_bytes, caplen, ts)) {
        s->muted_packets++;
        return 0;
    }
    out[2 * *k] = pos;
    out[2 * *k + 1] = (int64_t)frame;
    hi_out[*k] = s->hi;
    (*k)++;
    return !(frame & 8191);
}

/* Classic pcap: walk whole records of buf[pos:blen].  Records handed to Python go to
 * out[3*i] = offset, out[3*i+1] = frame number, and hi_out[i] = the latest timestamp up to and
 * including that record.  Stops at the first record that is incomplete or longer than limit
 * (Python's reader deals with refills and damage), or when `cap` records were handed over.
 * Returns the offset reached; *nout is the number handed over. */
int64_t sc_scan_pcap(scanner_t *s, const uint8_t *buf, int64_t blen, int64_t pos, int swap, int nsec,
                     uint32_t limit, int mute, int64_t *out, double *hi_out, int64_t cap, int64_t *nout) {
    int64_t k = 0;
    const double scale = nsec ? 1e-9 : 1e-6;
    while (pos + 16 <= blen && k < cap) {
        const uint8_t *h = buf + pos;
        uint32_t sec = rd32(h, swap), frac = rd32(h + 4, swap), incl = rd32(h + 8, swap), orig = rd32(h + 12, swap);
        int64_t end = pos + 16 + (int64_t)incl;
        if (incl > limit || end > blen) break;
        double ts = (double)sec + (double)frac * scale;
        int stop = step(s, ts, orig, mute, h + 16, incl, pos, out, hi_out, &k);
        pos = end;
        if (stop) break;
    }
    *nout = k;
    return pos;
}

/* pcapng: consecutive well-formed Enhanced Packet Blocks on known interfaces, as the Python
 * fast path accepts them.  Per interface: linktype, divisor (ticks per second, <= 2**53) and
 * offset (seconds), ifmute[i] = 1 when that interface's packets may be muted (Ethernet).
 * Stops at any other block; same outputs as sc_scan_pcap. */
int64_t sc_scan_pcapng(scanner_t *s, const uint8_t *buf, int64_t blen, int64_t pos, int swap,
                       int nif, const uint64_t *divisor, const int64_t *offset, const uint8_t *ifmute,
                       const uint8_t *ifok, int mute, int64_t *out, double *hi_out, int64_t cap, int64_t *nout) {
    int64_t k = 0;
    while (pos + 32 <= blen && k < cap) {
        const uint8_t *b = buf + pos;
        uint32_t btype = rd32(b, swap), bl = rd32(b + 4, swap), if_id = rd32(b + 8, swap);
        uint32_t ts_hi = rd32(b + 12, swap), ts_lo = rd32(b + 16, swap), caplen = rd32(b + 20, swap);
        uint32_t orig = rd32(b + 24, swap);
        if (btype != 6 || (int64_t)bl > blen - pos || bl < 32 || (bl & 3) || if_id >= (uint32_t)nif
            || caplen > bl - 32 || rd32(b + bl - 4, swap) != bl || !ifok[if_id])
            break;
        uint64_t ticks = ((uint64_t)ts_hi << 32) | ts_lo;
        uint64_t d = divisor[if_id];
        if ((ticks / d) > (1ULL << 53)) break;  /* not exactly representable: let Python do it */
        /* Python: ticks // d + (ticks % d) / d + offset, each step one IEEE operation */
        double ts = ((double)(ticks / d) + (double)(ticks % d) / (double)d) + (double)offset[if_id];
        int stop = step(s, ts, orig, mute && ifmute[if_id], b + 28, caplen, pos, out, hi_out, &k);
        pos += bl;
        if (stop) break;
    }
    *nout = k;
    return pos;
}
