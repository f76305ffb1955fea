//! Tagged attention kernels through the JIT's microkernel call against the
//! kernel IR interpreter: on small cases the tagged program itself (its
//! loop nest is the specification, O(L²) per point), on larger ones (query
//! tiles, key blocks, block-causal skipping) the same graph lowered to the
//! five-kernel form. Tolerance: rtol 1e-4 and atol 1e-5 × the largest
//! expected magnitude (`varc_tests::compiled_tolerance`), for f32 scores
//! and sums against the interpreter's f64 expressions.

use crate::{JitOptions, compile_jit_with};
use std::sync::Arc;
use varc_ir::graph::{TypeInfo, Value, ValueRef};
use varc_ir::infer::{NoFold, infer_types};
use varc_ir::kernel::{Program, eval};
use varc_ir::lower::{LowerOptions, lower_with};
use varc_ir::op::AttentionAttrs;
use varc_ir::testing::values;
use varc_ir::{Graph, Op, Shape, Tensor};
use varc_runtime::pool::ThreadPool;

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

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_f32(shape.to_vec(), values(seed, shape.iter().product())).unwrap()
}

/// VAR's block-causal bias over `n = Σ scales` tokens: 0 where the key's
/// scale is not after the query's, −∞ elsewhere; rows in `dead` are −∞
/// throughout.
fn block_causal(scales: &[usize], dead: &[usize]) -> Tensor {
    let n: usize = scales.iter().sum();
    let mut end = vec![];
    let mut at = 0;
    for &s in scales {
        at += s;
        end.extend(std::iter::repeat_n(at, s));
    }
    let m = (0..n * n)
        .map(|x| {
            let (i, j) = (x / n, x % n);
            if j < end[i] && !dead.contains(&i) {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Tensor::from_f32(vec![n, n], m).unwrap()
}

/// One Attention node over the given inputs (`None`: omitted), lowered
/// fused and unfused.
fn lower_both(
    ins: &[Option<Tensor>],
    a: AttentionAttrs,
    n_out: usize,
) -> [(Program, Vec<Tensor>); 2] {
    let mut g = Graph::new("t");
    let mut feeds = vec![];
    let operands = ins
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_ref().map(|t| {
                let ty = TypeInfo {
                    dtype: t.dtype(),
                    shape: Shape::known(t.shape()),
                };
                feeds.push(t.clone());
                ValueRef {
                    node: g.add_input(format!("in{i}"), ty),
                    slot: 0,
                }
            })
        })
        .collect();
    let outs = (0..n_out).map(|i| Value::named(format!("y{i}"))).collect();
    let id = g.add_node("att", Op::Attention(a), operands, outs).unwrap();
    g.outputs = (0..n_out).map(|slot| ValueRef { node: id, slot }).collect();
    let inferred = infer_types(&mut g, &Default::default(), &NoFold).unwrap();
    [true, false].map(|fused| {
        let opts = LowerOptions {
            fused_attention: fused,
            ..Default::default()
        };
        (
            lower_with(&g, &inferred.consts, &opts).unwrap(),
            feeds.clone(),
        )
    })
}

fn compare(what: &str, got: &Tensor, want: &Tensor) {
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    assert_eq!(got.shape(), want.shape(), "{what}");
    let max = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (n, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * max + 1e-4 * b.abs(),
            "{what}: element {n}: got {a}, want {b}"
        );
    }
}

/// Runs the fused program through the JIT (checking the tagged kernel
/// calls the microkernel) and compares every output with `want`; the pool
/// runs must be bit-identical to the serial one.
fn jit_matches(what: &str, p: &Program, ins: &[Tensor], want: &[Tensor]) {
    let jit = compile_jit_with(p, JitOptions { ukernels: true }).unwrap();
    let tagged: Vec<usize> = (0..p.kernels.len())
        .filter(|&i| p.kernels[i].library.is_some())
        .collect();
    assert_eq!(tagged.len(), 1, "{what}");
    assert_eq!(jit.library(tagged[0]), Some("attention ukernel"), "{what}");
    let got = jit.run(ins).unwrap();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        compare(&format!("{what}: output {i}"), g, w);
    }
    for threads in [2, 3] {
        let pool = Arc::new(ThreadPool::new(threads));
        let par = jit.run_on(ins, &pool).unwrap();
        for (a, b) in par.iter().zip(&got) {
            assert_eq!(
                a.data().to_le_bytes(),
                b.data().to_le_bytes(),
                "{what}: {threads} threads"
            );
        }
    }
}

