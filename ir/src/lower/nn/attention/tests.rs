//! The fused attention lowering: which cases take it, the tag it carries
//! (accepted by `kernel::library::check`), and its loop nest evaluated by
//! `kernel::eval` against a scalar f64 attention written here.

use crate::graph::{Graph, TypeInfo, Value, ValueRef};
use crate::infer::{NoFold, infer_types};
use crate::kernel::{Library, Program, eval, library};
use crate::lower::{LowerOptions, lower_with};
use crate::op::{AttentionAttrs, Op};
use crate::shape::Shape;
use crate::tensor::{Tensor, TensorData};
use crate::testing::values;

fn attrs() -> AttentionAttrs {
    AttentionAttrs {
        is_causal: false,
        q_num_heads: None,
        kv_num_heads: None,
        scale: None,
        softcap: 0.0,
        qk_matmul_output_mode: 0,
        softmax_precision: 0,
    }
}

struct Case {
    q: Vec<usize>,
    k: Vec<usize>,
    v: Vec<usize>,
    /// Shape and data of an optional mask (f32 or bool).
    mask: Option<Tensor>,
    past: Option<usize>,
    attrs: AttentionAttrs,
    n_out: usize,
}

impl Case {
    fn new(q: &[usize], k: &[usize], v: &[usize]) -> Case {
        Case {
            q: q.to_vec(),
            k: k.to_vec(),
            v: v.to_vec(),
            mask: None,
            past: None,
            attrs: attrs(),
            n_out: 1,
        }
    }

    /// The graph, its inputs, and the lowered program (fused or not).
    fn lower(&self, fused: bool) -> (Program, Vec<Tensor>) {
        let mut g = Graph::new("t");
        let mut feeds = vec![];
        let mut input = |g: &mut Graph, t: Tensor| {
            let ty = TypeInfo {
                dtype: t.dtype(),
                shape: Shape::known(t.shape()),
            };
            let id = g.add_input(format!("in{}", feeds.len()), ty);
            feeds.push(t);
            Some(ValueRef { node: id, slot: 0 })
        };
        let f = |shape: &[usize], seed| {
            let n = shape.iter().product();
            Tensor::from_f32(shape.to_vec(), values(seed, n)).unwrap()
        };
        let q = input(&mut g, f(&self.q, 1));
        let k = input(&mut g, f(&self.k, 2));
        let v = input(&mut g, f(&self.v, 3));
        let mask = self.mask.clone().and_then(|m| input(&mut g, m));
        let (pk, pv) = match self.past {
            Some(p) => {
                let kvh = self.attrs.kv_num_heads.unwrap_or(self.k[1]);
                let (hk, hv) = match self.k.len() {
                    4 => (self.k[3], self.v[3]),
                    _ => (self.k[2] / kvh, self.v[2] / kvh),
                };
                (
                    input(&mut g, f(&[self.q[0], kvh, p, hk], 4)),
                    input(&mut g, f(&[self.q[0], kvh, p, hv], 5)),
                )
            }
            None => (None, None),
        };
        let outs = (0..self.n_out)
            .map(|i| Value::named(format!("y{i}")))
            .collect();
        let id = g
            .add_node(
                "att",
                Op::Attention(self.attrs.clone()),
                vec![q, k, v, mask, pk, pv],
                outs,
            )
            .unwrap();
        g.outputs = (0..self.n_out)
            .map(|slot| ValueRef { node: id, slot })
            .collect();
        let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
        let opts = LowerOptions {
            fused_attention: fused,
            ..Default::default()
        };
        (lower_with(&g, &inferred.consts, &opts).unwrap(), feeds)
    }
}

