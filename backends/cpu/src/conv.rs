//! Kernels tagged [`Library::Conv`] through the runtime's implicit-GEMM
//! convolution microkernel (host JIT only; objects for other targets
//! lower convolutions through im2col and never see the tag).
//!
//! The tag describes the kernel's single `Reduce` (the convolution sum).
//! The function fills a `varc_runtime::ukernel::conv::ConvArgs` block in a
//! stack slot — base addresses from the buffer table plus the tag's
//! element offsets, strides and sizes as constants, and the address of
//! the weights packed at compile time when they are a weight
//! (`gemm::WeightPacks::pack_conv`) — calls `varc_conv2d`,
//! which writes the sum into the output — plus a per-channel bias when
//! the rest of the value is just that (the call adds it to each tile
//! while it is in cache, in every task) — then runs any other rest of
//! the value as an epilogue loop over the output in place, as the sgemm
//! path does. The tag was checked against the kernel
//! (`kernel::library::check`): every element the call touches is inside
//! its buffer. The call splits its own work across the current thread
//! pool, so the function has no split axis.

use crate::check::index_range;
use crate::expr::{Em, R};
use crate::gemm::replace_reduce;
use cranelift_codegen::ir::{
    AbiParam, ExtFuncData, ExternalName, InstBuilder, Signature, StackSlotData, StackSlotKind,
    UserExternalName, types,
};
use cranelift_codegen::isa::CallConv;
use varc_ir::DType;
use varc_ir::kernel::{BinaryFn, BufId, ConvCall, Expr, Kernel, Library, Program, ReduceFn, Var};
use varc_runtime::ukernel::PackedB;
use varc_runtime::ukernel::conv::conv_args_layout as cl;

/// The symbol generated code calls (`varc_runtime::ukernel::varc_conv2d`).
pub const CONV_SYMBOL: &str = "varc_conv2d";

/// `fn(args: *const ConvArgs)`.
pub fn conv_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// A kernel tagged with a convolution call, as the function runs it.
pub struct ConvKernel<'a> {
    pub call: &'a ConvCall,
    /// The rest of the value over the domain, reading the sum in place
    /// (`None`: the value is the sum, or the sum plus `bias`).
    pub epilogue: Option<Kernel>,
    /// A per-channel bias the call adds itself (the value is `sum +
    /// bias[offset + stride·m]`): buffer, element offset and stride.
    pub bias: Option<(BufId, i64, i64)>,
}

/// `b` when `rest` is `c + b` (either order) with `b` a plain f32 load
/// that moves only with the output channel (domain axis 1, `channels`
/// long), stays inside its buffer (the call reads it unchecked) and reads
/// another buffer than the output: `(buffer, offset, stride)`.
fn channel_bias(
    p: &Program,
    rest: &Expr,
    c: &Expr,
    out: BufId,
    channels: usize,
) -> Option<(BufId, i64, i64)> {
    let Expr::Binary(BinaryFn::Add, x, y) = rest else {
        return None;
    };
    let other = if **x == *c {
        y
    } else if **y == *c {
        x
    } else {
        return None;
    };
    let Expr::Load { access, guards, .. } = &**other else {
        return None;
    };
    let ix = &access.index;
    let plain = guards.is_empty()
        && access.gathers.is_empty()
        && access.buf != out
        && ix.terms.iter().all(|(v, _)| *v == Var::Out(1));
    let buf = p.buffers.get(access.buf.0)?;
    let inside = index_range(ix, &[], &[(Var::Out(1), channels)])
        .is_none_or(|(lo, hi)| lo >= 0 && hi < buf.len() as i128);
    (plain && inside && buf.dtype == DType::F32)
        .then(|| (access.buf, ix.offset, ix.coeff(Var::Out(1))))
}

