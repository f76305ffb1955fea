//! Hand-built programs: what fuses (kernel count, names, text) and that
//! `eval` gives the same outputs before and after.

use super::*;
use crate::kernel::eval::run_program;
use crate::kernel::{
    Affine, AttentionCall, Buffer, Guard, Library, Operand4, print::kernel_to_text,
};
use crate::tensor::Tensor;

struct B {
    p: Program,
}

fn aff(offset: i64, terms: &[(Var, i64)]) -> Affine {
    Affine {
        offset,
        terms: terms.to_vec(),
    }
}

const I0: Var = Var::Out(0);
const I1: Var = Var::Out(1);

impl B {
    fn new() -> B {
        B {
            p: Program::default(),
        }
    }

    fn buf(&mut self, name: &str, shape: &[usize], kind: BufKind) -> BufId {
        let id = self.p.add_buffer(Buffer {
            name: name.into(),
            dtype: DType::F32,
            shape: shape.to_vec(),
            kind: kind.clone(),
        });
        match kind {
            BufKind::Input(_) => self.p.inputs.push(id),
            BufKind::Output(_) => self.p.outputs.push(id),
            _ => {}
        }
        id
    }

    fn input(&mut self, name: &str, shape: &[usize]) -> BufId {
        let n = self.p.inputs.len();
        self.buf(name, shape, BufKind::Input(n))
    }

    fn output(&mut self, name: &str, shape: &[usize]) -> BufId {
        let n = self.p.outputs.len();
        self.buf(name, shape, BufKind::Output(n))
    }

    fn temp(&mut self, name: &str, shape: &[usize]) -> BufId {
        self.buf(name, shape, BufKind::Temp)
    }

    fn weight(&mut self, name: &str, shape: &[usize]) -> BufId {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| 0.25 + (i % 7) as f32 * 0.125).collect();
        let t = Tensor::from_f32(shape.to_vec(), v).unwrap();
        self.buf(name, shape, BufKind::Weight(t))
    }

    /// A kernel storing row-major over `domain` into `out`.
    fn kernel(&mut self, name: &str, domain: &[usize], out: BufId, value: Expr) {
        self.p.kernels.push(Kernel {
            name: name.into(),
            domain: domain.to_vec(),
            store: Access {
                buf: out,
                index: Affine::row_major(domain),
                gathers: vec![],
            },
            value,
            library: None,
        });
    }
}

fn ld(b: BufId, index: Affine) -> Expr {
    Expr::load(b, index)
}

fn rm(shape: &[usize]) -> Affine {
    Affine::row_major(shape)
}

fn add(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Add, a, b)
}

fn mul(a: Expr, b: Expr) -> Expr {
    Expr::binary(BinaryFn::Mul, a, b)
}

fn matmul(a: BufId, b: BufId, k: usize, n: usize, red: usize) -> Expr {
    let r = Var::Red(red);
    Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(red, k)],
        body: Box::new(mul(
            ld(a, aff(0, &[(I0, k as i64), (r, 1)])),
            ld(b, aff(0, &[(r, n as i64), (I1, 1)])),
        )),
    }
}

/// Deterministic inputs in [-1, 1).
fn inputs(p: &Program) -> Vec<Tensor> {
    p.inputs
        .iter()
        .enumerate()
        .map(|(j, &id)| {
            let b = p.buffer(id);
            let v: Vec<f32> = (0..b.len())
                .map(|i| ((i * 37 + j * 11) % 23) as f32 / 11.5 - 1.0)
                .collect();
            Tensor::from_f32(b.shape.clone(), v).unwrap()
        })
        .collect()
}

