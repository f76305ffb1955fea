//! PTX code generator for varc kernel IR, launch plans, and a CUDA driver
//! runtime loaded at run time.
//!
//! # Entries
//!
//! Every [`Kernel`](varc_ir::kernel::Kernel) becomes one `.entry`, in one
//! of these modes ([`plan::KernelMode`], picked per kernel by
//! `emit::kernel`, first that applies):
//!
//! | mode | when | shape |
//! | --- | --- | --- |
//! | `empty` | a zero-sized domain | not launched |
//! | `serial` | not [parallel-safe](varc_ir::kernel::analysis::parallel_safe) | 1 thread, points in order |
//! | `attention` | tagged `Library::Attention`, tiles fit shared memory ([`attention`]) | flash attention, a block per (query tile, head, image) |
//! | `conv` | tagged `Library::Conv`, precision ≠ f32 ([`gemm::recognise_conv`]) | the `mma` tiles, im2col operand gathered while staging |
//! | `mma` | a contraction with M, N, K ≥ 16 ([`gemm`]) and precision ≠ f32 | 64×64 tiles, 128 threads, `mma.sync` tf32 |
//! | `warp` | one Sum/Max/Min reduction of extent ≥ 64, < 65 536 points, no failure exits ([`warp`]) | a warp per point, shuffle butterfly |
//! | `thread` | everything else | a thread per point, grid-stride loop |
//!
//! The one-thread-per-point form: the flattened domain in a grid-stride
//! loop (64-bit addresses, the flat index decomposed by the static
//! extents), [`Expr::Reduce`](varc_ir::kernel::Expr::Reduce) as loops in
//! the thread, loads and stores of the buffers' dtypes, guards as
//! predicated loads, gathers and unproven addresses checked at run time.
//! The parameters are one `.param .u64` per buffer the kernel touches
//! (ascending buffer index) and a last one, the address of a device status
//! word: a failing check writes `kernel_index << 8 | code` there (first
//! failure wins, by compare-and-swap) and exits the thread. The mma and
//! warp entries keep the parameters and evaluate the rest of the kernel's
//! value (the epilogue) with the same expression code, the reduction's
//! result in a register.
//!
//! The semantics are those of `varc_ir::kernel::eval`, operation by
//! operation; nothing here knows an ONNX op. What differs, by design: the
//! order of sums in warp reductions and tiled contractions, and the
//! operands' rounding in contractions ([`Precision`]: `tf32x3` by default,
//! f32-level error; `tf32` ~1e-3 relative; `f32` exact FMA loops).
//!
//! # Using it
//!
//! * [`emit_ptx`] / [`emit_module`]: the module text for `sm_80` or `sm_90`
//!   (`.version 7.8`), with each entry's [`plan::Launch`].
//! * [`build`] / [`build_with`]: PTX, [`plan::LaunchPlan`] and the weights
//!   blob, written by [`CudaBuild::write`] as `model.ptx`, `plan.json`,
//!   `weights.bin`.
//! * [`driver`]: loads `libcuda.so.1` with `libloading` (no CUDA needed to
//!   build or test) and runs a build on a device.
//! * Environment ([`Options::from_env`], read by [`build`] and
//!   [`emit_ptx`]): `VARC_CUDA_PRECISION=f32|tf32|tf32x3`, `VARC_CUDA_MMA=0`
//!   (no tensor cores), `VARC_CUDA_WARP=0` (no warp reductions).
//!
//! # Testing without a GPU
//!
//! `tests/tests/ptxas.rs` (workspace) assembles every shipped model's
//! module for sm_80 and sm_90 with no spills; `tests/golden.rs` pins the
//! text of a few small entries; the unit tests in `gpu_tests.rs` run the
//! mma and warp entries through a small PTX interpreter (`ptxsim.rs`,
//! test-only) and compare with `kernel::eval`.

pub mod attention;
mod check;
#[cfg(test)]
mod conv_tests;
pub mod driver;
mod emit;
mod expr;
pub mod gemm;
#[cfg(test)]
mod gpu_tests;
mod math;
pub mod plan;
#[cfg(test)]
mod ptxsim;
pub mod warp;

pub use emit::entry_name;

use std::fmt::Write as _;
use std::path::Path;
use varc_ir::kernel::Program;

/// Kernel status: success.
pub const STATUS_OK: u32 = 0;
/// A gather index was outside `[-dim, dim)`.
pub const STATUS_GATHER_OUT_OF_RANGE: u32 = 1;
/// Integer division by zero.
pub const STATUS_DIV_BY_ZERO: u32 = 2;
/// An address outside its buffer (an access the compile-time bounds check
/// could not prove in range).
pub const STATUS_OUT_OF_BOUNDS: u32 = 3;

