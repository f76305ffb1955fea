//! The object's entry points: the buffer table, the kernel calls in program
//! order (each either one call over its whole domain or, given the host's
//! `parallel_for`, shares of its split axis), and the external weights
//! checks.
//!
//! Exported (see the generated header for the C prototypes):
//!
//! * embedded weights: `run(inputs, outputs, arena)` and
//!   `run_parallel(inputs, outputs, arena, parallel_for, pf_ctx)`;
//! * external weights: the same two with `(weights, weights_bytes, ...)` in
//!   front, plus `check_weights(weights, weights_bytes)`.
//!
//! Both wrap one local `body(weights, inputs, outputs, arena, parallel_for,
//! pf_ctx)`. A kernel goes through `parallel_for` exactly when the JIT would
//! split it on a pool of two or more threads (`jit::parallel_extent`): the
//! host is asked for `task(task_ctx, lo, hi)` calls whose ranges partition
//! `0..n`, and each call runs the kernel's points with split index in
//! `lo..hi` exactly as a whole run would, so the outputs do not depend on
//! the partition or on the number of threads.

use super::weights::{CHECKSUM_AT, CHECKSUM_PRIME, HEADER_BYTES, MAGIC, SIGNATURE_AT};
use super::{STATUS_BAD_WEIGHTS, STATUS_WEIGHTS_MISALIGNED};
use crate::{CodegenError, abi};
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Function, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind,
    UserFuncName, Value, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};
use cranelift_object::ObjectModule;
use varc_ir::kernel::plan::{ALIGN, MemoryPlan};
use varc_ir::kernel::{BufKind, Program};

/// A compiled kernel as the entry sees it.
pub struct KernelFn {
    pub id: FuncId,
    /// The extent of the split axis when the kernel runs in shares
    /// through `parallel_for`.
    pub parallel: Option<i64>,
}

/// Where a weight lives.
pub enum Home {
    /// A `.rodata` object.
    Data(DataId),
    /// This byte offset in the caller's weights blob.
    Blob(usize),
}

/// What the external-weights entry points check before reading the blob.
pub struct External {
    pub file_bytes: u64,
    pub signature: u64,
    pub checksum: u64,
    pub checksum_init: u64,
}

/// The program and the object module being filled.
pub struct Entries<'a> {
    pub module: &'a mut ObjectModule,
    pub program: &'a Program,
    pub plan: &'a MemoryPlan,
    pub kernels: &'a [KernelFn],
    /// Per program buffer; `Some` for weights.
    pub homes: &'a [Option<Home>],
    /// `varc_<model>`.
    pub prefix: &'a str,
}

type Err = CodegenError;

fn module_err(e: cranelift_module::ModuleError) -> Err {
    CodegenError::kernel("entry", format!("object module: {e}"))
}

