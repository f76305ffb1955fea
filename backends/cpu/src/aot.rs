//! Ahead-of-time compilation: a whole program as one relocatable object
//! file (ELF for Linux triples, through `cranelift-object`) plus a C header.
//!
//! The object holds
//!
//! * every kernel as a local function (the same code the JIT runs, built
//!   position-independent),
//! * every weight as a read-only, 64-byte aligned data object (`.rodata`),
//! * one exported entry point
//!   `int varc_<model>_run(const void *const *inputs, void *const *outputs, void *arena)`
//!   that builds the buffer table on its stack (inputs and outputs from the
//!   caller's pointer arrays, weights from `.rodata`, temps at the memory
//!   plan's offsets in the caller's arena), calls the kernels in order and
//!   returns the first nonzero kernel status,
//! * small exported query functions: `varc_<model>_arena_size`,
//!   `_num_inputs`, `_num_outputs`, `_abi_version` and `_signature` (a hash
//!   of the I/O names, dtypes, shapes and arena size, so a program can check
//!   that it was compiled against the header of this very object).
//!
//! Kernels that need `powf`, `sinf` or `cosf` call the C library's functions
//! of those names (the JIT binds the same Rust functions, which are libm's),
//! so links need `-lm`; nothing else is imported. The generated code never
//! calls the runtime's microkernels: an object stands alone.

use crate::math::{Imports, Libm};
use crate::{CodegenError, Target, abi, kernel};
use cranelift_codegen::Context;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, Signature, StackSlotData, StackSlotKind, UserFuncName, types,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};
use target_lexicon::Architecture;
use varc_ir::kernel::plan::{ALIGN, MemoryPlan};
use varc_ir::kernel::{BufKind, Program};

/// Version of the object's calling convention (entry signature, pointer
/// arrays, arena contract). Bumped on any incompatible change.
pub const AOT_ABI_VERSION: u32 = 1;

/// What to call things in the object and header.
#[derive(Clone, Debug)]
pub struct AotOptions {
    /// C identifier part: symbols are `varc_<name>_run`, ... .
    pub name: String,
    /// Graph input names (default: the program's buffer names).
    pub input_names: Vec<String>,
    /// Graph output names (default: the program's buffer names).
    pub output_names: Vec<String>,
    /// Where the model came from (a comment in the header).
    pub source: String,
}

/// A compiled object file and its header.
#[derive(Clone, Debug)]
pub struct AotArtifact {
    /// The relocatable object (ELF `.o`).
    pub object: Vec<u8>,
    /// The C header declaring the entry point and the I/O layout.
    pub header: String,
    /// The C identifier part of every symbol.
    pub name: String,
    pub arena_bytes: usize,
    pub weight_bytes: usize,
    pub kernels: usize,
}

/// Turns any string into a lowercase C identifier part (`[a-z0-9_]`, not
/// starting with a digit).
pub fn c_identifier(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'm');
    }
    out
}

fn object_isa(target: &Target) -> Result<OwnedTargetIsa, CodegenError> {
    let name = target.triple.to_string();
    let err = |e: String| CodegenError::Target(name.clone(), e);
    let mut flags = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("is_pic", "true"),
        ("enable_verifier", "true"),
    ] {
        flags.set(k, v).map_err(|e| err(e.to_string()))?;
    }
    let flags = settings::Flags::new(flags);
    // The host triple gets the host CPU's features (as the JIT does); other
    // triples their baseline: x86-64-v3 (AVX2 + FMA) or aarch64 (NEON).
    let builder = if target.triple == target_lexicon::Triple::host() {
        cranelift_native::builder().map_err(|e| err(e.to_string()))?
    } else {
        let mut b = cranelift_codegen::isa::lookup(target.triple.clone())
            .map_err(|e| err(e.to_string()))?;
        match target.triple.architecture {
            Architecture::X86_64 => b.enable("x86-64-v3").map_err(|e| err(e.to_string()))?,
            Architecture::Aarch64(_) => {}
            other => return Err(err(format!("architecture {other} is not supported"))),
        }
        b
    };
    builder.finish(flags).map_err(|e| err(e.to_string()))
}