/// Outputs of `before` and `after` agree: exactly, or (`tol`) within a
/// relative 1e-6, where a vanished temp no longer rounds to f32 in `eval`.
fn same_outputs(before: &Program, after: &Program, tol: bool) {
    let ins = inputs(before);
    let a = run_program(before, &ins).unwrap();
    let b = run_program(after, &ins).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let (x, y) = (x.data().to_f64_vec(), y.data().to_f64_vec());
        for (u, v) in x.iter().zip(&y) {
            if tol {
                assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "{u} vs {v}");
            } else {
                assert_eq!(u, v);
            }
        }
    }
}

fn names(p: &Program) -> Vec<&str> {
    p.kernels.iter().map(|k| k.name.as_str()).collect()
}

#[test]
fn bias_gelu_residual_chain_is_one_kernel() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let r = b.input("r", &[4, 8]);
    let bias = b.weight("bias", &[8]);
    let (t1, t2) = (b.temp("t1", &[4, 8]), b.temp("t2", &[4, 8]));
    let y = b.output("y", &[4, 8]);
    let t3 = b.temp("t3", &[4, 8]);
    b.kernel(
        "fc:Add",
        &[4, 8],
        t1,
        add(ld(x, rm(&[4, 8])), ld(bias, aff(0, &[(I1, 1)]))),
    );
    let g = mul(
        ld(t1, rm(&[4, 8])),
        Expr::unary(UnaryFn::Tanh, ld(t1, rm(&[4, 8]))),
    );
    b.kernel("act:Gelu", &[4, 8], t2, g);
    b.kernel(
        "res:Add",
        &[4, 8],
        t3,
        add(ld(t2, rm(&[4, 8])), ld(r, rm(&[4, 8]))),
    );
    b.kernel("output:y", &[4, 8], y, ld(t3, rm(&[4, 8])));
    let before = b.p.clone();
    let (after, rep) = fuse_with_report(b.p);
    assert_eq!(names(&after), ["output:y:Add+Gelu+Add+Output"]);
    assert_eq!(rep.kernels_before, 4);
    assert_eq!(rep.kernels_after, 1);
    assert_eq!(rep.inlined, 3);
    // Only the inputs, the weight and the output are left.
    assert_eq!(after.buffers.len(), 4);
    assert_eq!(
        kernel_to_text(&after, &after.kernels[0]),
        "kernel output:y:Add+Gelu+Add+Output [i0<4, i1<8]\n  %y[8*i0+i1] = \
         Add(Mul(Add(%x[8*i0+i1], %bias[i1]), Tanh(Add(%x[8*i0+i1], %bias[i1]))), %r[8*i0+i1])\n"
    );
    same_outputs(&before, &after, true);
}

#[test]
fn contraction_takes_its_reader_as_epilogue() {
    let mut b = B::new();
    let a = b.input("a", &[4, 16]);
    let w = b.weight("w", &[16, 8]);
    let bias = b.weight("bias", &[8]);
    let r = b.input("r", &[4, 8]);
    let (t, u) = (b.temp("t", &[4, 8]), b.temp("u", &[4, 8]));
    let y = b.output("y", &[4, 8]);
    b.kernel("fc:MatMul", &[4, 8], t, matmul(a, w, 16, 8, 1));
    let e = add(
        add(ld(t, rm(&[4, 8])), ld(bias, aff(0, &[(I1, 1)]))),
        ld(r, rm(&[4, 8])),
    );
    b.kernel("fc:Add", &[4, 8], u, e);
    b.kernel("output:y", &[4, 8], y, ld(u, rm(&[4, 8])));
    let before = b.p.clone();
    let (after, rep) = fuse_with_report(b.p);
    assert_eq!(names(&after), ["output:y:MatMul+Add+Output"]);
    assert_eq!((rep.inlined, rep.epilogues), (1, 1));
    assert_eq!(
        kernel_to_text(&after, &after.kernels[0]),
        "kernel output:y:MatMul+Add+Output [i0<4, i1<8]\n  %y[8*i0+i1] = \
         Add(Add(Sum[r1<16](Mul(%a[16*i0+r1], %w[8*r1+i1])), %bias[i1]), %r[8*i0+i1])\n"
    );
    same_outputs(&before, &after, true);
}