impl Entries<'_> {
    fn cc(&self) -> CallConv {
        self.module.isa().default_call_conv()
    }

    fn ptr(&self) -> types::Type {
        self.module.isa().pointer_type()
    }

    /// `params` pointer-sized parameters, returning an i32 status or not.
    fn sig(&self, params: usize, ret: bool) -> Signature {
        let mut s = Signature::new(self.cc());
        s.params.extend(vec![AbiParam::new(self.ptr()); params]);
        if ret {
            s.returns.push(AbiParam::new(types::I32));
        }
        s
    }

    /// Declares and defines `name`, its body written by `f` (which gets
    /// the module, for references to other functions and data, and the
    /// entry block's parameters).
    fn define(
        &mut self,
        name: &str,
        linkage: Linkage,
        sig: Signature,
        f: impl FnOnce(&mut FunctionBuilder, &mut ObjectModule, &[Value]),
    ) -> Result<FuncId, Err> {
        let id = self
            .module
            .declare_function(name, linkage, &sig)
            .map_err(module_err)?;
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let start = b.create_block();
        b.append_block_params_for_function_params(start);
        b.switch_to_block(start);
        let params = b.block_params(start).to_vec();
        f(&mut b, self.module, &params);
        b.seal_all_blocks();
        b.finalize(self.module.isa().frontend_config());
        let mut ctx = Context::for_function(func);
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::kernel(name, format!("Cranelift: {e:?}")))?;
        Ok(id)
    }

    /// Defines every entry point; `external` selects the weights-blob
    /// variants.
    pub fn define_all(mut self, external: Option<&External>) -> Result<(), Err> {
        let task = self.task()?;
        let body = self.body(task)?;
        let p = self.prefix.to_string();
        let ptr = self.ptr();
        match external {
            None => {
                for (name, n) in [("run", 3), ("run_parallel", 5)] {
                    let sig = self.sig(n, true);
                    self.define(&format!("{p}_{name}"), Linkage::Export, sig, |b, m, a| {
                        let fref = m.declare_func_in_func(body, b.func);
                        let zero = b.ins().iconst(ptr, 0);
                        let (pf, ctx) = if n == 5 { (a[3], a[4]) } else { (zero, zero) };
                        let call = b.ins().call(fref, &[zero, a[0], a[1], a[2], pf, ctx]);
                        let s = b.inst_results(call)[0];
                        b.ins().return_(&[s]);
                    })?;
                }
            }
            Some(x) => {
                let ok = self.weights_ok(x)?;
                for (name, n) in [("run", 5), ("run_parallel", 7)] {
                    let sig = self.sig(n, true);
                    self.define(&format!("{p}_{name}"), Linkage::Export, sig, |b, m, a| {
                        let okf = m.declare_func_in_func(ok, b.func);
                        let call = b.ins().call(okf, &[a[0], a[1]]);
                        let s = b.inst_results(call)[0];
                        let (fail, go) = (b.create_block(), b.create_block());
                        b.ins().brif(s, fail, &[], go, &[]);
                        b.switch_to_block(fail);
                        b.ins().return_(&[s]);
                        b.switch_to_block(go);
                        let fref = m.declare_func_in_func(body, b.func);
                        let zero = b.ins().iconst(ptr, 0);
                        let (pf, ctx) = if n == 7 { (a[5], a[6]) } else { (zero, zero) };
                        let call = b.ins().call(fref, &[a[0], a[2], a[3], a[4], pf, ctx]);
                        let s = b.inst_results(call)[0];
                        b.ins().return_(&[s]);
                    })?;
                }
                self.check_weights(ok, x)?;
            }
        }
        Ok(())
    }

    /// `task(task_ctx, lo, hi)`: runs one share of a kernel. `task_ctx`
    /// points to `{kernel, table, status: i32}` on the body's stack; a
    /// failing share records its status unless another got there first.
    fn task(&mut self) -> Result<FuncId, Err> {
        let mut sig = self.sig(1, false);
        sig.params.extend([AbiParam::new(types::I64); 2]);
        let ksig = abi::kernel_signature(self.cc());
        let ptr = self.ptr();
        let name = format!("{}_task", self.prefix);
        self.define(&name, Linkage::Local, sig, |b, _, a| {
            let (tctx, lo, hi) = (a[0], a[1], a[2]);
            let flags = MemFlagsData::trusted();
            let f = b.ins().load(ptr, flags, tctx, 0);
            let table = b.ins().load(ptr, flags, tctx, 8);
            let sref = b.import_signature(ksig);
            let call = b.ins().call_indirect(sref, f, &[table, lo, hi]);
            let s = b.inst_results(call)[0];
            let (record, done) = (b.create_block(), b.create_block());
            b.ins().brif(s, record, &[], done, &[]);
            b.switch_to_block(record);
            let at = b.ins().iadd_imm_s(tctx, 16);
            let zero = b.ins().iconst(types::I32, 0);
            b.ins().atomic_cas(flags, at, zero, s);
            b.ins().jump(done, &[]);
            b.switch_to_block(done);
            b.ins().return_(&[]);
        })
    }

    /// `body(weights, inputs, outputs, arena, parallel_for, pf_ctx)`.
    fn body(&mut self, task: FuncId) -> Result<FuncId, Err> {
        let ptr = self.ptr();
        let mut pfsig = Signature::new(self.cc());
        pfsig.params.extend([
            AbiParam::new(ptr),
            AbiParam::new(types::I64),
            AbiParam::new(ptr),
            AbiParam::new(ptr),
        ]);
        let (program, plan, kernels, homes) = (self.program, self.plan, self.kernels, self.homes);
        let name = format!("{}_body", self.prefix);
        let sig = self.sig(6, true);
        self.define(&name, Linkage::Local, sig, |b, m, a| {
            let [weights, inputs, outputs, arena, pf, pfctx] = [0, 1, 2, 3, 4, 5].map(|i| a[i]);
            let n = program.buffers.len().max(1);
            let slot = b.create_sized_stack_slot(StackSlotData::new(
                StackSlotKind::ExplicitSlot,
                (n * 8) as u32,
                3,
            ));
            let flags = MemFlagsData::trusted();
            for (i, buf) in program.buffers.iter().enumerate() {
                let v = match (&buf.kind, &homes[i]) {
                    (BufKind::Input(k), _) => b.ins().load(ptr, flags, inputs, (*k * 8) as i32),
                    (BufKind::Output(k), _) => b.ins().load(ptr, flags, outputs, (*k * 8) as i32),
                    (BufKind::Weight(_), Some(Home::Data(id))) => {
                        let gv = m.declare_data_in_func(*id, b.func);
                        b.ins().symbol_value(ptr, gv)
                    }
                    (BufKind::Weight(_), Some(Home::Blob(off))) => {
                        b.ins().iadd_imm_u(weights, *off as i64)
                    }
                    // Temps, and (never: every weight has a home) others.
                    _ => match plan.offsets[i] {
                        Some(off) => b.ins().iadd_imm_u(arena, off as i64),
                        // A temp no kernel touches: any valid address will do.
                        None => arena,
                    },
                };
                b.ins().stack_store(ptr, v, slot, (i * 8) as i32);
            }
            let table = b.ins().stack_addr(ptr, slot, 0);
            let tctx =
                b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 24, 3));
            let task_ref = m.declare_func_in_func(task, b.func);
            let pf_sig = b.import_signature(pfsig);
            let fail = b.create_block();
            b.append_block_param(fail, types::I32);
            for k in kernels {
                let fref = m.declare_func_in_func(k.id, b.func);
                let lo = b.ins().iconst(types::I64, 0);
                let hi = b.ins().iconst(types::I64, i64::MAX);
                let status = match k.parallel {
                    None => {
                        let call = b.ins().call(fref, &[table, lo, hi]);
                        b.inst_results(call)[0]
                    }
                    Some(extent) => {
                        let (serial, par, join) =
                            (b.create_block(), b.create_block(), b.create_block());
                        b.append_block_param(join, types::I32);
                        b.ins().brif(pf, par, &[], serial, &[]);
                        b.switch_to_block(serial);
                        let call = b.ins().call(fref, &[table, lo, hi]);
                        let s = b.inst_results(call)[0];
                        b.ins().jump(join, &[s.into()]);
                        b.switch_to_block(par);
                        let fa = b.ins().func_addr(ptr, fref);
                        b.ins().stack_store(ptr, fa, tctx, 0);
                        b.ins().stack_store(ptr, table, tctx, 8);
                        let zero = b.ins().iconst(types::I32, 0);
                        b.ins().stack_store(ptr, zero, tctx, 16);
                        let ta = b.ins().func_addr(ptr, task_ref);
                        let ca = b.ins().stack_addr(ptr, tctx, 0);
                        let nv = b.ins().iconst(types::I64, extent);
                        b.ins().call_indirect(pf_sig, pf, &[pfctx, nv, ta, ca]);
                        // parallel_for has returned: every share is done
                        // and a failing one has stored its status.
                        let st = b.ins().iadd_imm_s(ca, 16);
                        let s = b.ins().atomic_load(types::I32, flags, st);
                        b.ins().jump(join, &[s.into()]);
                        b.switch_to_block(join);
                        b.block_params(join)[0]
                    }
                };
                let next = b.create_block();
                b.ins().brif(status, fail, &[status.into()], next, &[]);
                b.switch_to_block(next);
            }
            let ok = b.ins().iconst(types::I32, crate::STATUS_OK as i64);
            b.ins().return_(&[ok]);
            b.switch_to_block(fail);
            let status = b.block_params(fail)[0];
            b.ins().return_(&[status]);
        })
    }

    /// `weights_ok(weights, weights_bytes)`: 0 when the blob is non-NULL,
    /// 64-byte aligned, of the expected size, and its header names this
    /// model and payload checksum. Reads only the header, and only after
    /// the size check.
    fn weights_ok(&mut self, x: &External) -> Result<FuncId, Err> {
        let name = format!("{}_weights_ok", self.prefix);
        let sig = self.sig(2, true);
        let magic = i64::from_le_bytes(MAGIC);
        self.define(&name, Linkage::Local, sig, |b, _, a| {
            let (w, bytes) = (a[0], a[1]);
            let ret = b.create_block();
            b.append_block_param(ret, types::I32);
            let fail_if = |b: &mut FunctionBuilder, cond: Value, code: i32| {
                let next = b.create_block();
                let c = b.ins().iconst(types::I32, code as i64);
                b.ins().brif(cond, ret, &[c.into()], next, &[]);
                b.switch_to_block(next);
            };
            let null = b.ins().icmp_imm_s(IntCC::Equal, w, 0);
            fail_if(b, null, STATUS_BAD_WEIGHTS);
            let low = b.ins().band_imm_u(w, (ALIGN - 1) as i64);
            fail_if(b, low, STATUS_WEIGHTS_MISALIGNED);
            let size = b
                .ins()
                .icmp_imm_s(IntCC::NotEqual, bytes, x.file_bytes as i64);
            fail_if(b, size, STATUS_BAD_WEIGHTS);
            let flags = MemFlagsData::trusted().with_readonly();
            for (at, want) in [
                (0, magic),
                (SIGNATURE_AT, x.signature as i64),
                (CHECKSUM_AT, x.checksum as i64),
            ] {
                let v = b.ins().load(types::I64, flags, w, at);
                let bad = b.ins().icmp_imm_s(IntCC::NotEqual, v, want);
                fail_if(b, bad, STATUS_BAD_WEIGHTS);
            }
            let ok = b.ins().iconst(types::I32, 0);
            b.ins().jump(ret, &[ok.into()]);
            b.switch_to_block(ret);
            let s = b.block_params(ret)[0];
            b.ins().return_(&[s]);
        })
    }

    /// `check_weights(weights, weights_bytes)`: [`Entries::weights_ok`],
    /// then the payload's checksum recomputed over the whole blob.
    fn check_weights(&mut self, ok: FuncId, x: &External) -> Result<FuncId, Err> {
        let ptr = self.ptr();
        let name = format!("{}_check_weights", self.prefix);
        let sig = self.sig(2, true);
        self.define(&name, Linkage::Export, sig, |b, m, a| {
            let (w, bytes) = (a[0], a[1]);
            let okf = m.declare_func_in_func(ok, b.func);
            let call = b.ins().call(okf, &[w, bytes]);
            let s = b.inst_results(call)[0];
            let (fail, start) = (b.create_block(), b.create_block());
            b.ins().brif(s, fail, &[], start, &[]);
            b.switch_to_block(fail);
            b.ins().return_(&[s]);
            b.switch_to_block(start);
            // After `weights_ok`, the blob is known to be file_bytes long.
            let p0 = b.ins().iadd_imm_u(w, HEADER_BYTES as i64);
            let end = b.ins().iadd_imm_u(w, x.file_bytes as i64);
            let h0 = b.ins().iconst(types::I64, x.checksum_init as i64);
            let (head, step, exit) = (b.create_block(), b.create_block(), b.create_block());
            b.append_block_param(head, ptr);
            b.append_block_param(head, types::I64);
            b.append_block_param(exit, types::I64);
            b.ins().jump(head, &[p0.into(), h0.into()]);
            b.switch_to_block(head);
            let (p, h) = (b.block_params(head)[0], b.block_params(head)[1]);
            let done = b.ins().icmp(IntCC::Equal, p, end);
            b.ins().brif(done, exit, &[h.into()], step, &[]);
            b.switch_to_block(step);
            let flags = MemFlagsData::trusted().with_readonly();
            let word = b.ins().load(types::I64, flags, p, 0);
            let x1 = b.ins().bxor(h, word);
            let prime = b.ins().iconst(types::I64, CHECKSUM_PRIME as i64);
            let x2 = b.ins().imul(x1, prime);
            let x3 = b.ins().ushr_imm_u(x2, 32);
            let h2 = b.ins().bxor(x2, x3);
            let p2 = b.ins().iadd_imm_u(p, 8);
            b.ins().jump(head, &[p2.into(), h2.into()]);
            b.switch_to_block(exit);
            let h = b.block_params(exit)[0];
            let same = b.ins().icmp_imm_s(IntCC::Equal, h, x.checksum as i64);
            let zero = b.ins().iconst(types::I32, 0);
            let bad = b.ins().iconst(types::I32, STATUS_BAD_WEIGHTS as i64);
            let r = b.ins().select(same, zero, bad);
            b.ins().return_(&[r]);
        })
    }
}