/// FNV-1a over the I/O layout and arena size: the header and the object
/// both carry it, so a mismatched pair is detected at run time.
fn signature_hash(p: &Program, plan: &MemoryPlan, o: &AotOptions) -> u64 {
    let mut text = format!("abi{AOT_ABI_VERSION};arena{};", plan.arena_bytes);
    for (names, ids) in [(&o.input_names, &p.inputs), (&o.output_names, &p.outputs)] {
        for (n, &id) in names.iter().zip(ids) {
            let b = p.buffer(id);
            text.push_str(&format!("{n}:{}{:?};", b.dtype.name(), b.shape));
        }
        text.push('|');
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        (h ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Compiles `program` (with its memory plan) for `target` into an object
/// file and header.
pub fn compile_object(
    program: &Program,
    plan: &MemoryPlan,
    target: &Target,
    opts: &AotOptions,
) -> Result<AotArtifact, CodegenError> {
    let tname = target.triple.to_string();
    let merr = |e: cranelift_module::ModuleError| {
        CodegenError::Target(tname.clone(), format!("object module: {e}"))
    };
    let mut opts = opts.clone();
    opts.name = c_identifier(&opts.name);
    let bufname = |ids: &[varc_ir::kernel::BufId]| -> Vec<String> {
        ids.iter()
            .map(|&i| program.buffer(i).name.clone())
            .collect()
    };
    if opts.input_names.len() != program.inputs.len() {
        opts.input_names = bufname(&program.inputs);
    }
    if opts.output_names.len() != program.outputs.len() {
        opts.output_names = bufname(&program.outputs);
    }
    if plan.offsets.len() != program.buffers.len() {
        return Err(CodegenError::Target(
            tname,
            "the memory plan is not this program's".into(),
        ));
    }
    let isa = object_isa(target)?;
    let cc = isa.default_call_conv();
    let ptr = isa.pointer_type();
    let prefix = format!("varc_{}", opts.name);
    let builder = ObjectBuilder::new(isa.clone(), format!("{prefix}.o"), default_libcall_names())
        .map_err(merr)?;
    let mut module = ObjectModule::new(builder);

    // libm functions, under their C names.
    let mut imports = Imports { index: vec![] };
    for f in Libm::ALL {
        let c_name = match f {
            Libm::Powf => "powf",
            Libm::Sinf => "sinf",
            Libm::Cosf => "cosf",
        };
        let id = module
            .declare_function(c_name, Linkage::Import, &abi::libm_signature(f, cc))
            .map_err(merr)?;
        imports.index.push((f, id.as_u32()));
    }

    // Kernels: local functions.
    let ksig = abi::kernel_signature(cc);
    let mut kernel_ids = Vec::with_capacity(program.kernels.len());
    for (i, k) in program.kernels.iter().enumerate() {
        let mut built = kernel::build(program, k, &*isa, &imports)?;
        let id = module
            .declare_function(&format!("{prefix}_kernel_{i}"), Linkage::Local, &ksig)
            .map_err(merr)?;
        built.func.name = UserFuncName::user(0, id.as_u32());
        let mut ctx = Context::for_function(built.func);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::kernel(&k.name, format!("Cranelift: {e:?}")))?;
        kernel_ids.push(id);
    }

    // Weights: read-only data, aligned like arena buffers.
    let mut weights = vec![None; program.buffers.len()];
    for (i, b) in program.buffers.iter().enumerate() {
        if let BufKind::Weight(t) = &b.kind {
            let mut bytes = t.data().to_le_bytes();
            if bytes.len() != b.byte_size() {
                return Err(CodegenError::kernel(
                    &b.name,
                    "weight data does not match its buffer",
                ));
            }
            if bytes.is_empty() {
                bytes.push(0); // a valid, never dereferenced address
            }
            let id = module
                .declare_data(
                    &format!("{prefix}_weight_{i}"),
                    Linkage::Local,
                    false,
                    false,
                )
                .map_err(merr)?;
            let mut desc = DataDescription::new();
            desc.define(bytes.into_boxed_slice());
            desc.set_align(ALIGN as u64);
            module.define_data(id, &desc).map_err(merr)?;
            weights[i] = Some(id);
        }
    }

    // The entry point.
    let mut sig = Signature::new(cc);
    sig.params.extend([AbiParam::new(ptr); 3]);
    sig.returns.push(AbiParam::new(types::I32));
    let entry = module
        .declare_function(&format!("{prefix}_run"), Linkage::Export, &sig)
        .map_err(merr)?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, entry.as_u32()), sig);
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let start = b.create_block();
        b.append_block_params_for_function_params(start);
        b.switch_to_block(start);
        b.seal_block(start);
        let [inputs, outputs, arena] = [0, 1, 2].map(|i| b.block_params(start)[i]);
        let n = program.buffers.len().max(1);
        let slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (n * 8) as u32,
            3,
        ));
        let flags = cranelift_codegen::ir::MemFlagsData::trusted();
        for (i, buf) in program.buffers.iter().enumerate() {
            let v = match &buf.kind {
                BufKind::Input(k) => b.ins().load(ptr, flags, inputs, (*k * 8) as i32),
                BufKind::Output(k) => b.ins().load(ptr, flags, outputs, (*k * 8) as i32),
                BufKind::Weight(_) => {
                    let id = weights[i].expect("every weight was defined");
                    let gv = module.declare_data_in_func(id, b.func);
                    b.ins().symbol_value(ptr, gv)
                }
                BufKind::Temp => match plan.offsets[i] {
                    Some(off) => b.ins().iadd_imm_u(arena, off as i64),
                    // A temp no kernel touches: any valid address will do.
                    None => arena,
                },
            };
            b.ins().stack_store(ptr, v, slot, (i * 8) as i32);
        }
        let table = b.ins().stack_addr(ptr, slot, 0);
        let fail = b.create_block();
        b.append_block_param(fail, types::I32);
        for &kid in &kernel_ids {
            let fref = module.declare_func_in_func(kid, b.func);
            // The whole domain: lo = 0, hi = i64::MAX (clamped by the kernel).
            let lo = b.ins().iconst(types::I64, 0);
            let hi = b.ins().iconst(types::I64, i64::MAX);
            let call = b.ins().call(fref, &[table, lo, hi]);
            let status = b.inst_results(call)[0];
            let next = b.create_block();
            b.ins().brif(status, fail, &[status.into()], next, &[]);
            b.switch_to_block(next);
        }
        let ok = b.ins().iconst(types::I32, crate::STATUS_OK as i64);
        b.ins().return_(&[ok]);
        b.switch_to_block(fail);
        let status = b.block_params(fail)[0];
        b.ins().return_(&[status]);
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
    }
    let mut ctx = Context::for_function(func);
    module
        .define_function(entry, &mut ctx)
        .map_err(|e| CodegenError::kernel("entry", format!("Cranelift: {e:?}")))?;

    // Query functions.
    let hash = signature_hash(program, plan, &opts);
    let consts: [(&str, types::Type, i64); 5] = [
        ("arena_size", types::I64, plan.arena_bytes as i64),
        ("num_inputs", types::I32, program.inputs.len() as i64),
        ("num_outputs", types::I32, program.outputs.len() as i64),
        ("abi_version", types::I32, AOT_ABI_VERSION as i64),
        ("signature", types::I64, hash as i64),
    ];
    for (suffix, ty, value) in consts {
        define_const_fn(&mut module, &format!("{prefix}_{suffix}"), cc, ty, value)
            .map_err(|e| CodegenError::Target(tname.clone(), format!("object module: {e}")))?;
    }

    let product = module.finish();
    let object = product
        .emit()
        .map_err(|e| CodegenError::Target(target.triple.to_string(), e.to_string()))?;
    let header = header(program, plan, target, &opts, hash);
    Ok(AotArtifact {
        object,
        header,
        name: opts.name.clone(),
        arena_bytes: plan.arena_bytes,
        weight_bytes: plan.weight_bytes,
        kernels: program.kernels.len(),
    })
}

