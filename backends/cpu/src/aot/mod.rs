//! Ahead-of-time compilation: a whole program as one relocatable object
//! file (ELF for Linux triples, through `cranelift-object`) plus a C header.
//!
//! The object holds
//!
//! * every kernel as a local function (the same code the JIT runs, built
//!   position-independent),
//! * the weights: read-only, 64-byte aligned data objects (`.rodata`,
//!   [`Weights::Embedded`]), or nothing but their offsets in a side file
//!   the caller loads and passes in ([`Weights::External`], `weights.rs`),
//! * the entry points `varc_<model>_run` and `varc_<model>_run_parallel`
//!   (`entry.rs`): build the buffer table on the stack (inputs and outputs
//!   from the caller's pointer arrays, weights from `.rodata` or the blob,
//!   temps at the memory plan's offsets in the caller's arena), call the
//!   kernels in order, large ones in shares through the host's
//!   `parallel_for` when one is given, and return the first nonzero status,
//! * small exported query functions: `varc_<model>_arena_size`,
//!   `_num_inputs`, `_num_outputs`, `_abi_version` and `_signature` (a hash
//!   of the I/O names, dtypes, shapes, arena size and weights binding, so a
//!   program can check that it was compiled against the header of this very
//!   object).
//!
//! Kernels that need `powf`, `sinf` or `cosf` call the C library's functions
//! of those names (the JIT binds the same Rust functions, which are libm's),
//! so links need `-lm`. By default nothing else is imported and an object
//! stands alone; with [`AotOptions::ukernels`] (host target only)
//! contraction kernels call the runtime's `varc_sgemm` exactly as the JIT
//! does (`gemm.rs`), left undefined for the link against the varc library.

mod entry;
mod header;
pub mod weights;

use crate::math::Libm;
use crate::{CodegenError, Target, abi, kernel};
use cranelift_codegen::Context;
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, Signature, UserFuncName, types};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};
use entry::{Entries, External, Home, KernelFn};
use target_lexicon::Architecture;
use varc_ir::kernel::plan::{ALIGN, MemoryPlan};
use varc_ir::kernel::{BufKind, Program};

/// Version of the object's calling convention (entry signatures, pointer
/// arrays, arena and weights contracts, `parallel_for`). Bumped on any
/// incompatible change.
pub const AOT_ABI_VERSION: u32 = 2;

/// Entry status: the weights blob is NULL, of the wrong size, or its
/// header names another model or payload.
pub const STATUS_BAD_WEIGHTS: i32 = 16;
/// Entry status: the weights blob is not 64-byte aligned.
pub const STATUS_WEIGHTS_MISALIGNED: i32 = 17;

/// Where an object's weights live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weights {
    /// In the object's `.rodata`.
    #[default]
    Embedded,
    /// In a side file ([`AotArtifact::weights_file`]) the caller passes to
    /// the entry points; the object holds code only.
    External,
}

/// What to call things in the object and header, and how to build it.
#[derive(Clone, Debug, Default)]
pub struct AotOptions {
    /// C identifier part: symbols are `varc_<name>_run`, ... .
    pub name: String,
    /// Graph input names (default: the program's buffer names).
    pub input_names: Vec<String>,
    /// Graph output names (default: the program's buffer names).
    pub output_names: Vec<String>,
    /// Where the model came from (a comment in the header).
    pub source: String,
    pub weights: Weights,
    /// Contraction kernels call the runtime's `varc_sgemm` (an undefined
    /// symbol in the object). Host target only.
    pub ukernels: bool,
}