/// Small cases: the JIT's call, and the JIT's compiled loop nest (ukernels
/// off), against the interpreter on the tagged program itself.
#[test]
fn small_tagged_programs_match_their_loop_nest() {
    let mut masked = block_causal(&[1, 2, 3], &[4]).to_f64_vec();
    masked[5] = 0.5;
    let mask = Tensor::from_f32(vec![6, 6], masked.iter().map(|&x| x as f32).collect()).unwrap();
    let gqa = AttentionAttrs {
        q_num_heads: Some(4),
        kv_num_heads: Some(2),
        ..attrs()
    };
    let causal = AttentionAttrs {
        is_causal: true,
        scale: Some(0.4),
        ..attrs()
    };
    let cases: Vec<(&str, Vec<Option<Tensor>>, AttentionAttrs, usize)> = vec![
        (
            "block-causal mask with a dead row",
            vec![
                Some(rand(&[1, 2, 6, 8], 1)),
                Some(rand(&[1, 2, 6, 8], 2)),
                Some(rand(&[1, 2, 6, 5], 3)),
                Some(mask),
            ],
            attrs(),
            1,
        ),
        (
            "3-D GQA, S_q != S_kv",
            vec![
                Some(rand(&[2, 3, 16], 4)),
                Some(rand(&[2, 7, 8], 5)),
                Some(rand(&[2, 7, 6], 6)),
            ],
            gqa,
            3,
        ),
        (
            "causal with past",
            vec![
                Some(rand(&[1, 1, 2, 4], 7)),
                Some(rand(&[1, 1, 2, 4], 8)),
                Some(rand(&[1, 1, 2, 4], 9)),
                None,
                Some(rand(&[1, 1, 5, 4], 10)),
                Some(rand(&[1, 1, 5, 4], 11)),
            ],
            causal,
            3,
        ),
    ];
    for (what, ins, a, n_out) in cases {
        let [(p, feeds), _] = lower_both(&ins, a, n_out);
        let want = eval::run_program(&p, &feeds).unwrap();
        jit_matches(what, &p, &feeds, &want);
        let nest = compile_jit_with(&p, JitOptions { ukernels: false }).unwrap();
        assert!((0..p.kernels.len()).all(|i| nest.library(i).is_none()));
        for (g, w) in nest.run(&feeds).unwrap().iter().zip(&want) {
            compare(&format!("{what}: loop nest"), g, w);
        }
    }
}

/// Larger cases (several query tiles and key blocks, skipped blocks, a
/// single query row) against the interpreter on the five-kernel lowering of
/// the same graph.
#[test]
fn larger_cases_match_the_unfused_program() {
    let n = 1 + 4 + 9 + 16 + 25 + 36 + 64;
    let cases: Vec<(&str, Vec<Option<Tensor>>, AttentionAttrs)> = vec![
        (
            "VAR block-causal, dead rows",
            vec![
                Some(rand(&[2, 2, n, 32], 1)),
                Some(rand(&[2, 2, n, 32], 2)),
                Some(rand(&[2, 2, n, 32], 3)),
                Some(block_causal(&[1, 4, 9, 16, 25, 36, 64], &[0, 100])),
            ],
            AttentionAttrs {
                scale: Some(1.0),
                ..attrs()
            },
        ),
        (
            "KV cache, one query",
            vec![
                Some(rand(&[1, 4, 1, 16], 4)),
                Some(rand(&[1, 4, 150, 16], 5)),
                Some(rand(&[1, 4, 150, 16], 6)),
            ],
            attrs(),
        ),
        (
            "causal, 3-D, head dim 65",
            vec![
                Some(rand(&[1, 70, 130], 7)),
                Some(rand(&[1, 70, 130], 8)),
                Some(rand(&[1, 70, 130], 9)),
            ],
            AttentionAttrs {
                is_causal: true,
                q_num_heads: Some(2),
                kv_num_heads: Some(2),
                ..attrs()
            },
        ),
    ];
    for (what, ins, a) in cases {
        let [(fused, feeds), (plain, _)] = lower_both(&ins, a, 1);
        let want = eval::run_program(&plain, &feeds).unwrap();
        jit_matches(what, &fused, &feeds, &want);
    }
}
