# C-level QUIC Initial parsing (RFC 9000/9001; v2 RFC 9369): decrypt a client's Initial packets and
# find its ClientHello in the CRYPTO stream. The EVP types come from OpenSSL's libcrypto.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from fastpath.tls cimport ClientHelloInfo

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_MD_CTX:
        pass

cdef enum:
    QUIC_V1 = 0x00000001
    QUIC_V2 = 0x6b3343cf
    CID_MAX = 20              # connection id limit for v1 and v2 (RFC 9000 17.2)
    CRYPTO_BUF = 16384        # bound on the reassembled ClientHello, per connection
    CRYPTO_WORDS = 256        # CRYPTO_BUF / 64: bitmap of the CRYPTO bytes received

# What the data plane keys a QUIC flow on: the version and DCID of the client's first Initial.
cdef struct QuicFlowKey:
    uint32_t version
    uint8_t dcid_len
    uint8_t dcid[CID_MAX]

# Client Initial packet protection (AES-128-GCM key and IV, AES-128 header protection key).
cdef struct InitialKeys:
    uint8_t key[16]
    uint8_t iv[12]
    uint8_t hp[16]

# If data begins with a client Initial of QUIC v1 or v2, fills out and returns OK. Returns NOT_HANDLED for
# short-header, version negotiation, Retry, 0-RTT and Handshake packets and unknown versions, and
# MALFORMED for a long header that is truncated or inconsistent.
cdef int quic_flow_key(const uint8_t* data, size_t n, QuicFlowKey* out) noexcept nogil

# HMAC-SHA256 with a key set once: the digest states after the key's inner and outer pad blocks, copied
# for each message, so that a key used again is not hashed again.
cdef struct HmacKey:
    EVP_MD_CTX* inner
    EVP_MD_CTX* outer

# libcrypto contexts that derive_initial_keys reuses from one derivation to the next (they are opaque,
# so they cannot live on the stack). Used by one thread at a time.
cdef struct InitialKdf:
    EVP_MD_CTX* work        # the digest being computed
    HmacKey secret          # keyed with the initial secret, then with the client's secret

# 0, or -1 if libcrypto cannot allocate; kdf_free undoes a kdf_new that failed half way too.
cdef int kdf_new(InitialKdf* kdf) noexcept nogil
cdef void kdf_free(InitialKdf* kdf) noexcept nogil

# HKDF (RFC 9001 5.2, RFC 9369 3.3.1): 0 on success, -1 for an unknown version, a DCID over CID_MAX
# or a libcrypto failure.
cdef int derive_initial_keys(InitialKdf* kdf, uint32_t version, const uint8_t* dcid, size_t dcid_len,
                             InitialKeys* out) noexcept nogil

# A parsed long header of QUIC v1 or v2 (not Retry).
cdef struct LongHeader:
    uint32_t version
    int kind                # INITIAL, ZERO_RTT or HANDSHAKE, numbered as in v1
    const uint8_t* dcid
    uint8_t dcid_len
    size_t pn_offset        # from the start of the packet
    size_t end              # packet length: the header up to Length, plus Length

cdef class QuicInitialAssembler:
    cdef EVP_CIPHER_CTX* aead           # AES-128-GCM, keyed once per connection; the nonce changes per packet
    cdef EVP_CIPHER_CTX* hp             # AES-128-ECB for the header-protection mask
    cdef InitialKdf kdf                 # for deriving each connection's keys
    cdef uint8_t iv[12]
    cdef uint32_t version
    cdef int64_t largest_pn             # highest authenticated packet number, -1 before the first
    cdef int status                     # NEED_MORE until the ClientHello is parsed or rejected
    cdef size_t contiguous              # CRYPTO bytes received without a gap from offset 0
    cdef uint64_t have[CRYPTO_WORDS]    # which bytes of the CRYPTO stream have arrived
    cdef uint8_t crypto[CRYPTO_BUF]     # the CRYPTO stream from offset 0
    cdef ClientHelloInfo info           # valid when status is OK or NO_NAME

    cdef int unprotect(self, uint8_t* pkt, const LongHeader* h, size_t* header_len,
                       int64_t* pn) noexcept nogil
    cdef int store_crypto(self, uint64_t offset, const uint8_t* data, uint64_t length) noexcept nogil
    cdef int read_frames(self, const uint8_t* p, size_t n) noexcept nogil
    cdef int try_client_hello(self) noexcept nogil

    # An assembler keyed for the flow (quic_flow_key of its first datagram).
    @staticmethod
    cdef QuicInitialAssembler for_flow(const QuicFlowKey* key)
    # Makes the assembler a new connection's, keyed by the version and DCID of its first Initial, reusing
    # its libcrypto contexts (so a data plane can keep one per flow slot): 0, or -1 if no keys can be
    # derived or set, and then the assembler is finally MALFORMED. Until its first reset an assembler
    # made without __init__ holds no keys and is finally MALFORMED too.
    cdef int reset(self, uint32_t version, const uint8_t* dcid, size_t dcid_len) noexcept nogil
    # One UDP payload: returns a ParseStatus (fastpath.names). Once the ClientHello has been parsed,
    # or the connection rejected, every later call returns that final status.
    cdef int feed_datagram(self, const uint8_t* data, size_t n) noexcept nogil
