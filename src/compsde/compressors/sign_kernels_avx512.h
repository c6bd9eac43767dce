/* The AVX-512 paths of sign_kernels.c (included by it; the build uses -march=native).
 *
 * SIGN_KERNELS_DECODE unset: the pack, which replaces pack_float/pack_double. Set: the float32
 * decoders (they use reverse_byte_bits, load_word and FENCE of sign_kernels.c; their entry
 * points planes_float_vector and rows_float_vector). One compare gives 16 (8) signs
 * as a mask and one permute looks up 16 values; same bits and values as the byte loops
 * (tests/distributed/test_native.py runs every build), 1.4-1.5x faster on the sign wires
 * (BENCHMARKS.md, "Compression on the wire").
 */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__)
#ifndef SIGN_KERNELS_DECODE
#include <immintrin.h>
#define HAVE_AVX512 1

/* Sign masks of up to 64 entries from `left` on, L lanes per vector (suffix S of the
 * intrinsics); `bad` collects x - x (0 iff x is finite). */
#define SIGNS64(T, L, M, V, S)                                                              \
    INLINE uint64_t signs64_##T(const T *p, int64_t left, __m512i *bad) {                   \
        uint64_t word = 0;                                                                  \
        for (int v = 0; v < 64 / L && L * v < left; v++) {                                  \
            int64_t rest = left - L * v;                                                    \
            M valid = rest >= L ? (M)((1u << L) - 1) : (M)((1u << rest) - 1);               \
            V a = _mm512_maskz_loadu_##S(valid, p + L * v);                                 \
            word |= (uint64_t)_mm512_mask_cmp_##S##_mask(valid, a, _mm512_setzero_##S(),    \
                                                         _CMP_GE_OQ) << (L * v);            \
            *bad = _mm512_or_si512(*bad, _mm512_cast##S##_si512(_mm512_sub_##S(a, a)));     \
        }                                                                                   \
        return word;                                                                        \
    }
SIGNS64(float, 16, __mmask16, __m512, ps)
SIGNS64(double, 8, __mmask8, __m512d, pd)
#define PACK_AVX512(T)                                                                      \
    static int pack_##T##_avx512(const T *x, int64_t n, uint8_t *out) {                     \
        __m512i bad = _mm512_setzero_si512();                                               \
        int64_t i = 0;                                                                      \
        for (; i + 64 <= n; i += 64) {                                                      \
            uint64_t word = reverse_byte_bits(signs64_##T(x + i, 64, &bad));                \
            memcpy(out + i / 8, &word, 8);                                                  \
        }                                                                                   \
        if (i < n) {                                                                        \
            uint64_t word = reverse_byte_bits(signs64_##T(x + i, n - i, &bad));             \
            memcpy(out + i / 8, &word, (size_t)((n - i + 7) / 8));                          \
        }                                                                                   \
        return _mm512_test_epi64_mask(bad, bad) != 0;                                       \
    }
PACK_AVX512(float)
PACK_AVX512(double)
#define pack_float pack_float_avx512
#define pack_double pack_double_avx512
#else
/* float32 decoding, 16 coordinates per permute of the 16 values lut[0..15] (counts < 16),
 * streaming stores where `out` is 64-byte aligned (see SPLIT_HEAD). word[j] (lane order)
 * holds 64 coordinates' bits of plane or row j; the 16-lane index is their count. */
INLINE __m512i planes_index(const uint64_t *word, const int bits, int v) {
    __m512i index = _mm512_setzero_si512();
    for (int j = 0; j < bits; j++)
        index = _mm512_mask_or_epi32(index, (__mmask16)(word[j] >> (16 * v)), index,
                                     _mm512_set1_epi32(1 << (bits - 1 - j)));
    return index;
}
INLINE __m512i rows_index(const uint64_t *word, const int nrows, int v) {
    __m512i index = _mm512_setzero_si512();
    for (int r = 0; r < nrows; r++)
        index = _mm512_mask_add_epi32(index, (__mmask16)(word[r] >> (16 * v)), index,
                                      _mm512_set1_epi32(1));
    return index;
}
INLINE void emit16_float(__m512 value, float *out, int64_t left, int stream) {
    if (left >= 16) {
        if (stream) _mm512_stream_ps(out, value);
        else _mm512_storeu_ps(out, value);
    } else {
        _mm512_mask_storeu_ps(out, (__mmask16)((1u << left) - 1), value);
    }
}
/* INDEX(word, count, v): the 16-lane counts; `count` planes or rows of bytes. */
#define DECODE_AVX512(NAME, INDEX)                                                          \
    INLINE void NAME##_body(const uint8_t *const *src, const int count, int64_t n,         \
                            const float *lut, float *out) {                                 \
        const __m512 values = _mm512_loadu_ps(lut);                                         \
        const int stream = (uintptr_t)out % 64 == 0;                                        \
        int64_t nbytes = (n + 7) / 8;                                                       \
        for (int64_t k = 0; k < nbytes; k += 8) {                                           \
            uint64_t word[16];                                                              \
            for (int j = 0; j < count; j++)                                                 \
                word[j] = reverse_byte_bits(load_word(src[j], k, nbytes));                  \
            for (int v = 0; v < 4 && 8 * k + 16 * v < n; v++) {                             \
                __m512 value = _mm512_permutexvar_ps(INDEX(word, count, v), values);        \
                emit16_float(value, out + 8 * k + 16 * v, n - 8 * k - 16 * v, stream);      \
            }                                                                               \
        }                                                                                   \
    }
