//! Target machines: Cranelift ISAs for the host (JIT) and for named triples.

use crate::{CodegenError, Target};
use cranelift_codegen::isa::{self, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::Architecture;

fn shared_flags(pic: bool) -> Result<settings::Flags, String> {
    let mut b = settings::builder();
    b.set("opt_level", "speed").map_err(|e| e.to_string())?;
    b.set("is_pic", if pic { "true" } else { "false" })
        .map_err(|e| e.to_string())?;
    b.enable("enable_verifier").map_err(|e| e.to_string())?;
    Ok(settings::Flags::new(b))
}

/// The host ISA with the host CPU's features (FMA, SSE4.1, AVX, NEON, ...).
pub fn host() -> Result<OwnedTargetIsa, CodegenError> {
    let err = |e: String| CodegenError::Target("host".into(), e);
    let builder = cranelift_native::builder().map_err(|e| err(e.to_string()))?;
    builder
        .finish(shared_flags(false).map_err(err)?)
        .map_err(|e| err(e.to_string()))
}

/// The ISA for `target`. x86-64 assumes x86-64-v3 (AVX2 + FMA, Haswell and
/// later); aarch64 assumes the baseline (NEON is always there).
pub fn for_target(target: &Target) -> Result<OwnedTargetIsa, CodegenError> {
    let name = target.triple.to_string();
    if target.triple == target_lexicon::Triple::host() {
        return host();
    }
    let err = |e: String| CodegenError::Target(name.clone(), e);
    let mut builder = isa::lookup(target.triple.clone()).map_err(|e| err(e.to_string()))?;
    match target.triple.architecture {
        Architecture::X86_64 => builder
            .enable("x86-64-v3")
            .map_err(|e| err(e.to_string()))?,
        Architecture::Aarch64(_) => {}
        other => return Err(err(format!("architecture {other} is not supported"))),
    }
    builder
        .finish(shared_flags(true).map_err(err)?)
        .map_err(|e| err(e.to_string()))
}

/// Whether `fma` compiles to one instruction (not a libcall) on `isa`.
pub fn has_fma(isa: &dyn TargetIsa) -> bool {
    match isa.triple().architecture {
        Architecture::Aarch64(_) => true,
        Architecture::X86_64 => isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true)),
        _ => false,
    }
}

/// How many f32x4 registers the target has (x86-64: 16, aarch64: 32).
pub fn vector_registers(isa: &dyn TargetIsa) -> usize {
    match isa.triple().architecture {
        Architecture::Aarch64(_) => 32,
        _ => 16,
    }
}
