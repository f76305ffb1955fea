//! Expression code: one kernel-IR expression evaluated at a set of points
//! (one point in scalar code; a register block of points in blocked code),
//! each point either a scalar or an f32x4 vector of consecutive points of
//! the vectorised axis.
//!
//! Register classes: f32 values live in `f32` (vector: `f32x4`); every
//! integer dtype and bool lives in `i64` (bool as 0/1), narrowed only when
//! stored; vector bools are `i32x4` lane masks. In vector code, a
//! sub-expression that does not depend on the vectorised axis is computed
//! once as a scalar and splatted.

use crate::check::is_float;
use crate::math::{Fx, Imports, Libm};
use crate::plan::{LANES, VClass, depends_on};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Block, FuncRef, InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;
use varc_ir::DType;
use varc_ir::kernel::{BinaryFn, Expr, Kernel, Program, ReduceFn, UnaryFn, Var};

pub(crate) type R<T> = Result<T, String>;

/// Loop variable bindings of one point: `var = value + delta`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Point {
    pub vars: Vec<(Var, Value, i64)>,
}

impl Point {
    pub fn get(&self, v: Var) -> R<(Value, i64)> {
        self.vars
            .iter()
            .rev()
            .find(|b| b.0 == v)
            .map(|b| (b.1, b.2))
            .ok_or_else(|| format!("loop variable {v:?} is not bound"))
    }

    pub fn with(&self, v: Var, val: Value, delta: i64) -> Point {
        let mut p = self.clone();
        p.vars.push((v, val, delta));
        p
    }
}

/// The code emitter for one kernel.
pub(crate) struct Em<'a, 'f> {
    pub b: FunctionBuilder<'f>,
    pub p: &'a Program,
    pub k: &'a Kernel,
    /// Base address of each buffer the kernel touches.
    pub bases: HashMap<usize, Value>,
    /// Block taking an i32 status and returning it.
    pub fail: Block,
    pub fma: bool,
    pub imports: &'a Imports,
    pub funcs: HashMap<Libm, FuncRef>,
    /// Extents of the loop variables in scope (domain, then reductions).
    pub extents: Vec<(Var, usize)>,
    /// The vectorised axis while emitting vector code.
    pub lane: Option<Var>,
    /// The split axis and its run-time range `lo..hi` (already clamped to
    /// the axis' extent), when the kernel runs a share of its points.
    pub split: Option<(usize, Value, Value)>,
}

