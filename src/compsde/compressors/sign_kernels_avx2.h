/* The AVX2 paths of sign_kernels.c, for builds with AVX2 but without the AVX-512 paths
 * (-march=native on AVX2-only CPUs such as AMD EPYC before Zen 4, or -mno-avx512f).
 *
 * SIGN_KERNELS_DECODE unset: the pack, which replaces pack_float/pack_double. Set: the float32
 * decoders planes_float_vector and rows_float_vector (they use FENCE of sign_kernels.c). One
 * compare + movemask gives 8 (4) signs; decoding adds up each coordinate's bits from a table
 * of the 8 lanes of every byte and looks the 8 values up in one permute (two and a blend for
 * counts of 8..15) of lut[0..15], the values built in torch; same bits and values as the
 * byte loops (tests/distributed/test_native.py runs every build).
 */
#if defined(__AVX2__) && !defined(HAVE_AVX512)
#ifndef SIGN_KERNELS_DECODE
#include <immintrin.h>
#define HAVE_AVX2 1

/* The signs of the 64 entries from p, lane order; `bad` collects x - x (0 iff x is finite). */
#define SIGNS64_AVX2(T, L, V, S)                                                            \
    INLINE uint64_t signs64_##T(const T *p, V *bad) {                                       \
        uint64_t word = 0;                                                                  \
        for (int v = 0; v < 64 / L; v++) {                                                  \
            V a = _mm256_loadu_##S(p + L * v);                                              \
            V ge = _mm256_cmp_##S(a, _mm256_setzero_##S(), _CMP_GE_OQ);                     \
            word |= (uint64_t)(uint32_t)_mm256_movemask_##S(ge) << (L * v);                 \
            *bad = _mm256_or_##S(*bad, _mm256_sub_##S(a, a));                               \
        }                                                                                   \
        return word;                                                                        \
    }
SIGNS64_AVX2(float, 8, __m256, ps)
SIGNS64_AVX2(double, 4, __m256d, pd)
/* Whole words of 64 entries with vectors, the rest (< 64) with the byte loop. */
#define PACK_AVX2(T, V, S)                                                                   \
    static int pack_##T##_avx2(const T *x, int64_t n, uint8_t *out) {                       \
        V bad = _mm256_setzero_p##S();                                                     \
        int64_t i = 0;                                                                      \
        for (; i + 64 <= n; i += 64) {                                                      \
            uint64_t word = reverse_byte_bits(signs64_##T(x + i, &bad));                    \
            memcpy(out + i / 8, &word, 8);                                                  \
        }                                                                                   \
        __m256i flags = _mm256_castp##S##_si256(bad);                                       \
        int nonfinite = !_mm256_testz_si256(flags, flags);                                  \
        if (i < n) nonfinite |= pack_##T(x + i, n - i, out + i / 8);                        \
        return nonfinite;                                                                   \
    }
PACK_AVX2(float, __m256, s)
PACK_AVX2(double, __m256d, d)
#define pack_float pack_float_avx2
#define pack_double pack_double_avx2
#else
/* lanes[v][e] = bit 7 - e of v (pack order): a byte of signs or of a plane as 8 int32 lanes. */
#define LANES8(v) {((v) >> 7) & 1, ((v) >> 6) & 1, ((v) >> 5) & 1, ((v) >> 4) & 1,          \
                   ((v) >> 3) & 1, ((v) >> 2) & 1, ((v) >> 1) & 1, (v) & 1}
#define LANES4(v) LANES8(v), LANES8((v) + 1), LANES8((v) + 2), LANES8((v) + 3)
#define LANES16(v) LANES4(v), LANES4((v) + 4), LANES4((v) + 8), LANES4((v) + 12)
#define LANES64(v) LANES16(v), LANES16((v) + 16), LANES16((v) + 32), LANES16((v) + 48)
static const int32_t byte_lanes[256][8] __attribute__((aligned(32))) = {
    LANES64(0), LANES64(64), LANES64(128), LANES64(192)};