#[test]
fn contraction_read_twice_or_broadcast_keeps_its_temp() {
    let mut b = B::new();
    let a = b.input("a", &[4, 16]);
    let w = b.weight("w", &[16, 8]);
    let t = b.temp("t", &[4, 8]);
    let y = b.output("y", &[4, 8]);
    let z = b.output("z", &[2, 4, 8]);
    b.kernel("fc:MatMul", &[4, 8], t, matmul(a, w, 16, 8, 1));
    // Read twice by one reader: substituting would compute it twice.
    let sq = mul(ld(t, rm(&[4, 8])), ld(t, rm(&[4, 8])));
    b.kernel("sq:Mul", &[4, 8], y, sq);
    // Read broadcast over a new axis by another.
    b.kernel(
        "bc:Expand",
        &[2, 4, 8],
        z,
        ld(t, aff(0, &[(I1, 8), (Var::Out(2), 1)])),
    );
    let before = b.p.clone();
    let after = fuse(b.p);
    assert_eq!(names(&after), ["fc:MatMul", "sq:Mul", "bc:Expand"]);
    same_outputs(&before, &after, false);
}

#[test]
fn repeated_reads_of_one_element_fuse_only_when_the_backend_says_so() {
    let build = |shifted: bool| {
        let mut b = B::new();
        let a = b.input("a", &[4, 16]);
        let w = b.weight("w", &[16, 8]);
        let t = b.temp("t", &[4, 8]);
        let y = b.output("y", &[4, 8]);
        b.kernel("fc:MatMul", &[4, 8], t, matmul(a, w, 16, 8, 1));
        // An activation-like reader: the same element twice, or (shifted)
        // a neighbour the second time.
        let other = if shifted {
            ld(t, aff(0, &[(I0, 8)]))
        } else {
            ld(t, rm(&[4, 8]))
        };
        b.kernel("sq:Mul", &[4, 8], y, mul(ld(t, rm(&[4, 8])), other));
        b.p
    };
    let on = FuseOptions {
        repeated_epilogue_reads: true,
    };
    let before = build(false);
    assert_eq!(names(&fuse(before.clone())), ["fc:MatMul", "sq:Mul"]);
    let after = fuse_with(before.clone(), on);
    assert_eq!(names(&after), ["sq:MatMul+Mul"]);
    same_outputs(&before, &after, true);
    let shifted = build(true);
    assert_eq!(names(&fuse_with(shifted, on)), ["fc:MatMul", "sq:Mul"]);
}

#[test]
fn nothing_is_inlined_into_a_contraction_operand() {
    let mut b = B::new();
    let x = b.input("x", &[4, 16]);
    let w = b.weight("w", &[16, 8]);
    let (s, t) = (b.temp("s", &[4, 16]), b.temp("t", &[4, 8]));
    let y = b.output("y", &[4, 8]);
    b.kernel(
        "scale:Mul",
        &[4, 16],
        s,
        mul(ld(x, rm(&[4, 16])), Expr::f32(2.0)),
    );
    b.kernel("fc:MatMul", &[4, 8], t, matmul(s, w, 16, 8, 1));
    b.kernel(
        "act:Relu",
        &[4, 8],
        y,
        Expr::binary(BinaryFn::Max, ld(t, rm(&[4, 8])), Expr::f32(0.0)),
    );
    let before = b.p.clone();
    let after = fuse(b.p);
    assert_eq!(names(&after), ["scale:Mul", "act:MatMul+Relu"]);
    same_outputs(&before, &after, false);
}

