//! Memory access code: affine addresses, gathers with range checks, guarded
//! loads, stores, and run-time bounds checks where the compile-time range
//! of an access is not inside its buffer.

use crate::check::index_range;
use crate::expr::{Em, Point, R};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use varc_ir::DType;
use varc_ir::kernel::{Access, Affine, GatherTerm, Guard, Var};

impl Em<'_, '_> {
    /// Nesting depth of a loop variable (outer loops first).
    fn depth(&self, v: Var) -> usize {
        self.extents
            .iter()
            .position(|e| e.0 == v)
            .unwrap_or(usize::MAX)
    }

    /// `start + Σ c·scale·value` (outer loop variables first, so the
    /// invariant part of the sum can be hoisted out of inner loops) and the
    /// constant `(offset + Σ c·delta)·scale`.
    fn affine(
        &mut self,
        a: &Affine,
        pt: &Point,
        scale: i64,
        start: Option<Value>,
    ) -> R<(Option<Value>, i64)> {
        let mut terms = a.terms.clone();
        terms.sort_by_key(|(v, _)| self.depth(*v));
        let mut acc = start;
        let mut konst = a.offset * scale;
        for (v, c) in terms {
            let (val, delta) = pt.get(v)?;
            konst += c * delta * scale;
            let t = self.b.ins().imul_imm_s(val, c * scale);
            acc = Some(match acc {
                Some(s) => self.b.ins().iadd(s, t),
                None => t,
            });
        }
        Ok((acc, konst))
    }

    fn affine_value(&mut self, a: &Affine, pt: &Point) -> R<Value> {
        let (v, c) = self.affine(a, pt, 1, None)?;
        Ok(match v {
            Some(v) => self.b.ins().iadd_imm_s(v, c),
            None => self.b.ins().iconst(types::I64, c),
        })
    }

