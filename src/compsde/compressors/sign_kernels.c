/* DSignSGD's wire kernels: pack signs, count them bit-sliced, decode counts into the mean.
 *
 * Compiled on first use by compsde.distributed.native (the system C compiler, loaded with
 * ctypes). Bit layout as compsde.compressors.bits.pack_signs: bit 1 = x >= 0, most significant
 * bit first, the last byte zero-padded. A "plane" j of counts holds bit (b - 1 - j) of every
 * coordinate's count, most significant plane first (compsde.distributed.wire.CountPlanes).
 * Decoding never computes a value: it looks values up in tables built in torch with the same
 * arithmetic as the in-process simulation, so the result is bitwise the same. AVX-512 paths
 * (sign_kernels_avx512.h), or else AVX2 paths (sign_kernels_avx2.h), replace the float loops
 * where the build has them.
 */
#include <stdint.h>
#include <string.h>

#define MAX_BITS 8
#define INLINE static inline __attribute__((always_inline))

/* x >= 0 as bits (NaN gives 0, -0.0 gives 1); returns 1 if any x is NaN or infinite, else 0
 * (x - x is 0 exactly for finite x). */
#define PACK(T)                                                                             \
    __attribute__((unused)) static int pack_##T(const T *x, int64_t n, uint8_t *out) {      \
        int64_t full = n / 8;                                                               \
        int nonfinite = 0;                                                                  \
        for (int64_t k = 0; k < full; k++) {                                                \
            const T *p = x + 8 * k;                                                         \
            uint8_t byte = 0;                                                               \
            for (int e = 0; e < 8; e++) {                                                   \
                byte |= (uint8_t)(p[e] >= 0) << (7 - e);                                    \
                nonfinite |= !(p[e] - p[e] == 0);                                           \
            }                                                                               \
            out[k] = byte;                                                                  \
        }                                                                                   \
        if (n % 8) {                                                                        \
            uint8_t byte = 0;                                                               \
            for (int e = 0; e < n % 8; e++) {                                               \
                T v = x[8 * full + e];                                                      \
                byte |= (uint8_t)(v >= 0) << (7 - e);                                       \
                nonfinite |= !(v - v == 0);                                                 \
            }                                                                               \
            out[full] = byte;                                                               \
        }                                                                                   \
        return nonfinite;                                                                   \
    }
PACK(float)
PACK(double)

