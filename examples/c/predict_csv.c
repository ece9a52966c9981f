/* Predicts every row of a CSV file with a library written by `nnc build`.
 *
 * Build (static, NAME = the library's name; see the Makefile beside this):
 *   cc -O2 -DNNC_LIB=NAME -DNNC_LIB_UPPER=NAME_IN_CAPITALS '-DNNC_LIB_HEADER="NAME.h"' \
 *      -I DIR predict_csv.c DIR/libNAME.a -lpthread -lm -ldl -o predict_csv
 * Run:
 *   ./predict_csv rows.csv
 *
 * The CSV has a header row, then one sample per row: the model's inputs
 * first (extra columns, such as a label, are ignored). Prints one line per
 * row: for a classifier the class and its probabilities, otherwise the
 * outputs, each float with enough digits to be read back exactly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include NNC_LIB_HEADER

#define GLUE2(a, b) a##b
#define GLUE(a, b) GLUE2(a, b)
#define API(suffix) GLUE(NNC_LIB, suffix)
#define CONSTANT(suffix) GLUE(NNC_LIB_UPPER, suffix)

enum { INPUTS = CONSTANT(_INPUT_SIZE), OUTPUTS = CONSTANT(_OUTPUT_SIZE), CLASSES = CONSTANT(_CLASSES) };

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
        const float *row = output + i * OUTPUTS;
        if (CLASSES > 0) {
            int best = 0;
            for (int c = 1; c < OUTPUTS; c++)
                if (row[c] > row[best])
                    best = c;
            printf("%d", best);
        }
        for (int c = 0; c < OUTPUTS; c++)
            printf(CLASSES > 0 || c > 0 ? ",%.9g" : "%.9g", row[c]);
        printf("\n");
    }
    API(_destroy)(ctx);
    free(output);
    free(input);
    return 0;
}
