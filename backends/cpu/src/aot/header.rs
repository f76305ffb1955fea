//! The generated C header: how to call the object, the I/O layout, the
//! arena, weights and `parallel_for` contracts, and an ABI check against
//! the object's own query functions.

use super::{AOT_ABI_VERSION, AotOptions, STATUS_BAD_WEIGHTS, STATUS_WEIGHTS_MISALIGNED, Weights};
use crate::Target;
use std::fmt::Write;
use varc_ir::kernel::Program;
use varc_ir::kernel::plan::{ALIGN, MemoryPlan};

/// What the header describes.
pub struct Facts<'a> {
    pub program: &'a Program,
    pub plan: &'a MemoryPlan,
    pub target: &'a Target,
    pub opts: &'a AotOptions,
    pub signature: u64,
    /// External weights: the file's size and payload checksum.
    pub external: Option<(u64, u64)>,
    /// Some kernel calls `varc_sgemm`.
    pub needs_runtime: bool,
}

pub fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{byte:03o}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// The usage comment at the top of the header, line by line.
fn usage(f: &Facts, lo: &str, up: &str) -> Vec<String> {
    let external = f.opts.weights == Weights::External;
    let mut l: Vec<String> = vec![String::new()];
    if f.needs_runtime {
        l.extend([
            "Link with -lm and with the varc runtime that defines varc_sgemm (the".into(),
            "sgemm microkernels contraction kernels call): libvarc_capi.a from the".into(),
            "same varc build, plus -lpthread -ldl (cc app.c m.o libvarc_capi.a -lm".into(),
            "-lpthread -ldl). The code uses the instruction set extensions of the".into(),
            "machine that built it.".into(),
        ]);
    } else {
        l.extend([
            "Link the object (or shared library) with -lm: kernels may call powf,".into(),
            "sinf and cosf. Nothing else is imported.".into(),
        ]);
    }
    l.push(String::new());
    let w = if external {
        "weights, weights_bytes, "
    } else {
        ""
    };
    l.extend([
        format!("Calling {lo}_run({w}inputs, outputs, arena):"),
        "  inputs[i]  points to input i, row-major, little-endian, of exactly".into(),
        format!("             {up}_INPUT_<i>_BYTES bytes (aligned for its dtype);"),
        "  outputs[i] points to writable storage for output i".into(),
        format!("             ({up}_OUTPUT_<i>_BYTES bytes);"),
        format!("  arena      points to {up}_ARENA_BYTES writable bytes, aligned"),
        format!("             to {up}_ARENA_ALIGN (scratch: its contents"),
        "             need not survive between runs; NULL when the size is 0).".into(),
    ]);
    if external {
        l.extend([
            "  weights    points to the whole weights file varc wrote beside the".into(),
            format!("             object ({up}_WEIGHTS_FILE_BYTES bytes), aligned to"),
            format!("             {up}_WEIGHTS_ALIGN (mmap gives page alignment); only"),
            "             read, so concurrent runs may share it;".into(),
            "  weights_bytes  its size in bytes. A wrong size, a NULL or misaligned".into(),
            "             pointer, or a file whose header names another model or".into(),
            "             payload returns VARC_AOT_STATUS_BAD_WEIGHTS (or".into(),
            "             _WEIGHTS_MISALIGNED) before anything but the 64-byte file".into(),
            "             header is read.".into(),
            format!("{lo}_check_weights(weights, weights_bytes) also recomputes the"),
            "payload checksum (reading the whole file once): call it after loading.".into(),
        ]);
    }
    l.extend([
        "Outputs must not overlap inputs, each other or the arena. Runs with".into(),
        "their own arenas and outputs may proceed concurrently.".into(),
        "Returns 0, or the first nonzero status (VARC_AOT_STATUS_*).".into(),
        String::new(),
        format!("{lo}_run_parallel(..., parallel_for, pf_ctx) takes the same arguments"),
        "plus a parallel-for of the host's (NULL: run serially, as _run does).".into(),
        "For each large kernel it calls parallel_for(pf_ctx, n, task, task_ctx)".into(),
        "with n >= 2, which must call task(task_ctx, lo, hi) for ranges [lo, hi)".into(),
        "that cover [0, n) without overlap, from any threads, concurrently or".into(),
        "not, and return only after every call has returned. The kernels split".into(),
        "are those varc's JIT splits, along the same axis, and every point is".into(),
        "computed as in a serial run: the outputs are bit-identical for any".into(),
        "partition and any number of threads.".into(),
    ]);
    if f.needs_runtime {
        l.push("Matrix products without a batch axis run on the calling thread.".into());
    }
    l
}

