/* The machine's float32 multiply-add peak: each of THREADS threads (default:
 * 2) runs 12 independent chains of 8-lane fused multiply-adds, enough to
 * keep both FMA pipes of a core busy; prints the total in GMAC/s (one
 * multiply-add per lane per instruction). The goals of the speed issue are
 * ratios; this says which of them a 2-core machine can reach at all.
 *
 *   cc -O3 -mavx2 -mfma benches/c/fma_peak.c -lpthread -o fma_peak && ./fma_peak 2
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

static void *chains(void *out) {
    __m256 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps(i * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.9999f), b = _mm256_set1_ps(1e-4f);
    for (long r = 0; r < ROUNDS; r++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += acc[i][0];
    *(float *)out = sum; /* keeps the chains alive */
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1 || threads > 256) return 2;
    pthread_t ids[256];
    float sums[256];
    double start = now_s();
    for (int t = 0; t < threads; t++) pthread_create(&ids[t], NULL, chains, &sums[t]);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    double seconds = now_s() - start;
    printf("{\"threads\": %d, \"gmac_per_s\": %.1f}\n", threads, threads * ROUNDS * CHAINS * 8.0 / seconds / 1e9);
    return 0;
}
