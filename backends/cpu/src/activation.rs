//! Kernels whose value is GELU or SiLU of some argument, through the
//! runtime's activation routine (host JIT only; objects for other targets,
//! and AOT objects, compile the whole expression inline).
//!
//! Cranelift emits 128-bit vectors only, and these activations cost tens of
//! instructions per vector there; `varc_runtime::ukernel::activation` runs
//! them 16 lanes wide. A kernel qualifies when its value is `act(x)` as
//! the kernel IR defines it ([`varc_ir::kernel::activation::split`]), `x`
//! and the store are f32, and the store is the dense row-major index of
//! the domain (plus a constant offset) inside its buffer. Its function
//! then runs the kernel's loop nest for `x` (same plan, same store), and
//! calls `varc_activation(kind, ptr, len)` once over the elements it
//! stored: the share `lo..hi` of the split axis — the first axis longer
//! than 1 (`kernel::split_axis`), so every axis before it has extent 1 —
//! is the contiguous elements `offset + lo·inner .. offset + hi·inner`,
//! `inner` the product of the later extents; without a split axis the
//! whole domain. The same applies to the epilogue of an sgemm or
//! convolution kernel (its loop nest over the output, in place): an
//! epilogue that is just `act(C)` needs no loop nest at all.
//!
//! `VARC_ACTIVATION_UKERNEL=0` turns this off (for comparisons).

use crate::expr::{Em, R};
use cranelift_codegen::ir::{
    AbiParam, ExtFuncData, ExternalName, InstBuilder, Signature, UserExternalName, types,
};
use cranelift_codegen::isa::CallConv;
use varc_ir::DType;
use varc_ir::kernel::activation::{Activation, split};
use varc_ir::kernel::{Expr, Kernel, Program, Var};

/// The symbol generated code calls (`varc_runtime::ukernel::activation::
/// varc_activation`).
pub const ACTIVATION_SYMBOL: &str = "varc_activation";

/// `fn(kind: u32, ptr: *mut f32, len: usize)`.
pub fn activation_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    sig.params.push(AbiParam::new(types::I32));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// Whether the JIT calls the routine (default on;
/// `VARC_ACTIVATION_UKERNEL=0` turns it off).
pub fn enabled() -> bool {
    std::env::var("VARC_ACTIVATION_UKERNEL").map_or(true, |v| v != "0")
}

/// The call a kernel's function makes after its loop nest.
#[derive(Clone, Copy, Debug)]
pub struct ActivationCall {
    pub act: Activation,
    /// External-name index (namespace 0) `varc_activation` is imported
    /// under.
    pub import: u32,
    /// The store's element offset (its index at the domain's origin).
    offset: i64,
}

/// `k` as `act(x)` over a dense row-major f32 store: the call, and the
/// kernel computing `x` into the same store (`None` when `x` is the
/// stored element itself, as an sgemm epilogue `act(C)` is: nothing to
/// compute).
pub fn recognise(p: &Program, k: &Kernel, import: u32) -> Option<(ActivationCall, Option<Kernel>)> {
    let st = &k.store;
    let buf = p.buffers.get(st.buf.0)?;
    if buf.dtype != DType::F32 || !st.gathers.is_empty() || !dense_row_major(k) {
        return None;
    }
    let end = st
        .index
        .offset
        .checked_add(i64::try_from(k.points()).ok()?)?;
    if st.index.offset < 0 || end > i64::try_from(buf.len()).ok()? {
        return None;
    }
    let (act, x) = split(&k.value)?;
    if x.dtype(&p.buffers) != DType::F32 {
        return None;
    }
    let in_place = matches!(&x, Expr::Load { access, guards, .. }
        if guards.is_empty() && **access == *st);
    let arg = (!in_place).then(|| Kernel {
        name: k.name.clone(),
        domain: k.domain.clone(),
        store: st.clone(),
        value: x,
        library: None,
    });
    let call = ActivationCall {
        act,
        import,
        offset: st.index.offset,
    };
    Some((call, arg))
}

