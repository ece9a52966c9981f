/* The round trip of one cache line between two cores: one thread on CPU 0
 * and one on CPU 1 hand a flag back and forth; prints the median of nine
 * runs' mean round trip as one JSON line. A virtual machine's two vCPUs
 * are placed by its host, sometimes on cores that share a cache, sometimes
 * far apart: on a 2-vCPU Zen 4 EPYC it went from about 55 to 350 ns and
 * back within a minute. nnc's two threads meet many times in a step (each
 * kernel split between them), so its two-core rates drop with this figure
 * while one core's hold; benches/side_by_side.sh records it each round.
 *
 *   cc -O2 benches/c/core_latency.c -lpthread -o core_latency && ./core_latency
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TRIPS 100000
#define RUNS 9

static _Alignas(64) atomic_int flag;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Hands the flag back each time the other thread raises it. */
static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (int i = 0; i < RUNS * TRIPS; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 1)
            ;
        atomic_store_explicit(&flag, 0, memory_order_release);
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    pthread_t other;
    pthread_create(&other, NULL, answer, NULL);
    pin(0);
    double runs[RUNS];
    for (int r = 0; r < RUNS; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < TRIPS; i++) {
            atomic_store_explicit(&flag, 1, memory_order_release);
            while (atomic_load_explicit(&flag, memory_order_acquire) != 0)
                ;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        runs[r] = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / TRIPS;
    }
    pthread_join(other, NULL);
    qsort(runs, RUNS, sizeof runs[0], by_value);
    printf("{\"round_trip_ns\": %.0f}\n", runs[RUNS / 2]);
    return 0;
}