/// A compiled object file and its header.
#[derive(Clone, Debug)]
pub struct AotArtifact {
    /// The relocatable object (ELF `.o`).
    pub object: Vec<u8>,
    /// The C header declaring the entry points and the I/O layout.
    pub header: String,
    /// With [`Weights::External`]: the weights file's bytes.
    pub weights_file: Option<Vec<u8>>,
    /// The object calls `varc_sgemm` (a link needs the varc runtime).
    pub needs_runtime: bool,
    /// The C identifier part of every symbol.
    pub name: String,
    pub arena_bytes: usize,
    pub weight_bytes: usize,
    pub kernels: usize,
    /// Kernels `run_parallel` runs in shares through `parallel_for`.
    pub parallel_kernels: usize,
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

/// FNV-1a over the I/O layout, arena size and weights binding: the header
/// and the object both carry it, so a mismatched pair is detected at run
/// time (and an external weights file names it in its header).
fn signature_hash(p: &Program, plan: &MemoryPlan, o: &AotOptions, weights: Option<u64>) -> u64 {
    let mut text = format!("abi{AOT_ABI_VERSION};arena{};", plan.arena_bytes);
    if let Some(sum) = weights {
        text.push_str(&format!("weights{sum:016x};"));
    }
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
    if opts.ukernels && *target != Target::host() {
        return Err(CodegenError::Target(
            tname,
            format!(
                "the runtime's microkernels can only be linked into objects for this machine \
                 ({}); objects for other targets keep the pure-Cranelift kernels (drop the \
                 ukernels option)",
                Target::host().triple
            ),
        ));
    }
    let isa = object_isa(target)?;
    let cc = isa.default_call_conv();
    let prefix = format!("varc_{}", opts.name);
    let builder = ObjectBuilder::new(isa.clone(), format!("{prefix}.o"), default_libcall_names())
        .map_err(merr)?;
    let mut module = ObjectModule::new(builder);

    // libm functions, under their C names.
    let imports =
        crate::imports::declare_libm(&mut module, cc, Libm::c_name).map_err(|e| merr(*e))?;
    let uk = if opts.ukernels {
        Some(crate::imports::declare_sgemm(&mut module, cc).map_err(|e| merr(*e))?)
    } else {
        None
    };

    // Kernels: local functions. A kernel runs in shares under
    // `run_parallel` exactly when the JIT would split it on a pool.
    let ksig = abi::kernel_signature(cc);
    let mut kernels = Vec::with_capacity(program.kernels.len());
    let mut uses_sgemm = false;
    for (i, k) in program.kernels.iter().enumerate() {
        let mut built = kernel::build_with(program, k, &*isa, &imports, uk.as_ref())?;
        uses_sgemm |= built.plan.sgemm;
        let parallel = crate::jit::parallel_extent(k, &built).map(|n| n as i64);
        let id = module
            .declare_function(&format!("{prefix}_kernel_{i}"), Linkage::Local, &ksig)
            .map_err(merr)?;
        built.func.name = UserFuncName::user(0, id.as_u32());
        let mut ctx = Context::for_function(built.func);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::kernel(&k.name, format!("Cranelift: {e:?}")))?;
        kernels.push(KernelFn { id, parallel });
    }

    // Weights: read-only data aligned like arena buffers, or offsets in the
    // blob.
    let mut homes: Vec<Option<Home>> = (0..program.buffers.len()).map(|_| None).collect();
    let (blob, hash) = match opts.weights {
        Weights::Embedded => {
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
                    homes[i] = Some(Home::Data(id));
                }
            }
            (None, signature_hash(program, plan, &opts, None))
        }
        Weights::External => {
            let mut blob =
                weights::Blob::layout(program).map_err(|e| CodegenError::kernel("weights", e))?;
            for (i, off) in blob.offsets.iter().enumerate() {
                homes[i] = off.map(Home::Blob);
            }
            let hash = signature_hash(program, plan, &opts, Some(blob.checksum));
            blob.seal(hash, AOT_ABI_VERSION);
            (Some(blob), hash)
        }
    };
    let external = blob.as_ref().map(|b| External {
        file_bytes: b.bytes.len() as u64,
        signature: hash,
        checksum: b.checksum,
        checksum_init: weights::checksum_init(),
    });

    let parallel_kernels = kernels.iter().filter(|k| k.parallel.is_some()).count();
    Entries {
        module: &mut module,
        program,
        plan,
        kernels: &kernels,
        homes: &homes,
        prefix: &prefix,
    }
    .define_all(external.as_ref())?;

    // Query functions.
    let mut consts: Vec<(&str, types::Type, i64)> = vec![
        ("arena_size", types::I64, plan.arena_bytes as i64),
        ("num_inputs", types::I32, program.inputs.len() as i64),
        ("num_outputs", types::I32, program.outputs.len() as i64),
        ("abi_version", types::I32, AOT_ABI_VERSION as i64),
        ("signature", types::I64, hash as i64),
    ];
    if let Some(x) = &external {
        consts.push(("weights_file_bytes", types::I64, x.file_bytes as i64));
    }
    for (suffix, ty, value) in consts {
        define_const_fn(&mut module, &format!("{prefix}_{suffix}"), cc, ty, value)
            .map_err(|e| CodegenError::Target(tname.clone(), format!("object module: {e}")))?;
    }

    let product = module.finish();
    let object = product
        .emit()
        .map_err(|e| CodegenError::Target(target.triple.to_string(), e.to_string()))?;
    let header = header::header(&header::Facts {
        program,
        plan,
        target,
        opts: &opts,
        signature: hash,
        external: external.as_ref().map(|x| (x.file_bytes, x.checksum)),
        needs_runtime: uses_sgemm,
    });
    Ok(AotArtifact {
        object,
        header,
        weights_file: blob.map(|b| b.bytes),
        needs_runtime: uses_sgemm,
        name: opts.name.clone(),
        arena_bytes: plan.arena_bytes,
        weight_bytes: plan.weight_bytes,
        kernels: program.kernels.len(),
        parallel_kernels,
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
}