#[test]
fn recomputation_only_of_cheap_producers() {
    for (f, fused) in [(UnaryFn::Exp, false), (UnaryFn::Neg, true)] {
        let mut b = B::new();
        let x = b.input("x", &[4, 8]);
        let t = b.temp("t", &[4, 8]);
        let (y, z) = (b.output("y", &[4, 8]), b.output("z", &[8, 4]));
        b.kernel("p:Op", &[4, 8], t, Expr::unary(f, ld(x, rm(&[4, 8]))));
        b.kernel(
            "c1:Add",
            &[4, 8],
            y,
            add(ld(t, rm(&[4, 8])), Expr::f32(1.0)),
        );
        // The second reader sees t transposed.
        b.kernel(
            "c2:Transpose",
            &[8, 4],
            z,
            ld(t, aff(0, &[(I1, 8), (I0, 1)])),
        );
        let before = b.p.clone();
        let after = fuse(b.p);
        if fused {
            assert_eq!(names(&after), ["c1:Op+Add", "c2:Op+Transpose"]);
            assert_eq!(
                crate::kernel::print::expr(&after, &after.kernels[1].value),
                "Neg(%x[8*i1+i0])"
            );
        } else {
            assert_eq!(names(&after), ["p:Op", "c1:Add", "c2:Transpose"]);
        }
        same_outputs(&before, &after, false);
    }
}

#[test]
fn expensive_producer_read_once_through_a_slice_is_inlined() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let t = b.temp("t", &[4, 8]);
    let y = b.output("y", &[2, 3]);
    b.kernel(
        "p:Exp",
        &[4, 8],
        t,
        Expr::unary(UnaryFn::Exp, ld(x, rm(&[4, 8]))),
    );
    // y = t[1..3, 2..5]
    b.kernel("c:Slice", &[2, 3], y, ld(t, aff(10, &[(I0, 8), (I1, 1)])));
    let before = b.p.clone();
    let after = fuse(b.p);
    assert_eq!(names(&after), ["c:Exp+Slice"]);
    assert_eq!(
        crate::kernel::print::expr(&after, &after.kernels[0].value),
        "Exp(%x[8*i0+i1+10])"
    );
    same_outputs(&before, &after, false);
}

#[test]
fn guarded_merged_or_library_reads_block_inlining() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let t = b.temp("t", &[4, 8]);
    let (y, z) = (b.output("y", &[4, 10]), b.output("z", &[32]));
    b.kernel(
        "p:Neg",
        &[4, 8],
        t,
        Expr::unary(UnaryFn::Neg, ld(x, rm(&[4, 8]))),
    );
    // Pad: a guarded load.
    let padded = Expr::Load {
        access: Box::new(Access {
            buf: t,
            index: aff(-1, &[(I0, 8), (I1, 1)]),
            gathers: vec![],
        }),
        guards: vec![Guard {
            index: aff(-1, &[(I1, 1)]),
            lo: 0,
            hi: 8,
        }],
        fill: 0.0,
    };
    b.kernel("c1:Pad", &[4, 10], y, padded);
    // (Neg, not a plain copy, which would become a store into z.)
    let neg = |e| Expr::unary(UnaryFn::Neg, e);
    b.kernel("c2:Neg", &[32], z, neg(ld(t, rm(&[32]))));
    let before = b.p.clone();
    let after = fuse(b.p.clone());
    assert_eq!(names(&after), ["p:Neg", "c1:Pad", "c2:Neg"]);
    same_outputs(&before, &after, false);

    // A flat [32] reader of a [4, 8] temp merges axes: the reader's axis
    // is split into [4, 8] and the producer inlined; a flat [30] reader
    // cannot be split so.
    let mut b2 = b;
    b2.p.kernels.remove(1);
    b2.p.kernels[1].value = neg(ld(t, aff(0, &[(I0, 1)])));
    let before = b2.p.clone();
    let after = fuse(b2.p.clone());
    assert_eq!(names(&after), ["c2:Neg+Neg"]);
    assert_eq!(
        kernel_to_text(&after, &after.kernels[0]),
        "kernel c2:Neg+Neg [i0<4, i1<8]\n  %z[8*i0+i1] = Neg(Neg(%x[8*i0+i1]))\n"
    );
    same_outputs(&before, &after, false);
    let mut short = b2.p.clone();
    short.kernels[1].domain = vec![30];
    assert_eq!(names(&fuse(short)), ["p:Neg", "c2:Neg"]);

    // A library-tagged reader keeps the temp it reads.
    let op = |buf| Operand4 {
        buf,
        offset: 0,
        strides: [0, 0, 8, 1],
    };
    let mut b3 = b2;
    b3.p.kernels[1].value = neg(ld(t, rm(&[32])));
    b3.p.kernels[1].library = Some(Library::Attention(AttentionCall {
        q: op(t),
        k: op(t),
        v: op(t),
        bias: None,
        out: op(z),
        batch: 1,
        q_heads: 1,
        kv_heads: 1,
        s_q: 4,
        s_kv: 4,
        head_dim: 8,
        v_head_dim: 8,
        scale: 1.0,
        causal_offset: None,
    }));
    let after = fuse(b3.p);
    assert_eq!(names(&after), ["p:Neg", "c2:Neg"]);
}

