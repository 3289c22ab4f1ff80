# cython: language_level=3
"""QUIC v1/v2 client Initial decryption, CRYPTO reassembly and ClientHello extraction.

Sans-IO: datagrams in, a ParseStatus and the ClientHello's SNI/ALPN/ECH out. The keys of a client's
Initials depend only on the version and the DCID of its first Initial (RFC 9001 5.2), so a middlebox can
derive them, remove header protection and decrypt; the AEAD tag proves the plaintext is what the client
sent with those keys, so garbage never yields a name."""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from fastpath.names cimport MALFORMED, NEED_MORE, NO_NAME, NOT_HANDLED, OK
from fastpath.tls cimport parse_client_hello

from fastpath.names import ParseStatus


cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct EVP_MD:
        pass
    ctypedef struct OSSL_LIB_CTX:
        pass
    ctypedef struct OSSL_PARAM:
        pass
    enum:
        EVP_CTRL_AEAD_SET_TAG
    EVP_CIPHER* EVP_CIPHER_fetch(OSSL_LIB_CTX* libctx, const char* algorithm, const char* properties)
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* ctx)
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, void* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX* ctx, const EVP_CIPHER* cipher, void* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX* ctx, unsigned char* out, int* outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX* ctx, int type, int arg, void* ptr)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX* ctx, int pad)
    EVP_MD* EVP_MD_fetch(OSSL_LIB_CTX* libctx, const char* algorithm, const char* properties)
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX* out, const EVP_MD_CTX* inp)
    int EVP_DigestInit_ex2(EVP_MD_CTX* ctx, const EVP_MD* type, const OSSL_PARAM* params)
    int EVP_DigestUpdate(EVP_MD_CTX* ctx, const void* d, size_t cnt)
    int EVP_DigestFinal_ex(EVP_MD_CTX* ctx, unsigned char* md, unsigned int* s)

cdef extern from * nogil:
    int __builtin_popcountll(unsigned long long x)
    int __builtin_ctzll(unsigned long long x)


cdef enum:
    # Long-header packet types, numbered as in v1; v2 rotates the wire bits by one (RFC 9369 3.2).
    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    TAG_LEN = 16
    SAMPLE_LEN = 16
    HASH_LEN = 32       # SHA-256
    HASH_BLOCK = 64
    # A QUIC packet never exceeds a UDP payload; this bounds the scratch buffer a packet is decrypted in.
    PACKET_MAX = 65536

# Frame types allowed in an Initial (RFC 9000 17.2.2); every other type there is a protocol violation.
cdef enum:
    FRAME_PADDING = 0x00
    FRAME_PING = 0x01
    FRAME_ACK = 0x02
    FRAME_ACK_ECN = 0x03
    FRAME_CRYPTO = 0x06
    FRAME_CONNECTION_CLOSE = 0x1c

cdef uint64_t VARINT_MAX = 0x3FFFFFFFFFFFFFFF

# Initial salts: RFC 9001 5.2 (38762cf7...) and RFC 9369 3.3.1 (0dede3de...).
cdef const uint8_t* SALT_V1 = (b"\x38\x76\x2c\xf7\xf5\x59\x34\xb3\x4d\x17"
                               b"\x9a\xe6\xa4\xc8\x0c\xad\xcc\xbb\x7f\x0a")
cdef const uint8_t* SALT_V2 = (b"\x0d\xed\xe3\xde\xf7\x00\xa6\xdb\x81\x93"
                               b"\x81\xbe\x6e\x26\x9d\xcb\xf9\xbd\x2e\xd9")

# Fetched once: implicit fetches (by EVP_*Init_ex, or by name as HMAC() does) would take locks on every
# new connection.
cdef EVP_CIPHER* AES_128_GCM = EVP_CIPHER_fetch(NULL, b"AES-128-GCM", NULL)
cdef EVP_CIPHER* AES_128_ECB = EVP_CIPHER_fetch(NULL, b"AES-128-ECB", NULL)
cdef EVP_MD* SHA256 = EVP_MD_fetch(NULL, b"SHA2-256", NULL)
if AES_128_GCM == NULL or AES_128_ECB == NULL or SHA256 == NULL:
    raise ImportError("libcrypto has no AES-128-GCM/ECB or SHA-256")