/// Scalar f64 attention on 4-D `(B, H, S, d)` views of the inputs (3-D ones
/// split by the head attributes), past prepended; output `(B, H, S_q, d_v)`.
fn reference(c: &Case, ins: &[Tensor]) -> Vec<f64> {
    let four = |t: &Tensor, heads: Option<usize>| -> (Vec<usize>, Vec<f64>) {
        let s = t.shape().to_vec();
        let x = t.to_f64_vec();
        if s.len() == 4 {
            return (s, x);
        }
        let h = heads.unwrap();
        let (b, n, d) = (s[0], s[1], s[2] / h);
        let mut y = vec![0.0; x.len()];
        for bi in 0..b {
            for si in 0..n {
                for hi in 0..h {
                    for e in 0..d {
                        y[((bi * h + hi) * n + si) * d + e] = x[(bi * n + si) * h * d + hi * d + e];
                    }
                }
            }
        }
        (vec![b, h, n, d], y)
    };
    let (qs, q) = four(&ins[0], c.attrs.q_num_heads);
    let (mut ks, mut k) = four(&ins[1], c.attrs.kv_num_heads);
    let (mut vs, mut v) = four(&ins[2], c.attrs.kv_num_heads);
    let has_mask = c.mask.is_some();
    let mask = has_mask.then(|| (ins[3].shape().to_vec(), ins[3].to_f64_vec()));
    let mut past_len = 0;
    if let Some(p) = c.past {
        past_len = p;
        let cat = |s: &[usize], new: &[f64], past: &[f64]| {
            let (b, h, n, d) = (s[0], s[1], s[2], s[3]);
            let mut y = vec![];
            for bh in 0..b * h {
                y.extend_from_slice(&past[bh * p * d..(bh + 1) * p * d]);
                y.extend_from_slice(&new[bh * n * d..(bh + 1) * n * d]);
            }
            (vec![b, h, n + p, d], y)
        };
        let at = usize::from(has_mask) + 3;
        (ks, k) = cat(&ks, &k, &ins[at].to_f64_vec());
        (vs, v) = cat(&vs, &v, &ins[at + 1].to_f64_vec());
    }
    let (b, hq, sq, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (hk, l, dv) = (ks[1], ks[2], vs[3]);
    let g = hq / hk;
    let scale = f64::from(c.attrs.scale.unwrap_or(1.0 / (d as f32).sqrt()));
    let mut out = vec![];
    for bi in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                let s: Vec<f64> = (0..l)
                    .map(|j| {
                        if c.attrs.is_causal && j > i + past_len {
                            return f64::NEG_INFINITY;
                        }
                        let dot: f64 = (0..d)
                            .map(|e| {
                                q[((bi * hq + h) * sq + i) * d + e]
                                    * k[((bi * hk + h / g) * l + j) * d + e]
                            })
                            .sum();
                        let bias = mask.as_ref().map_or(0.0, |(ms, m)| {
                            // Right-aligned broadcast of the mask to (b, h, i, j).
                            let idx = [bi, h, i, j];
                            let r = ms.len();
                            let mut at = 0;
                            for (a, &n) in ms.iter().enumerate() {
                                let x = idx[4 - r + a];
                                at = at * n + if n == 1 { 0 } else { x };
                            }
                            m[at]
                        });
                        scale * dot + bias
                    })
                    .collect();
                let mx = s.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
                for cc in 0..dv {
                    if mx == f64::NEG_INFINITY {
                        out.push(0.0);
                        continue;
                    }
                    let (mut num, mut den) = (0.0, 0.0);
                    for (j, sj) in s.iter().enumerate() {
                        let e = (sj - mx).exp();
                        num += e * v[((bi * hk + h / g) * l + j) * dv + cc];
                        den += e;
                    }
                    out.push(num / den);
                }
            }
        }
    }
    out
}

fn tags(p: &Program) -> usize {
    p.kernels.iter().filter(|k| k.library.is_some()).count()
}

