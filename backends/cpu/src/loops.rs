//! Counted loops with static bounds, built from blocks and a loop variable.

use crate::expr::{Em, R};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};

impl Em<'_, '_> {
    /// `for iv in (start..end).step_by(step) { body(iv) }`. A single
    /// iteration is emitted without a loop; none emits nothing.
    pub fn for_range(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        mut body: impl FnMut(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        if start >= end {
            return Ok(());
        }
        if start + step >= end {
            let iv = self.b.ins().iconst(types::I64, start);
            return body(self, iv);
        }
        let var = self.b.declare_var(types::I64);
        let s = self.b.ins().iconst(types::I64, start);
        self.b.def_var(var, s);
        let header = self.b.create_block();
        let block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(header);
        let iv = self.b.use_var(var);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, iv, end);
        self.b.ins().brif(more, block, &[], exit, &[]);

        self.b.switch_to_block(block);
        self.b.seal_block(block);
        body(self, iv)?;
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);

        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// `for iv in lo..hi { body(iv) }` with bounds known at run time only.
    pub fn for_dynamic(
        &mut self,
        lo: Value,
        hi: Value,
        mut body: impl FnMut(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        let var = self.b.declare_var(types::I64);
        self.b.def_var(var, lo);
        let header = self.b.create_block();
        let block = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);

        self.b.switch_to_block(header);
        let iv = self.b.use_var(var);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, hi);
        self.b.ins().brif(more, block, &[], exit, &[]);

        self.b.switch_to_block(block);
        self.b.seal_block(block);
        body(self, iv)?;
        let next = self.b.ins().iadd_imm_s(iv, 1);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);

        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }
}