cdef inline bint read_varint(const uint8_t* p, size_t n, size_t* pos, uint64_t* out) noexcept nogil:
    cdef size_t i = pos[0]
    cdef size_t k, length
    cdef uint64_t v
    if i >= n:
        return False
    length = (<size_t>1) << (p[i] >> 6)
    if length > n - i:
        return False
    v = p[i] & 0x3F
    for k in range(1, length):
        v = (v << 8) | p[i + k]
    out[0] = v
    pos[0] = i + length
    return True


cdef int parse_long_header(const uint8_t* p, size_t n, LongHeader* h) noexcept nogil:
    """Parses the long header of the packet at p (n bytes to the end of the datagram)."""
    cdef size_t pos
    cdef uint64_t token_len, length
    cdef uint8_t scid_len
    if n == 0:
        return MALFORMED
    if not p[0] & 0x80:
        return NOT_HANDLED  # short header: 1-RTT, the handshake is over
    if n < 7:
        return MALFORMED
    h.version = (<uint32_t>p[1] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 8) | p[4]
    if h.version != QUIC_V1 and h.version != QUIC_V2:
        return NOT_HANDLED  # version negotiation (0) or a version whose layout is unknown
    h.dcid_len = p[5]
    if h.dcid_len > CID_MAX:
        return MALFORMED
    h.dcid = p + 6
    pos = 6 + h.dcid_len
    if pos >= n:
        return MALFORMED
    scid_len = p[pos]
    if scid_len > CID_MAX:
        return MALFORMED
    pos += 1 + scid_len
    h.kind = ((p[0] >> 4) - (h.version == QUIC_V2)) & 3
    if h.kind == RETRY:
        return NOT_HANDLED  # sent by servers only; it has no Length and fills the datagram
    if h.kind == INITIAL:
        if not read_varint(p, n, &pos, &token_len) or token_len > n - pos:
            return MALFORMED
        pos += token_len
    if not read_varint(p, n, &pos, &length) or length > n - pos:
        return MALFORMED
    h.pn_offset = pos
    h.end = pos + length
    return OK


cdef int quic_flow_key(const uint8_t* data, size_t n, QuicFlowKey* out) noexcept nogil:
    cdef LongHeader h
    cdef int st = parse_long_header(data, n, &h)
    if st != OK:
        return st
    if h.kind != INITIAL:
        return NOT_HANDLED
    out.version = h.version
    out.dcid_len = h.dcid_len
    memcpy(out.dcid, h.dcid, h.dcid_len)
    return OK


cdef bint hmac_key_new(HmacKey* k) noexcept nogil:
    k.inner = EVP_MD_CTX_new()
    k.outer = EVP_MD_CTX_new()
    return k.inner != NULL and k.outer != NULL


cdef void hmac_key_free(HmacKey* k) noexcept nogil:
    EVP_MD_CTX_free(k.inner)
    EVP_MD_CTX_free(k.outer)
    k.inner = k.outer = NULL


cdef bint hmac_set_key(HmacKey* k, const uint8_t* key, size_t n) noexcept nogil:
    """Keys k (RFC 2104) with a key of at most one SHA-256 block, as every key here is."""
    cdef uint8_t pad[HASH_BLOCK]
    cdef size_t i
    memset(pad, 0x36, HASH_BLOCK)
    for i in range(n):
        pad[i] ^= key[i]
    if EVP_DigestInit_ex2(k.inner, SHA256, NULL) != 1 or EVP_DigestUpdate(k.inner, pad, HASH_BLOCK) != 1:
        return False
    for i in range(HASH_BLOCK):
        pad[i] ^= 0x36 ^ 0x5C
    return EVP_DigestInit_ex2(k.outer, SHA256, NULL) == 1 and EVP_DigestUpdate(k.outer, pad, HASH_BLOCK) == 1


