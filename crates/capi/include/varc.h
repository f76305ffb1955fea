/* varc.h: C API of varc (crates/capi, library libvarc_capi.so / .a).
 *
 * Load an ONNX model, compile it for this CPU, run it on your buffers:
 *
 *     char err[512];
 *     varc_model *m = varc_load("model.onnx", err, sizeof err);
 *     if (!m) { fprintf(stderr, "%s\n", err); ... }
 *     varc_executable *x = varc_compile(m, err, sizeof err);
 *     varc_tensor in[1]  = {{"r", input_data, input_bytes}};
 *     varc_tensor out[1] = {{"y", output_data, output_bytes}};
 *     int s = varc_run(x, in, 1, out, 1, err, sizeof err);
 *     varc_free_executable(x); varc_free_model(m);
 *
 * Conventions
 *  - Failing functions return a VARC_ERR_* status (or NULL, or 0 / -1 for
 *    queries) and, where they take `err`, write a NUL-terminated message
 *    into err[0..err_len) (truncated; err may be NULL). On success err
 *    holds "".
 *  - NULL pointers, out-of-range indices, unknown or repeated names and
 *    wrong buffer sizes are reported as errors, never crashes. Pointers that
 *    are non-NULL but invalid (freed, too short) cannot be detected.
 *  - Tensor data is row-major, little-endian, the dtype's natural layout
 *    (bool: one byte 0/1). Buffers are copied; they need not be aligned.
 *  - No panic or abort crosses the API: an internal error returns
 *    VARC_ERR_PANIC.
 *  - One executable may be run from several threads at once.
 */
#ifndef VARC_H
#define VARC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VARC_API_VERSION 1u

/* Status codes. */
#define VARC_OK 0
#define VARC_ERR_NULL_ARGUMENT 1
#define VARC_ERR_INVALID_ARGUMENT 2
#define VARC_ERR_LOAD 3
#define VARC_ERR_COMPILE 4
#define VARC_ERR_SIZE 5
#define VARC_ERR_RUN 6
#define VARC_ERR_PANIC 7

/* Element types (varc_input_dtype / varc_output_dtype). */
typedef enum varc_dtype {
    VARC_F32 = 0,
    VARC_F16 = 1,
    VARC_BF16 = 2,
    VARC_F64 = 3,
    VARC_I64 = 4,
    VARC_I32 = 5,
    VARC_I8 = 6,
    VARC_U8 = 7,
    VARC_BOOL = 8
} varc_dtype;

typedef struct varc_model varc_model;           /* a loaded model */
typedef struct varc_executable varc_executable; /* a compiled model */

/* A named buffer: an input (read) or an output (written). */
typedef struct varc_tensor {
    const char *name; /* graph input / output name */
    void *data;       /* size bytes; may be NULL only when size is 0 */
    size_t size;      /* must equal the tensor's byte size exactly */
} varc_tensor;

/* The library's VARC_API_VERSION (compare with the header's). */
uint32_t varc_api_version(void);
/* A static, NUL-terminated description of a status code. */
const char *varc_status_string(int status);

/* Loads and type-checks an ONNX model (symbolic dims: the model's own).
 * NULL on failure. Free with varc_free_model. */
varc_model *varc_load(const char *path, char *err, size_t err_len);
/* Compiles for this CPU. NULL on failure. Free with varc_free_executable;
 * the executable does not need the model afterwards. */
varc_executable *varc_compile(const varc_model *model, char *err, size_t err_len);

size_t varc_num_inputs(const varc_executable *exe);  /* 0 when exe is NULL */
size_t varc_num_outputs(const varc_executable *exe); /* 0 when exe is NULL */
/* Name of input/output i, valid while exe lives; NULL when out of range. */
const char *varc_input_name(const varc_executable *exe, size_t i);
const char *varc_output_name(const varc_executable *exe, size_t i);
/* varc_dtype of input/output i; -1 when out of range. */
int varc_input_dtype(const varc_executable *exe, size_t i);
int varc_output_dtype(const varc_executable *exe, size_t i);
/* Byte size of input/output i; 0 when out of range. */
size_t varc_input_bytes(const varc_executable *exe, size_t i);
size_t varc_output_bytes(const varc_executable *exe, size_t i);
/* Writes the rank to *rank and the extents to dims[0..rank) (needs
 * max_dims >= rank; VARC_ERR_SIZE otherwise, with *rank still set). */
int varc_input_shape(const varc_executable *exe, size_t i, int64_t *dims, size_t max_dims,
                     size_t *rank);
int varc_output_shape(const varc_executable *exe, size_t i, int64_t *dims, size_t max_dims,
                      size_t *rank);

/* Runs exe. inputs[0..n) must name every input exactly once; outputs[0..m)
 * names the outputs wanted (any subset, each at most once). Every buffer's
 * size must equal its tensor's byte size. Outputs are written only when the
 * run succeeds. */
int varc_run(const varc_executable *exe, const varc_tensor *inputs, size_t n,
             varc_tensor *outputs, size_t m, char *err, size_t err_len);

/* Free what varc_load / varc_compile returned (NULL is fine). */
void varc_free_model(varc_model *model);
void varc_free_executable(varc_executable *exe);

#ifdef __cplusplus
}
#endif

#endif /* VARC_H */
