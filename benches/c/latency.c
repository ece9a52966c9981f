/* Times a library written by `nnc build`: create, batch-1 latency and
 * batch-B throughput, on synthetic inputs in [0, 1). One JSON line.
 *
 *   cc -O2 -DNNC_LIB=NAME -DNNC_LIB_UPPER=NAME_IN_CAPITALS '-DNNC_LIB_HEADER="NAME.h"' \
 *      -I DIR latency.c DIR/libNAME.a -lpthread -lm -ldl -o latency
 *   ./latency SECONDS BATCH
 *
 * Latency: the median of five runs' median per-call times (each run at
 * least SECONDS/5 long, after a second of warm-up), as the peers' harness
 * measures. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include NNC_LIB_HEADER

#define GLUE2(a, b) a##b
#define GLUE(a, b) GLUE2(a, b)
#define API(suffix) GLUE(NNC_LIB, suffix)
#define CONSTANT(suffix) GLUE(NNC_LIB_UPPER, suffix)

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, size_t n) {
    qsort(values, n, sizeof(double), by_value);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/* Median over five runs of the median time (µs) of one predict of `rows` rows. */
static double timed(GLUE(NNC_LIB, _context) * ctx, const float *x, size_t rows, float *y, double seconds) {
    size_t cap = 1 << 22;
    double *calls = malloc(cap * sizeof(double)), runs[5];
    for (double end = now_us() + 1e6; now_us() < end;)
        API(_predict)(ctx, x, rows, y);
    for (int r = 0; r < 5; r++) {
        size_t n = 0;
        for (double end = now_us() + seconds * 1e6 / 5; n < cap && (n < 10 || now_us() < end); n++) {
            double t0 = now_us();
            API(_predict)(ctx, x, rows, y);
            calls[n] = now_us() - t0;
        }
        runs[r] = median(calls, n);
    }
    free(calls);
    return median(runs, 5);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    size_t batch = argc > 2 ? (size_t)atol(argv[2]) : 64;
    float *x = malloc(batch * CONSTANT(_INPUT_SIZE) * sizeof(float));
    float *y = malloc(batch * CONSTANT(_OUTPUT_SIZE) * sizeof(float));
    srand(42);
    for (size_t i = 0; i < batch * CONSTANT(_INPUT_SIZE); i++)
        x[i] = (float)rand() / ((float)RAND_MAX + 1);
    double t0 = now_us();
    GLUE(NNC_LIB, _context) *ctx = API(_create)();
    double create_us = now_us() - t0;
    if (!ctx)
        return 1;
    double latency = timed(ctx, x, 1, y, seconds);
    double per_batch = timed(ctx, x, batch, y, seconds);
    printf("{\"create_us\": %.1f, \"latency_us\": %.2f, \"batch\": %zu, \"samples_per_s\": %.0f}\n", create_us, latency,
           batch, batch / per_batch * 1e6);
    API(_destroy)(ctx);
    free(x);
    free(y);
    return 0;
}