    /// The normalised index of a gather term; status 1 when out of range.
    fn gather_index(&mut self, g: &GatherTerm, pt: &Point) -> R<Value> {
        let lane = self.lane.take();
        let raw = self.expr(&g.index, std::slice::from_ref(pt));
        self.lane = lane;
        let mut raw = raw?[0];
        if self.ty(raw) == types::F32 {
            raw = self.b.ins().fcvt_to_sint_sat(types::I64, raw);
        }
        let dim = g.dim as i64;
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, raw, 0);
        let wrapped = self.b.ins().iadd_imm_s(raw, dim);
        let n = self.b.ins().select(neg, wrapped, raw);
        self.check(
            IntCC::UnsignedLessThan,
            n,
            dim,
            crate::STATUS_GATHER_OUT_OF_RANGE,
        );
        Ok(n)
    }

    /// The address of `a` at `pt` as (pointer, byte offset), after any
    /// checks; `lanes` consecutive elements are accessed.
    fn address(&mut self, a: &Access, pt: &Point, lanes: usize) -> R<(Value, i32)> {
        let buf = self.p.buffer(a.buf);
        let (size, len) = (buf.dtype.size() as i64, buf.len() as i128);
        let gathered: Vec<Value> = a
            .gathers
            .iter()
            .map(|g| self.gather_index(g, pt))
            .collect::<R<_>>()?;
        let checked = match index_range(&a.index, &a.gathers, &self.extents) {
            Some((lo, hi)) => lo >= 0 && hi < len,
            None => true,
        };
        if !checked {
            let mut idx = self.affine_value(&a.index, pt)?;
            for (g, &n) in a.gathers.iter().zip(&gathered) {
                let t = self.b.ins().imul_imm_s(n, g.stride);
                idx = self.b.ins().iadd(idx, t);
            }
            let last = len as i64 - lanes as i64;
            if last < 0 {
                let no = self.b.ins().iconst(types::I8, 0);
                self.branch_or_fail(no, crate::STATUS_OUT_OF_BOUNDS);
            } else {
                self.check(
                    IntCC::UnsignedLessThanOrEqual,
                    idx,
                    last,
                    crate::STATUS_OUT_OF_BOUNDS,
                );
            }
        }
        let base = self.bases[&a.buf.0];
        let (addr, konst) = self.affine(&a.index, pt, size, Some(base))?;
        let mut addr = addr.expect("started from the base");
        for (g, &n) in a.gathers.iter().zip(&gathered) {
            let t = self.b.ins().imul_imm_s(n, g.stride * size);
            addr = self.b.ins().iadd(addr, t);
        }
        match i32::try_from(konst) {
            Ok(off) => Ok((addr, off)),
            Err(_) => Ok((self.b.ins().iadd_imm_s(addr, konst), 0)),
        }
    }

    /// All guards hold at `pt` (an i8 condition).
    fn guards_hold(&mut self, guards: &[Guard], pt: &Point) -> R<Value> {
        let mut all = self.b.ins().iconst(types::I8, 1);
        for g in guards {
            let ok = if g.hi <= g.lo {
                self.b.ins().iconst(types::I8, 0)
            } else {
                let i = self.affine_value(&g.index, pt)?;
                let rel = self.b.ins().iadd_imm_s(i, -g.lo);
                self.b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, rel, g.hi - g.lo)
            };
            all = self.b.ins().band(all, ok);
        }
        Ok(all)
    }

    /// A load (vector when emitting vector code), yielding `fill` where a
    /// guard fails: the access is branched around, never made.
    pub fn load(&mut self, a: &Access, guards: &[Guard], fill: f64, pt: &Point) -> R<Value> {
        if guards.is_empty() {
            return self.load_raw(a, pt);
        }
        let dtype = self.p.buffer(a.buf).dtype;
        let fill = if self.lane.is_some() {
            let f = self.b.ins().f32const(fill as f32);
            self.splat_f32(f)
        } else {
            self.constant(dtype, fill)
        };
        let ok = self.guards_hold(guards, pt)?;
        let then = self.b.create_block();
        let merge = self.b.create_block();
        let ty = self.ty(fill);
        let out = self.b.append_block_param(merge, ty);
        self.b.ins().brif(ok, then, &[], merge, &[fill.into()]);
        self.b.switch_to_block(then);
        self.b.seal_block(then);
        let v = self.load_raw(a, pt)?;
        self.b.ins().jump(merge, &[v.into()]);
        self.b.switch_to_block(merge);
        self.b.seal_block(merge);
        Ok(out)
    }

    fn load_raw(&mut self, a: &Access, pt: &Point) -> R<Value> {
        let dtype = self.p.buffer(a.buf).dtype;
        let lanes = if self.lane.is_some() {
            crate::plan::LANES
        } else {
            1
        };
        let (addr, off) = self.address(a, pt, lanes)?;
        let mut flags = MemFlagsData::new().with_notrap();
        if a.buf != self.k.store.buf {
            flags = flags.with_readonly();
        }
        Ok(match dtype {
            DType::F32 if lanes > 1 => self.b.ins().load(types::F32X4, flags, addr, off),
            DType::F32 => self.b.ins().load(types::F32, flags, addr, off),
            DType::I64 => self.b.ins().load(types::I64, flags, addr, off),
            DType::I32 => self.b.ins().sload32(flags, addr, off),
            DType::I8 => self.b.ins().sload8(types::I64, flags, addr, off),
            DType::U8 => self.b.ins().uload8(types::I64, flags, addr, off),
            DType::Bool => {
                let byte = self.b.ins().load(types::I8, flags, addr, off);
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, byte, 0);
                self.b.ins().uextend(types::I64, c)
            }
            d => return Err(format!("dtype {d} is not supported by the CPU backend")),
        })
    }

    /// Stores `val` (converted to the buffer's dtype) at the kernel's
    /// store address for `pt`.
    pub fn store(&mut self, val: Value, pt: &Point) -> R<()> {
        let k = self.k;
        let st = &k.store;
        let dtype = self.p.buffer(st.buf).dtype;
        let vector = self.ty(val).is_vector();
        let lanes = if vector { crate::plan::LANES } else { 1 };
        let v = if vector { val } else { self.cast(val, dtype) };
        let v = match dtype {
            DType::I32 => self.b.ins().ireduce(types::I32, v),
            DType::I8 | DType::U8 | DType::Bool => self.b.ins().ireduce(types::I8, v),
            _ => v,
        };
        let (addr, off) = self.address(st, pt, lanes)?;
        self.b
            .ins()
            .store(MemFlagsData::new().with_notrap(), v, addr, off);
        Ok(())
    }
}
