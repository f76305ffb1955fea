//! Library routines a kernel can be tagged with (see
//! [`Kernel::library`](super::Kernel::library)).
//!
//! A tag describes, in plain sizes and element strides, the routine the
//! kernel's loop nest computes, so that a backend can call a hand-written
//! microkernel instead of compiling the nest. The nest stays the
//! specification: [`eval`](super::eval) and backends without the routine
//! ignore the tag. Because a backend trusts the tag's addresses,
//! [`check`] proves every element a call touches lies inside its buffer and
//! that the call reads and writes what the loop nest does.

use super::analysis::injective;
use super::{Affine, BufId, Kernel, Program, Var};
use crate::dtype::DType;

mod conv;
pub use conv::ConvCall;

/// A routine a kernel's loop nest computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Library {
    Attention(AttentionCall),
    Conv(ConvCall),
}

impl Library {
    /// Every operand's buffer id, for passes that renumber buffers.
    pub fn buffers_mut(&mut self) -> Vec<&mut BufId> {
        match self {
            Library::Attention(a) => {
                let mut v = vec![&mut a.q.buf, &mut a.k.buf, &mut a.v.buf, &mut a.out.buf];
                if let Some(b) = &mut a.bias {
                    v.push(&mut b.buf);
                }
                v
            }
            Library::Conv(c) => vec![&mut c.x.buf, &mut c.w.buf, &mut c.out.buf],
        }
    }
}

/// A 4-D f32 operand: element `[a, b, c, d]` lives at
/// `offset + Σ strides[x]·index[x]` of buffer `buf` (strides may be 0 for
/// broadcast axes, or negative).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operand4 {
    pub buf: BufId,
    pub offset: i64,
    pub strides: [i64; 4],
}

/// Scaled dot-product attention, f32 throughout:
///
/// `s[b, h, i, j] = f32(scale)·Σ_e Q[b, h, i, e]·K[b, h/g, j, e] + bias[b, h, i, j]`,
/// `−∞` where `causal_offset = Some(o)` and `j > i + o`;
/// `out[b, h, i, c] = Σ_j exp(s_ij − m_i)·V[b, h/g, j, c] / Σ_j exp(s_ij − m_i)`
/// with `m_i = max_j s_ij`, and `0` for rows whose every score is `−∞`.
/// `g = q_heads / kv_heads` query heads share one K/V head (GQA).
///
/// Shapes: Q `[batch, q_heads, s_q, head_dim]`, K `[batch, kv_heads, s_kv,
/// head_dim]`, V `[batch, kv_heads, s_kv, v_head_dim]`, bias `[batch,
/// q_heads, s_q, s_kv]`, out `[batch, q_heads, s_q, v_head_dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionCall {
    pub q: Operand4,
    pub k: Operand4,
    pub v: Operand4,
    pub bias: Option<Operand4>,
    pub out: Operand4,
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub s_q: usize,
    pub s_kv: usize,
    pub head_dim: usize,
    pub v_head_dim: usize,
    /// Multiplies the dot products (rounded to f32 first).
    pub scale: f64,
    /// Key `j` is visible from query `i` only where `j ≤ i + offset`.
    pub causal_offset: Option<i64>,
}

impl AttentionCall {
    /// The operands with their extents, and what each is called in errors.
    pub fn operands(&self) -> Vec<(&'static str, &Operand4, [usize; 4])> {
        let (b, hq, hk) = (self.batch, self.q_heads, self.kv_heads);
        let (sq, skv, d, dv) = (self.s_q, self.s_kv, self.head_dim, self.v_head_dim);
        let mut v = vec![
            ("Q", &self.q, [b, hq, sq, d]),
            ("K", &self.k, [b, hk, skv, d]),
            ("V", &self.v, [b, hk, skv, dv]),
            ("out", &self.out, [b, hq, sq, dv]),
        ];
        if let Some(bias) = &self.bias {
            v.push(("bias", bias, [b, hq, sq, skv]));
        }
        v
    }

    /// Query heads per K/V head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads.max(1)
    }

    /// The store address of `out[b, h, i, c]` over a kernel domain
    /// `(batch, q_heads, s_q, v_head_dim)`, or `(batch, kv_heads, group,
    /// s_q, v_head_dim)` when `split_heads`.
    fn out_address(&self, split_heads: bool) -> Affine {
        let s = self.out.strides;
        let terms = if split_heads {
            vec![
                (Var::Out(0), s[0]),
                (Var::Out(1), s[1] * self.group() as i64),
                (Var::Out(2), s[1]),
                (Var::Out(3), s[2]),
                (Var::Out(4), s[3]),
            ]
        } else {
            (0..4).map(|a| (Var::Out(a), s[a])).collect()
        };
        Affine {
            offset: self.out.offset,
            terms,
        }
    }
}