impl<'f> Em<'_, 'f> {
    pub fn ty(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    pub fn fx(&mut self, ty: Type) -> Fx<'_, 'f> {
        let fma = self.fma;
        Fx {
            b: &mut self.b,
            ty,
            fma,
        }
    }

    /// A scalar constant of `dtype`'s register class.
    pub fn constant(&mut self, dtype: DType, value: f64) -> Value {
        if is_float(dtype) {
            self.b.ins().f32const(value as f32)
        } else {
            let v = varc_ir::kernel::eval::round_to(dtype, value);
            let i = if v.is_nan() { 0 } else { v as i64 };
            self.b.ins().iconst(types::I64, i)
        }
    }

    /// Evaluates `e` at every point of `pts`.
    pub fn expr(&mut self, e: &Expr, pts: &[Point]) -> R<Vec<Value>> {
        if let Some(v) = self.lane
            && !depends_on(e, v)
        {
            self.lane = None;
            let vals = self.expr(e, pts);
            self.lane = Some(v);
            return Ok(vals?.into_iter().map(|x| self.splat_f32(x)).collect());
        }
        let bufs = &self.p.buffers;
        match e {
            Expr::Const { value, dtype } => {
                let c = self.constant(*dtype, *value);
                Ok(vec![c; pts.len()])
            }
            Expr::Index(v) => pts
                .iter()
                .map(|pt| {
                    let (val, d) = pt.get(*v)?;
                    Ok(if d == 0 {
                        val
                    } else {
                        self.b.ins().iadd_imm_s(val, d)
                    })
                })
                .collect(),
            Expr::Load {
                access,
                guards,
                fill,
            } => pts
                .iter()
                .map(|pt| self.load(access, guards, *fill, pt))
                .collect(),
            Expr::Unary(f, a) => {
                let xs = self.expr(a, pts)?;
                xs.into_iter().map(|x| self.unary(*f, x)).collect()
            }
            Expr::Binary(BinaryFn::Pow, a, b) if is_float(a.dtype(bufs)) => {
                let xs = self.expr(a, pts)?;
                if let Expr::Const { value, .. } = **b
                    && let Some(r) = self.pow_const(&xs, value)
                {
                    return Ok(r);
                }
                let ys = self.expr(b, pts)?;
                Ok(xs
                    .into_iter()
                    .zip(ys)
                    .map(|(x, y)| self.call_lanes(Libm::Powf, &[x, y]))
                    .collect())
            }
            Expr::Binary(f, a, b) => {
                let xs = self.expr(a, pts)?;
                let ys = self.expr(b, pts)?;
                xs.into_iter()
                    .zip(ys)
                    .map(|(x, y)| self.binary(*f, x, y))
                    .collect()
            }
            Expr::Select(c, a, b) => {
                let cs = self.expr(c, pts)?;
                let xs = self.expr(a, pts)?;
                let ys = self.expr(b, pts)?;
                Ok((0..pts.len())
                    .map(|i| self.select(cs[i], xs[i], ys[i]))
                    .collect())
            }
            Expr::Cast(d, a) => {
                let xs = self.expr(a, pts)?;
                Ok(xs.into_iter().map(|x| self.cast(x, *d)).collect())
            }
            Expr::Reduce { op, vars, body } => self.reduce(*op, vars, body, pts),
        }
    }

    fn unary(&mut self, f: UnaryFn, x: Value) -> R<Value> {
        let ty = self.ty(x);
        if ty == types::I32X4 {
            // A lane mask: only Not applies.
            return match f {
                UnaryFn::Not => Ok(self.b.ins().bnot(x)),
                _ => Err(format!("{f:?} on a bool vector")),
            };
        }
        if ty == types::I64 {
            return Ok(match f {
                UnaryFn::Neg => self.b.ins().ineg(x),
                UnaryFn::Abs => self.b.ins().iabs(x),
                UnaryFn::Floor | UnaryFn::Ceil | UnaryFn::Round => x,
                UnaryFn::Not => {
                    let c = self.b.ins().icmp_imm_s(IntCC::Equal, x, 0);
                    self.b.ins().uextend(types::I64, c)
                }
                _ => return Err(format!("{f:?} on an integer is not supported")),
            });
        }
        Ok(match f {
            UnaryFn::Neg => self.b.ins().fneg(x),
            UnaryFn::Abs => self.b.ins().fabs(x),
            UnaryFn::Sqrt => self.b.ins().sqrt(x),
            UnaryFn::Rsqrt => {
                let s = self.b.ins().sqrt(x);
                let one = self.fx(ty).c(1.0);
                self.b.ins().fdiv(one, s)
            }
            UnaryFn::Recip => {
                let one = self.fx(ty).c(1.0);
                self.b.ins().fdiv(one, x)
            }
            UnaryFn::Exp => self.fx(ty).exp(x),
            UnaryFn::Log => self.fx(ty).log(x),
            UnaryFn::Erf => self.fx(ty).erf(x),
            UnaryFn::Tanh => self.fx(ty).tanh(x),
            UnaryFn::Sigmoid => self.fx(ty).sigmoid(x),
            UnaryFn::Cos => self.call_lanes(Libm::Cosf, &[x]),
            UnaryFn::Sin => self.call_lanes(Libm::Sinf, &[x]),
            UnaryFn::Floor => self.b.ins().floor(x),
            UnaryFn::Ceil => self.b.ins().ceil(x),
            UnaryFn::Round => self.b.ins().nearest(x),
            UnaryFn::Not => {
                let zero = self.fx(ty).c(0.0);
                let c = self.b.ins().fcmp(FloatCC::Equal, x, zero);
                self.bool_result(c)
            }
        })
    }

    /// A comparison result (i8 scalar or i32x4 mask) as a bool value.
    fn bool_result(&mut self, c: Value) -> Value {
        if self.ty(c).is_vector() {
            c
        } else {
            self.b.ins().uextend(types::I64, c)
        }
    }

    /// `x^value` for exponents with an exact cheap form.
    fn pow_const(&mut self, xs: &[Value], value: f64) -> Option<Vec<Value>> {
        if ![0.5, 1.0, 2.0, 3.0, -1.0].contains(&value) {
            return None;
        }
        Some(
            xs.iter()
                .map(|&x| {
                    let ty = self.ty(x);
                    match value {
                        0.5 => self.b.ins().sqrt(x),
                        1.0 => x,
                        2.0 => self.b.ins().fmul(x, x),
                        3.0 => {
                            let s = self.b.ins().fmul(x, x);
                            self.b.ins().fmul(s, x)
                        }
                        _ => {
                            let one = self.fx(ty).c(1.0);
                            self.b.ins().fdiv(one, x)
                        }
                    }
                })
                .collect(),
        )
    }

    fn binary(&mut self, f: BinaryFn, x: Value, y: Value) -> R<Value> {
        let (tx, ty) = (self.ty(x), self.ty(y));
        if tx == types::I32X4 || ty == types::I32X4 {
            let (x, y) = (self.mask(x), self.mask(y));
            return Ok(match f {
                BinaryFn::And => self.b.ins().band(x, y),
                BinaryFn::Or => self.b.ins().bor(x, y),
                BinaryFn::Xor => self.b.ins().bxor(x, y),
                _ => return Err(format!("{f:?} on bool vectors")),
            });
        }
        if tx == types::I64 {
            return self.int_binary(f, x, y);
        }
        Ok(match f {
            BinaryFn::Add => self.b.ins().fadd(x, y),
            BinaryFn::Sub => self.b.ins().fsub(x, y),
            BinaryFn::Mul => self.b.ins().fmul(x, y),
            BinaryFn::Div => self.b.ins().fdiv(x, y),
            BinaryFn::Pow => self.call_lanes(Libm::Powf, &[x, y]),
            BinaryFn::Min => self.b.ins().fmin(x, y),
            BinaryFn::Max => self.b.ins().fmax(x, y),
            BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le => {
                let cc = match f {
                    BinaryFn::Eq => FloatCC::Equal,
                    BinaryFn::Lt => FloatCC::LessThan,
                    _ => FloatCC::LessThanOrEqual,
                };
                let c = self.b.ins().fcmp(cc, x, y);
                self.bool_result(c)
            }
            BinaryFn::And | BinaryFn::Or | BinaryFn::Xor => {
                // Logical ops on floats yield 0.0 / 1.0 (the operands' dtype).
                let (bx, by) = (self.truth(x), self.truth(y));
                let r = self.logic(f, bx, by);
                self.cast(r, DType::F32)
            }
        })
    }

    fn logic(&mut self, f: BinaryFn, x: Value, y: Value) -> Value {
        match f {
            BinaryFn::And => self.b.ins().band(x, y),
            BinaryFn::Or => self.b.ins().bor(x, y),
            _ => self.b.ins().bxor(x, y),
        }
    }

    fn int_binary(&mut self, f: BinaryFn, x: Value, y: Value) -> R<Value> {
        let cmp = |em: &mut Self, cc| {
            let c = em.b.ins().icmp(cc, x, y);
            em.b.ins().uextend(types::I64, c)
        };
        Ok(match f {
            BinaryFn::Add => self.b.ins().iadd(x, y),
            BinaryFn::Sub => self.b.ins().isub(x, y),
            BinaryFn::Mul => self.b.ins().imul(x, y),
            BinaryFn::Div => self.int_div(x, y),
            BinaryFn::Min => self.b.ins().smin(x, y),
            BinaryFn::Max => self.b.ins().smax(x, y),
            BinaryFn::Eq => cmp(self, IntCC::Equal),
            BinaryFn::Lt => cmp(self, IntCC::SignedLessThan),
            BinaryFn::Le => cmp(self, IntCC::SignedLessThanOrEqual),
            BinaryFn::And | BinaryFn::Or | BinaryFn::Xor => {
                let (bx, by) = (self.truth(x), self.truth(y));
                self.logic(f, bx, by)
            }
            BinaryFn::Pow => return Err("Pow on integers is not supported".into()),
        })
    }

    /// Truncating division; status 2 on a zero divisor; MIN / -1 saturates.
    fn int_div(&mut self, x: Value, y: Value) -> Value {
        self.check(IntCC::NotEqual, y, 0, crate::STATUS_DIV_BY_ZERO);
        let minus1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let one = self.b.ins().iconst(types::I64, 1);
        let safe_y = self.b.ins().select(minus1, one, y);
        let q = self.b.ins().sdiv(x, safe_y);
        let is_min = self.b.ins().icmp_imm_s(IntCC::Equal, x, i64::MIN);
        let max = self.b.ins().iconst(types::I64, i64::MAX);
        let neg = self.b.ins().ineg(x);
        let negated = self.b.ins().select(is_min, max, neg);
        self.b.ins().select(minus1, negated, q)
    }

    /// Continues only when `x cc imm`; otherwise returns `status`.
    pub fn check(&mut self, cc: IntCC, x: Value, imm: i64, status: i32) {
        let ok = self.b.ins().icmp_imm_s(cc, x, imm);
        self.branch_or_fail(ok, status);
    }

    pub fn branch_or_fail(&mut self, ok: Value, status: i32) {
        let cont = self.b.create_block();
        let code = self.b.ins().iconst(types::I32, status as i64);
        self.b.ins().brif(ok, cont, &[], self.fail, &[code.into()]);
        self.b.switch_to_block(cont);
        self.b.seal_block(cont);
    }

    /// A value as 0/1 (scalar i64) or as a lane mask.
    fn truth(&mut self, x: Value) -> Value {
        match self.ty(x) {
            types::I64 => {
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                self.b.ins().uextend(types::I64, c)
            }
            types::I32X4 => x,
            ty => {
                let zero = self.fx(ty).c(0.0);
                let c = self.b.ins().fcmp(FloatCC::NotEqual, x, zero);
                self.bool_result(c)
            }
        }
    }

    fn select(&mut self, c: Value, a: Value, b: Value) -> Value {
        let (ta, tb) = (self.ty(a), self.ty(b));
        let (a, b) = if ta == types::I32X4 || tb == types::I32X4 {
            (self.mask(a), self.mask(b))
        } else {
            (a, b)
        };
        let c = self.truth(c);
        if self.ty(c) == types::I32X4 {
            let t = self.ty(a);
            let m = if t == types::I32X4 {
                c
            } else {
                self.b.ins().bitcast(t, crate::vector::vflags(), c)
            };
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(c, a, b)
        }
    }

    /// Converts a value to `to` with ONNX Cast semantics (`round_to`).
    pub fn cast(&mut self, x: Value, to: DType) -> Value {
        let ty = self.ty(x);
        if ty.is_vector() {
            return match (ty == types::I32X4, to) {
                (false, DType::F32) | (true, DType::Bool) => x,
                (false, _) => self.truth(x),
                (true, _) => {
                    let one = self.fx(types::F32X4).c(1.0);
                    let m = self
                        .b
                        .ins()
                        .bitcast(types::F32X4, crate::vector::vflags(), x);
                    self.b.ins().band(m, one)
                }
            };
        }
        match (ty == types::F32, to) {
            (true, DType::F32) => x,
            (false, DType::F32) => self.b.ins().fcvt_from_sint(types::F32, x),
            (_, DType::Bool) => self.truth(x),
            (true, _) => {
                let i = self.b.ins().fcvt_to_sint_sat(types::I64, x);
                self.narrow(i, to)
            }
            (false, _) => self.narrow(x, to),
        }
    }

    /// Wraps an i64 to `to`'s width and extends it back (Rust `as`).
    fn narrow(&mut self, x: Value, to: DType) -> Value {
        match to {
            DType::I32 => {
                let n = self.b.ins().ireduce(types::I32, x);
                self.b.ins().sextend(types::I64, n)
            }
            DType::I8 => {
                let n = self.b.ins().ireduce(types::I8, x);
                self.b.ins().sextend(types::I64, n)
            }
            DType::U8 => {
                let n = self.b.ins().ireduce(types::I8, x);
                self.b.ins().uextend(types::I64, n)
            }
            _ => x,
        }
    }

    fn reduce(
        &mut self,
        op: ReduceFn,
        vars: &[(usize, usize)],
        body: &Expr,
        pts: &[Point],
    ) -> R<Vec<Value>> {
        let body_dtype = body.dtype(&self.p.buffers);
        let float = is_float(body_dtype);
        let vector = self.lane.is_some();
        if let (false, true, [(id, extent)]) = (vector, float, vars)
            && *extent >= 2 * LANES
            && matches!(op, ReduceFn::Sum | ReduceFn::Max | ReduceFn::Min)
            && crate::plan::vclass(self.p, body, Var::Red(*id)) == Some(VClass::Vec)
        {
            return pts
                .iter()
                .map(|pt| self.reduce_lanes(op, (*id, *extent), body, pt))
                .collect();
        }
        let ty = match (float, vector) {
            (true, true) => types::F32X4,
            (true, false) => types::F32,
            (false, false) => types::I64,
            (false, true) => return Err("integer reduction in vector code".into()),
        };
        let init = if float {
            let c = self.b.ins().f32const(op.identity() as f32);
            self.splat_f32(c)
        } else {
            let i = op.int_identity(body_dtype);
            self.b.ins().iconst(types::I64, i)
        };
        let accs: Vec<_> = pts
            .iter()
            .map(|_| {
                let v = self.b.declare_var(ty);
                self.b.def_var(v, init);
                v
            })
            .collect();
        self.reduce_loops(op, vars, body, pts, &accs)?;
        Ok(accs.iter().map(|&v| self.b.use_var(v)).collect())
    }

    /// A scalar f32 reduction whose body vectorises along its (only)
    /// reduction variable: two f32x4 accumulators over blocks of 8, one
    /// over a last block of 4, combined lane by lane, then a scalar tail.
    fn reduce_lanes(
        &mut self,
        op: ReduceFn,
        (id, extent): (usize, usize),
        body: &Expr,
        pt: &Point,
    ) -> R<Value> {
        let v = Var::Red(id);
        let lanes = LANES as i64;
        let n = extent as i64;
        let c = self.b.ins().f32const(op.identity() as f32);
        let init = self.b.ins().splat(types::F32X4, c);
        let accs: Vec<_> = (0..2)
            .map(|_| {
                let a = self.b.declare_var(types::F32X4);
                self.b.def_var(a, init);
                a
            })
            .collect();
        self.extents.push((v, extent));
        self.lane = Some(v);
        let main = n - n % (2 * lanes);
        let vec_end = n - n % lanes;
        let r = self
            .for_range(0, main, 2 * lanes, |em, iv| {
                let pts = [pt.with(v, iv, 0), pt.with(v, iv, lanes)];
                em.accumulate(op, body, &pts, &accs)
            })
            .and_then(|_| {
                self.for_range(main, vec_end, lanes, |em, iv| {
                    em.accumulate(op, body, &[pt.with(v, iv, 0)], &accs[..1])
                })
            });
        self.lane = None;
        let combine = |em: &mut Self, a: Value, b: Value| match op {
            ReduceFn::Sum => em.b.ins().fadd(a, b),
            ReduceFn::Max => em.b.ins().fmax(a, b),
            _ => em.b.ins().fmin(a, b),
        };
        let r = r.and_then(|_| {
            let (a0, a1) = (self.b.use_var(accs[0]), self.b.use_var(accs[1]));
            let both = combine(self, a0, a1);
            let mut x = self.b.ins().extractlane(both, 0);
            for lane in 1..LANES as u8 {
                let l = self.b.ins().extractlane(both, lane);
                x = combine(self, x, l);
            }
            let acc = self.b.declare_var(types::F32);
            self.b.def_var(acc, x);
            self.for_range(vec_end, n, 1, |em, iv| {
                em.accumulate(op, body, &[pt.with(v, iv, 0)], &[acc])
            })?;
            Ok(self.b.use_var(acc))
        });
        self.extents.pop();
        r
    }

    fn reduce_loops(
        &mut self,
        op: ReduceFn,
        vars: &[(usize, usize)],
        body: &Expr,
        pts: &[Point],
        accs: &[cranelift_frontend::Variable],
    ) -> R<()> {
        let Some(&(id, extent)) = vars.first() else {
            return self.accumulate(op, body, pts, accs);
        };
        let v = Var::Red(id);
        self.extents.push((v, extent));
        let r = self.for_range(0, extent as i64, 1, |em, iv| {
            let inner: Vec<Point> = pts.iter().map(|p| p.with(v, iv, 0)).collect();
            em.reduce_loops(op, &vars[1..], body, &inner, accs)
        });
        self.extents.pop();
        r
    }

    fn accumulate(
        &mut self,
        op: ReduceFn,
        body: &Expr,
        pts: &[Point],
        accs: &[cranelift_frontend::Variable],
    ) -> R<()> {
        let float = is_float(body.dtype(&self.p.buffers));
        // acc + a·b as one fused multiply-add.
        if let (ReduceFn::Sum, true, true, Expr::Binary(BinaryFn::Mul, a, b)) =
            (op, float, self.fma, body)
        {
            let xs = self.expr(a, pts)?;
            let ys = self.expr(b, pts)?;
            for (i, &acc) in accs.iter().enumerate() {
                let a = self.b.use_var(acc);
                let r = self.b.ins().fma(xs[i], ys[i], a);
                self.b.def_var(acc, r);
            }
            return Ok(());
        }
        let xs = self.expr(body, pts)?;
        for (i, &acc) in accs.iter().enumerate() {
            let a = self.b.use_var(acc);
            let x = xs[i];
            let ins = self.b.ins();
            let r = match (op, float) {
                (ReduceFn::Sum, true) => ins.fadd(a, x),
                (ReduceFn::Prod, true) => ins.fmul(a, x),
                (ReduceFn::Max, true) => ins.fmax(a, x),
                (ReduceFn::Min, true) => ins.fmin(a, x),
                (ReduceFn::Sum, false) => ins.iadd(a, x),
                (ReduceFn::Prod, false) => ins.imul(a, x),
                (ReduceFn::Max, false) => ins.smax(a, x),
                (ReduceFn::Min, false) => ins.smin(a, x),
            };
            self.b.def_var(acc, r);
        }
        Ok(())
    }
}
