//! Kernel IR: what the compiled backends emit code for.
//!
//! A [`Program`] is an ordered list of [`Kernel`]s over flat, row-major
//! [`Buffer`]s. Every kernel is one loop nest: for each point of its
//! `domain` (the output loop variables `Var::Out(0..)`, outermost first) it
//! evaluates `value` and stores it through `store`. Reductions are
//! expressions ([`Expr::Reduce`]) that own further loop variables
//! (`Var::Red(id)`). Addresses are affine in the loop variables, plus
//! data-dependent gather terms; loads may carry guards (padding) that yield a
//! fill value outside a range.
//!
//! That one form covers elementwise chains with broadcasting, reductions
//! (softmax and norms as a few kernels), contractions (MatMul, Gemm, Conv),
//! resampling (a reduction over precomputed tap tables), and data movement
//! (a copy through a strided view). Backends know nothing of ONNX: the graph
//! IR lowers to this in `crate::lower`, where each op's semantics are
//! written once; [`eval`] is the kernel IR's own interpreter, the
//! specification every code generator is tested against.

pub mod activation;
pub mod analysis;
pub mod coalesce;
pub mod eval;
pub mod fuse;
pub mod library;
pub mod plan;
mod print;

pub use print::program_to_text;

use crate::dtype::DType;
use crate::tensor::Tensor;

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub usize);

#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// The n-th program input, provided by the caller.
    Input(usize),
    /// The n-th program output, provided (allocated) by the caller.
    Output(usize),
    /// Read-only data known at compile time.
    Weight(Tensor),
    /// Scratch space: the memory planner places it in the arena.
    Temp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub dtype: DType,
    /// Logical shape (for printing and I/O); storage is `len` elements.
    pub shape: Vec<usize>,
    pub kind: BufKind,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn byte_size(&self) -> usize {
        self.len() * self.dtype.size()
    }
}

/// A loop variable of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    /// Axis `n` of the kernel's domain.
    Out(usize),
    /// Reduction variable `n` (ids are unique within a kernel).
    Red(usize),
}

/// `offset + Σ coeff·var` (element units).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Affine {
    pub offset: i64,
    pub terms: Vec<(Var, i64)>,
}

impl Affine {
    pub fn constant(offset: i64) -> Affine {
        Affine {
            offset,
            terms: vec![],
        }
    }

    /// Row-major index of the domain point itself: Σ Out(i)·stride(i).
    pub fn row_major(shape: &[usize]) -> Affine {
        let strides = crate::shape::strides(shape);
        Affine {
            offset: 0,
            terms: (0..shape.len())
                .filter(|&i| shape[i] != 1)
                .map(|i| (Var::Out(i), strides[i] as i64))
                .collect(),
        }
    }

    /// The coefficient of `v` (0 when absent).
    pub fn coeff(&self, v: Var) -> i64 {
        self.terms
            .iter()
            .filter(|(w, _)| *w == v)
            .map(|(_, c)| c)
            .sum()
    }
}

/// A data-dependent address term: `normalize(index)·stride`, where `index`
/// is an integer expression that must lie in `[-dim, dim)` (negative values
/// count from the end, as ONNX Gather does). An index outside that range
/// stops the program with an error — never an out-of-bounds access.
#[derive(Clone, Debug, PartialEq)]
pub struct GatherTerm {
    pub index: Expr,
    pub dim: usize,
    pub stride: i64,
}

/// An element address.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub buf: BufId,
    pub index: Affine,
    pub gathers: Vec<GatherTerm>,
}

