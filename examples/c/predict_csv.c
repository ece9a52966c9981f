/* Predicts every row of a CSV file with a library written by `nnc build`.
 *
 * Build (static, NAME = the library's name; see the Makefile beside this):
 *   cc -O2 -DNNC_LIB=NAME -DNNC_LIB_UPPER=NAME_IN_CAPITALS '-DNNC_LIB_HEADER="NAME.h"' \
 *      -I DIR predict_csv.c DIR/libNAME.a -lpthread -lm -ldl -o predict_csv
 * Run:
 *   ./predict_csv rows.csv
 *
 * The CSV has a header row, then one sample per row: the model's inputs
 * first (extra columns, such as a label, are ignored), raw. A library
 * built with --preprocessed-input gets them preprocessed here, with the
 * header's shifts and divisors. Prints one line per
 * row: each output in turn, a classifier's as its class and then its
 * probabilities, any other's as its values, each float with enough digits
 * to be read back exactly (the columns of `nnc predict`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include NNC_LIB_HEADER

#define GLUE2(a, b) a##b
#define GLUE(a, b) GLUE2(a, b)
#define API(suffix) GLUE(NNC_LIB, suffix)
#define CONSTANT(suffix) GLUE(NNC_LIB_UPPER, suffix)

enum { INPUTS = CONSTANT(_INPUT_SIZE), OUTPUTS = CONSTANT(_OUTPUT_SIZE) };

/* Reads the inputs of every data row; returns the row count, or -1. */
static long read_rows(const char *path, float **rows_out) {
    FILE *file = fopen(path, "r");
    if (!file) {
        perror(path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    long rows = 0, line_no = 0, allocated = 0;
    float *values = NULL;
    while (getline(&line, &cap, file) > 0) {
        if (line_no++ == 0 || line[0] == '\n' || line[0] == '\0')
            continue; /* the header row, and blank lines */
        if (rows == allocated) {
            allocated = allocated ? 2 * allocated : 256;
            float *grown = realloc(values, (size_t)allocated * INPUTS * sizeof(float));
            if (!grown) {
                fprintf(stderr, "out of memory\n");
                rows = -1;
                break;
            }
            values = grown;
        }
        char *cursor = line;
        for (int j = 0; j < INPUTS; j++) {
            char *end;
            values[rows * INPUTS + j] = strtof(cursor, &end);
            if (end == cursor) {
                fprintf(stderr, "%s:%ld: expected %d numbers, found %d\n", path, line_no, INPUTS, j);
                rows = -1;
                break;
            }
            cursor = end + (*end == ',');
        }
        if (rows < 0)
            break;
        rows++;
    }
    free(line);
    fclose(file);
    if (rows <= 0)
        free(values);
    *rows_out = rows > 0 ? values : NULL;
    return rows;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s rows.csv\n", argv[0]);
        return 2;
    }
    float *input;
    long rows = read_rows(argv[1], &input);
    if (rows <= 0) {
        if (rows == 0)
            fprintf(stderr, "%s: no data rows\n", argv[1]);
        return 1;
    }
#if CONSTANT(_INPUT_PREPROCESSED)
    for (long i = 0; i < rows; i++)
        for (int j = 0; j < INPUTS; j++) {
            float *value = &input[i * INPUTS + j];
            *value = (*value - CONSTANT(_INPUT_SHIFT)[j]) / CONSTANT(_INPUT_DIVISOR)[j];
        }
#endif
    float *output = malloc((size_t)rows * OUTPUTS * sizeof(float));
    GLUE(NNC_LIB, _context) *ctx = API(_create)();
    if (!output || !ctx) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    int status = API(_predict)(ctx, input, (size_t)rows, output);
    if (status != CONSTANT(_OK)) {
        fprintf(stderr, "predict failed with code %d\n", status);
        return 1;
    }
    for (long i = 0; i < rows; i++) {
        const char *separator = "";
        for (size_t o = 0; o < CONSTANT(_OUTPUTS); o++) {
            const float *values = output + i * OUTPUTS + CONSTANT(_OUTPUT_OFFSETS)[o];
            size_t size = CONSTANT(_OUTPUT_SIZES)[o];
            if (CONSTANT(_OUTPUT_CLASSES)[o] > 0) {
                size_t best = 0;
                for (size_t c = 1; c < size; c++)
                    if (values[c] > values[best])
                        best = c;
                printf("%s%zu", separator, best);
                separator = ",";
            }
            for (size_t c = 0; c < size; c++) {
                printf("%s%.9g", separator, values[c]);
                separator = ",";
            }
        }
        printf("\n");
    }
    API(_destroy)(ctx);
    free(output);
    free(input);
    return 0;
}