cdef bint hmac(EVP_MD_CTX* work, const HmacKey* k, const uint8_t* msg, size_t n, uint8_t* out) noexcept nogil:
    """HMAC-SHA256 of msg under k into out (HASH_LEN bytes), computed in work; k is only read."""
    cdef uint8_t inner[HASH_LEN]
    return (EVP_MD_CTX_copy_ex(work, k.inner) == 1 and EVP_DigestUpdate(work, msg, n) == 1
            and EVP_DigestFinal_ex(work, inner, NULL) == 1
            and EVP_MD_CTX_copy_ex(work, k.outer) == 1 and EVP_DigestUpdate(work, inner, HASH_LEN) == 1
            and EVP_DigestFinal_ex(work, out, NULL) == 1)


# HKDF-Extract's HMAC keyed with each version's salt ([0] v1, [1] v2): set at import, then only read,
# by any thread.
cdef HmacKey SALT_KEYS[2]
if not (hmac_key_new(&SALT_KEYS[0]) and hmac_key_new(&SALT_KEYS[1])
        and hmac_set_key(&SALT_KEYS[0], SALT_V1, 20) and hmac_set_key(&SALT_KEYS[1], SALT_V2, 20)):
    raise ImportError("libcrypto cannot key HMAC-SHA256")


cdef int kdf_new(InitialKdf* kdf) noexcept nogil:
    kdf.work = EVP_MD_CTX_new()
    return 0 if hmac_key_new(&kdf.secret) and kdf.work != NULL else -1


cdef void kdf_free(InitialKdf* kdf) noexcept nogil:
    EVP_MD_CTX_free(kdf.work)
    kdf.work = NULL
    hmac_key_free(&kdf.secret)


cdef bint expand_label(InitialKdf* kdf, const char* prefix, size_t prefix_len, const char* label,
                       size_t label_len, uint8_t* out, size_t out_len) noexcept nogil:
    """HKDF-Expand-Label (RFC 8446 7.1) under the secret kdf.secret is keyed with, of the label prefix +
    label with an empty context, for outputs of at most one SHA-256 block."""
    cdef uint8_t info[64]
    cdef uint8_t md[HASH_LEN]
    cdef size_t n = 9 + prefix_len + label_len
    info[0] = 0
    info[1] = <uint8_t>out_len
    info[2] = <uint8_t>(n - 3)
    memcpy(info + 3, b"tls13 ", 6)
    memcpy(info + 9, prefix, prefix_len)
    memcpy(info + 9 + prefix_len, label, label_len)
    info[n] = 0       # context length
    info[n + 1] = 1   # HKDF-Expand block counter: T(1) is all that is needed
    if not hmac(kdf.work, &kdf.secret, info, n + 2, md):
        return False
    memcpy(out, md, out_len)
    return True


cdef inline bint is_key_input(uint32_t version, size_t dcid_len) noexcept nogil:
    return (version == QUIC_V1 or version == QUIC_V2) and dcid_len <= CID_MAX


cdef int derive_initial_keys(InitialKdf* kdf, uint32_t version, const uint8_t* dcid, size_t dcid_len,
                             InitialKeys* out) noexcept nogil:
    cdef uint8_t initial_secret[HASH_LEN]
    cdef uint8_t client_secret[HASH_LEN]
    cdef bint v2 = version == QUIC_V2
    # RFC 9369 3.3.2: v2 renames the packet-protection labels.
    cdef const char* prefix = b"quicv2 " if v2 else b"quic "
    cdef size_t prefix_len = 7 if v2 else 5
    if not is_key_input(version, dcid_len):
        return -1
    # HKDF-Extract, then the client's secret, then its packet-protection keys; each secret keys the HMAC
    # once for every expansion under it.
    if (hmac(kdf.work, &SALT_KEYS[v2], dcid, dcid_len, initial_secret)
            and hmac_set_key(&kdf.secret, initial_secret, HASH_LEN)
            and expand_label(kdf, b"client in", 9, b"", 0, client_secret, HASH_LEN)
            and hmac_set_key(&kdf.secret, client_secret, HASH_LEN)
            and expand_label(kdf, prefix, prefix_len, b"key", 3, out.key, 16)
            and expand_label(kdf, prefix, prefix_len, b"iv", 2, out.iv, 12)
            and expand_label(kdf, prefix, prefix_len, b"hp", 2, out.hp, 16)):
        return 0
    return -1


