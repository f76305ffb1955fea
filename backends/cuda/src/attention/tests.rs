//! Fused attention entries run by the PTX interpreter (`crate::ptxsim`)
//! against `kernel::eval` on the tagged program (its loop nest is the
//! specification). Tolerance: 1e-5 × the largest expected magnitude plus
//! 1e-4 relative (f32 sums in another order, `exp` by `ex2`).

use super::{Tiles, plan, tagged};
use crate::plan::{KernelMode, Launch};
use crate::{CudaTarget, Options, emit_module, entry_name, ptxsim};
use varc_ir::graph::{TypeInfo, Value, ValueRef};
use varc_ir::infer::{NoFold, infer_types};
use varc_ir::kernel::{Program, eval};
use varc_ir::lower::{LowerOptions, lower_with};
use varc_ir::op::AttentionAttrs;
use varc_ir::testing::values;
use varc_ir::{Graph, Op, Shape, Tensor};

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

/// VAR's block-causal bias over `Σ scales` tokens: 0 where the key's scale
/// is not after the query's, −∞ elsewhere; rows in `dead` −∞ throughout.
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

/// One Attention node over the inputs (`None`: omitted), lowered fused.
fn lower_fused(ins: &[Option<Tensor>], a: AttentionAttrs, n_out: usize) -> (Program, Vec<Tensor>) {
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
    let opts = LowerOptions {
        fused_attention: true,
        ..Default::default()
    };
    (lower_with(&g, &inferred.consts, &opts).unwrap(), feeds)
}

/// Runs every entry of the module in the interpreter; the outputs.
pub(crate) fn simulate(
    p: &Program,
    ptx: &str,
    launches: &[Launch],
    ins: &[Tensor],
) -> Vec<Vec<f32>> {
    let mut bufs: Vec<Vec<u8>> = p.buffers.iter().map(|b| vec![0u8; b.byte_size()]).collect();
    for (&id, t) in p.inputs.iter().zip(ins) {
        bufs[id.0] = t.data().to_le_bytes();
    }
    bufs.push(vec![0u8; 4]);
    let status = bufs.len() - 1;
    let mut mem = ptxsim::Memory { bufs };
    for (i, k) in p.kernels.iter().enumerate() {
        let l = launches[i];
        if l.grid.contains(&0) {
            continue;
        }
        let e = ptxsim::parse(ptx, &entry_name(i, &k.name));
        let mut params: Vec<u64> = crate::emit::kernel_buffers(k)
            .into_iter()
            .map(ptxsim::Memory::address)
            .collect();
        params.push(ptxsim::Memory::address(status));
        ptxsim::run(&e, l.grid, l.block, &params, &mut mem);
    }
    assert_eq!(mem.bufs[status], [0; 4], "no failure status");
    p.outputs
        .iter()
        .map(|o| {
            mem.bufs[o.0]
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect()
}

pub(crate) fn compare(what: &str, got: &[f32], want: &Tensor) {
    let w = want.to_f64_vec();
    assert_eq!(got.len(), w.len(), "{what}");
    let max = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (n, (&a, b)) in got.iter().zip(&w).enumerate() {
        let a = a as f64;
        assert!(
            (a - b).abs() <= 1e-5 * max + 1e-4 * b.abs(),
            "{what}: element {n}: got {a}, want {b}"
        );
    }
}

/// Emits `p` for sm_80 (default options), checks the tagged kernel runs
/// the attention entry, and compares every output with the interpreter.
fn check(what: &str, p: &Program, feeds: &[Tensor]) -> Vec<Launch> {
    let (ptx, launches) = emit_module(p, CudaTarget::SM_80, &Options::default()).unwrap();
    let att: Vec<usize> = (0..p.kernels.len())
        .filter(|&i| tagged(&p.kernels[i]).is_some())
        .collect();
    assert_eq!(att.len(), 1, "{what}: one tagged kernel");
    assert_eq!(launches[att[0]].mode, KernelMode::Attention, "{what}");
    crate::gpu_tests::ptxas_accepts(&ptx);
    let got = simulate(p, &ptx, &launches, feeds);
    let want = eval::run_program(p, feeds).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        compare(&format!("{what}: output {i}"), g, w);
    }
    launches
}

#[test]
fn small_cases_match_the_loop_nest() {
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
            "block-causal mask with a fully masked row",
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
            1,
        ),
        (
            "causal, S_q != S_kv",
            vec![
                Some(rand(&[1, 2, 3, 4], 7)),
                Some(rand(&[1, 2, 9, 4], 8)),
                Some(rand(&[1, 2, 9, 4], 9)),
            ],
            causal.clone(),
            1,
        ),
        (
            "causal with past (offset)",
            vec![
                Some(rand(&[1, 1, 2, 4], 7)),
                Some(rand(&[1, 1, 2, 4], 8)),
                Some(rand(&[1, 1, 2, 4], 9)),
                None,
                Some(rand(&[1, 1, 5, 4], 10)),
                Some(rand(&[1, 1, 5, 4], 11)),
            ],
            causal,
            1,
        ),
        (
            "head dim 64 (tiles 32×32)",
            vec![
                Some(rand(&[1, 1, 5, 64], 12)),
                Some(rand(&[1, 1, 40, 64], 13)),
                Some(rand(&[1, 1, 40, 64], 14)),
            ],
            attrs(),
            1,
        ),
        (
            "head dim 300 (dot product not unrolled, tiles 16×8)",
            vec![
                Some(rand(&[1, 1, 3, 300], 15)),
                Some(rand(&[1, 1, 11, 300], 16)),
                Some(rand(&[1, 1, 11, 4], 17)),
            ],
            attrs(),
            1,
        ),
    ];
    for (what, ins, a, n_out) in cases {
        let (p, feeds) = lower_fused(&ins, a, n_out);
        check(what, &p, &feeds);
    }
}

