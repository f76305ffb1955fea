/* Runs a varc AOT artifact on raw input files and checks it against raw
 * golden outputs.
 *
 * Built by tests/tests/aot.rs with
 *   -DVARC_HEADER='"DIR/NAME.h"' -DVARC_MODEL=NAME -DVARC_UPPER=VARC_NAME
 * and either linked with NAME.o (static) or, with -DVARC_DLOPEN, given the
 * shared library's path at run time.
 *
 * usage: driver DIR RTOL ATOL REPEAT [LIBRARY.so]
 *   DIR/in<i>.bin   input i, raw little-endian
 *   DIR/want<i>.bin golden output i, raw little-endian
 * Exit status: 0 when every output is within |got-want| <= atol + rtol*|want|
 * (floats) or equal (integers and bool), 1 otherwise, 2 on a usage or I/O
 * error.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef VARC_DLOPEN
#include <dlfcn.h>
#endif

#include VARC_HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define SYM(x) CAT(CAT(varc_, VARC_MODEL), x)
#define MAC(x) CAT(VARC_UPPER, x)
#define STR_(x) #x
#define STR(x) STR_(x)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void *read_file(const char *dir, const char *stem, size_t i, size_t want_len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%zu.bin", dir, stem, i);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    void *buf = malloc(want_len ? want_len : 1);
    size_t got = fread(buf, 1, want_len, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != want_len || extra != EOF) {
        fprintf(stderr, "%s: expected exactly %zu bytes\n", path, want_len);
        exit(2);
    }
    return buf;
}

typedef int (*run_fn)(const void *const *, void *const *, void *);

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s DIR RTOL ATOL REPEAT [LIBRARY.so]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    double rtol = atof(argv[2]), atol = atof(argv[3]);
    int repeat = atoi(argv[4]);
    const size_t in_bytes[] = MAC(_INPUT_BYTES_LIST);
    const size_t out_bytes[] = MAC(_OUTPUT_BYTES_LIST);
    const char *out_dtypes[] = MAC(_OUTPUT_DTYPE_LIST);
    enum { NI = MAC(_NUM_INPUTS), NO = MAC(_NUM_OUTPUTS) };

    double t0 = now_ms();
    run_fn run;
#ifdef VARC_DLOPEN
    if (argc < 6) {
        fprintf(stderr, "the dlopen driver needs the library path\n");
        return 2;
    }
    void *lib = dlopen(argv[5], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    uint64_t (*arena_size)(void) = (uint64_t (*)(void))dlsym(lib, STR(SYM(_arena_size)));
    uint64_t (*signature)(void) = (uint64_t (*)(void))dlsym(lib, STR(SYM(_signature)));
    uint32_t (*abi_version)(void) = (uint32_t (*)(void))dlsym(lib, STR(SYM(_abi_version)));
    run = (run_fn)dlsym(lib, STR(SYM(_run)));
    if (!run || !arena_size || !signature || !abi_version) {
        fprintf(stderr, "a varc symbol is missing from %s\n", argv[5]);
        return 2;
    }
    int abi_ok = abi_version() == MAC(_ABI_VERSION) && signature() == MAC(_SIGNATURE) &&
                 arena_size() == MAC(_ARENA_BYTES);
#else
    run = SYM(_run);
    int abi_ok = SYM(_check_abi)();
#endif
    double load_ms = now_ms() - t0;
    if (!abi_ok) {
        fprintf(stderr, "the artifact does not match its header (ABI version or signature)\n");
        return 1;
    }

    const void *inputs[NI];
    for (size_t i = 0; i < NI; i++)
        inputs[i] = read_file(dir, "in", i, in_bytes[i]);
    void *outputs[NO];
    void *wants[NO];
    for (size_t i = 0; i < NO; i++) {
        outputs[i] = calloc(out_bytes[i] ? out_bytes[i] : 1, 1);
        wants[i] = read_file(dir, "want", i, out_bytes[i]);
    }
    void *arena = NULL;
    if (MAC(_ARENA_BYTES) > 0) {
        size_t n = (MAC(_ARENA_BYTES) + MAC(_ARENA_ALIGN) - 1) / MAC(_ARENA_ALIGN) * MAC(_ARENA_ALIGN);
        arena = aligned_alloc(MAC(_ARENA_ALIGN), n);
        if (!arena) {
            fprintf(stderr, "out of memory for the arena\n");
            return 2;
        }
    }

    double first = 0, best = 1e300;
    for (int r = 0; r < (repeat < 1 ? 1 : repeat); r++) {
        double t = now_ms();
        int status = run(inputs, (void *const *)outputs, arena);
        t = now_ms() - t;
        if (status != VARC_AOT_STATUS_OK) {
            fprintf(stderr, "run returned status %d\n", status);
            return 1;
        }
        if (r == 0) first = t;
        if (t < best) best = t;
    }

    int ok = 1;
    for (size_t i = 0; i < NO; i++) {
        size_t bad = 0;
        double max_abs = 0;
        if (strcmp(out_dtypes[i], "f32") == 0) {
            const float *g = outputs[i], *w = wants[i];
            for (size_t k = 0; k < out_bytes[i] / 4; k++) {
                double d = fabs((double)g[k] - (double)w[k]);
                if (!(d <= atol + rtol * fabs((double)w[k]))) bad++;
                if (d > max_abs) max_abs = d;
            }
        } else if (memcmp(outputs[i], wants[i], out_bytes[i]) != 0) {
            bad = 1;
        }
        printf("output %zu (%s): %s  max abs %.3e  (%zu outside tolerance)\n", i, out_dtypes[i],
               bad ? "FAIL" : "ok", max_abs, bad);
        ok &= bad == 0;
    }
    printf("load_ms %.3f first_run_ms %.3f best_run_ms %.3f\n", load_ms, first, best);
    return ok ? 0 : 1;
}
