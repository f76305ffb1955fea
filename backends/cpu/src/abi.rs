//! The kernel function's frame: signature
//! `fn(bufs: *const *mut u8, lo: i64, hi: i64) -> i32`, buffer base
//! addresses, the shared failure exit, and calls to the imported library
//! functions.
//!
//! `lo..hi` selects a share of the kernel's work for parallel runs: the
//! points whose *split axis* (see `kernel::split_axis`) lies in that range,
//! clamped to the axis' extent, so `0, i64::MAX` runs every point. Kernels
//! without a split axis ignore the range and run every point.

use crate::expr::Em;
use crate::math::Libm;
use cranelift_codegen::ir::{
    AbiParam, Block, ExtFuncData, ExternalName, InstBuilder, MemFlagsData, Signature,
    UserExternalName, Value, types,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

/// `extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64) -> i32` on a
/// 64-bit target.
pub fn kernel_signature(cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    sig.params.extend([AbiParam::new(types::I64); 3]);
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// The signature of a [`Libm`] function.
pub fn libm_signature(f: Libm, cc: CallConv) -> Signature {
    let mut sig = Signature::new(cc);
    for _ in 0..f.arity() {
        sig.params.push(AbiParam::new(types::F32));
    }
    sig.returns.push(AbiParam::new(types::F32));
    sig
}

/// The entry block's parameters.
pub struct Entry {
    pub bufs: Value,
    pub lo: Value,
    pub hi: Value,
    /// The failure block (one i32 parameter, returned as the status).
    pub fail: Block,
}

/// Creates the entry block and the failure block.
pub fn begin(b: &mut FunctionBuilder) -> Entry {
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let [bufs, lo, hi] = [0, 1, 2].map(|i| b.block_params(entry)[i]);
    let fail = b.create_block();
    b.append_block_param(fail, types::I32);
    Entry { bufs, lo, hi, fail }
}

/// Returns 0 from the current block, then fills in the failure block.
pub fn finish(b: &mut FunctionBuilder, fail: Block) {
    let ok = b.ins().iconst(types::I32, crate::STATUS_OK as i64);
    b.ins().return_(&[ok]);
    b.switch_to_block(fail);
    let code = b.block_params(fail)[0];
    b.ins().return_(&[code]);
    b.seal_all_blocks();
}

/// Loads `bufs[id]` (the table is read-only while the kernel runs).
pub fn load_base(b: &mut FunctionBuilder, bufs: Value, id: usize) -> Value {
    let flags = MemFlagsData::trusted().with_readonly();
    b.ins().load(types::I64, flags, bufs, (id * 8) as i32)
}

impl Em<'_, '_> {
    /// Calls an imported scalar library function.
    pub fn call(&mut self, f: Libm, args: &[Value]) -> Value {
        let fref = match self.funcs.get(&f) {
            Some(&r) => r,
            None => {
                let cc = self.b.func.signature.call_conv;
                let name = self
                    .b
                    .func
                    .declare_imported_user_function(UserExternalName::new(0, self.imports.get(f)));
                let signature = self.b.import_signature(libm_signature(f, cc));
                let r = self.b.import_function(ExtFuncData {
                    name: ExternalName::user(name),
                    signature,
                    colocated: false,
                    patchable: false,
                });
                self.funcs.insert(f, r);
                r
            }
        };
        let call = self.b.ins().call(fref, args);
        self.b.inst_results(call)[0]
    }
}