/// Every failure code with its meaning (the same codes as the CPU backend).
pub const STATUS_CODES: [(u32, &str); 3] = [
    (STATUS_GATHER_OUT_OF_RANGE, "gather index out of range"),
    (STATUS_DIV_BY_ZERO, "integer division by zero"),
    (STATUS_OUT_OF_BOUNDS, "address out of the buffer's bounds"),
];

/// The status word a failing kernel writes.
pub fn status_word(kernel: usize, code: u32) -> u32 {
    ((kernel as u32) << 8) | code
}

/// Splits a status word into (kernel index, code).
pub fn decode_status(word: u32) -> (usize, u32) {
    ((word >> 8) as usize, word & 0xff)
}

pub fn status_message(code: u32) -> &'static str {
    STATUS_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown status", |(_, m)| m)
}

pub const PTX_FILE: &str = "model.ptx";
pub const PLAN_FILE: &str = "plan.json";
pub const WEIGHTS_FILE: &str = "weights.bin";

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("kernel '{kernel}': {reason}")]
    Kernel { kernel: String, reason: String },
    #[error(
        "CUDA target '{0}': expected cuda, cuda:sm_80 or cuda:sm_90 (PTX ISA 7.8 targets these)"
    )]
    Target(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Option(String),
    #[error("{0}")]
    Driver(String),
}

/// A PTX target: the SM architecture the module is assembled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaTarget {
    pub sm: u32,
}

impl CudaTarget {
    pub const SM_80: CudaTarget = CudaTarget { sm: 80 };
    pub const SM_90: CudaTarget = CudaTarget { sm: 90 };

    /// `cuda` (= `cuda:sm_80`), `cuda:sm_80`, `cuda:sm_90`.
    pub fn parse(s: &str) -> Result<CudaTarget, CudaError> {
        match s {
            "cuda" | "cuda:sm_80" => Ok(CudaTarget::SM_80),
            "cuda:sm_90" => Ok(CudaTarget::SM_90),
            _ => Err(CudaError::Target(s.to_string())),
        }
    }

    /// Whether a `--target` value asks for this backend.
    pub fn is_cuda(s: &str) -> bool {
        s == "cuda" || s.starts_with("cuda:")
    }

    /// `sm_80`.
    pub fn arch(&self) -> String {
        format!("sm_{}", self.sm)
    }
}

/// How contractions multiply (see [`gemm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// No tensor cores: every contraction is the one-thread-per-point
    /// loop of `fma.rn.f32` (the result the CPU backend computes, bit for
    /// bit up to the order of the sum).
    F32,
    /// `mma.sync` on TF32 operands (10-bit mantissa, round to nearest):
    /// fastest, relative error ~1e-3 on a contraction's result.
    Tf32,
    /// Each operand split as `hi + lo` (both TF32) and the three products
    /// `lo·hi + hi·lo + hi·hi` accumulated on tensor cores ("3xTF32"):
    /// about 22 bits of each operand, errors within a small factor of
    /// plain f32 (an infinite operand gives NaN, as `inf - inf` does).
    Tf32x3,
}

impl Precision {
    /// `f32`, `tf32`, `tf32x3`.
    pub fn parse(s: &str) -> Result<Precision, CudaError> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "tf32x3" | "3xtf32" => Ok(Precision::Tf32x3),
            _ => Err(CudaError::Option(format!(
                "CUDA precision '{s}': expected f32, tf32 or tf32x3"
            ))),
        }
    }
}

/// Code generation choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Contractions: tensor cores (and how) or the f32 FMA loop.
    pub precision: Precision,
    /// Reductions with a long extent over few points run one warp per
    /// point ([`warp`]).
    pub warp_reductions: bool,
}

impl Default for Options {
    /// 3xTF32 tensor cores (keeps f32-level accuracy, so the shipped
    /// models' golden tolerances hold) and warp reductions.
    fn default() -> Options {
        Options {
            precision: Precision::Tf32x3,
            warp_reductions: true,
        }
    }
}

impl Options {
    /// The defaults, overridden by `VARC_CUDA_PRECISION=f32|tf32|tf32x3`,
    /// `VARC_CUDA_MMA=0` (= precision f32: no tensor cores) and
    /// `VARC_CUDA_WARP=0` (no warp reductions), for comparisons.
    pub fn from_env() -> Result<Options, CudaError> {
        let mut o = Options::default();
        if let Ok(v) = std::env::var("VARC_CUDA_PRECISION") {
            o.precision = Precision::parse(v.trim())?;
        }
        if std::env::var("VARC_CUDA_MMA").is_ok_and(|v| v.trim() == "0") {
            o.precision = Precision::F32;
        }
        if std::env::var("VARC_CUDA_WARP").is_ok_and(|v| v.trim() == "0") {
            o.warp_reductions = false;
        }
        Ok(o)
    }
}