/// Several query tiles and key blocks, neither a multiple of the tile, a
/// bias with dead rows, and two batch images.
#[test]
fn ragged_tiles_and_blocks_match_the_loop_nest() {
    let mut mask = block_causal(&[1, 4, 9, 16, 20, 25, 5], &[3, 70]).to_f64_vec();
    mask[80 * 80 - 1] = -1.5;
    let mask = Tensor::from_f32(vec![80, 80], mask.iter().map(|&x| x as f32).collect()).unwrap();
    let ins = vec![
        Some(rand(&[2, 1, 80, 4], 21)),
        Some(rand(&[2, 1, 80, 4], 22)),
        Some(rand(&[2, 1, 80, 3], 23)),
        Some(mask),
    ];
    let (p, feeds) = lower_fused(&ins, attrs(), 1);
    let launches = check("block-causal 80 tokens", &p, &feeds);
    let l = launches
        .iter()
        .find(|l| l.mode == KernelMode::Attention)
        .unwrap();
    assert_eq!(l.grid, [2, 1, 2]);
    assert_eq!(l.block, 64);
}

#[test]
fn tiles_fit_shared_memory() {
    let (p, _) = lower_fused(
        &[
            Some(rand(&[1, 2, 6, 64], 1)),
            Some(rand(&[1, 2, 6, 64], 2)),
            Some(rand(&[1, 2, 6, 64], 3)),
        ],
        attrs(),
        1,
    );
    let a = p.kernels.iter().find_map(tagged).unwrap();
    let t = plan(a).unwrap();
    assert_eq!(t, Tiles { bq: 32, bkv: 32 });
    assert!(t.shared_bytes(a) <= 48 * 1024);
    let mut odd = a.clone();
    odd.head_dim = 300;
    odd.v_head_dim = 4;
    assert_eq!(plan(&odd), Some(Tiles { bq: 16, bkv: 8 }));
    let mut big = a.clone();
    big.head_dim = 4096;
    big.v_head_dim = 4096;
    assert_eq!(plan(&big), None);
}
