/* The machine's float32 multiply-add peak: each of THREADS threads (default:
 * 2) runs 12 independent chains of fused multiply-adds, enough to keep both
 * FMA pipes of a core busy; prints the total in GMAC/s (one multiply-add
 * per lane per instruction), with 8-lane (AVX2) vectors and, when built for
 * AVX-512, 16-lane ones too: on CPUs with two 512-bit FMA pipes (Intel
 * Xeon) the second is twice the first, on Zen 4 the same. The goals of the
 * speed issue are ratios; this says which of them a 2-core machine can
 * reach at all.
 *
 *   cc -O3 -march=native benches/c/fma_peak.c -lpthread -o fma_peak && ./fma_peak 2
 *
 * (-O3 unrolls the chains into registers; at -O2 they live in memory.)
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
#define ROUNDS 200000000L

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One thread's chains, with vectors of LANES lanes. */
#define CHAINS_OF(name, type, lanes, set1, fmadd)                                   \
    static void *name(void *out) {                                                  \
        type acc[CHAINS];                                                           \
        for (int i = 0; i < CHAINS; i++) acc[i] = set1(i * 1e-3f);                  \
        const type a = set1(0.9999f), b = set1(1e-4f);                              \
        for (long r = 0; r < ROUNDS; r++)                                           \
            for (int i = 0; i < CHAINS; i++) acc[i] = fmadd(acc[i], a, b);          \
        float sum = 0;                                                              \
        for (int i = 0; i < CHAINS; i++) sum += acc[i][0];                          \
        *(float *)out = sum; /* keeps the chains alive */                           \
        return NULL;                                                                \
    }

CHAINS_OF(chains8, __m256, 8, _mm256_set1_ps, _mm256_fmadd_ps)
#ifdef __AVX512F__
CHAINS_OF(chains16, __m512, 16, _mm512_set1_ps, _mm512_fmadd_ps)
#endif

/* Runs `chains` on `threads` threads; returns GMAC/s for `lanes` lanes. */
static double peak(void *(*chains)(void *), int threads, int lanes) {
    pthread_t ids[256];
    float sums[256];
    double start = now_s();
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, chains, &sums[t]);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    return threads * ROUNDS * CHAINS * (double)lanes / (now_s() - start) / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1 || threads > 256) return 2;
    printf("{\"threads\": %d, \"gmac_per_s\": %.1f", threads, peak(chains8, threads, 8));
#ifdef __AVX512F__
    printf(", \"gmac_per_s_avx512\": %.1f", peak(chains16, threads, 16));
#endif
    printf("}\n");
    return 0;
}