#[test]
fn producer_inputs_overwritten_in_between_block_inlining() {
    let mut b = B::new();
    let x = b.input("x", &[8]);
    let (u, t) = (b.temp("u", &[8]), b.temp("t", &[8]));
    let y = b.output("y", &[8]);
    b.kernel("a:Mul", &[8], u, mul(ld(x, rm(&[8])), Expr::f32(2.0)));
    b.kernel("p:Add", &[8], t, add(ld(u, rm(&[8])), Expr::f32(1.0)));
    // In place: u *= 3 after p read it.
    b.kernel("w:Mul", &[8], u, mul(ld(u, rm(&[8])), Expr::f32(3.0)));
    b.kernel("c:Add", &[8], y, add(ld(t, rm(&[8])), ld(u, rm(&[8]))));
    let before = b.p.clone();
    let after = fuse(b.p);
    // p stays (its input changes before c runs); u has two writers, so
    // neither a nor w is inlined.
    assert_eq!(names(&after), ["a:Mul", "p:Add", "w:Mul", "c:Add"]);
    same_outputs(&before, &after, false);
}

#[test]
fn reductions_are_not_inlined_but_cheap_producers_go_into_them() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let r = b.input("r", &[4, 8]);
    let (s, m) = (b.temp("s", &[4, 8]), b.temp("m", &[4, 1]));
    let y = b.output("y", &[4, 8]);
    b.kernel(
        "res:Add",
        &[4, 8],
        s,
        add(ld(x, rm(&[4, 8])), ld(r, rm(&[4, 8]))),
    );
    let mean = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(5, 8)],
        body: Box::new(ld(s, aff(0, &[(I0, 8), (Var::Red(5), 1)]))),
    };
    b.kernel("ln:Mean", &[4, 1], m, mul(mean, Expr::f32(0.125)));
    let centred = Expr::binary(BinaryFn::Sub, ld(s, rm(&[4, 8])), ld(m, aff(0, &[(I0, 1)])));
    b.kernel("ln:Sub", &[4, 8], y, centred);
    let before = b.p.clone();
    let after = fuse(b.p);
    // The add is recomputed by both readers (cheap); the mean stays.
    assert_eq!(names(&after), ["ln:Add+Mean", "ln:Add+Sub"]);
    assert_eq!(
        crate::kernel::print::expr(&after, &after.kernels[0].value),
        "Mul(Sum[r5<8](Add(%x[8*i0+r5], %r[8*i0+r5])), 0.125f32)"
    );
    same_outputs(&before, &after, true);
}