/* Bit e of every byte moved to bit 7 - e: lane order (bit i = coordinate i) <-> pack order. */
__attribute__((unused)) INLINE uint64_t reverse_byte_bits(uint64_t w) {
    w = ((w >> 1) & 0x5555555555555555ull) | ((w & 0x5555555555555555ull) << 1);
    w = ((w >> 2) & 0x3333333333333333ull) | ((w & 0x3333333333333333ull) << 2);
    return ((w >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((w & 0x0F0F0F0F0F0F0F0Full) << 4);
}

#include "sign_kernels_avx512.h"     /* AVX-512 pack, if built */
#include "sign_kernels_avx2.h"       /* else the AVX2 pack, if built */

/* Shard r of x (entries [r*shard, r*shard + shard) that exist) packed into row r of out
 * (rows `stride` bytes apart, `row_bytes` long, zero-padded); returns 1 if any x is NaN or
 * infinite, else 0 (-1: unsupported element size). */
int compsde_sign_pack_shards(const void *x, int64_t n, int64_t shard, int rows, int elem,
                             uint8_t *out, int64_t stride, int64_t row_bytes) {
    if (elem != 4 && elem != 8) return -1;
    int nonfinite = 0;
    for (int r = 0; r < rows; r++) {
        int64_t start = (int64_t)r * shard;
        int64_t count = n - start < shard ? n - start : shard;
        if (count < 0) count = 0;
        uint8_t *row = out + r * stride;
        if (count) {
            const char *from = (const char *)x + start * elem;
            nonfinite |= elem == 4 ? pack_float((const float *)from, count, row)
                                   : pack_double((const double *)from, count, row);
        }
        int64_t used = (count + 7) / 8;
        if (row_bytes > used) memset(row + used, 0, (size_t)(row_bytes - used));
    }
    return nonfinite;
}

/* 8 bytes of `row` from byte offset k; bytes at or past `nbytes` read as zero. */
INLINE uint64_t load_word(const uint8_t *row, int64_t k, int64_t nbytes) {
    uint64_t word = 0;
    if (nbytes - k >= 8) memcpy(&word, row + k, 8);         /* one load, not a memcpy call */
    else memcpy(&word, row + k, (size_t)(nbytes - k));
    return word;
}

/* Bit-sliced counts of the set bits of 8 byte positions over `nrows` rows: planes[j] holds
 * bit (bits - 1 - j) of every count. A ripple-carry add per row, 64 coordinates at once. */
INLINE void count_word(const uint8_t *const *rows, int nrows, int64_t k, int64_t nbytes,
                              int bits, uint64_t *planes) {
    for (int j = 0; j < bits; j++) planes[j] = 0;
    for (int r = 0; r < nrows; r++) {
        uint64_t carry = load_word(rows[r], k, nbytes);
        for (int j = bits - 1; j >= 0; j--) {
            uint64_t sum = planes[j] ^ carry;
            carry &= planes[j];
            planes[j] = sum;
        }
    }
}

/* out[j * stride + k] = plane j of the counts of set bits over rows[r][k], r < nrows. */
INLINE void count_body(const uint8_t *const *rows, int nrows, int64_t nbytes, const int bits,
                       uint8_t *out, int64_t stride) {
    for (int64_t k = 0; k < nbytes; k += 8) {
        uint64_t planes[MAX_BITS];
        count_word(rows, nrows, k, nbytes, bits, planes);
        size_t size = nbytes - k >= 8 ? 8 : (size_t)(nbytes - k);
        for (int j = 0; j < bits; j++) memcpy(out + j * stride + k, &planes[j], size);
    }
}

int compsde_sign_count_planes(const uint8_t *const *rows, int nrows, int64_t nbytes, int bits,
                              uint8_t *out, int64_t stride) {
    switch (bits) {
    case 1: count_body(rows, nrows, nbytes, 1, out, stride); return 0;
    case 2: count_body(rows, nrows, nbytes, 2, out, stride); return 0;
    case 3: count_body(rows, nrows, nbytes, 3, out, stride); return 0;
    case 4: count_body(rows, nrows, nbytes, 4, out, stride); return 0;
    case 5: count_body(rows, nrows, nbytes, 5, out, stride); return 0;
    case 6: count_body(rows, nrows, nbytes, 6, out, stride); return 0;
    case 7: count_body(rows, nrows, nbytes, 7, out, stride); return 0;
    case 8: count_body(rows, nrows, nbytes, 8, out, stride); return 0;
    }
    return -1;
}

/* Decoding: 8 coordinates from their plane bytes, GROUP coordinates per lookup in `table`: the
 * index of a group concatenates its GROUP bits of every plane (plane 0 most significant) and
 * the row holds the group's GROUP values (16^bits rows). `count` (<= 8) values are written.
 * (Groups of 2, with tables of at most 256 rows, measured 2-3x slower.) */
#define GROUP 4
#if defined(__SSE2__)
#include <emmintrin.h>
/* Streaming stores: the decoded bucket is larger than the caches, so skip reading its lines
 * before writing them (the destination of a full group is 16-byte aligned, see below). */
INLINE void store_uint32_t(uint32_t *out, const uint32_t *row) {
    _mm_stream_si128((__m128i *)out, _mm_loadu_si128((const __m128i *)row));
}
INLINE void store_uint64_t(uint64_t *out, const uint64_t *row) {
    _mm_stream_si128((__m128i *)out, _mm_loadu_si128((const __m128i *)row));
    _mm_stream_si128((__m128i *)(out + 2), _mm_loadu_si128((const __m128i *)(row + 2)));
}
#define FENCE() _mm_sfence()
#else
INLINE void store_uint32_t(uint32_t *out, const uint32_t *row) { memcpy(out, row, 16); }
INLINE void store_uint64_t(uint64_t *out, const uint64_t *row) { memcpy(out, row, 32); }
#define FENCE() ((void)0)
#endif
INLINE void store_uint16_t(uint16_t *out, const uint16_t *row) { memcpy(out, row, 8); }
/* share[j][v]: plane j's byte v in the two group indices of its 8 coordinates, the high
 * nibble (first 4 coordinates) in bits 0..15, the low nibble in bits 16..31; the index of a
 * group is the OR of its planes' shares. */
INLINE void make_shares(const int bits, uint32_t share[][256]) {
    for (int j = 0; j < bits; j++) {
        int shift = GROUP * (bits - 1 - j);
        for (uint32_t v = 0; v < 256; v++)
            share[j][v] = ((v >> 4) << shift) | ((v & 15u) << (16 + shift));
    }
}

#define EMIT(T)                                                                             \
    INLINE void emit_##T(uint32_t index, const T *table, T *out, int count) {               \
        const T *high = table + GROUP * (size_t)(index & 0xFFFF);                           \
        const T *low = table + GROUP * (size_t)(index >> 16);                               \
        if (count == 8) {                                                                   \
            store_##T(out, high);                                                           \
            store_##T(out + GROUP, low);                                                    \
        } else {                                                                            \
            for (int e = 0; e < count; e++) out[e] = e < GROUP ? high[e] : low[e - GROUP];  \
        }                                                                                   \
    }

/* From count planes (bits <= 4): planes[j] points at plane j's bytes. */
#define FROM_PLANES(T)                                                                      \
    INLINE void planes_body_##T(const uint8_t *const *planes, const int bits, int64_t n,    \
                                const T *table, T *out) {                                   \
        uint32_t share[4][256];                                                             \
        make_shares(bits, share);                                                           \
        int64_t nbytes = (n + 7) / 8;                                                       \
        for (int64_t k = 0; k < nbytes; k++) {                                              \
            uint32_t index = 0;                                                             \
            for (int j = 0; j < bits; j++) index |= share[j][planes[j][k]];                 \
            int64_t left = n - 8 * k;                                                       \
            emit_##T(index, table, out + 8 * k, left < 8 ? (int)left : 8);                  \
        }                                                                                   \
    }                                                                                       \
    static void from_planes_##T(const uint8_t *const *planes, int bits, int64_t n,          \
                                const T *table, T *out) {                                   \
        switch (bits) {                                                                     \
        case 1: planes_body_##T(planes, 1, n, table, out); break;                           \
        case 2: planes_body_##T(planes, 2, n, table, out); break;                           \
        case 3: planes_body_##T(planes, 3, n, table, out); break;                           \
        default: planes_body_##T(planes, 4, n, table, out); break;                          \
        }                                                                                   \
    }