cdef key_error(uint32_t version, size_t dcid_len):
    """The exception for keys that could not be had."""
    if not is_key_input(version, dcid_len):
        return ValueError(f"not a QUIC v1/v2 Initial key: version {version:#x}, DCID of {dcid_len} bytes")
    return RuntimeError("libcrypto failed to derive or set the QUIC Initial keys")


cdef inline int64_t decode_packet_number(int64_t largest, uint64_t truncated, int nbits) noexcept nogil:
    """RFC 9000 A.3: the packet number closest to the next expected one with these low bits."""
    cdef int64_t expected = largest + 1
    cdef int64_t win = (<int64_t>1) << nbits
    cdef int64_t hwin = win // 2
    cdef int64_t candidate = (expected & ~(win - 1)) | <int64_t>truncated
    if candidate <= expected - hwin and candidate < ((<int64_t>1) << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


cdef inline uint64_t word_mask(size_t lo, size_t hi) noexcept nogil:
    """Bits lo..hi-1 of a 64-bit word, 0 <= lo < hi <= 64."""
    cdef uint64_t upper = ~(<uint64_t>0) if hi == 64 else ((<uint64_t>1) << hi) - 1
    return upper & ~(((<uint64_t>1) << lo) - 1)


cdef size_t mark_bits(uint64_t* bits, size_t a, size_t b, bint set_them) noexcept nogil:
    """How many of bits a..b-1 (a < b) were set; sets them all if set_them."""
    cdef size_t total = 0
    cdef size_t w, lo, hi
    cdef uint64_t mask
    for w in range(a >> 6, ((b - 1) >> 6) + 1):
        lo = a - (w << 6) if a > (w << 6) else 0
        hi = b - (w << 6) if b < ((w + 1) << 6) else 64
        mask = word_mask(lo, hi)
        total += __builtin_popcountll(bits[w] & mask)
        if set_them:
            bits[w] |= mask
    return total


cdef size_t first_clear(const uint64_t* bits, size_t i) noexcept nogil:
    """The first clear bit at or after i, or CRYPTO_BUF."""
    cdef uint64_t w
    while i < CRYPTO_BUF:
        w = ~bits[i >> 6] >> (i & 63)
        if w:
            return i + __builtin_ctzll(w)
        i = (i | 63) + 1
    return CRYPTO_BUF


cdef inline bint hello_parsed(int status) noexcept nogil:
    """Whether the assembler's ClientHelloInfo holds a parsed ClientHello."""
    return status == OK or status == NO_NAME


cdef class QuicInitialAssembler:
    """One client connection's Initials, keyed by the version and DCID of its first Initial.

    Not thread-safe: each flow's datagrams are fed by one thread at a time."""

    def __cinit__(self):
        self.aead = EVP_CIPHER_CTX_new()
        self.hp = EVP_CIPHER_CTX_new()
        if self.aead == NULL or self.hp == NULL or kdf_new(&self.kdf) < 0:
            raise MemoryError()
        # The algorithms are set once: passing one again to EVP_*Init_ex would rebuild the context.
        if (EVP_DecryptInit_ex(self.aead, AES_128_GCM, NULL, NULL, NULL) != 1
                or EVP_EncryptInit_ex(self.hp, AES_128_ECB, NULL, NULL, NULL) != 1
                or EVP_CIPHER_CTX_set_padding(self.hp, 0) != 1):
            raise RuntimeError("libcrypto refused AES-128-GCM/ECB contexts")
        self.status = MALFORMED  # no keys until reset

    def __dealloc__(self):
        EVP_CIPHER_CTX_free(self.aead)
        EVP_CIPHER_CTX_free(self.hp)
        kdf_free(&self.kdf)

    def __init__(self, version: int, dcid: bytes):
        if self.reset(version, dcid, len(dcid)) < 0:
            raise key_error(version, len(dcid))

    @staticmethod
    cdef QuicInitialAssembler for_flow(const QuicFlowKey* key):
        cdef QuicInitialAssembler asm = QuicInitialAssembler.__new__(QuicInitialAssembler)
        if asm.reset(key.version, key.dcid, key.dcid_len) < 0:
            raise key_error(key.version, key.dcid_len)
        return asm

    cdef int reset(self, uint32_t version, const uint8_t* dcid, size_t dcid_len) noexcept nogil:
        cdef InitialKeys keys
        self.largest_pn = -1
        self.contiguous = 0
        memset(self.have, 0, CRYPTO_WORDS * sizeof(uint64_t))
        # Final, and of no version any packet has, until the new keys are in place: a failure here must
        # not leave the last connection's keys in use.
        self.status = MALFORMED
        self.version = 0
        if (derive_initial_keys(&self.kdf, version, dcid, dcid_len, &keys) < 0
                or EVP_DecryptInit_ex(self.aead, NULL, NULL, keys.key, NULL) != 1
                or EVP_EncryptInit_ex(self.hp, NULL, NULL, keys.hp, NULL) != 1):
            return -1
        memcpy(self.iv, keys.iv, 12)
        self.version = version
        self.status = NEED_MORE
        return 0

    cdef int unprotect(self, uint8_t* pkt, const LongHeader* h, size_t* header_len,
                       int64_t* pn) noexcept nogil:
        """Removes header protection from the Initial copied to pkt and decrypts it in place.

        OK with the header length and packet number set, or MALFORMED if the tag does not verify."""
        cdef uint8_t mask[SAMPLE_LEN]
        cdef uint8_t nonce[12]
        cdef int outl, pn_len, i
        cdef uint64_t truncated = 0
        cdef size_t body
        # The sample starts 4 bytes after the packet number field whatever the PN length (RFC 9001 5.4.2),
        # and always leaves room for the tag.
        if h.end < h.pn_offset + 4 + SAMPLE_LEN:
            return MALFORMED
        if EVP_EncryptUpdate(self.hp, mask, &outl, pkt + h.pn_offset + 4, SAMPLE_LEN) != 1:
            return MALFORMED
        pkt[0] ^= mask[0] & 0x0F
        pn_len = (pkt[0] & 3) + 1
        for i in range(pn_len):
            pkt[h.pn_offset + i] ^= mask[1 + i]
            truncated = (truncated << 8) | pkt[h.pn_offset + i]
        pn[0] = decode_packet_number(self.largest_pn, truncated, pn_len * 8)
        header_len[0] = h.pn_offset + pn_len
        body = h.end - header_len[0] - TAG_LEN
        memcpy(nonce, self.iv, 12)
        for i in range(8):
            nonce[11 - i] ^= <uint8_t>(pn[0] >> (8 * i))
        if (EVP_DecryptInit_ex(self.aead, NULL, NULL, NULL, nonce) != 1
                or EVP_DecryptUpdate(self.aead, NULL, &outl, pkt, <int>header_len[0]) != 1
                or EVP_DecryptUpdate(self.aead, pkt + header_len[0], &outl, pkt + header_len[0],
                                     <int>body) != 1
                or EVP_CIPHER_CTX_ctrl(self.aead, EVP_CTRL_AEAD_SET_TAG, TAG_LEN,
                                       pkt + header_len[0] + body) != 1
                or EVP_DecryptFinal_ex(self.aead, pkt + header_len[0] + outl, &outl) != 1):
            return MALFORMED
        return OK

    cdef int store_crypto(self, uint64_t offset, const uint8_t* data, uint64_t length) noexcept nogil:
        """Copies CRYPTO data into the reassembly buffer; MALFORMED if it contradicts bytes already held.

        Bytes past CRYPTO_BUF are dropped: they matter only to a ClientHello too long to classify, which
        try_client_hello reports once its length is known."""
        cdef size_t a, b, i, held
        if length == 0 or offset >= CRYPTO_BUF:
            return OK
        a = <size_t>offset
        b = <size_t>(offset + length) if offset + length < CRYPTO_BUF else CRYPTO_BUF
        held = mark_bits(self.have, a, b, False)
        if held == 0:
            memcpy(self.crypto + a, data, b - a)
        elif held == b - a:
            # Retransmitted data must be identical (RFC 9000 2.2); a filter that kept either version
            # could be shown a different name from the one the server sees.
            if memcmp(self.crypto + a, data, b - a) != 0:
                return MALFORMED
        else:
            for i in range(a, b):
                if self.have[i >> 6] >> (i & 63) & 1:
                    if self.crypto[i] != data[i - a]:
                        return MALFORMED
                else:
                    self.crypto[i] = data[i - a]
        mark_bits(self.have, a, b, True)
        return OK

    cdef int read_frames(self, const uint8_t* p, size_t n) noexcept nogil:
        """The frames of one decrypted Initial: OK, or MALFORMED for anything an Initial cannot carry."""
        cdef size_t pos = 0
        cdef uint64_t a, b, c, count
        cdef uint64_t offset = 0
        cdef uint64_t length = 0
        cdef uint8_t t
        if n == 0:
            return MALFORMED  # a packet with no frames (RFC 9000 12.4)
        while pos < n:
            t = p[pos]
            pos += 1
            # All permitted types are below 0x40, so a longer varint encoding is not minimal (RFC 9000 12.4).
            if t == FRAME_PADDING or t == FRAME_PING:
                continue
            if t == FRAME_ACK or t == FRAME_ACK_ECN:
                if not (read_varint(p, n, &pos, &a) and read_varint(p, n, &pos, &b)
                        and read_varint(p, n, &pos, &count) and read_varint(p, n, &pos, &c)):
                    return MALFORMED
                # Each range needs at least two bytes, so a bogus count fails on reading, not by looping.
                while count > 0:
                    if not (read_varint(p, n, &pos, &a) and read_varint(p, n, &pos, &b)):
                        return MALFORMED
                    count -= 1
                if t == FRAME_ACK_ECN and not (read_varint(p, n, &pos, &a) and read_varint(p, n, &pos, &b)
                                               and read_varint(p, n, &pos, &c)):
                    return MALFORMED
            elif t == FRAME_CRYPTO:
                if not (read_varint(p, n, &pos, &offset) and read_varint(p, n, &pos, &length)):
                    return MALFORMED
                if length > n - pos or offset + length > VARINT_MAX:
                    return MALFORMED
                if self.store_crypto(offset, p + pos, length) != OK:
                    return MALFORMED
                pos += length
            elif t == FRAME_CONNECTION_CLOSE:
                if not (read_varint(p, n, &pos, &a) and read_varint(p, n, &pos, &b)
                        and read_varint(p, n, &pos, &length)):
                    return MALFORMED
                if length > n - pos:
                    return MALFORMED
                pos += length
            else:
                return MALFORMED
        return OK

    cdef int try_client_hello(self) noexcept nogil:
        """Parses the ClientHello once it is contiguous from offset 0; NEED_MORE until then."""
        cdef size_t need
        cdef int st
        self.contiguous = first_clear(self.have, self.contiguous)
        if self.contiguous < 4:
            return NEED_MORE
        need = 4 + ((<size_t>self.crypto[1] << 16) | (<size_t>self.crypto[2] << 8) | self.crypto[3])
        if need > CRYPTO_BUF:
            return NOT_HANDLED  # valid TLS, but longer than this middlebox will hold for one flow
        if self.contiguous < need:
            return NEED_MORE
        st = parse_client_hello(self.crypto, need, &self.info)
        # The whole message is here, so "truncated" means its inner lengths overrun it.
        return MALFORMED if st == NEED_MORE else st

    cdef int feed_datagram(self, const uint8_t* data, size_t n) noexcept nogil:
        cdef uint8_t scratch[PACKET_MAX]
        cdef LongHeader h
        cdef const uint8_t* dcid = NULL
        cdef size_t dcid_len = 0
        cdef size_t pos = 0
        cdef size_t header_len
        cdef int64_t pn
        cdef int st
        cdef bint handled = False
        cdef bint failed = False
        if self.status != NEED_MORE:
            return self.status
        if n == 0:
            return MALFORMED
        while pos < n:
            st = parse_long_header(data + pos, n - pos, &h)
            if st != OK:
                # Nothing after a short-header or unparseable packet can be located.
                failed = failed or st == MALFORMED
                break
            if pos == 0:
                dcid = h.dcid
                dcid_len = h.dcid_len
            elif h.dcid_len != dcid_len or memcmp(h.dcid, dcid, dcid_len) != 0:
                break  # coalesced packets share one DCID; receivers ignore the rest (RFC 9000 12.2)
            pos += h.end
            if h.kind != INITIAL or h.version != self.version:
                continue  # 0-RTT, Handshake, or another version's packet: skipped by its Length
            if h.end > PACKET_MAX:
                failed = True
                continue
            memcpy(scratch, data + pos - h.end, h.end)
            if self.unprotect(scratch, &h, &header_len, &pn) != OK:
                failed = True  # unauthenticated bytes must not disturb the connection: skip the packet
                continue
            handled = True
            if pn > self.largest_pn:
                self.largest_pn = pn
            # Reserved bits are authenticated, so a non-zero value is the client's own violation.
            if (scratch[0] & 0x0C
                    or self.read_frames(scratch + header_len, h.end - header_len - TAG_LEN) != OK):
                self.status = MALFORMED
                return MALFORMED
        if handled:
            st = self.try_client_hello()
            if st != NEED_MORE:
                self.status = st
                return st
        if failed:
            return MALFORMED
        return NEED_MORE if handled else NOT_HANDLED

    # Python API (tests, tools, the control plane); the data plane calls the cdef methods.

    @staticmethod
    def from_datagram(datagram: bytes) -> QuicInitialAssembler | None:
        cdef QuicFlowKey key
        if quic_flow_key(datagram, len(datagram), &key) != OK:
            return None
        return QuicInitialAssembler.for_flow(&key)

    def feed(self, datagram: bytes) -> ParseStatus:
        cdef const uint8_t* data = datagram
        cdef size_t n = len(datagram)
        cdef int status
        with nogil:
            status = self.feed_datagram(data, n)
        return ParseStatus(status)

    def open_packet(self, packet: bytes) -> tuple[int, bytes, bytes] | None:
        cdef LongHeader h
        cdef size_t header_len
        cdef int64_t pn
        cdef bytearray buf
        if (parse_long_header(packet, len(packet), &h) != OK or h.kind != INITIAL
                or h.version != self.version):
            return None
        buf = bytearray(packet[:h.end])
        if self.unprotect(buf, &h, &header_len, &pn) != OK:
            return None
        return pn, bytes(buf[:header_len]), bytes(buf[header_len : h.end - TAG_LEN])

    @property
    def status(self) -> ParseStatus:
        return ParseStatus(self.status)

    @property
    def sni(self) -> str | None:
        if self.status != OK:
            return None
        return self.info.sni[: self.info.sni_len].decode("ascii")

    @property
    def alpn(self) -> tuple[str, ...]:
        if not hello_parsed(self.status) or self.info.alpn_len <= 0:
            return ()
        return tuple(self.info.alpn[: self.info.alpn_len].decode("ascii").split(","))

    @property
    def has_ech(self) -> bool:
        return hello_parsed(self.status) and self.info.has_ech

    @property
    def legacy_version(self) -> int:
        return self.info.legacy_version if hello_parsed(self.status) else 0

    @property
    def max_version(self) -> int:
        return self.info.max_version if hello_parsed(self.status) else 0


VERSION_1: int = QUIC_V1
VERSION_2: int = QUIC_V2


def initial_keys(version: int, dcid: bytes) -> tuple[bytes, bytes, bytes]:
    cdef InitialKeys keys
    cdef InitialKdf kdf
    cdef uint32_t v = version
    cdef int result = kdf_new(&kdf)
    if result == 0:
        result = derive_initial_keys(&kdf, v, dcid, len(dcid), &keys)
    kdf_free(&kdf)
    if result < 0:
        raise key_error(v, len(dcid))
    return (<char*>keys.key)[:16], (<char*>keys.iv)[:12], (<char*>keys.hp)[:16]


def flow_key(datagram: bytes) -> tuple[int, bytes] | None:
    cdef QuicFlowKey key
    if quic_flow_key(datagram, len(datagram), &key) != OK:
        return None
    return key.version, (<char*>key.dcid)[: key.dcid_len]
