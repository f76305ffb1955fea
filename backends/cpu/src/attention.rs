//! Kernels tagged [`Library::Attention`] through the runtime's fused
//! attention microkernel (host JIT only; objects for other targets compile
//! the tagged loop nest like any other, so they stand alone).
//!
//! The kernel's function fills a `varc_runtime::ukernel::attention::
//! AttentionArgs` block in a stack slot — operand base addresses from the
//! buffer table plus the tag's element offsets, the tag's strides and
//! sizes as constants — and calls `varc_attention` with its address. The
//! tag was checked against the kernel (`kernel::library::check`, through
//! `check::validate`): every element the call touches is inside its
//! buffer, so the microkernel needs no run-time bounds checks. The call
//! splits its own work across the current thread pool, so the function
//! has no split axis.

use crate::abi;
use cranelift_codegen::ir::{
    AbiParam, ExtFuncData, ExternalName, Function, InstBuilder, Signature, StackSlotData,
    StackSlotKind, UserExternalName, UserFuncName, Value, types,
};
use cranelift_codegen::isa::{CallConv, TargetIsa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use varc_ir::kernel::{AttentionCall, Kernel, Library, Operand4, Program};
use varc_runtime::ukernel::attention::args_layout as at;

/// The symbol generated code calls (`varc_runtime::ukernel::varc_attention`).
pub const ATTENTION_SYMBOL: &str = "varc_attention";

/// The external-name index (namespace 0) `varc_attention` is imported
/// under in a JIT module.
#[derive(Clone, Copy, Debug)]
pub struct AttentionImport(pub u32);

/// `fn(args: *const AttentionArgs)`.
pub fn attention_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// The attention call a kernel is tagged with, if any.
pub fn tagged(k: &Kernel) -> Option<&AttentionCall> {
    match &k.library {
        Some(Library::Attention(a)) => Some(a),
        _ => None,
    }
}

/// `B·H·S_q·S_kv·(d + d_v)`, saturating: the call's rough cost.
pub fn work(a: &AttentionCall) -> u64 {
    [a.batch, a.q_heads, a.s_q, a.s_kv, a.head_dim + a.v_head_dim]
        .iter()
        .fold(1u64, |w, &n| w.saturating_mul(n as u64))
}

/// The kernel function for `k` (tagged with `a`, already validated): one
/// call of `varc_attention`.
pub fn build(
    p: &Program,
    a: &AttentionCall,
    isa: &dyn TargetIsa,
    import: AttentionImport,
) -> Result<Function, String> {
    let cc = isa.default_call_conv();
    let mut func =
        Function::with_name_signature(UserFuncName::user(0, 0), abi::kernel_signature(cc));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let abi::Entry { bufs, fail, .. } = abi::begin(&mut b);
    let slot = b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        at::TOTAL as u32,
        3,
    ));
    let put = |b: &mut FunctionBuilder, v: Value, off: usize| {
        b.ins().stack_store(types::I64, v, slot, off as i32);
    };
    let int = |b: &mut FunctionBuilder, x: i64| b.ins().iconst(types::I64, x);
    let size = |n: usize| i64::try_from(n).map_err(|_| format!("size {n} does not fit i64"));
    let ops: [Option<&Operand4>; 5] = [
        Some(&a.q),
        Some(&a.k),
        Some(&a.v),
        a.bias.as_ref(),
        Some(&a.out),
    ];
    for (i, op) in ops.iter().enumerate() {
        let (ptr, strides) = match op {
            Some(op) => {
                if p.buffers.get(op.buf.0).is_none() {
                    return Err(format!("attention operand in unknown buffer {}", op.buf.0));
                }
                let base = abi::load_base(&mut b, bufs, op.buf.0);
                let bytes = op
                    .offset
                    .checked_mul(4)
                    .ok_or("attention operand offset overflows")?;
                (b.ins().iadd_imm_s(base, bytes), op.strides)
            }
            None => (int(&mut b, 0), [0; 4]),
        };
        put(&mut b, ptr, at::POINTERS + 8 * i);
        for (x, &s) in strides.iter().enumerate() {
            let v = int(&mut b, s);
            put(&mut b, v, at::STRIDES + 32 * i + 8 * x);
        }
    }
    let sizes = [
        size(a.batch)?,
        size(a.q_heads)?,
        size(a.kv_heads)?,
        size(a.s_q)?,
        size(a.s_kv)?,
        size(a.head_dim)?,
        size(a.v_head_dim)?,
        i64::from(a.causal_offset.is_some()),
        a.causal_offset.unwrap_or(0),
    ];
    for (x, &n) in sizes.iter().enumerate() {
        let v = int(&mut b, n);
        put(&mut b, v, at::SIZES + 8 * x);
    }
    let scale = b.ins().f64const(a.scale);
    put(&mut b, scale, at::SCALE);
    let name = b
        .func
        .declare_imported_user_function(UserExternalName::new(0, import.0));
    let signature = b.import_signature(attention_signature(cc));
    let f = b.import_function(ExtFuncData {
        name: ExternalName::user(name),
        signature,
        colocated: false,
        patchable: false,
    });
    let addr = b.ins().stack_addr(types::I64, slot, 0);
    b.ins().call(f, &[addr]);
    abi::finish(&mut b, fail);
    b.finalize(isa.frontend_config());
    Ok(func)
}

#[cfg(test)]
mod tests;