/// The C header for an object built from `f.program`.
pub fn header(f: &Facts) -> String {
    let (program, plan, o) = (f.program, f.plan, f.opts);
    let lo = format!("varc_{}", o.name);
    let up = lo.to_ascii_uppercase();
    let external = o.weights == Weights::External;
    let mut h = String::new();
    let w = &mut h;
    let _ = writeln!(
        w,
        "/* {lo}.h: generated by varc {} from {} for {}. Do not edit.",
        env!("CARGO_PKG_VERSION"),
        o.source,
        f.target.triple
    );
    for line in usage(f, &lo, &up) {
        let _ = writeln!(w, " *{}{line}", if line.is_empty() { "" } else { " " });
    }
    let _ = writeln!(w, " */");
    let _ = writeln!(w, "#ifndef {up}_H\n#define {up}_H\n");
    let _ = writeln!(w, "#include <stddef.h>\n#include <stdint.h>\n");
    let _ = writeln!(w, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n");
    let _ = writeln!(
        w,
        "#ifndef VARC_AOT_STATUS_OK\n\
         #define VARC_AOT_STATUS_OK 0\n\
         #define VARC_AOT_STATUS_GATHER_OUT_OF_RANGE {}\n\
         #define VARC_AOT_STATUS_DIV_BY_ZERO {}\n\
         #define VARC_AOT_STATUS_OUT_OF_BOUNDS {}\n\
         #define VARC_AOT_STATUS_BAD_WEIGHTS {STATUS_BAD_WEIGHTS}\n\
         #define VARC_AOT_STATUS_WEIGHTS_MISALIGNED {STATUS_WEIGHTS_MISALIGNED}\n\
         #endif\n",
        crate::STATUS_GATHER_OUT_OF_RANGE,
        crate::STATUS_DIV_BY_ZERO,
        crate::STATUS_OUT_OF_BOUNDS
    );
    let _ = writeln!(
        w,
        "#ifndef VARC_AOT_PARALLEL_FOR\n\
         #define VARC_AOT_PARALLEL_FOR\n\
         /* One share of a kernel: its points whose split index is in [lo, hi). */\n\
         typedef void (*varc_aot_task)(void *task_ctx, int64_t lo, int64_t hi);\n\
         /* Calls task over a partition of [0, n); see the top of this file. */\n\
         typedef void (*varc_aot_parallel_for)(void *ctx, int64_t n, varc_aot_task task,\n\
         \x20                                     void *task_ctx);\n\
         #endif\n"
    );
    let _ = writeln!(w, "#define {up}_ABI_VERSION {AOT_ABI_VERSION}u");
    let _ = writeln!(w, "#define {up}_SIGNATURE UINT64_C(0x{:016x})", f.signature);
    let _ = writeln!(w, "#define {up}_ARENA_BYTES {}u", plan.arena_bytes);
    let _ = writeln!(w, "#define {up}_ARENA_ALIGN {ALIGN}u");
    let _ = writeln!(w, "#define {up}_WEIGHT_BYTES {}u", plan.weight_bytes);
    let _ = writeln!(w, "#define {up}_UKERNELS {}", f.needs_runtime as u8);
    let _ = writeln!(w, "#define {up}_WEIGHTS_EXTERNAL {}", external as u8);
    if let Some((bytes, sum)) = f.external {
        let _ = writeln!(w, "#define {up}_WEIGHTS_FILE_BYTES UINT64_C({bytes})");
        let _ = writeln!(w, "#define {up}_WEIGHTS_CHECKSUM UINT64_C(0x{sum:016x})");
        let _ = writeln!(w, "#define {up}_WEIGHTS_ALIGN {ALIGN}u");
    }
    let _ = writeln!(w, "#define {up}_NUM_INPUTS {}u", program.inputs.len());
    let _ = writeln!(w, "#define {up}_NUM_OUTPUTS {}u\n", program.outputs.len());
    for (kind, names, ids) in [
        ("INPUT", &o.input_names, &program.inputs),
        ("OUTPUT", &o.output_names, &program.outputs),
    ] {
        let mut bytes = vec![];
        let mut dtypes = vec![];
        for (i, (name, &id)) in names.iter().zip(ids.iter()).enumerate() {
            let b = program.buffer(id);
            let shape: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                w,
                "/* {} {i}: {}  {}[{}] */",
                kind.to_ascii_lowercase(),
                name.replace("*/", "* /"),
                b.dtype.name(),
                shape.join(", ")
            );
            let p = format!("{up}_{kind}_{i}");
            let _ = writeln!(w, "#define {p}_NAME {}", c_string(name));
            let _ = writeln!(w, "#define {p}_DTYPE \"{}\"", b.dtype.name());
            let _ = writeln!(w, "#define {p}_ELEM_BYTES {}u", b.dtype.size());
            let _ = writeln!(w, "#define {p}_RANK {}u", b.shape.len());
            let _ = writeln!(w, "#define {p}_SHAPE {{{}}}", shape.join(", "));
            let _ = writeln!(w, "#define {p}_NUMEL {}u", b.len());
            let _ = writeln!(w, "#define {p}_BYTES {}u\n", b.byte_size());
            bytes.push(format!("{}u", b.byte_size()));
            dtypes.push(format!("\"{}\"", b.dtype.name()));
        }
        let _ = writeln!(
            w,
            "/* every {}, in order, as array initialisers */",
            kind.to_ascii_lowercase()
        );
        let _ = writeln!(w, "#define {up}_{kind}_BYTES_LIST {{{}}}", bytes.join(", "));
        let _ = writeln!(
            w,
            "#define {up}_{kind}_DTYPE_LIST {{{}}}\n",
            dtypes.join(", ")
        );
    }
    let io = "const void *const *inputs, void *const *outputs, void *arena";
    let wp = "const void *weights, uint64_t weights_bytes";
    if external {
        let _ = writeln!(
            w,
            "int {lo}_run({wp},\n    {io});\n\
             int {lo}_run_parallel({wp},\n    {io},\n    \
             varc_aot_parallel_for parallel_for, void *pf_ctx);\n\
             int {lo}_check_weights({wp});\n\
             uint64_t {lo}_weights_file_bytes(void);"
        );
    } else {
        let _ = writeln!(
            w,
            "int {lo}_run({io});\n\
             int {lo}_run_parallel({io},\n    \
             varc_aot_parallel_for parallel_for, void *pf_ctx);"
        );
    }
    let weights_check = if external {
        format!(" &&\n           {lo}_weights_file_bytes() == {up}_WEIGHTS_FILE_BYTES")
    } else {
        String::new()
    };
    let _ = writeln!(
        w,
        "uint64_t {lo}_arena_size(void);\n\
         uint32_t {lo}_num_inputs(void);\n\
         uint32_t {lo}_num_outputs(void);\n\
         uint32_t {lo}_abi_version(void);\n\
         uint64_t {lo}_signature(void);\n\
         \n\
         /* 1 when the linked object is the one this header was generated with. */\n\
         static inline int {lo}_check_abi(void) {{\n    \
             return {lo}_abi_version() == {up}_ABI_VERSION &&\n           \
             {lo}_signature() == {up}_SIGNATURE &&\n           \
             {lo}_arena_size() == {up}_ARENA_BYTES &&\n           \
             {lo}_num_inputs() == {up}_NUM_INPUTS &&\n           \
             {lo}_num_outputs() == {up}_NUM_OUTPUTS{weights_check};\n\
         }}\n"
    );
    let _ = writeln!(w, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {up}_H */");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape() {
        assert_eq!(c_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(c_string("é"), "\"\\303\\251\"");
    }
}