/* From rank rows of sign bits: counted bit-sliced into `bits` planes, then decoded. */
#define FROM_ROWS(T)                                                                        \
    INLINE void rows_body_##T(const uint8_t *const *rows, int nrows, const int bits,        \
                              int64_t n, const T *table, T *out) {                          \
        uint32_t share[4][256];                                                             \
        make_shares(bits, share);                                                           \
        int64_t nbytes = (n + 7) / 8;                                                       \
        for (int64_t k = 0; k < nbytes; k += 8) {                                           \
            uint64_t planes[MAX_BITS];                                                      \
            count_word(rows, nrows, k, nbytes, bits, planes);                               \
            for (int b = 0; b < 8 && k + b < nbytes; b++) {                                 \
                uint32_t index = 0;                                                         \
                for (int j = 0; j < bits; j++)                                              \
                    index |= share[j][(planes[j] >> (8 * b)) & 0xFF];                       \
                int64_t left = n - 8 * (k + b);                                             \
                emit_##T(index, table, out + 8 * (k + b), left < 8 ? (int)left : 8);        \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    static void from_rows_##T(const uint8_t *const *rows, int nrows, int bits, int64_t n,   \
                              const T *table, T *out) {                                     \
        switch (bits) {                                                                     \
        case 1: rows_body_##T(rows, nrows, 1, n, table, out); break;                        \
        case 2: rows_body_##T(rows, nrows, 2, n, table, out); break;                        \
        case 3: rows_body_##T(rows, nrows, 3, n, table, out); break;                        \
        default: rows_body_##T(rows, nrows, 4, n, table, out); break;                       \
        }                                                                                   \
    }

EMIT(uint16_t)
EMIT(uint32_t)
EMIT(uint64_t)
FROM_PLANES(uint16_t)
FROM_PLANES(uint32_t)
FROM_PLANES(uint64_t)
FROM_ROWS(uint16_t)
FROM_ROWS(uint32_t)
FROM_ROWS(uint64_t)

#define SIGN_KERNELS_DECODE
#include "sign_kernels_avx512.h"     /* float32 decoders, if built */
#include "sign_kernels_avx2.h"       /* else the AVX2 ones, if built */

/* 1 if this build has the AVX-512 paths, else 0. */
int compsde_sign_avx512(void) {
#ifdef HAVE_AVX512
    return 1;
#else
    return 0;
#endif
}

/* 1 if this build has the AVX2 paths (only built without the AVX-512 ones), else 0. */
int compsde_sign_avx2(void) {
#ifdef HAVE_AVX2
    return 1;
#else
    return 0;
#endif
}

/* `table`: 16^bits groups of GROUP values (element size `elem` bytes); bits <= 4. `lut`:
 * the values of the counts 0..255 (used by the float32 AVX-512 and AVX2 paths). */
/* Both decoders need `out` 16-byte aligned (-2 otherwise: the caller falls back), except on
 * the float32 vector paths. */
int compsde_sign_decode_planes(const uint8_t *const *planes, int bits, int64_t n,
                               const void *table, const void *lut, int elem, void *out) {
    (void)lut;                          /* used by the vector paths only */
    if (bits < 1 || bits > 4) return -1;
#if defined(HAVE_AVX512) || defined(HAVE_AVX2)
    if (elem == 4) {
        planes_float_vector(planes, bits, n, lut, out);
        FENCE();
        return 0;
    }
#endif
    if ((uintptr_t)out % 16) return -2;
    switch (elem) {
    case 2: from_planes_uint16_t(planes, bits, n, table, out); break;
    case 4: from_planes_uint32_t(planes, bits, n, table, out); break;
    case 8: from_planes_uint64_t(planes, bits, n, table, out); break;
    default: return -1;
    }
    FENCE();
    return 0;
}

int compsde_sign_decode_rows(const uint8_t *const *rows, int nrows, int bits, int64_t n,
                             const void *table, const void *lut, int elem, void *out) {
    (void)lut;                          /* used by the vector paths only */
    if (bits < 1 || bits > 4 || nrows >= (1 << bits)) return -1;
#if defined(HAVE_AVX512) || defined(HAVE_AVX2)
    if (elem == 4) {
        rows_float_vector(rows, nrows, n, lut, out);
        FENCE();
        return 0;
    }
#endif
    if ((uintptr_t)out % 16) return -2;
    switch (elem) {
    case 2: from_rows_uint16_t(rows, nrows, bits, n, table, out); break;
    case 4: from_rows_uint32_t(rows, nrows, bits, n, table, out); break;
    case 8: from_rows_uint64_t(rows, nrows, bits, n, table, out); break;
    default: return -1;
    }
    FENCE();
    return 0;
}

/* Counts of up to 8 planes (or rows with weight 1): one value of `lut` per coordinate. */
#define FROM_LUT(T)                                                                         \
    static void from_lut_##T(const uint8_t *const *rows, const uint8_t *weights, int nrows, \
                             int64_t n, const T *lut, T *out) {                             \
        for (int64_t i = 0; i < n; i++) {                                                   \
            unsigned count = 0;                                                             \
            int shift = 7 - (int)(i & 7);                                                   \
            for (int r = 0; r < nrows; r++)                                                 \
                count += ((rows[r][i >> 3] >> shift) & 1u) * weights[r];                    \
            out[i] = lut[count];                                                            \
        }                                                                                   \
    }
FROM_LUT(uint16_t)
FROM_LUT(uint32_t)
FROM_LUT(uint64_t)

/* `lut` has 256 values; the weighted counts must stay below 256. */
int compsde_sign_decode_lut(const uint8_t *const *rows, const uint8_t *weights, int nrows,
                            int64_t n, const void *lut, int elem, void *out) {
    switch (elem) {
    case 2: from_lut_uint16_t(rows, weights, nrows, n, lut, out); return 0;
    case 4: from_lut_uint32_t(rows, weights, nrows, n, lut, out); return 0;
    case 8: from_lut_uint64_t(rows, weights, nrows, n, lut, out); return 0;
    }
    return -1;
}
