/* How fast an sgemm kernel's inner loop runs on one core with each register
 * blocking of AVX-512 (R rows of c by V vectors of 16 columns, R·V
 * accumulators in registers; each step loads V vectors of the packed b and
 * broadcasts R values of the packed a), its operands in the first-level
 * cache: the ceiling of runtime/src/gemm/kernel.rs's 12 × 2 kernel before packing,
 * the caches and the stores of c. Prints GMAC/s per blocking; compare with
 * fma_peak.c's one-core figure.
 *
 *   cc -O3 -march=native benches/c/kernel_blocking.c -o kernel_blocking && ./kernel_blocking
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define KC 256
#define MACS 4000000000.0

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float a[KC * 16], b[KC * 16 * 6], c[16 * 6 * 16];

/* c += a·b for one block: KC steps of V loads, R broadcasts, R·V FMAs. */
#define KERNEL(R, V)                                                                    \
    static void kernel_##R##x##V(void) {                                                \
        __m512 acc[R][V], bv[V];                                                        \
        for (int r = 0; r < R; r++)                                                     \
            for (int v = 0; v < V; v++)                                                 \
                acc[r][v] = _mm512_setzero_ps();                                        \
        for (int p = 0; p < KC; p++) {                                                  \
            for (int v = 0; v < V; v++)                                                 \
                bv[v] = _mm512_loadu_ps(b + (p * V + v) * 16);                          \
            for (int r = 0; r < R; r++) {                                               \
                __m512 x = _mm512_set1_ps(a[p * R + r]);                                \
                for (int v = 0; v < V; v++)                                             \
                    acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);                   \
            }                                                                           \
        }                                                                               \
        for (int r = 0; r < R; r++)                                                     \
            for (int v = 0; v < V; v++) {                                               \
                float *at = c + (r * V + v) * 16;                                       \
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), acc[r][v]));    \
            }                                                                           \
    }                                                                                   \
    static void time_##R##x##V(void) {                                                  \
        long calls = (long)(MACS / (KC * R * V * 16));                                  \
        double best = 0;                                                                \
        for (int round = 0; round < 3; round++) {                                       \
            double t0 = now_s();                                                        \
            for (long i = 0; i < calls; i++)                                            \
                kernel_##R##x##V();                                                     \
            double rate = calls * (double)(KC * R * V * 16) / (now_s() - t0) / 1e9;     \
            best = rate > best ? rate : best;                                           \
        }                                                                               \
        printf("{\"rows\": %d, \"vectors\": %d, \"gmac_per_s\": %.1f}\n", R, V, best); \
    }

KERNEL(12, 2)
KERNEL(14, 2)
KERNEL(8, 3)
KERNEL(6, 4)
KERNEL(4, 6)

int main(void) {
    for (int i = 0; i < KC * 16; i++)
        a[i] = 1.0f + i % 7 * 1e-6f;
    for (int i = 0; i < KC * 16 * 6; i++)
        b[i] = 1.0f - i % 5 * 1e-6f;
    time_12x2();
    time_14x2();
    time_8x3();
    time_6x4();
    time_4x6();
    return c[5] == 0.5f; /* keeps the sums live */
}