DECODE_AVX512(planes_avx512, planes_index)
DECODE_AVX512(rows_avx512, rows_index)

/* Shards start at multiples of 8 entries, so `out` is often 32 bytes short of a 64-byte line:
 * the first 8 entries (one byte of every source) are written on their own, and the rest
 * with streaming stores (half-line streaming stores measured as slow as plain ones). */
#define SPLIT_HEAD(BODY, src, count, n, lut, out)                                           \
    do {                                                                                    \
        if ((uintptr_t)(out) % 64 == 32 && (n) > 8) {                                       \
            const uint8_t *rest[16];                                                        \
            for (int j = 0; j < (count); j++) rest[j] = (src)[j] + 1;                       \
            BODY((src), (count), 8, (lut), (out));                                          \
            BODY(rest, (count), (n) - 8, (lut), (out) + 8);                                 \
        } else {                                                                            \
            BODY((src), (count), (n), (lut), (out));                                        \
        }                                                                                   \
    } while (0)

static void planes_float_vector(const uint8_t *const *planes, int bits, int64_t n,
                                const float *lut, float *out) {
    switch (bits) {
    case 1: SPLIT_HEAD(planes_avx512_body, planes, 1, n, lut, out); break;
    case 2: SPLIT_HEAD(planes_avx512_body, planes, 2, n, lut, out); break;
    case 3: SPLIT_HEAD(planes_avx512_body, planes, 3, n, lut, out); break;
    default: SPLIT_HEAD(planes_avx512_body, planes, 4, n, lut, out); break;
    }
}
static void rows_float_vector(const uint8_t *const *rows, int nrows, int64_t n,
                              const float *lut, float *out) {
    switch (nrows) {
    case 1: SPLIT_HEAD(rows_avx512_body, rows, 1, n, lut, out); break;
    case 2: SPLIT_HEAD(rows_avx512_body, rows, 2, n, lut, out); break;
    case 3: SPLIT_HEAD(rows_avx512_body, rows, 3, n, lut, out); break;
    case 4: SPLIT_HEAD(rows_avx512_body, rows, 4, n, lut, out); break;
    case 8: SPLIT_HEAD(rows_avx512_body, rows, 8, n, lut, out); break;
    default: SPLIT_HEAD(rows_avx512_body, rows, nrows, n, lut, out); break;
    }
}
#endif
#endif
