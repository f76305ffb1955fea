/* Runs a varc AOT artifact on raw input files and checks it against raw
 * golden outputs, serially and through a pthread parallel_for.
 *
 * Built by tests/tests/aot.rs with
 *   -DVARC_HEADER='"DIR/NAME.h"' -DVARC_MODEL=NAME -DVARC_UPPER=VARC_NAME
 * and either linked with NAME.o (static; plus libvarc_capi.a when the object
 * calls varc_sgemm) or, with -DVARC_DLOPEN, given the shared library's path
 * at run time. Whether the weights are external comes from the header
 * (VARC_<NAME>_WEIGHTS_EXTERNAL).
 *
 * usage: driver DIR RTOL ATOL REPEAT THREADS [--lib LIBRARY.so] [--weights FILE]
 *               [--expect-status N]
 *   DIR/in<i>.bin   input i, raw little-endian
 *   DIR/want<i>.bin golden output i, raw little-endian
 *   THREADS >= 2 also runs varc_<name>_run_parallel on a pool of THREADS
 *   threads (the caller's included) and requires its outputs to equal the
 *   serial run's bit for bit, with at least one share run on a worker.
 *   --expect-status N: every run (serial, parallel) must return N instead
 *   (no goldens are read).
 * With external weights the file is mmap()ed, checked with
 * varc_<name>_check_weights, and the entry points are shown wrong sizes,
 * misaligned, NULL and altered blobs, which they must refuse.
 * Exit status: 0 when every check passes and every output is within
 * |got-want| <= atol + rtol*|want| (floats) or equal (integers and bool),
 * 1 otherwise, 2 on a usage or I/O error.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
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

#if MAC(_WEIGHTS_EXTERNAL)
#define EXTERNAL 1
#define WPARAMS const void *, uint64_t,
#define WARGS(w, n) w, n,
#else
#define EXTERNAL 0
#define WPARAMS
#define WARGS(w, n)
#endif

typedef int (*run_fn)(WPARAMS const void *const *, void *const *, void *);
typedef int (*run_parallel_fn)(WPARAMS const void *const *, void *const *, void *,
                               varc_aot_parallel_for, void *);

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "%s\n", what);
    exit(2);
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

/* ---- a small persistent thread pool behind varc_aot_parallel_for ---- */

enum { MAX_THREADS = 64 };

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    pthread_t workers[MAX_THREADS];
    int threads, pending, quit;
    uint64_t generation;
    /* the current parallel_for */
    int64_t n, chunks;
    varc_aot_task task;
    void *task_ctx;
    /* statistics */
    atomic_long calls, worker_shares, covered;
} pool_t;

/* Chunks are dealt round-robin, so with n >= 2 every worker up to
 * min(n, 2*threads) gets at least one. */
static void run_chunks(pool_t *p, int who) {
    for (int64_t c = who; c < p->chunks; c += p->threads) {
        int64_t lo = p->n * c / p->chunks, hi = p->n * (c + 1) / p->chunks;
        p->task(p->task_ctx, lo, hi);
        atomic_fetch_add(&p->covered, hi - lo);
        if (who != 0) atomic_fetch_add(&p->worker_shares, 1);
    }
}

typedef struct {
    pool_t *pool;
    int index;
} worker_arg;

static void *worker(void *arg) {
    worker_arg *a = arg;
    pool_t *p = a->pool;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, a->index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static void parallel_for(void *ctx, int64_t n, varc_aot_task task, void *task_ctx) {
    pool_t *p = ctx;
    atomic_fetch_add(&p->calls, 1);
    long before = atomic_load(&p->covered);
    pthread_mutex_lock(&p->mu);
    p->n = n;
    p->chunks = n < 2 * p->threads ? n : 2 * p->threads;
    p->task = task;
    p->task_ctx = task_ctx;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    if (atomic_load(&p->covered) - before != n) die("parallel_for did not cover [0, n)");
}

static worker_arg worker_args[MAX_THREADS];

static void pool_start(pool_t *p, int threads) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = threads;
    for (int i = 1; i < threads; i++) {
        worker_args[i] = (worker_arg){p, i};
        if (pthread_create(&p->workers[i], NULL, worker, &worker_args[i]) != 0)
            die("pthread_create failed");
    }
}