INLINE __m256i lanes_of(uint8_t byte) {
    return _mm256_load_si256((const __m256i *)byte_lanes[byte]);
}
/* The 8 counts of byte k: planes weighted 2^(bits - 1 - j), or rows added up. */
INLINE __m256i planes_index8(const uint8_t *const *src, const int bits, int64_t k) {
    __m256i index = _mm256_slli_epi32(lanes_of(src[0][k]), bits - 1);
    for (int j = 1; j < bits; j++)
        index = _mm256_or_si256(index, _mm256_slli_epi32(lanes_of(src[j][k]), bits - 1 - j));
    return index;
}
INLINE __m256i rows_index8(const uint8_t *const *src, const int nrows, int64_t k) {
    __m256i index = lanes_of(src[0][k]);
    for (int r = 1; r < nrows; r++) index = _mm256_add_epi32(index, lanes_of(src[r][k]));
    return index;
}
/* lut[index] per lane: one permute of lut[0..7], or for counts up to 15 (`wide`) two and a
 * blend on bit 3 of the count. */
INLINE __m256 lookup8(__m256i index, __m256 low, __m256 high, const int wide) {
    __m256 value = _mm256_permutevar8x32_ps(low, index);
    if (!wide) return value;
    __m256 upper = _mm256_permutevar8x32_ps(high, index);
    return _mm256_blendv_ps(value, upper, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}
/* INDEX(src, count, k): the counts of coordinates 8k..8k+7 from `count` planes or rows; `wide`
 * if they can reach 8. Streaming stores where `out` is 32-byte aligned (the decoded bucket is
 * larger than the caches); the last `n % 8` values through a masked store. */
#define DECODE_AVX2(NAME, INDEX)                                                            \
    INLINE void NAME##_body(const uint8_t *const *src, const int count, const int wide,     \
                            int64_t n, const float *lut, float *out) {                      \
        const __m256 low = _mm256_loadu_ps(lut), high = _mm256_loadu_ps(lut + 8);           \
        const int stream = (uintptr_t)out % 32 == 0;                                        \
        int64_t full = n / 8;                                                               \
        if (stream) {                                                                       \
            for (int64_t k = 0; k < full; k++)                                              \
                _mm256_stream_ps(out + 8 * k, lookup8(INDEX(src, count, k), low, high, wide));\
        } else {                                                                            \
            for (int64_t k = 0; k < full; k++)                                              \
                _mm256_storeu_ps(out + 8 * k, lookup8(INDEX(src, count, k), low, high, wide));\
        }                                                                                   \
        if (n % 8) {                                                                        \
            __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                       \
            __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n % 8)), lane);       \
            _mm256_maskstore_ps(out + 8 * full, keep,                                       \
                                lookup8(INDEX(src, count, full), low, high, wide));         \
        }                                                                                   \
    }
DECODE_AVX2(planes_avx2, planes_index8)
DECODE_AVX2(rows_avx2, rows_index8)

static void planes_float_vector(const uint8_t *const *planes, int bits, int64_t n,
                                const float *lut, float *out) {
    switch (bits) {
    case 1: planes_avx2_body(planes, 1, 0, n, lut, out); break;
    case 2: planes_avx2_body(planes, 2, 0, n, lut, out); break;
    case 3: planes_avx2_body(planes, 3, 0, n, lut, out); break;
    default: planes_avx2_body(planes, 4, 1, n, lut, out); break;
    }
}
static void rows_float_vector(const uint8_t *const *rows, int nrows, int64_t n,
                              const float *lut, float *out) {
    switch (nrows) {
    case 1: rows_avx2_body(rows, 1, 0, n, lut, out); break;
    case 2: rows_avx2_body(rows, 2, 0, n, lut, out); break;
    case 3: rows_avx2_body(rows, 3, 0, n, lut, out); break;
    case 4: rows_avx2_body(rows, 4, 0, n, lut, out); break;
    case 7: rows_avx2_body(rows, 7, 0, n, lut, out); break;
    case 8: rows_avx2_body(rows, 8, 1, n, lut, out); break;
    default: rows_avx2_body(rows, nrows, nrows >= 8, n, lut, out); break;
    }
}
#endif
#endif
