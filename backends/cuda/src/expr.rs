//! Expression code: one kernel-IR expression evaluated at the bound point,
//! following `varc_ir::kernel::eval` (the specification) operation by
//! operation: f32 arithmetic rounds to nearest (`.rn`, never contracted
//! except the explicit fused multiply-add of a sum of products, as the CPU
//! backend does), integers and bools compute in 64 bits and are narrowed
//! when stored, min/max propagate NaN, casts saturate.

use crate::check::{index_range, is_float};
use crate::emit::{Em, R, V, f32_imm};
use varc_ir::DType;
use varc_ir::kernel::eval::round_to;
use varc_ir::kernel::{Access, Affine, BinaryFn, Expr, Guard, ReduceFn, UnaryFn, Var};

impl Em<'_> {
    /// A constant of `dtype`'s register class, in a fresh register.
    pub fn constant(&mut self, dtype: DType, value: f64) -> V {
        if is_float(dtype) {
            let f = self.rf();
            self.ins(format!("mov.f32 {f}, {}", f32_imm(value as f32)));
            V::F(f)
        } else {
            let v = round_to(dtype, value);
            let i = if v.is_nan() { 0 } else { v as i64 };
            let r = self.r64();
            self.ins(format!("mov.u64 {r}, {i}"));
            V::I(r)
        }
    }

    pub fn fconst(&mut self, x: f32) -> String {
        let f = self.rf();
        self.ins(format!("mov.f32 {f}, {}", f32_imm(x)));
        f
    }

    pub fn expr(&mut self, e: &Expr) -> R<V> {
        let bufs = &self.p.buffers;
        match e {
            Expr::Const { value, dtype } => Ok(self.constant(*dtype, *value)),
            Expr::Index(v) => Ok(V::I(self.var(*v)?)),
            Expr::Load {
                access,
                guards,
                fill,
            } => self.load(access, guards, *fill),
            Expr::Unary(f, a) => {
                let x = self.expr(a)?;
                self.unary(*f, x)
            }
            Expr::Binary(BinaryFn::Pow, a, b) if is_float(a.dtype(bufs)) => {
                let x = self.expr(a)?;
                let V::F(x) = x else {
                    return Err("Pow of a non-float".into());
                };
                if let Expr::Const { value, .. } = **b
                    && let Some(r) = self.pow_const(&x, value)
                {
                    return Ok(V::F(r));
                }
                let V::F(y) = self.expr(b)? else {
                    return Err("Pow with a non-float exponent".into());
                };
                Ok(V::F(self.pow(&x, &y)))
            }
            Expr::Binary(f, a, b) => {
                let x = self.expr(a)?;
                let y = self.expr(b)?;
                self.binary(*f, x, y)
            }
            Expr::Select(c, a, b) => {
                let c = self.expr(c)?;
                let p = self.truth(&c);
                let x = self.expr(a)?;
                let y = self.expr(b)?;
                Ok(match (x, y) {
                    (V::F(x), V::F(y)) => {
                        let d = self.rf();
                        self.ins(format!("selp.f32 {d}, {x}, {y}, {p}"));
                        V::F(d)
                    }
                    (V::I(x), V::I(y)) => {
                        let d = self.r64();
                        self.ins(format!("selp.b64 {d}, {x}, {y}, {p}"));
                        V::I(d)
                    }
                    _ => return Err("select mixes float and integer operands".into()),
                })
            }
            Expr::Cast(d, a) => {
                let x = self.expr(a)?;
                Ok(self.cast(x, *d))
            }
            Expr::Reduce { .. } if self.reduce_value.is_some() => {
                Ok(V::F(self.reduce_value.clone().unwrap_or_default()))
            }
            Expr::Reduce { op, vars, body } => self.reduce(*op, vars, body),
        }
    }

    /// A predicate that holds where `v` is nonzero (NaN counts as true, as
    /// `v != 0.0` does).
    pub fn truth(&mut self, v: &V) -> String {
        let p = self.pred();
        match v {
            V::F(f) => self.ins(format!("setp.neu.f32 {p}, {f}, 0f00000000")),
            V::I(r) => self.ins(format!("setp.ne.s64 {p}, {r}, 0")),
        }
        p
    }

    /// A bool value (0/1 in 64 bits) from a predicate.
    pub fn bool_of(&mut self, p: &str) -> V {
        let d = self.r64();
        self.ins(format!("selp.u64 {d}, 1, 0, {p}"));
        V::I(d)
    }

    fn unary(&mut self, f: UnaryFn, x: V) -> R<V> {
        let x = match x {
            V::I(x) => {
                let op = match f {
                    UnaryFn::Neg => "neg.s64",
                    UnaryFn::Abs => "abs.s64",
                    UnaryFn::Floor | UnaryFn::Ceil | UnaryFn::Round => return Ok(V::I(x)),
                    UnaryFn::Not => {
                        let p = self.pred();
                        self.ins(format!("setp.eq.s64 {p}, {x}, 0"));
                        return Ok(self.bool_of(&p));
                    }
                    _ => return Err(format!("{f:?} on an integer is not supported")),
                };
                let d = self.r64();
                self.ins(format!("{op} {d}, {x}"));
                return Ok(V::I(d));
            }
            V::F(x) => x,
        };
        let simple = |em: &mut Self, op: &str| {
            let d = em.rf();
            em.ins(format!("{op} {d}, {x}"));
            d
        };
        Ok(V::F(match f {
            UnaryFn::Neg => simple(self, "neg.f32"),
            UnaryFn::Abs => simple(self, "abs.f32"),
            UnaryFn::Sqrt => simple(self, "sqrt.rn.f32"),
            UnaryFn::Rsqrt => {
                let s = simple(self, "sqrt.rn.f32");
                let d = self.rf();
                self.ins(format!("rcp.rn.f32 {d}, {s}"));
                d
            }
            UnaryFn::Recip => simple(self, "rcp.rn.f32"),
            UnaryFn::Exp => self.exp(&x),
            UnaryFn::Log => self.log(&x),
            UnaryFn::Erf => self.erf(&x),
            UnaryFn::Tanh => self.tanh(&x),
            UnaryFn::Sigmoid => self.sigmoid(&x),
            UnaryFn::Cos => self.sincos(&x, false),
            UnaryFn::Sin => self.sincos(&x, true),
            UnaryFn::Floor => simple(self, "cvt.rmi.f32.f32"),
            UnaryFn::Ceil => simple(self, "cvt.rpi.f32.f32"),
            UnaryFn::Round => simple(self, "cvt.rni.f32.f32"),
            UnaryFn::Not => {
                let p = self.pred();
                self.ins(format!("setp.eq.f32 {p}, {x}, 0f00000000"));
                return Ok(self.bool_of(&p));
            }
        }))
    }

    /// `x^value` for exponents with an exact cheap form.
    fn pow_const(&mut self, x: &str, value: f64) -> Option<String> {
        let d = self.rf();
        match value {
            0.5 => self.ins(format!("sqrt.rn.f32 {d}, {x}")),
            1.0 => self.ins(format!("mov.f32 {d}, {x}")),
            2.0 => self.ins(format!("mul.rn.f32 {d}, {x}, {x}")),
            3.0 => {
                self.ins(format!("mul.rn.f32 {d}, {x}, {x}"));
                self.ins(format!("mul.rn.f32 {d}, {d}, {x}"));
            }
            -1.0 => self.ins(format!("rcp.rn.f32 {d}, {x}")),
            _ => return None,
        }
        Some(d)
    }

    fn binary(&mut self, f: BinaryFn, x: V, y: V) -> R<V> {
        match (x, y) {
            (V::F(x), V::F(y)) => self.float_binary(f, &x, &y),
            (V::I(x), V::I(y)) => self.int_binary(f, &x, &y),
            _ => Err(format!("{f:?} mixes float and integer operands")),
        }
    }

    fn float_binary(&mut self, f: BinaryFn, x: &str, y: &str) -> R<V> {
        let op = match f {
            BinaryFn::Add => "add.rn.f32",
            BinaryFn::Sub => "sub.rn.f32",
            BinaryFn::Mul => "mul.rn.f32",
            BinaryFn::Div => "div.rn.f32",
            BinaryFn::Min => "min.NaN.f32",
            BinaryFn::Max => "max.NaN.f32",
            BinaryFn::Pow => return Ok(V::F(self.pow(x, y))),
            BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le => {
                let cc = match f {
                    BinaryFn::Eq => "eq",
                    BinaryFn::Lt => "lt",
                    _ => "le",
                };
                let p = self.pred();
                self.ins(format!("setp.{cc}.f32 {p}, {x}, {y}"));
                return Ok(self.bool_of(&p));
            }
            BinaryFn::And | BinaryFn::Or | BinaryFn::Xor => {
                // Logical ops on floats yield 0.0 / 1.0 (the operands' dtype).
                let p = self.logic(f, &V::F(x.into()), &V::F(y.into()));
                let d = self.rf();
                self.ins(format!("selp.f32 {d}, 0f3F800000, 0f00000000, {p}"));
                return Ok(V::F(d));
            }
        };
        let d = self.rf();
        self.ins(format!("{op} {d}, {x}, {y}"));
        Ok(V::F(d))
    }

    fn logic(&mut self, f: BinaryFn, x: &V, y: &V) -> String {
        let (px, py) = (self.truth(x), self.truth(y));
        let op = match f {
            BinaryFn::And => "and",
            BinaryFn::Or => "or",
            _ => "xor",
        };
        let p = self.pred();
        self.ins(format!("{op}.pred {p}, {px}, {py}"));
        p
    }

    fn int_binary(&mut self, f: BinaryFn, x: &str, y: &str) -> R<V> {
        let op = match f {
            BinaryFn::Add => "add.s64",
            BinaryFn::Sub => "sub.s64",
            BinaryFn::Mul => "mul.lo.s64",
            BinaryFn::Div => return Ok(V::I(self.int_div(x, y))),
            BinaryFn::Min => "min.s64",
            BinaryFn::Max => "max.s64",
            BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le => {
                let cc = match f {
                    BinaryFn::Eq => "eq",
                    BinaryFn::Lt => "lt",
                    _ => "le",
                };
                let p = self.pred();
                self.ins(format!("setp.{cc}.s64 {p}, {x}, {y}"));
                return Ok(self.bool_of(&p));
            }
            BinaryFn::And | BinaryFn::Or | BinaryFn::Xor => {
                let p = self.logic(f, &V::I(x.into()), &V::I(y.into()));
                return Ok(self.bool_of(&p));
            }
            BinaryFn::Pow => return Err("Pow on integers is not supported".into()),
        };
        let d = self.r64();
        self.ins(format!("{op} {d}, {x}, {y}"));
        Ok(V::I(d))
    }

    /// Truncating division; status 2 on a zero divisor; MIN / -1 saturates
    /// (as the CPU backend does).
    fn int_div(&mut self, x: &str, y: &str) -> String {
        let zero = self.pred();
        self.ins(format!("setp.eq.s64 {zero}, {y}, 0"));
        self.fail_if(&zero, crate::STATUS_DIV_BY_ZERO);
        let minus1 = self.pred();
        self.ins(format!("setp.eq.s64 {minus1}, {y}, -1"));
        let safe_y = self.r64();
        self.ins(format!("selp.b64 {safe_y}, 1, {y}, {minus1}"));
        let q = self.r64();
        self.ins(format!("div.s64 {q}, {x}, {safe_y}"));
        let is_min = self.pred();
        self.ins(format!("setp.eq.s64 {is_min}, {x}, {}", i64::MIN));
        let neg = self.r64();
        self.ins(format!("neg.s64 {neg}, {x}"));
        let negated = self.r64();
        self.ins(format!("selp.b64 {negated}, {}, {neg}, {is_min}", i64::MAX));
        let d = self.r64();
        self.ins(format!("selp.b64 {d}, {negated}, {q}, {minus1}"));
        d
    }

    /// ONNX Cast semantics (`round_to`): float→int truncates and
    /// saturates (NaN → 0), ints wrap to the target width, →bool is `!= 0`.
    pub fn cast(&mut self, x: V, to: DType) -> V {
        match (x, to) {
            (V::F(f), DType::F32) => V::F(f),
            (V::I(r), DType::F32) => {
                let d = self.rf();
                self.ins(format!("cvt.rn.f32.s64 {d}, {r}"));
                V::F(d)
            }
            (x, DType::Bool) => {
                let p = self.truth(&x);
                self.bool_of(&p)
            }
            (V::F(f), _) => {
                let i = self.r64();
                self.ins(format!("cvt.rzi.s64.f32 {i}, {f}"));
                self.narrow(&i, to)
            }
            (V::I(r), _) => self.narrow(&r, to),
        }
    }

    /// Wraps a 64-bit integer to `to`'s width and extends it back.
    fn narrow(&mut self, x: &str, to: DType) -> V {
        let shift = match to {
            DType::I32 => 32,
            DType::I8 => 56,
            DType::U8 => {
                let d = self.r64();
                self.ins(format!("and.b64 {d}, {x}, 255"));
                return V::I(d);
            }
            _ => return V::I(x.to_string()),
        };
        let t = self.r64();
        self.ins(format!("shl.b64 {t}, {x}, {shift}"));
        let d = self.r64();
        self.ins(format!("shr.s64 {d}, {t}, {shift}"));
        V::I(d)
    }

    fn reduce(&mut self, op: ReduceFn, vars: &[(usize, usize)], body: &Expr) -> R<V> {
        let dtype = body.dtype(&self.p.buffers);
        let acc = if is_float(dtype) {
            V::F(self.fconst(op.identity() as f32))
        } else {
            let i = op.int_identity(dtype);
            let r = self.r64();
            self.ins(format!("mov.u64 {r}, {i}"));
            V::I(r)
        };
        if vars.iter().any(|&(_, n)| n == 0) {
            return Ok(acc);
        }
        self.reduce_loops(op, vars, body, &acc)?;
        Ok(acc)
    }

    /// One counted loop per reduction variable, innermost last; the
    /// accumulator register is updated in place.
    fn reduce_loops(
        &mut self,
        op: ReduceFn,
        vars: &[(usize, usize)],
        body: &Expr,
        acc: &V,
    ) -> R<()> {
        let Some(&(id, extent)) = vars.first() else {
            return self.accumulate(op, body, acc);
        };
        let v = Var::Red(id);
        let r = self.r64();
        self.ins(format!("mov.u64 {r}, 0"));
        let top = self.label();
        self.put_label(&top);
        self.vars.push((v, r.clone()));
        self.extents.push((v, extent));
        let res = self.reduce_loops(op, &vars[1..], body, acc);
        self.vars.pop();
        self.extents.pop();
        res?;
        self.ins(format!("add.s64 {r}, {r}, 1"));
        let p = self.pred();
        self.ins(format!("setp.lt.s64 {p}, {r}, {extent}"));
        self.ins(format!("@{p} bra {top}"));
        Ok(())
    }

    pub fn accumulate(&mut self, op: ReduceFn, body: &Expr, acc: &V) -> R<()> {
        match acc {
            V::F(a) => {
                // acc + a·b as one fused multiply-add (as the CPU backend).
                if let (ReduceFn::Sum, Expr::Binary(BinaryFn::Mul, x, y)) = (op, body)
                    && is_float(x.dtype(&self.p.buffers))
                {
                    let (V::F(x), V::F(y)) = (self.expr(x)?, self.expr(y)?) else {
                        return Err("float product of non-float operands".into());
                    };
                    self.ins(format!("fma.rn.f32 {a}, {x}, {y}, {a}"));
                    return Ok(());
                }
                let V::F(x) = self.expr(body)? else {
                    return Err("float reduction of a non-float body".into());
                };
                let ins = match op {
                    ReduceFn::Sum => "add.rn.f32",
                    ReduceFn::Prod => "mul.rn.f32",
                    ReduceFn::Max => "max.NaN.f32",
                    ReduceFn::Min => "min.NaN.f32",
                };
                self.ins(format!("{ins} {a}, {a}, {x}"));
            }
            V::I(a) => {
                let V::I(x) = self.expr(body)? else {
                    return Err("integer reduction of a non-integer body".into());
                };
                let ins = match op {
                    ReduceFn::Sum => "add.s64",
                    ReduceFn::Prod => "mul.lo.s64",
                    ReduceFn::Max => "max.s64",
                    ReduceFn::Min => "min.s64",
                };
                self.ins(format!("{ins} {a}, {a}, {x}"));
            }
        }
        Ok(())
    }

    // ---- memory ----

    /// `offset + Σ c·var` in a fresh .b64 register.
    fn affine(&mut self, a: &Affine) -> R<String> {
        let d = self.r64();
        self.ins(format!("mov.u64 {d}, {}", a.offset));
        for &(v, c) in &a.terms {
            if c == 0 {
                continue;
            }
            let r = self.var(v)?;
            match c {
                1 => self.ins(format!("add.s64 {d}, {d}, {r}")),
                -1 => self.ins(format!("sub.s64 {d}, {d}, {r}")),
                _ => self.ins(format!("mad.lo.s64 {d}, {r}, {c}, {d}")),
            }
        }
        Ok(d)
    }

    /// The byte address of `a` after its gather and bounds checks. With
    /// `guard`, the bounds check only fails where the guard holds (the
    /// address is computed everywhere, used only there).
    fn address(&mut self, a: &Access, guard: Option<&str>) -> R<String> {
        let buf = self.p.buffer(a.buf);
        let (size, len) = (buf.dtype.size() as i64, buf.len() as i128);
        let idx = self.affine(&a.index)?;
        for g in &a.gathers {
            let raw = match self.expr(&g.index)? {
                V::I(r) => r,
                V::F(f) => {
                    let r = self.r64();
                    self.ins(format!("cvt.rzi.s64.f32 {r}, {f}"));
                    r
                }
            };
            let dim = g.dim as i64;
            let (neg, wrapped, n) = (self.pred(), self.r64(), self.r64());
            self.ins(format!("setp.lt.s64 {neg}, {raw}, 0"));
            self.ins(format!("add.s64 {wrapped}, {raw}, {dim}"));
            self.ins(format!("selp.b64 {n}, {wrapped}, {raw}, {neg}"));
            let bad = self.pred();
            self.ins(format!("setp.ge.u64 {bad}, {n}, {dim}"));
            self.fail_if(&bad, crate::STATUS_GATHER_OUT_OF_RANGE);
            self.ins(format!("mad.lo.s64 {idx}, {n}, {}, {idx}", g.stride));
        }
        let proven = match index_range(&a.index, &a.gathers, &self.extents) {
            Some((lo, hi)) => lo >= 0 && hi < len,
            None => true,
        };
        if !proven {
            let bad = self.pred();
            if len == 0 {
                self.const_pred(&bad, true);
            } else {
                self.ins(format!("setp.gt.u64 {bad}, {idx}, {}", len - 1));
            }
            if let Some(g) = guard {
                self.ins(format!("and.pred {bad}, {bad}, {g}"));
            }
            self.fail_if(&bad, crate::STATUS_OUT_OF_BOUNDS);
        }
        let base = self.base(a.buf.0);
        let addr = self.r64();
        self.ins(format!("mad.lo.s64 {addr}, {idx}, {size}, {base}"));
        Ok(addr)
    }

    /// Sets predicate `p` to a constant.
    fn const_pred(&mut self, p: &str, value: bool) {
        let z = self.r32();
        self.ins(format!("mov.u32 {z}, 0"));
        let cc = if value { "eq" } else { "ne" };
        self.ins(format!("setp.{cc}.u32 {p}, {z}, 0"));
    }

    /// A predicate that holds where every guard holds.
    fn guards_hold(&mut self, guards: &[Guard]) -> R<String> {
        let all = self.pred();
        self.const_pred(&all, true);
        for g in guards {
            let ok = self.pred();
            if g.hi <= g.lo {
                self.const_pred(&ok, false);
            } else {
                let i = self.affine(&g.index)?;
                let rel = self.r64();
                self.ins(format!("sub.s64 {rel}, {i}, {}", g.lo));
                self.ins(format!("setp.lt.u64 {ok}, {rel}, {}", g.hi - g.lo));
            }
            self.ins(format!("and.pred {all}, {all}, {ok}"));
        }
        Ok(all)
    }

    /// A load of the buffer's dtype, yielding `fill` where a guard fails.
    /// Without gathers the load is predicated; with gathers (whose index
    /// checks must not fire where a guard fails) it is branched around.
    fn load(&mut self, a: &Access, guards: &[Guard], fill: f64) -> R<V> {
        let dtype = self.p.buffer(a.buf).dtype;
        if guards.is_empty() {
            let addr = self.address(a, None)?;
            let dst = self.fresh(dtype);
            self.load_into(&dst, a, &addr, None);
            return Ok(dst);
        }
        let dst = self.constant(dtype, fill);
        let ok = self.guards_hold(guards)?;
        if a.gathers.is_empty() {
            let addr = self.address(a, Some(&ok))?;
            self.load_into(&dst, a, &addr, Some(&ok));
        } else {
            let skip = self.label();
            self.ins(format!("@!{ok} bra {skip}"));
            let addr = self.address(a, None)?;
            self.load_into(&dst, a, &addr, None);
            self.put_label(&skip);
        }
        Ok(dst)
    }

    fn fresh(&mut self, dtype: DType) -> V {
        if is_float(dtype) {
            V::F(self.rf())
        } else {
            V::I(self.r64())
        }
    }

    /// Loads the element at `addr` into `dst` (every instruction under
    /// `pred` when given). Buffers other than the one the kernel stores to
    /// are read-only for the kernel's lifetime: those use the
    /// non-coherent (read-only cache) path.
    fn load_into(&mut self, dst: &V, a: &Access, addr: &str, pred: Option<&str>) {
        let dtype = self.p.buffer(a.buf).dtype;
        let ld = if a.buf == self.k.store.buf {
            "ld.global"
        } else {
            "ld.global.nc"
        };
        let at = pred.map(|p| format!("@{p} ")).unwrap_or_default();
        let d = dst.reg();
        match dtype {
            DType::F32 => self.ins(format!("{at}{ld}.f32 {d}, [{addr}]")),
            DType::I64 => self.ins(format!("{at}{ld}.u64 {d}, [{addr}]")),
            DType::I32 => {
                let t = self.r32();
                self.ins(format!("{at}{ld}.u32 {t}, [{addr}]"));
                self.ins(format!("{at}cvt.s64.s32 {d}, {t}"));
            }
            DType::I8 => {
                let t = self.r16();
                self.ins(format!("{at}{ld}.s8 {t}, [{addr}]"));
                self.ins(format!("{at}cvt.s64.s16 {d}, {t}"));
            }
            DType::U8 => {
                let t = self.r16();
                self.ins(format!("{at}{ld}.u8 {t}, [{addr}]"));
                self.ins(format!("{at}cvt.u64.u16 {d}, {t}"));
            }
            DType::Bool => {
                let t = self.r16();
                self.ins(format!("{at}{ld}.u8 {t}, [{addr}]"));
                let p = self.pred();
                self.ins(format!("{at}setp.ne.u16 {p}, {t}, 0"));
                self.ins(format!("{at}selp.u64 {d}, 1, 0, {p}"));
            }
            d => unreachable!("dtype {d} passed validation"),
        }
    }

    /// Stores `v` (converted to the buffer's dtype) at the kernel's store
    /// address.
    pub fn store(&mut self, v: V) -> R<()> {
        let st = &self.k.store;
        let dtype = self.p.buffer(st.buf).dtype;
        let v = self.cast(v, dtype);
        let addr = self.address(st, None)?;
        let r = v.reg().to_string();
        match dtype {
            DType::F32 => self.ins(format!("st.global.f32 [{addr}], {r}")),
            DType::I64 => self.ins(format!("st.global.u64 [{addr}], {r}")),
            DType::I32 => {
                let t = self.r32();
                self.ins(format!("cvt.u32.u64 {t}, {r}"));
                self.ins(format!("st.global.u32 [{addr}], {t}"));
            }
            DType::I8 | DType::U8 | DType::Bool => {
                let t = self.r16();
                self.ins(format!("cvt.u16.u64 {t}, {r}"));
                self.ins(format!("st.global.u8 [{addr}], {t}"));
            }
            d => return Err(format!("dtype {d} is not supported by the CUDA backend")),
        }
        Ok(())
    }
}