/// [`recognise`] on an epilogue kernel, replacing it by its argument's.
pub fn from_epilogue(
    p: &Program,
    epilogue: &mut Option<Kernel>,
    import: u32,
) -> Option<ActivationCall> {
    let (call, arg) = recognise(p, epilogue.as_ref()?, import)?;
    *epilogue = arg;
    Some(call)
}

/// The store index is `offset + Σ Out(i)·(product of the later extents)`
/// over the axes longer than 1 (axes of extent 1 may carry anything).
fn dense_row_major(k: &Kernel) -> bool {
    let d = k.domain.len();
    let ix = &k.store.index;
    if ix
        .terms
        .iter()
        .any(|(v, _)| !matches!(v, Var::Out(i) if *i < d))
    {
        return false;
    }
    let mut stride = 1i64;
    for i in (0..d).rev() {
        let n = k.domain[i];
        if n > 1 && ix.coeff(Var::Out(i)) != stride {
            return false;
        }
        let Some(s) = i64::try_from(n).ok().and_then(|n| stride.checked_mul(n)) else {
            return false;
        };
        stride = s;
    }
    true
}

/// The routine's name in listings (the `VARC_PROFILE` routine column),
/// after the routine the rest of the kernel runs through, if any.
pub fn label(base: Option<&str>, act: Activation) -> &'static str {
    use Activation::*;
    match (base, act) {
        (Some("sgemm"), GeluTanh) => "sgemm + gelu(tanh) ukernel",
        (Some("sgemm"), GeluErf) => "sgemm + gelu(erf) ukernel",
        (Some("sgemm"), Silu) => "sgemm + silu ukernel",
        (Some(_), GeluTanh) => "conv + gelu(tanh) ukernel",
        (Some(_), GeluErf) => "conv + gelu(erf) ukernel",
        (Some(_), Silu) => "conv + silu ukernel",
        (None, GeluTanh) => "gelu(tanh) ukernel",
        (None, GeluErf) => "gelu(erf) ukernel",
        (None, Silu) => "silu ukernel",
    }
}

impl Em<'_, '_> {
    /// One `varc_activation` call over the elements the current kernel's
    /// loop nest stored: this share of the split axis, or everything.
    pub fn activation_call(&mut self, c: ActivationCall) -> R<()> {
        let k = self.k;
        let base = *self
            .bases
            .get(&k.store.buf.0)
            .ok_or("the activation's buffer has no base address")?;
        let (start, len) = match self.split {
            Some((a, lo, hi)) => {
                if k.domain[..a].iter().any(|&n| n != 1) {
                    return Err("the split axis is not the outermost axis longer than 1".into());
                }
                let inner = k.domain[a + 1..].iter().product::<usize>();
                let inner = i64::try_from(inner).map_err(|_| "domain too large")?;
                // `lo..hi` is clamped to the axis; an empty or inverted
                // range calls with length 0.
                let n = self.b.ins().isub(hi, lo);
                let zero = self.b.ins().iconst(types::I64, 0);
                let n = self.b.ins().smax(n, zero);
                let len = self.b.ins().imul_imm_s(n, inner);
                let start = self.b.ins().imul_imm_s(lo, inner);
                (start, len)
            }
            None => {
                let points = i64::try_from(k.points()).map_err(|_| "domain too large")?;
                let zero = self.b.ins().iconst(types::I64, 0);
                (zero, self.b.ins().iconst(types::I64, points))
            }
        };
        let bytes = self.b.ins().imul_imm_s(start, 4);
        let ptr = self.b.ins().iadd(base, bytes);
        let ptr = self.b.ins().iadd_imm_s(ptr, c.offset * 4);
        let cc = self.b.func.signature.call_conv;
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(0, c.import));
        let signature = self.b.import_signature(activation_signature(cc));
        let f = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        });
        let kind = self.b.ins().iconst(types::I32, i64::from(c.act.code()));
        self.b.ins().call(f, &[kind, ptr, len]);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