/// `k`'s convolution call, when it is tagged with one and its value holds
/// exactly one `Reduce(Sum)` (the sum the call computes).
pub fn tagged<'k>(p: &Program, k: &'k Kernel) -> Option<ConvKernel<'k>> {
    let Some(Library::Conv(call)) = &k.library else {
        return None;
    };
    let mut sums = 0;
    let mut others = 0;
    k.value.visit(&mut |e| {
        if let Expr::Reduce { op, .. } = e {
            if *op == ReduceFn::Sum {
                sums += 1;
            } else {
                others += 1;
            }
        }
    });
    if (sums, others) != (1, 0) {
        return None;
    }
    let st = &k.store;
    let c_load = Expr::load(st.buf, st.index.clone());
    let rest = replace_reduce(&k.value, &c_load);
    let bias = (k.domain.len() == 4)
        .then(|| channel_bias(p, &rest, &c_load, st.buf, call.out_channels))
        .flatten();
    let epilogue = (rest != c_load && bias.is_none()).then(|| Kernel {
        name: k.name.clone(),
        domain: k.domain.clone(),
        store: st.clone(),
        value: rest,
        library: None,
    });
    Some(ConvKernel {
        call,
        epilogue,
        bias,
    })
}

/// Multiply-adds of the call, saturating.
pub fn work(c: &ConvCall) -> u64 {
    [
        c.batch,
        c.out_channels,
        c.out_size[0],
        c.out_size[1],
        c.in_channels,
        c.kernel[0],
        c.kernel[1],
    ]
    .iter()
    .fold(1u64, |w, &n| w.saturating_mul(n as u64))
}

impl Em<'_, '_> {
    /// One `varc_conv2d` call for `c` (imported as external name
    /// `import`), with w packed ahead when `packed_w` (which must outlive
    /// the code: the JIT program keeps every pack).
    pub fn conv_call(
        &mut self,
        c: &ConvCall,
        bias: Option<(BufId, i64, i64)>,
        import: u32,
        packed_w: Option<&PackedB>,
    ) -> R<()> {
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            cl::TOTAL as u32,
            3,
        ));
        let put_int = |em: &mut Self, x: i64, off: usize| {
            let v = em.b.ins().iconst(types::I64, x);
            em.b.ins().stack_store(types::I64, v, slot, off as i32);
        };
        for (i, (_, op, _)) in c.operands().iter().enumerate() {
            let base = *self.bases.get(&op.buf.0).ok_or_else(|| {
                format!(
                    "conv operand in buffer {} the kernel does not touch",
                    op.buf.0
                )
            })?;
            let bytes = op
                .offset
                .checked_mul(4)
                .ok_or("conv operand offset overflows")?;
            let ptr = self.b.ins().iadd_imm_s(base, bytes);
            self.b
                .ins()
                .stack_store(types::I64, ptr, slot, (cl::POINTERS + 8 * i) as i32);
            for (x, &s) in op.strides.iter().enumerate() {
                put_int(self, s, cl::STRIDES + 32 * i + 8 * x);
            }
        }
        let sizes = [
            c.batch,
            c.in_channels,
            c.out_channels,
            c.in_size[0],
            c.in_size[1],
            c.out_size[0],
            c.out_size[1],
            c.kernel[0],
            c.kernel[1],
            c.strides[0],
            c.strides[1],
            c.dilations[0],
            c.dilations[1],
            c.pads[0],
            c.pads[1],
        ];
        for (x, &n) in sizes.iter().enumerate() {
            let n = i64::try_from(n).map_err(|_| format!("conv size {n} does not fit i64"))?;
            put_int(self, n, cl::SIZES + 8 * x);
        }
        let pw = packed_w.map_or(0, |p| p as *const PackedB as i64);
        put_int(self, pw, cl::PACKED_A);
        match bias {
            Some((buf, offset, stride)) => {
                let base = *self.bases.get(&buf.0).ok_or_else(|| {
                    format!("conv bias in buffer {} the kernel does not touch", buf.0)
                })?;
                let bytes = offset.checked_mul(4).ok_or("conv bias offset overflows")?;
                let ptr = self.b.ins().iadd_imm_s(base, bytes);
                self.b
                    .ins()
                    .stack_store(types::I64, ptr, slot, cl::BIAS as i32);
                put_int(self, stride, cl::BIAS_STRIDE);
            }
            None => {
                put_int(self, 0, cl::BIAS);
                put_int(self, 0, cl::BIAS_STRIDE);
            }
        }
        let cc = self.b.func.signature.call_conv;
        let name = self
            .b
            .func
            .declare_imported_user_function(UserExternalName::new(0, import));
        let signature = self.b.import_signature(conv_signature(cc));
        let f = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        });
        let addr = self.b.ins().stack_addr(types::I64, slot, 0);
        self.b.ins().call(f, &[addr]);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