static void pool_stop(pool_t *p) {
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads; i++) pthread_join(p->workers[i], NULL);
}

/* ---- checks ---- */

static int compare_golden(void *const *outputs, void *const *wants, const size_t *bytes,
                          const char **dtypes, size_t n, double rtol, double atol,
                          const char *label) {
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        size_t bad = 0;
        double max_abs = 0;
        if (strcmp(dtypes[i], "f32") == 0) {
            const float *g = outputs[i], *w = wants[i];
            for (size_t k = 0; k < bytes[i] / 4; k++) {
                double d = fabs((double)g[k] - (double)w[k]);
                if (!(d <= atol + rtol * fabs((double)w[k]))) bad++;
                if (d > max_abs) max_abs = d;
            }
        } else if (memcmp(outputs[i], wants[i], bytes[i]) != 0) {
            bad = 1;
        }
        printf("%s output %zu (%s): %s  max abs %.3e  (%zu outside tolerance)\n", label, i,
               dtypes[i], bad ? "FAIL" : "ok", max_abs, bad);
        ok &= bad == 0;
    }
    return ok;
}

static int expect_status(const char *what, int got, int want) {
    if (got == want) return 1;
    fprintf(stderr, "%s: status %d, expected %d\n", what, got, want);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr,
                "usage: %s DIR RTOL ATOL REPEAT THREADS [--lib LIBRARY.so] [--weights FILE]\n",
                argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    double rtol = atof(argv[2]), atol = atof(argv[3]);
    int repeat = atoi(argv[4]) < 1 ? 1 : atoi(argv[4]);
    int threads = atoi(argv[5]);
    const char *lib_path = NULL, *weights_path = NULL;
    int expect = -1;
    for (int i = 6; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--lib") == 0)
            lib_path = argv[i + 1];
        else if (strcmp(argv[i], "--weights") == 0)
            weights_path = argv[i + 1];
        else if (strcmp(argv[i], "--expect-status") == 0)
            expect = atoi(argv[i + 1]);
        else
            die("unknown option");
    }
    if (threads < 1 || threads > MAX_THREADS) die("THREADS must be 1..64");
    const size_t in_bytes[] = MAC(_INPUT_BYTES_LIST);
    const size_t out_bytes[] = MAC(_OUTPUT_BYTES_LIST);
    const char *out_dtypes[] = MAC(_OUTPUT_DTYPE_LIST);
    enum { NI = MAC(_NUM_INPUTS), NO = MAC(_NUM_OUTPUTS) };

    double t0 = now_ms();
    run_fn run;
    run_parallel_fn run_parallel;
#if EXTERNAL
    int (*check_weights)(const void *, uint64_t);
#endif
#ifdef VARC_DLOPEN
    if (!lib_path) die("the dlopen driver needs --lib LIBRARY.so");
    void *lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    uint64_t (*arena_size)(void) = (uint64_t (*)(void))dlsym(lib, STR(SYM(_arena_size)));
    uint64_t (*signature)(void) = (uint64_t (*)(void))dlsym(lib, STR(SYM(_signature)));
    uint32_t (*abi_version)(void) = (uint32_t (*)(void))dlsym(lib, STR(SYM(_abi_version)));
    run = (run_fn)dlsym(lib, STR(SYM(_run)));
    run_parallel = (run_parallel_fn)dlsym(lib, STR(SYM(_run_parallel)));
#if EXTERNAL
    check_weights = (int (*)(const void *, uint64_t))dlsym(lib, STR(SYM(_check_weights)));
    if (!check_weights) die("varc_<name>_check_weights is missing");
#endif
    if (!run || !run_parallel || !arena_size || !signature || !abi_version) {
        fprintf(stderr, "a varc symbol is missing from %s\n", lib_path);
        return 2;
    }
    int abi_ok = abi_version() == MAC(_ABI_VERSION) && signature() == MAC(_SIGNATURE) &&
                 arena_size() == MAC(_ARENA_BYTES);
#else
    (void)lib_path;
    run = SYM(_run);
    run_parallel = SYM(_run_parallel);
#if EXTERNAL
    check_weights = SYM(_check_weights);
#endif
    int abi_ok = SYM(_check_abi)();
#endif
    double dlopen_ms = now_ms() - t0;
    if (!abi_ok) {
        fprintf(stderr, "the artifact does not match its header (ABI version or signature)\n");
        return 1;
    }
    int ok = 1;
#if EXTERNAL
    if (!weights_path) die("external weights: pass --weights FILE");
    double tw = now_ms();
    int fd = open(weights_path, O_RDONLY);
    if (fd < 0) die("cannot open the weights file");
    struct stat st;
    if (fstat(fd, &st) != 0) die("cannot stat the weights file");
    uint64_t weights_bytes = (uint64_t)st.st_size;
    const void *weights = mmap(NULL, weights_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (weights == MAP_FAILED) die("cannot mmap the weights file");
    close(fd);
    double mmap_ms = now_ms() - tw;
    tw = now_ms();
    ok &= expect_status("check_weights", check_weights(weights, weights_bytes), 0);
    double check_ms = now_ms() - tw;
    printf("weights %llu bytes: mmap %.3f ms, check_weights %.3f ms\n",
           (unsigned long long)weights_bytes, mmap_ms, check_ms);
#else
    (void)weights_path;
#endif
    double load_ms = now_ms() - t0;

    const void *inputs[NI];
    for (size_t i = 0; i < NI; i++) inputs[i] = read_file(dir, "in", i, in_bytes[i]);
    void *outputs[NO], *par_outputs[NO], *wants[NO];
    for (size_t i = 0; i < NO; i++) {
        outputs[i] = calloc(out_bytes[i] ? out_bytes[i] : 1, 1);
        par_outputs[i] = malloc(out_bytes[i] ? out_bytes[i] : 1);
        wants[i] = expect < 0 ? read_file(dir, "want", i, out_bytes[i]) : NULL;
    }
    void *arena = NULL;
    if (MAC(_ARENA_BYTES) > 0) {
        size_t n = (MAC(_ARENA_BYTES) + MAC(_ARENA_ALIGN) - 1) / MAC(_ARENA_ALIGN) *
                   MAC(_ARENA_ALIGN);
        arena = aligned_alloc(MAC(_ARENA_ALIGN), n);
        if (!arena) die("out of memory for the arena");
    }

    if (expect >= 0) {
        /* A failing kernel stops every kind of run with its status, also
         * when only some of its shares fail on other threads. */
        void *const *out = (void *const *)outputs;
        ok &= expect_status("run", run(WARGS(weights, weights_bytes) inputs, out, arena), expect);
        ok &= expect_status("run_parallel(NULL)",
                            run_parallel(WARGS(weights, weights_bytes) inputs, out, arena, NULL,
                                         NULL),
                            expect);
        if (threads >= 2) {
            pool_t pool;
            pool_start(&pool, threads);
            ok &= expect_status("run_parallel",
                                run_parallel(WARGS(weights, weights_bytes) inputs, out, arena,
                                             parallel_for, &pool),
                                expect);
            pool_stop(&pool);
            long shares = atomic_load(&pool.worker_shares);
            printf("parallel: %ld parallel_for calls, %ld shares on workers\n",
                   (long)atomic_load(&pool.calls), shares);
            ok &= atomic_load(&pool.calls) > 0 && shares > 0;
        }
        printf("expected status %d: %s\n", expect, ok ? "ok" : "FAIL");
        return ok ? 0 : 1;
    }

    double first = 0, best = 1e300;
    for (int r = 0; r < repeat; r++) {
        double t = now_ms();
        int status = run(WARGS(weights, weights_bytes) inputs, (void *const *)outputs, arena);
        t = now_ms() - t;
        if (status != VARC_AOT_STATUS_OK) {
            fprintf(stderr, "run returned status %d\n", status);
            return 1;
        }
        if (r == 0) first = t;
        if (t < best) best = t;
    }
    ok &= compare_golden(outputs, wants, out_bytes, out_dtypes, NO, rtol, atol, "serial");

    /* run_parallel without a parallel_for is the serial run. */
    for (size_t i = 0; i < NO; i++) memset(par_outputs[i], 0xff, out_bytes[i]);
    int status = run_parallel(WARGS(weights, weights_bytes) inputs, (void *const *)par_outputs,
                              arena, NULL, NULL);
    ok &= expect_status("run_parallel(NULL)", status, 0);
    for (size_t i = 0; i < NO; i++)
        if (memcmp(outputs[i], par_outputs[i], out_bytes[i]) != 0) {
            fprintf(stderr, "output %zu: run_parallel(NULL) differs from run\n", i);
            ok = 0;
        }

    double par_best = 0;
    if (threads >= 2) {
        pool_t pool;
        pool_start(&pool, threads);
        par_best = 1e300;
        for (int r = 0; r < repeat; r++) {
            for (size_t i = 0; i < NO; i++) memset(par_outputs[i], 0xff, out_bytes[i]);
            double t = now_ms();
            status = run_parallel(WARGS(weights, weights_bytes) inputs,
                                  (void *const *)par_outputs, arena, parallel_for, &pool);
            t = now_ms() - t;
            if (!expect_status("run_parallel", status, 0)) return 1;
            if (t < par_best) par_best = t;
            for (size_t i = 0; i < NO; i++)
                if (memcmp(outputs[i], par_outputs[i], out_bytes[i]) != 0) {
                    fprintf(stderr, "output %zu: %d threads differ from the serial run\n", i,
                            threads);
                    ok = 0;
                }
        }
        pool_stop(&pool);
        long calls = atomic_load(&pool.calls), shares = atomic_load(&pool.worker_shares);
        printf("parallel: %d threads, %ld parallel_for calls per run, %ld shares on workers: "
               "%s\n",
               threads, calls / repeat, shares / repeat,
               calls > 0 && shares > 0 ? "bit-identical" : "NOT PARALLEL");
        ok &= calls > 0 && shares > 0;
        ok &= compare_golden(par_outputs, wants, out_bytes, out_dtypes, NO, rtol, atol,
                             "parallel");
    }

#if EXTERNAL
    /* Wrong blobs are refused before any kernel runs. */
    {
        const void *const *in = inputs;
        void *const *out = (void *const *)par_outputs;
        ok &= expect_status("short blob", run(weights, weights_bytes - 64, in, out, arena),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        ok &= expect_status("long blob", run(weights, weights_bytes + 64, in, out, arena),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        ok &= expect_status("NULL blob", run(NULL, weights_bytes, in, out, arena),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        ok &= expect_status("misaligned blob",
                            run((const char *)weights + 8, weights_bytes, in, out, arena),
                            VARC_AOT_STATUS_WEIGHTS_MISALIGNED);
        ok &= expect_status("check_weights(short)", check_weights(weights, weights_bytes - 8),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        unsigned char *copy = aligned_alloc(MAC(_WEIGHTS_ALIGN), weights_bytes);
        if (!copy) die("out of memory");
        memcpy(copy, weights, weights_bytes);
        ok &= expect_status("copy", check_weights(copy, weights_bytes), 0);
        copy[16] ^= 1; /* the signature field */
        ok &= expect_status("other model's blob", run(copy, weights_bytes, in, out, arena),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        copy[16] ^= 1;
        copy[64 + (weights_bytes - 64) / 2] ^= 0x40; /* a byte inside the payload */
        ok &= expect_status("altered payload", check_weights(copy, weights_bytes),
                            VARC_AOT_STATUS_BAD_WEIGHTS);
        free(copy);
        printf("weights checks: %s\n", ok ? "ok" : "FAIL");
    }
#endif

    printf("load_ms %.3f dlopen_ms %.3f first_run_ms %.3f best_run_ms %.3f "
           "best_parallel_run_ms %.3f\n",
           load_ms, dlopen_ms, first, best, par_best);
    return ok ? 0 : 1;
}
