/* The cost of one MPI_Allreduce (sum, in place) of N floats on this
 * machine: the gradient exchange of one data-parallel step. One JSON line
 * from rank 0 per size: the median of REPEATS calls, after a warm-up.
 *
 *   mpicc -O2 benches/c/allreduce.c -o allreduce
 *   mpirun -np 2 --bind-to none ./allreduce N [N…]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#define REPEATS 51

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int a = 1; a < argc; a++) {
        long n = atol(argv[a]);
        float *values = calloc((size_t)n, sizeof *values);
        double times[REPEATS];
        for (int r = -3; r < REPEATS; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (r >= 0) times[r] = MPI_Wtime() - t0;
        }
        qsort(times, REPEATS, sizeof *times, by_value);
        if (rank == 0)
            printf("{\"ranks\": %d, \"floats\": %ld, \"allreduce_us\": %.2f}\n", size, n, times[REPEATS / 2] * 1e6);
        free(values);
    }
    MPI_Finalize();
    return 0;
}