#[test]
fn a_temp_copied_to_an_output_is_stored_there_directly() {
    let mut b = B::new();
    let x = b.input("x", &[4, 8]);
    let (m, z) = (b.temp("m", &[4, 1]), b.output("z", &[4, 8]));
    let y = b.output("y", &[4, 1]);
    let max = Expr::Reduce {
        op: ReduceFn::Max,
        vars: vec![(2, 8)],
        body: Box::new(ld(x, aff(0, &[(I0, 8), (Var::Red(2), 1)]))),
    };
    b.kernel("rm:ReduceMax", &[4, 1], m, max);
    let sub = Expr::binary(BinaryFn::Sub, ld(x, rm(&[4, 8])), ld(m, aff(0, &[(I0, 1)])));
    b.kernel("d:Sub", &[4, 8], z, sub);
    b.kernel("output:y", &[4, 1], y, ld(m, rm(&[4, 1])));
    let before = b.p.clone();
    let (after, rep) = fuse_with_report(b.p);
    assert_eq!(rep.outputs, 1);
    assert_eq!(names(&after), ["output:y:ReduceMax+Output", "d:Sub"]);
    assert_eq!(after.kernels[0].store.buf, after.outputs[1]);
    assert_eq!(after.buffers.len(), 3);
    same_outputs(&before, &after, false);
}

#[test]
fn unread_temps_are_dropped_and_fusion_is_idempotent() {
    let mut b = B::new();
    let x = b.input("x", &[8]);
    let t = b.temp("t", &[8]);
    let y = b.output("y", &[8]);
    b.kernel(
        "dead:Exp",
        &[8],
        t,
        Expr::unary(UnaryFn::Exp, ld(x, rm(&[8]))),
    );
    b.kernel(
        "output:y",
        &[8],
        y,
        Expr::unary(UnaryFn::Neg, ld(x, rm(&[8]))),
    );
    let (after, rep) = fuse_with_report(b.p);
    assert_eq!(rep.dead, 1);
    assert_eq!(names(&after), ["output:y"]);
    assert_eq!(fuse(after.clone()), after);
}

#[test]
fn recomputation_budget_scales_with_the_reads() {
    // p weighs 9 (four operations, five loads): read twice it adds 4.5
    // operations per evaluation, within budget; read four times, 6.75.
    for (readers, fused) in [(1, true), (2, false)] {
        let mut b = B::new();
        let xs: Vec<BufId> = (0..5).map(|i| b.input(&format!("x{i}"), &[8])).collect();
        let t = b.temp("t", &[8]);
        let l = |i: usize| ld(xs[i], rm(&[8]));
        let v = add(
            mul(mul(Expr::binary(BinaryFn::Sub, l(0), l(1)), l(2)), l(3)),
            l(4),
        );
        b.kernel("p:Norm", &[8], t, v);
        for r in 0..readers {
            let y = b.output(&format!("y{r}"), &[8]);
            let sq = mul(ld(t, rm(&[8])), ld(t, rm(&[8])));
            b.kernel(&format!("c{r}:Square"), &[8], y, sq);
        }
        let before = b.p.clone();
        let after = fuse(b.p);
        assert_eq!(
            after.kernels.len(),
            if fused { readers } else { readers + 1 }
        );
        same_outputs(&before, &after, true);
    }
}

#[test]
fn cheap_producers_broadcast_freely() {
    let mut b = B::new();
    let (x, s) = (b.input("x", &[64, 8]), b.input("s", &[8]));
    let t = b.temp("t", &[8]);
    let y = b.output("y", &[64, 8]);
    b.kernel("scale:Add", &[8], t, add(ld(s, rm(&[8])), Expr::f32(1.0)));
    b.kernel(
        "mod:Mul",
        &[64, 8],
        y,
        mul(ld(x, rm(&[64, 8])), ld(t, aff(0, &[(I1, 1)]))),
    );
    let before = b.p.clone();
    let after = fuse(b.p);
    assert_eq!(names(&after), ["mod:Add+Mul"]);
    same_outputs(&before, &after, true);
}
