/* Exercises every function of varc.h against libvarc_capi: hostile calls
 * first (NULLs, bad indices, names, sizes), then a real run checked against
 * golden outputs.
 *
 * usage: capi_test MODEL.onnx IN.bin WANT.bin RTOL ATOL
 * (a one-input, one-output f32 model, e.g. models/minvar_dyn18.onnx)
 * Exit status 0 when every check passes, 1 otherwise.
 */
#include "varc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond)                                                      \
    do {                                                                 \
        if (!(cond)) {                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                  \
        }                                                                \
    } while (0)

static void *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n ? (size_t)n : 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) exit(1);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL.onnx IN.bin WANT.bin RTOL ATOL\n", argv[0]);
        return 1;
    }
    double rtol = atof(argv[4]), atol = atof(argv[5]);
    char err[512];

    CHECK(varc_api_version() == VARC_API_VERSION);
    CHECK(strcmp(varc_status_string(VARC_OK), "ok") == 0);
    CHECK(varc_status_string(12345) != NULL);

    /* Hostile: NULLs everywhere. */
    CHECK(varc_load(NULL, err, sizeof err) == NULL && strstr(err, "NULL"));
    CHECK(varc_load("/no/such/model.onnx", err, sizeof err) == NULL && strlen(err) > 0);
    CHECK(varc_load("/no/such/model.onnx", NULL, 0) == NULL);
    CHECK(varc_compile(NULL, err, sizeof err) == NULL && strstr(err, "NULL"));
    CHECK(varc_num_inputs(NULL) == 0 && varc_num_outputs(NULL) == 0);
    CHECK(varc_input_name(NULL, 0) == NULL && varc_output_name(NULL, 0) == NULL);
    CHECK(varc_input_dtype(NULL, 0) == -1 && varc_output_dtype(NULL, 0) == -1);
    CHECK(varc_input_bytes(NULL, 0) == 0 && varc_output_bytes(NULL, 0) == 0);
    size_t rank = 99;
    int64_t dims[8];
    CHECK(varc_input_shape(NULL, 0, dims, 8, &rank) == VARC_ERR_NULL_ARGUMENT);
    CHECK(varc_output_shape(NULL, 0, dims, 8, &rank) == VARC_ERR_NULL_ARGUMENT);
    CHECK(varc_run(NULL, NULL, 0, NULL, 0, err, sizeof err) == VARC_ERR_NULL_ARGUMENT);
    varc_free_model(NULL);
    varc_free_executable(NULL);

    /* A tiny err buffer is truncated, still NUL-terminated. */
    char tiny[4] = {'x', 'x', 'x', 'x'};
    CHECK(varc_load(NULL, tiny, sizeof tiny) == NULL && tiny[3] == '\0' && strlen(tiny) == 3);

    varc_model *m = varc_load(argv[1], err, sizeof err);
    if (!m) {
        fprintf(stderr, "varc_load: %s\n", err);
        return 1;
    }
    varc_executable *x = varc_compile(m, err, sizeof err);
    if (!x) {
        fprintf(stderr, "varc_compile: %s\n", err);
        return 1;
    }
    varc_free_model(m); /* the executable stands alone */

    CHECK(varc_num_inputs(x) == 1 && varc_num_outputs(x) == 1);
    const char *in_name = varc_input_name(x, 0);
    const char *out_name = varc_output_name(x, 0);
    CHECK(in_name && out_name);
    CHECK(varc_input_name(x, 1) == NULL && varc_output_name(x, 7) == NULL);
    CHECK(varc_input_dtype(x, 0) == VARC_F32 && varc_output_dtype(x, 0) == VARC_F32);
    CHECK(varc_input_dtype(x, 1) == -1);
    CHECK(varc_input_shape(x, 0, dims, 8, &rank) == VARC_OK);
    size_t numel = 1;
    for (size_t k = 0; k < rank; k++) numel *= (size_t)dims[k];
    CHECK(numel * 4 == varc_input_bytes(x, 0));
    CHECK(varc_input_shape(x, 0, dims, 1, &rank) == VARC_ERR_SIZE && rank > 1);
    CHECK(varc_input_shape(x, 0, dims, 8, NULL) == VARC_ERR_NULL_ARGUMENT);
    CHECK(varc_input_shape(x, 5, dims, 8, &rank) == VARC_ERR_INVALID_ARGUMENT);
    CHECK(varc_output_shape(x, 0, dims, 8, &rank) == VARC_OK);
    CHECK(varc_output_shape(x, 0, NULL, 8, &rank) == VARC_ERR_NULL_ARGUMENT);

    size_t in_len, want_len;
    void *in = slurp(argv[2], &in_len);
    float *want = slurp(argv[3], &want_len);
    CHECK(in_len == varc_input_bytes(x, 0) && want_len == varc_output_bytes(x, 0));
    float *got = calloc(want_len / 4, 4);

    varc_tensor ins[2] = {{in_name, in, in_len}, {in_name, in, in_len}};
    varc_tensor outs[2] = {{out_name, got, want_len}, {out_name, got, want_len}};

    /* Hostile runs. */
    CHECK(varc_run(x, NULL, 1, outs, 1, err, sizeof err) == VARC_ERR_NULL_ARGUMENT);
    CHECK(varc_run(x, ins, 0, outs, 1, err, sizeof err) == VARC_ERR_INVALID_ARGUMENT);
    CHECK(varc_run(x, ins, 2, outs, 1, err, sizeof err) == VARC_ERR_INVALID_ARGUMENT);
    CHECK(varc_run(x, ins, 1, outs, 2, err, sizeof err) == VARC_ERR_INVALID_ARGUMENT &&
          strstr(err, "twice"));
    varc_tensor bad = {"no_such_input", in, in_len};
    CHECK(varc_run(x, &bad, 1, outs, 1, err, sizeof err) == VARC_ERR_INVALID_ARGUMENT &&
          strstr(err, "no_such_input"));
    varc_tensor noname = {NULL, in, in_len};
    CHECK(varc_run(x, &noname, 1, outs, 1, err, sizeof err) == VARC_ERR_NULL_ARGUMENT);
    varc_tensor short_in = {in_name, in, in_len - 4};
    CHECK(varc_run(x, &short_in, 1, outs, 1, err, sizeof err) == VARC_ERR_SIZE);
    varc_tensor null_data = {in_name, NULL, in_len};
    CHECK(varc_run(x, &null_data, 1, outs, 1, err, sizeof err) == VARC_ERR_NULL_ARGUMENT);
    varc_tensor short_out = {out_name, got, want_len - 1};
    CHECK(varc_run(x, ins, 1, &short_out, 1, err, sizeof err) == VARC_ERR_SIZE);
    varc_tensor bad_out = {"nope", got, want_len};
    CHECK(varc_run(x, ins, 1, &bad_out, 1, err, sizeof err) == VARC_ERR_INVALID_ARGUMENT);
    for (size_t k = 0; k < want_len / 4; k++) CHECK(got[k] == 0.0f);

    /* A real run: no outputs requested is fine, then the output. */
    CHECK(varc_run(x, ins, 1, NULL, 0, err, sizeof err) == VARC_OK && err[0] == '\0');
    int s = varc_run(x, ins, 1, outs, 1, err, sizeof err);
    if (s != VARC_OK) fprintf(stderr, "varc_run: %s (%s)\n", err, varc_status_string(s));
    CHECK(s == VARC_OK);
    size_t outside = 0;
    for (size_t k = 0; k < want_len / 4; k++)
        if (!(fabs((double)got[k] - want[k]) <= atol + rtol * fabs((double)want[k]))) outside++;
    printf("C API run: %zu of %zu outside tolerance\n", outside, want_len / 4);
    CHECK(outside == 0);

    varc_free_executable(x);
    free(in);
    free(want);
    free(got);
    printf("%s (%d failed checks)\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
