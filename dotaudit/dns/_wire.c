/* dotaudit DNS wire walker in C: the same walk and the same validation as dotaudit/dns/wire.py
 * (``_parse_py``), for the common message: at most one question whose labels need no escaping.
 * Anything else is handed back to the Python walker (status 2).  tests/dns/test_wire.py checks
 * that both give the same result on real, generated and mutated messages.
 *
 * out[]: 0 id, 1 flags, 2 qdcount, 3 ancount, 4 nscount, 5 arcount, 6 qname length (-1: none),
 * 7 qtype (-1), 8 qclass (-1), 9 edns, 10 udp_size (-1), 11 do, 12 padding (-1), 13 keepalive,
 * 14 cookie, 15 ecs, 16 rcode.  The lowercase name goes to name[] (no NUL).
 * Returns 0 parsed, 1 not a well-formed DNS message, 2 let Python do it.
 */
#include <stdint.h>

#define DNS_OK 0
#define DNS_BAD 1
#define DNS_PY 2

static int safe_char(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'
        || c == '*' || c == '/';
}

/* _skip_name: the offset after the name at p, or -1 (malformed). */
static int64_t skip_name(const uint8_t *w, int64_t p, int64_t n) {
    int hops = 0;
    for (;;) {
        if (p >= n) return -1;
        uint8_t ln = w[p];
        if (ln == 0) return p + 1;
        if ((ln & 0xC0) == 0xC0) {
            if (p + 1 >= n) return -1;
            return p + 2;
        }
        if (ln & 0xC0) return -1;
        p += 1 + ln;
        if (++hops > 127) return -1;
    }
}

/* _read_name into name[] (lowercase); returns the offset after the name in place, -1 when
 * malformed, -2 when a label needs escaping (Python writes it). */
static int64_t read_name(const uint8_t *w, int64_t p, int64_t n, char *name, int64_t *name_len) {
    int64_t end = -1, len = 0;
    int jumps = 0, total = 0;
    for (;;) {
        if (p >= n) return -1;
        uint8_t ln = w[p];
        if (ln == 0) {
            if (end < 0) end = p + 1;
            break;
        }
        if ((ln & 0xC0) == 0xC0) {
            if (p + 1 >= n) return -1;
            int64_t target = ((int64_t)(ln & 0x3F) << 8) | w[p + 1];
            if (end < 0) end = p + 2;
            if (++jumps > 64 || target >= n) return -1;
            p = target;
            continue;
        }
        if (ln & 0xC0) return -1;
        if (p + 1 + ln > n) return -1;
        total += ln + 1;
        if (total > 255) return -1;
        if (len) name[len++] = '.';
        for (int i = 0; i < ln; i++) {
            uint8_t c = w[p + 1 + i];
            if (!safe_char(c)) return -2;
            name[len++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        p += 1 + ln;
    }
    *name_len = len;
    return end;
}

int dns_parse(const uint8_t *w, int64_t n, int64_t *out, char *name) {
    if (n < 12) return DNS_BAD;
    int64_t flags = ((int64_t)w[2] << 8) | w[3];
    int64_t qd = ((int64_t)w[4] << 8) | w[5], an = ((int64_t)w[6] << 8) | w[7];
    int64_t ns = ((int64_t)w[8] << 8) | w[9], ar = ((int64_t)w[10] << 8) | w[11];
    if (qd > 1) return DNS_PY;
    out[0] = ((int64_t)w[0] << 8) | w[1];
    out[1] = flags; out[2] = qd; out[3] = an; out[4] = ns; out[5] = ar;
    out[6] = out[7] = out[8] = -1;
    int64_t p = 12;
    if (qd == 1) {
        int64_t len = 0;
        int64_t q = read_name(w, p, n, name, &len);
        if (q == -2) return DNS_PY;
        if (q < 0) return DNS_BAD;
        p = q;
        if (p + 4 > n) return DNS_BAD;
        out[6] = len;
        out[7] = ((int64_t)w[p] << 8) | w[p + 1];
        out[8] = ((int64_t)w[p + 2] << 8) | w[p + 3];
        p += 4;
    }
    for (int64_t i = 0; i < an + ns; i++) {
        p = skip_name(w, p, n);
        if (p < 0 || p + 10 > n) return DNS_BAD;
        int64_t rdlen = ((int64_t)w[p + 8] << 8) | w[p + 9];
        p += 10 + rdlen;
        if (p > n) return DNS_BAD;
    }
    int edns = 0, do_bit = 0, keepalive = 0, cookie = 0, ecs = 0;
    int64_t udp_size = -1, padding = -1, rcode = flags & 0xF;
    for (int64_t i = 0; i < ar; i++) {
        int64_t q;
        if (p < n && w[p] == 0) q = p + 1;
        else {
            q = skip_name(w, p, n);
            if (q < 0) return DNS_BAD;
        }
        if (q + 10 > n) return DNS_BAD;
        int64_t rtype = ((int64_t)w[q] << 8) | w[q + 1];
        int64_t rdlen = ((int64_t)w[q + 8] << 8) | w[q + 9];
        int64_t rd = q + 10, end = rd + rdlen;
        if (end > n) return DNS_BAD;
        if (rtype == 41) {
            if (edns) return DNS_BAD;
            edns = 1;
            udp_size = ((int64_t)w[q + 2] << 8) | w[q + 3];
            rcode |= (int64_t)w[q + 4] << 4;
            do_bit = (w[q + 6] & 0x80) != 0;
            int64_t o = rd;
            while (o + 4 <= end) {
                int64_t code = ((int64_t)w[o] << 8) | w[o + 1];
                int64_t olen = ((int64_t)w[o + 2] << 8) | w[o + 3];
                if (o + 4 + olen > end) return DNS_BAD;
                if (code == 12) padding = olen;
                else if (code == 11) keepalive = 1;
                else if (code == 10) cookie = 1;
                else if (code == 8) ecs = 1;
                o += 4 + olen;
            }
            if (o != end) return DNS_BAD;
        }
        p = end;
    }
    if (p != n) return DNS_BAD;
    out[9] = edns; out[10] = udp_size; out[11] = do_bit; out[12] = padding; out[13] = keepalive;
    out[14] = cookie; out[15] = ecs; out[16] = rcode;
    return DNS_OK;
}