/// Lowers `c` fused: one tagged attention kernel whose tag passes the
/// check, evaluating (through its loop nest) to the scalar reference.
fn fused(what: &str, c: &Case) {
    let (p, ins) = c.lower(true);
    assert_eq!(tags(&p), 1, "{what}: one tagged kernel");
    let text = crate::kernel::program_to_text(&p);
    assert!(text.contains("  library attention(Q=%"), "{what}: {text}");
    for k in &p.kernels {
        library::check(&p, k).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let got = eval::run_program(&p, &ins).unwrap();
    let want = reference(c, &ins);
    // Y comes back in the output's own layout (3-D outputs interleave
    // heads): compare after putting it in (B, H, S_q, d_v) order.
    let y = &got[0];
    let ys = y.shape().to_vec();
    let yv = y.to_f64_vec();
    let y4: Vec<f64> = if ys.len() == 4 {
        yv
    } else {
        let h = c.attrs.q_num_heads.unwrap();
        let (b, n, dv) = (ys[0], ys[1], ys[2] / h);
        let mut o = vec![0.0; yv.len()];
        for bi in 0..b {
            for si in 0..n {
                for hi in 0..h {
                    for e in 0..dv {
                        o[((bi * h + hi) * n + si) * dv + e] =
                            yv[(bi * n + si) * h * dv + hi * dv + e];
                    }
                }
            }
        }
        o
    };
    assert_eq!(y4.len(), want.len(), "{what}");
    for (n, (g, w)) in y4.iter().zip(&want).enumerate() {
        // f32 inputs and scores, f64 inside the interpreter's expressions.
        assert!(
            (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
            "{what}: element {n}: got {g}, want {w}"
        );
    }
    // The default lowering never tags.
    assert_eq!(tags(&c.lower(false).0), 0, "{what}: default lowering");
}

#[test]
fn fused_cases_match_a_scalar_reference() {
    fused(
        "4-D",
        &Case::new(&[2, 3, 5, 8], &[2, 3, 7, 8], &[2, 3, 7, 6]),
    );
    let mut gqa = Case::new(&[2, 3, 32], &[2, 4, 8], &[2, 4, 8]);
    gqa.attrs.q_num_heads = Some(4);
    gqa.attrs.kv_num_heads = Some(1);
    gqa.n_out = 3;
    fused("GQA 3-D, present outputs", &gqa);
    let mut g4 = Case::new(&[1, 6, 4, 8], &[1, 2, 5, 8], &[1, 2, 5, 3]);
    g4.attrs.scale = Some(0.3);
    fused("GQA 4-D, scale", &g4);
    let mut m = Case::new(&[2, 3, 5, 8], &[2, 3, 7, 8], &[2, 3, 7, 6]);
    m.mask = Some(Tensor::from_f32(vec![5, 7], values(9, 35)).unwrap());
    fused("float mask broadcast", &m);
    // Row 1 fully masked: its output is 0.
    let mut rows = values(10, 2 * 5 * 7);
    rows[7..14].fill(f32::NEG_INFINITY);
    m.mask = Some(Tensor::from_f32(vec![2, 1, 5, 7], rows).unwrap());
    fused("masked row", &m);
    let mut causal = Case::new(&[1, 4, 3, 8], &[1, 2, 3, 8], &[1, 2, 3, 5]);
    causal.past = Some(3);
    causal.attrs.is_causal = true;
    causal.mask = Some(Tensor::from_f32(vec![3, 6], values(11, 18)).unwrap());
    causal.n_out = 3;
    fused("past, causal, GQA, mask", &causal);
}

/// Cases the microkernel does not take lower exactly as without the
/// option.
#[test]
fn unsupported_cases_keep_five_kernels() {
    let base = || Case::new(&[1, 2, 4, 8], &[1, 2, 6, 8], &[1, 2, 6, 8]);
    let five = |what: &str, c: &Case| {
        let (p, _) = c.lower(true);
        assert_eq!(tags(&p), 0, "{what}");
        assert_eq!(p, c.lower(false).0, "{what}");
    };
    let mut c = base();
    c.mask = Some(Tensor::new(vec![4, 6], TensorData::Bool(vec![true; 24])).unwrap());
    five("bool mask", &c);
    let mut c = base();
    c.mask = Some(Tensor::from_f32(vec![4, 1], values(3, 4)).unwrap());
    five("mask shorter than the keys", &c);
    let mut c = base();
    c.attrs.softcap = 0.5;
    five("softcap", &c);
    let mut c = base();
    c.n_out = 4;
    five("scores output", &c);
}

/// A tag that does not match its kernel is refused (a backend trusts the
/// tag's addresses).
#[test]
fn wrong_tags_are_refused() {
    let c = Case::new(&[1, 2, 4, 8], &[1, 2, 6, 8], &[1, 2, 6, 8]);
    let (p, _) = c.lower(true);
    let i = p.kernels.iter().position(|k| k.library.is_some()).unwrap();
    let mutate = |f: &dyn Fn(&mut crate::kernel::AttentionCall)| {
        let mut p = p.clone();
        let Some(Library::Attention(a)) = &mut p.kernels[i].library else {
            unreachable!()
        };
        f(a);
        library::check(&p, &p.kernels[i])
    };
    assert!(mutate(&|_| {}).is_ok());
    let err = mutate(&|a| a.s_kv += 1).unwrap_err();
    assert!(err.contains("reaches elements"), "{err}");
    let err = mutate(&|a| a.k.offset += 1).unwrap_err();
    assert!(err.contains("K"), "{err}");
    let err = mutate(&|a| a.s_q = 5).unwrap_err();
    assert!(err.contains("domain") || err.contains("reaches"), "{err}");
    let err = mutate(&|a| a.out.strides[3] = 2).unwrap_err();
    assert!(!err.is_empty());
    let err = mutate(&|a| a.kv_heads = 3).unwrap_err();
    assert!(err.contains("multiple"), "{err}");
    let err = mutate(&|a| a.v.buf = a.out.buf).unwrap_err();
    assert!(!err.is_empty());
}
