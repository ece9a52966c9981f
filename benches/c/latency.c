/* Times a library written by `nnc build`: create, batch-1 latency and
 * batch-B throughput, on synthetic inputs in [0, 1), or on the rows of a
 * CSV (a header line, then each row's first INPUT_SIZE cells; the rows are
 * repeated to fill the batch). One JSON line. A library built with
 * --preprocessed-input gets the rows preprocessed with the header's shifts
 * and divisors before the timing starts (as onnxruntime's peer gets them
 * scaled).
 *
 *   cc -O2 -DNNC_LIB=NAME -DNNC_LIB_UPPER=NAME_IN_CAPITALS '-DNNC_LIB_HEADER="NAME.h"' \
 *      -I DIR latency.c DIR/libNAME.a -lpthread -lm -ldl -o latency
 *   ./latency SECONDS BATCH [ROWS.csv]
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

/* Fills `count` rows of `width` values from the CSV at `path`; 0 on success. */
static int read_rows(const char *path, float *x, size_t count, size_t width) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t cap = 1 << 16, rows = 0;
    char *line = malloc(cap);
    int c, header = 1;
    size_t cell = 0;
    /* One character at a time: cells end at ',' or a newline. */
    for (size_t len = 0; (c = fgetc(f)) != EOF && rows < count;) {
        if (c != ',' && c != '\n') {
            if (len + 1 < cap)
                line[len++] = (char)c;
            continue;
        }
        line[len] = 0;
        len = 0;
        if (!header && cell < width)
            x[rows * width + cell] = strtof(line, NULL);
        cell++;
        if (c == '\n') {
            rows += !header && cell >= width;
            header = 0;
            cell = 0;
        }
    }
    fclose(f);
    free(line);
    if (rows == 0)
        return 1;
    for (size_t r = rows; r < count; r++)
        for (size_t j = 0; j < width; j++)
            x[r * width + j] = x[(r % rows) * width + j];
    return 0;
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
    if (argc > 3 && read_rows(argv[3], x, batch, CONSTANT(_INPUT_SIZE))) {
        fprintf(stderr, "latency: cannot read rows of %d values from %s\n", (int)CONSTANT(_INPUT_SIZE), argv[3]);
        return 1;
    }
#if CONSTANT(_INPUT_PREPROCESSED)
    for (size_t i = 0; i < batch * CONSTANT(_INPUT_SIZE); i++) {
        size_t j = i % CONSTANT(_INPUT_SIZE);
        x[i] = (x[i] - CONSTANT(_INPUT_SHIFT)[j]) / CONSTANT(_INPUT_DIVISOR)[j];
    }
#endif
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