/// A load is valid only where `lo <= index < hi`; elsewhere it yields the
/// load's fill value (zero padding, -inf for max pooling, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Guard {
    pub index: Affine,
    pub lo: i64,
    pub hi: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryFn {
    Neg,
    Abs,
    Sqrt,
    Rsqrt,
    Recip,
    Exp,
    Log,
    Erf,
    Tanh,
    Sigmoid,
    Cos,
    Sin,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    /// Logical not (bool).
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Min,
    Max,
    /// Comparisons yield bool.
    Eq,
    Lt,
    Le,
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceFn {
    Sum,
    Max,
    Min,
    Prod,
}

impl ReduceFn {
    /// The identity element the accumulator starts from.
    pub fn identity(self) -> f64 {
        match self {
            ReduceFn::Sum => 0.0,
            ReduceFn::Prod => 1.0,
            ReduceFn::Max => f64::NEG_INFINITY,
            ReduceFn::Min => f64::INFINITY,
        }
    }

    /// The identity over values of the integer type `dtype`: Max and Min
    /// start from the type's own extremes, so that an empty reduction
    /// yields them (as ONNX ReduceMax / ReduceMin specify) rather than an
    /// i64 extreme that truncates to something else when stored.
    pub fn int_identity(self, dtype: crate::DType) -> i64 {
        let (lo, hi) = dtype.int_range().unwrap_or((i64::MIN, i64::MAX));
        match self {
            ReduceFn::Sum => 0,
            ReduceFn::Prod => 1,
            ReduceFn::Max => lo,
            ReduceFn::Min => hi,
        }
    }
}

/// A scalar expression evaluated at one point of a kernel's loop nest.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const {
        value: f64,
        dtype: DType,
    },
    /// An element of a buffer (of the buffer's dtype).
    Load {
        access: Box<Access>,
        guards: Vec<Guard>,
        fill: f64,
    },
    /// The value of a loop variable (i64).
    Index(Var),
    Unary(UnaryFn, Box<Expr>),
    Binary(BinaryFn, Box<Expr>, Box<Expr>),
    /// `if cond { a } else { b }`
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// ONNX Cast semantics (float→int truncates, →bool is `!= 0`).
    Cast(DType, Box<Expr>),
    /// Folds `body` over the listed reduction variables `(id, extent)`,
    /// innermost last, starting from the function's identity.
    Reduce {
        op: ReduceFn,
        vars: Vec<(usize, usize)>,
        body: Box<Expr>,
    },
}

impl Expr {
    pub fn f32(v: f64) -> Expr {
        Expr::Const {
            value: v,
            dtype: DType::F32,
        }
    }

    pub fn load(buf: BufId, index: Affine) -> Expr {
        Expr::Load {
            access: Box::new(Access {
                buf,
                index,
                gathers: vec![],
            }),
            guards: vec![],
            fill: 0.0,
        }
    }

    pub fn unary(f: UnaryFn, a: Expr) -> Expr {
        Expr::Unary(f, Box::new(a))
    }

    pub fn binary(f: BinaryFn, a: Expr, b: Expr) -> Expr {
        Expr::Binary(f, Box::new(a), Box::new(b))
    }

    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    /// The expression's dtype, given the buffers it loads from.
    pub fn dtype(&self, buffers: &[Buffer]) -> DType {
        match self {
            Expr::Const { dtype, .. } => *dtype,
            Expr::Load { access, .. } => buffers[access.buf.0].dtype,
            Expr::Index(_) => DType::I64,
            Expr::Unary(UnaryFn::Not, _) => DType::Bool,
            Expr::Unary(_, a) => a.dtype(buffers),
            Expr::Binary(f, a, _) => match f {
                BinaryFn::Eq | BinaryFn::Lt | BinaryFn::Le => DType::Bool,
                _ => a.dtype(buffers),
            },
            Expr::Select(_, a, _) => a.dtype(buffers),
            Expr::Cast(d, _) => *d,
            Expr::Reduce { body, .. } => body.dtype(buffers),
        }
    }

    /// Calls `f` on this expression and every sub-expression (pre-order),
    /// including gather index expressions.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Const { .. } | Expr::Index(_) => {}
            Expr::Load { access, .. } => access.gathers.iter().for_each(|g| g.index.visit(f)),
            Expr::Unary(_, a) | Expr::Cast(_, a) => a.visit(f),
            Expr::Binary(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Select(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
            Expr::Reduce { body, .. } => body.visit(f),
        }
    }
}

/// One loop nest writing one buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Where it came from (graph node name and op), for listings and errors.
    pub name: String,
    /// Extents of `Var::Out(0..)`, outermost first.
    pub domain: Vec<usize>,
    pub store: Access,
    pub value: Expr,
    /// Set when the loop nest is known to compute a library routine that a
    /// backend may run through a hand-written microkernel instead of
    /// compiling the loop nest. The loop nest stays the specification
    /// (`eval` and backends without the routine ignore this).
    pub library: Option<Library>,
}

pub use library::{AttentionCall, ConvCall, Library, Operand4};

impl Kernel {
    /// Buffers this kernel reads.
    pub fn reads(&self) -> Vec<BufId> {
        let mut out = Vec::new();
        self.value.visit(&mut |e| {
            if let Expr::Load { access, .. } = e {
                out.push(access.buf);
            }
        });
        out.sort();
        out.dedup();
        out
    }

    pub fn points(&self) -> usize {
        self.domain.iter().product()
    }
}

/// A whole model in kernel IR.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// Program inputs and outputs, in the graph's order.
    pub inputs: Vec<BufId>,
    pub outputs: Vec<BufId>,
}

impl Program {
    pub fn add_buffer(&mut self, b: Buffer) -> BufId {
        self.buffers.push(b);
        BufId(self.buffers.len() - 1)
    }

    pub fn buffer(&self, id: BufId) -> &Buffer {
        &self.buffers[id.0]
    }
}