/// The lowest and highest element an operand of these extents touches;
/// `None` when some extent is 0 (it is never accessed).
pub fn span(op: &Operand4, extents: [usize; 4]) -> Option<(i128, i128)> {
    let (mut lo, mut hi) = (op.offset as i128, op.offset as i128);
    for (&n, &s) in extents.iter().zip(&op.strides) {
        if n == 0 {
            return None;
        }
        let reach = (n as i128 - 1) * s as i128;
        if reach < 0 {
            lo += reach;
        } else {
            hi += reach;
        }
    }
    Some((lo, hi))
}

/// Checks that kernel `k`'s library tag (if any) can be trusted by a
/// backend: operands are f32 and inside their buffers, the output is the
/// kernel's store (same buffer, same addresses over the domain, distinct
/// points to distinct elements), the inputs are buffers the loop nest reads
/// and not the output, and the sizes agree with the domain.
pub fn check(p: &Program, k: &Kernel) -> Result<(), String> {
    match &k.library {
        None => Ok(()),
        Some(Library::Attention(a)) => check_attention(p, k, a)
            .map_err(|e| format!("attention library tag does not fit the kernel: {e}")),
        Some(Library::Conv(c)) => conv::check(p, k, c)
            .map_err(|e| format!("conv library tag does not fit the kernel: {e}")),
    }
}

fn check_attention(p: &Program, k: &Kernel, a: &AttentionCall) -> Result<(), String> {
    if a.kv_heads == 0 || !a.q_heads.is_multiple_of(a.kv_heads) {
        return Err(format!(
            "{} query heads are not a multiple of {} K/V heads",
            a.q_heads, a.kv_heads
        ));
    }
    if !a.scale.is_finite() {
        return Err(format!("scale {} is not finite", a.scale));
    }
    check_operands(p, k, &a.operands(), a.out.buf)?;
    let split = match k.domain.len() {
        4 => false,
        5 => true,
        n => return Err(format!("a domain of rank {n} is not an attention output")),
    };
    let want: Vec<usize> = if split {
        vec![a.batch, a.kv_heads, a.group(), a.s_q, a.v_head_dim]
    } else {
        vec![a.batch, a.q_heads, a.s_q, a.v_head_dim]
    };
    if k.domain != want {
        return Err(format!("domain {:?}, call sizes {want:?}", k.domain));
    }
    check_store(k, a.out.buf, &a.out_address(split))
}

/// Checks operands `(name, operand, extents)` of a call whose output
/// buffer is `out`: f32, inside their buffers, inputs read by the loop
/// nest and distinct from the output.
fn check_operands(
    p: &Program,
    k: &Kernel,
    ops: &[(&'static str, &Operand4, [usize; 4])],
    out: BufId,
) -> Result<(), String> {
    let reads = k.reads();
    for &(what, op, ext) in ops {
        let b = p
            .buffers
            .get(op.buf.0)
            .ok_or_else(|| format!("{what} is unknown buffer {}", op.buf.0))?;
        if b.dtype != DType::F32 {
            return Err(format!("{what} ('{}') is {}, not f32", b.name, b.dtype));
        }
        if let Some((lo, hi)) = span(op, ext)
            && (lo < 0 || hi >= b.len() as i128)
        {
            return Err(format!(
                "{what} {ext:?} reaches elements {lo}..={hi} of '{}' ({} elements)",
                b.name,
                b.len()
            ));
        }
        let is_out = what == "out";
        if !is_out && !reads.contains(&op.buf) {
            return Err(format!(
                "{what} ('{}') is not read by the loop nest",
                b.name
            ));
        }
        if !is_out && op.buf == out {
            return Err(format!("{what} is the output buffer '{}'", b.name));
        }
    }
    Ok(())
}

/// Checks that the kernel stores where the call writes, `addr` over the
/// domain, and that distinct points are distinct elements.
fn check_store(k: &Kernel, out: BufId, addr: &Affine) -> Result<(), String> {
    let st = &k.store;
    let same = |x: &Affine, y: &Affine| {
        x.offset == y.offset
            && k.domain
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 1)
                .all(|(i, _)| x.coeff(Var::Out(i)) == y.coeff(Var::Out(i)))
    };
    if st.buf != out || !st.gathers.is_empty() || !same(&st.index, addr) {
        return Err("the output is not where the kernel stores".into());
    }
    if !injective(addr, &k.domain) {
        return Err("distinct outputs share an element".into());
    }
    Ok(())
}