/// An exported `ty name(void)` returning a constant.
fn define_const_fn(
    module: &mut ObjectModule,
    name: &str,
    cc: cranelift_codegen::isa::CallConv,
    ty: types::Type,
    value: i64,
) -> Result<(), String> {
    let e = |e: cranelift_module::ModuleError| e.to_string();
    let mut sig = Signature::new(cc);
    sig.returns.push(AbiParam::new(ty));
    let id = module
        .declare_function(name, Linkage::Export, &sig)
        .map_err(e)?;
    let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let block = b.create_block();
    b.switch_to_block(block);
    b.seal_block(block);
    let v = b.ins().iconst(ty, value);
    b.ins().return_(&[v]);
    b.finalize(module.isa().frontend_config());
    let mut ctx = Context::for_function(func);
    module.define_function(id, &mut ctx).map_err(e)?;
    Ok(())
}

fn c_string(s: &str) -> String {
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

/// The C header for an object built from `program`.
fn header(
    program: &Program,
    plan: &MemoryPlan,
    target: &Target,
    o: &AotOptions,
    hash: u64,
) -> String {
    use std::fmt::Write;
    let lo = format!("varc_{}", o.name);
    let up = lo.to_ascii_uppercase();
    let mut h = String::new();
    let w = &mut h;
    let _ = writeln!(
        w,
        "/* {lo}.h: generated by varc {} from {} for {}. Do not edit.",
        env!("CARGO_PKG_VERSION"),
        o.source,
        target.triple
    );
    for line in [
        String::new(),
        "Link the object (or shared library) with -lm: kernels may call powf,".into(),
        "sinf and cosf. Nothing else is imported.".into(),
        String::new(),
        format!("Calling {lo}_run(inputs, outputs, arena):"),
        "  inputs[i]  points to input i, row-major, little-endian, of exactly".into(),
        format!("             {up}_INPUT_<i>_BYTES bytes (aligned for its dtype);"),
        "  outputs[i] points to writable storage for output i".into(),
        format!("             ({up}_OUTPUT_<i>_BYTES bytes);"),
        format!("  arena      points to {up}_ARENA_BYTES writable bytes, aligned"),
        format!("             to {up}_ARENA_ALIGN (scratch: its contents"),
        "             need not survive between runs; NULL when the size is 0).".into(),
        "Outputs must not overlap inputs, each other or the arena. Runs with".into(),
        "their own arenas and outputs may proceed concurrently.".into(),
        "Returns 0, or the first nonzero kernel status (VARC_AOT_STATUS_*).".into(),
    ] {
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
         #endif\n",
        crate::STATUS_GATHER_OUT_OF_RANGE,
        crate::STATUS_DIV_BY_ZERO,
        crate::STATUS_OUT_OF_BOUNDS
    );
    let _ = writeln!(w, "#define {up}_ABI_VERSION {AOT_ABI_VERSION}u");
    let _ = writeln!(w, "#define {up}_SIGNATURE UINT64_C(0x{hash:016x})");
    let _ = writeln!(w, "#define {up}_ARENA_BYTES {}u", plan.arena_bytes);
    let _ = writeln!(w, "#define {up}_ARENA_ALIGN {ALIGN}u");
    let _ = writeln!(w, "#define {up}_WEIGHT_BYTES {}u", plan.weight_bytes);
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
    let _ = writeln!(
        w,
        "int {lo}_run(const void *const *inputs, void *const *outputs, void *arena);\n\
         uint64_t {lo}_arena_size(void);\n\
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
             {lo}_num_outputs() == {up}_NUM_OUTPUTS;\n\
         }}\n"
    );
    let _ = writeln!(w, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {up}_H */");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(c_identifier("minvar_dyn18"), "minvar_dyn18");
        assert_eq!(c_identifier("Var-TF.v2"), "var_tf_v2");
        assert_eq!(c_identifier("18x"), "m18x");
        assert_eq!(c_identifier(""), "m");
    }

    #[test]
    fn strings_escape() {
        assert_eq!(c_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(c_string("é"), "\"\\303\\251\"");
    }
}