/// The PTX module for every kernel of `p`, with [`Options::from_env`].
pub fn emit_ptx(p: &Program, target: CudaTarget) -> Result<String, CudaError> {
    Ok(emit_module(p, target, &Options::from_env()?)?.0)
}

/// The PTX module for every kernel of `p` and each entry's launch shape.
pub fn emit_module(
    p: &Program,
    target: CudaTarget,
    opts: &Options,
) -> Result<(String, Vec<plan::Launch>), CudaError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "//\n// Generated by varc (kernel IR -> PTX): {} kernels, {} buffers.\n//\n\n\
         .version 7.8\n.target {}\n.address_size 64\n",
        p.kernels.len(),
        p.buffers.len(),
        target.arch()
    );
    let mut launches = Vec::with_capacity(p.kernels.len());
    for i in 0..p.kernels.len() {
        let l = emit::kernel(p, i, opts, &mut out).map_err(|reason| CudaError::Kernel {
            kernel: p.kernels[i].name.clone(),
            reason,
        })?;
        launches.push(l);
        out.push('\n');
    }
    Ok((out, launches))
}

/// A program compiled for CUDA: PTX, launch plan and weights.
#[derive(Clone, Debug)]
pub struct CudaBuild {
    pub ptx: String,
    pub plan: plan::LaunchPlan,
    pub weights: Vec<u8>,
}

/// [`build_with`] the options of [`Options::from_env`].
pub fn build(p: &Program, target: CudaTarget) -> Result<CudaBuild, CudaError> {
    build_with(p, target, &Options::from_env()?)
}

/// Emits PTX and lays out the launch plan (temps at the arena offsets of
/// `varc_ir::kernel::plan::plan`, weights in one blob).
pub fn build_with(p: &Program, target: CudaTarget, opts: &Options) -> Result<CudaBuild, CudaError> {
    let (ptx, launches) = emit_module(p, target, opts)?;
    let mem = varc_ir::kernel::plan::plan(p);
    mem.check(p).map_err(CudaError::Io)?;
    let (weights, offsets) = plan::weights_blob(p);
    let plan = plan::build(p, &mem, &offsets, weights.len(), &target.arch(), &launches);
    Ok(CudaBuild { ptx, plan, weights })
}

impl CudaBuild {
    /// Writes `model.ptx`, `plan.json` and `weights.bin` into `dir`
    /// (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), CudaError> {
        let io = |what: &Path, e: std::io::Error| {
            CudaError::Io(format!("writing {}: {e}", what.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let json = serde_json::to_string_pretty(&self.plan)
            .map_err(|e| CudaError::Io(format!("serialising the plan: {e}")))?;
        for (name, bytes) in [
            (PTX_FILE, self.ptx.as_bytes()),
            (PLAN_FILE, json.as_bytes()),
            (WEIGHTS_FILE, &self.weights[..]),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    /// Reads what [`CudaBuild::write`] wrote.
    pub fn read(dir: &Path) -> Result<CudaBuild, CudaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| CudaError::Io(format!("reading {}: {e}", path.display())))
        };
        let plan: plan::LaunchPlan = serde_json::from_slice(&read(PLAN_FILE)?)
            .map_err(|e| CudaError::Io(format!("{}: {e}", dir.join(PLAN_FILE).display())))?;
        if plan.format_version != plan::FORMAT_VERSION {
            return Err(CudaError::Io(format!(
                "{}: format_version {} (this varc reads {})",
                dir.join(PLAN_FILE).display(),
                plan.format_version,
                plan::FORMAT_VERSION
            )));
        }
        let ptx = String::from_utf8(read(&plan.ptx)?)
            .map_err(|e| CudaError::Io(format!("{}: {e}", plan.ptx)))?;
        let weights = read(&plan.weights)?;
        Ok(CudaBuild { ptx, plan, weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(CudaTarget::parse("cuda").unwrap(), CudaTarget::SM_80);
        assert_eq!(CudaTarget::parse("cuda:sm_90").unwrap().arch(), "sm_90");
        assert!(CudaTarget::parse("cuda:sm_70").is_err());
        assert!(CudaTarget::is_cuda("cuda:sm_70") && !CudaTarget::is_cuda("host"));
    }

    #[test]
    fn status_words_round_trip() {
        assert_eq!(decode_status(status_word(7, 3)), (7, 3));
        assert_eq!(status_message(1), "gather index out of range");
    }
}
