//! Tests of the tensor-core and warp entries: which kernels qualify, the
//! PTX they produce (snippets, not whole texts), ptxas acceptance of odd
//! shapes (where `VARC_PTXAS` is set), and their results computed by the
//! PTX interpreter of [`crate::ptxsim`] against `varc_ir::kernel::eval`.

use crate::emit::{entry, entry_name, kernel_buffers};
use crate::gemm::{self, Gemm};
use crate::plan::{KernelMode, Launch};
use crate::ptxsim;
use crate::{CudaTarget, Options, Precision};
use varc_ir::kernel::{
    Access, Affine, BinaryFn, BufId, BufKind, Buffer, Expr, Kernel, Program, ReduceFn, Var,
};
use varc_ir::{DType, Tensor};

fn aff(offset: i64, terms: &[(Var, i64)]) -> Affine {
    Affine {
        offset,
        terms: terms.to_vec(),
    }
}

fn add_buf(p: &mut Program, name: &str, shape: &[usize], kind: BufKind) -> BufId {
    let id = p.add_buffer(Buffer {
        name: name.into(),
        dtype: DType::F32,
        shape: shape.to_vec(),
        kind: kind.clone(),
    });
    match kind {
        BufKind::Input(_) => p.inputs.push(id),
        BufKind::Output(_) => p.outputs.push(id),
        _ => {}
    }
    id
}

fn load(b: BufId, a: Affine) -> Expr {
    Expr::load(b, a)
}

/// Operand layouts of a test contraction.
#[derive(Clone, Copy)]
struct Shape {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    /// A stored [batch, K, M] (else [batch, M, K]).
    a_t: bool,
    /// B stored [N, K] (else [K, N]).
    b_t: bool,
    bias: bool,
}

/// `C[b, i, j] = Σ_r A[b, i, r]·B[r, j]` (+ bias[j], ×0.5), the domain
/// `[batch, m, n]` with extent-1 axes kept (they must bind to 0).
fn matmul(s: Shape) -> Program {
    let mut p = Program::default();
    let a_shape = if s.a_t {
        [s.batch, s.k, s.m]
    } else {
        [s.batch, s.m, s.k]
    };
    let b_shape = if s.b_t { [s.n, s.k] } else { [s.k, s.n] };
    let a = add_buf(&mut p, "a", &a_shape, BufKind::Input(0));
    let b = add_buf(&mut p, "b", &b_shape, BufKind::Input(1));
    let bias = add_buf(&mut p, "bias", &[s.n], BufKind::Input(2));
    let c = add_buf(&mut p, "c", &[s.batch, s.m, s.n], BufKind::Output(0));
    let (b0, i, j, r) = (Var::Out(0), Var::Out(1), Var::Out(2), Var::Red(0));
    let (bm, mk) = ((s.m * s.k) as i64, (s.m, s.k));
    let a_idx = if s.a_t {
        aff(0, &[(b0, bm), (r, mk.0 as i64), (i, 1)])
    } else {
        aff(0, &[(b0, bm), (i, mk.1 as i64), (r, 1)])
    };
    let b_idx = if s.b_t {
        aff(0, &[(j, s.k as i64), (r, 1)])
    } else {
        aff(0, &[(r, s.n as i64), (j, 1)])
    };
    let sum = Expr::Reduce {
        op: ReduceFn::Sum,
        vars: vec![(0, s.k)],
        body: Box::new(Expr::binary(BinaryFn::Mul, load(a, a_idx), load(b, b_idx))),
    };
    let value = if s.bias {
        Expr::binary(
            BinaryFn::Mul,
            Expr::binary(BinaryFn::Add, sum, load(bias, aff(0, &[(j, 1)]))),
            Expr::f32(0.5),
        )
    } else {
        sum
    };
    p.kernels.push(Kernel {
        name: "mm".into(),
        domain: vec![s.batch, s.m, s.n],
        store: Access {
            buf: c,
            index: Affine::row_major(&[s.batch, s.m, s.n]),
            gathers: vec![],
        },
        value,
        library: None,
    });
    p
}

/// Deterministic inputs with a spread of magnitudes and signs.
fn inputs(p: &Program) -> Vec<Tensor> {
    p.inputs
        .iter()
        .enumerate()
        .map(|(n, &id)| {
            let b = p.buffer(id);
            let v: Vec<f32> = (0..b.len())
                .map(|i| {
                    let x = ((i * 7919 + n * 104_729) % 1000) as f32 / 1000.0;
                    (x - 0.43) * (1.0 + (i % 5) as f32)
                })
                .collect();
            Tensor::from_f32(b.shape.clone(), v).unwrap()
        })
        .collect()
}

fn header() -> String {
    ".version 7.8\n.target sm_80\n.address_size 64\n\n".to_string()
}

/// The module for kernel 0 of `p` forced into the tensor-core entry.
fn forced_mma(p: &Program, precision: Precision) -> (String, Launch) {
    let g = gemm::recognise(p, &p.kernels[0]).expect("a contraction");
    let mut out = header();
    let l = entry(p, 0, &mut out, |em| em.gemm(&g, precision)).unwrap();
    (out, l)
}

/// Runs `ptx` (one entry per kernel, `launches`) in the interpreter.
fn simulate(p: &Program, ptx: &str, launches: &[Launch], ins: &[Tensor]) -> Vec<Vec<f32>> {
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
        let mut params: Vec<u64> = kernel_buffers(k)
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

/// The interpreter's (spec) outputs.
fn reference(p: &Program, ins: &[Tensor]) -> Vec<Vec<f32>> {
    varc_ir::kernel::eval::run_program(p, ins)
        .unwrap()
        .iter()
        .map(|t| t.data().to_f64_vec().iter().map(|&x| x as f32).collect())
        .collect()
}

/// max |got - want| / max(1, max |want|).
fn scaled_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f64, |m, &w| m.max(w.abs() as f64));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            assert!(g.is_finite(), "non-finite result {g} (want {w})");
            (g as f64 - w as f64).abs() / scale
        })
        .fold(0.0, f64::max)
}

fn check_mma(s: Shape, precision: Precision, tol: f64) {
    let p = matmul(s);
    let (ptx, l) = forced_mma(&p, precision);
    assert_eq!(l.mode, KernelMode::Mma);
    let ins = inputs(&p);
    let got = simulate(&p, &ptx, &[l], &ins);
    let want = reference(&p, &ins);
    let err = scaled_error(&got[0], &want[0]);
    assert!(
        err <= tol,
        "{}x{}x{} batch {} (a_t {}, b_t {}): error {err:e} > {tol:e}",
        s.m,
        s.n,
        s.k,
        s.batch,
        s.a_t,
        s.b_t
    );
    ptxas_accepts(&ptx);
}

/// Assembles `ptx` for sm_80 and sm_90 when `VARC_PTXAS` names ptxas
/// (tests/tests/ptxas.rs requires it; here it is optional).
pub(crate) fn ptxas_accepts(ptx: &str) {
    let Some(ptxas) = std::env::var_os("VARC_PTXAS") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "varc-cuda-unit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in ["sm_80", "sm_90"] {
        let src = dir.join(format!("{arch}.ptx"));
        std::fs::write(
            &src,
            ptx.replace(".target sm_80", &format!(".target {arch}")),
        )
        .unwrap();
        let out = std::process::Command::new(&ptxas)
            .args(["-v", &format!("-arch={arch}")])
            .arg(&src)
            .arg("-o")
            .arg(dir.join(format!("{arch}.cubin")))
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ptxas {arch}:\n{log}");
        assert!(
            !log.contains("bytes spill stores") || log.contains(" 0 bytes spill stores"),
            "{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const PLAIN: Shape = Shape {
    batch: 2,
    m: 70,
    n: 40,
    k: 20,
    a_t: false,
    b_t: false,
    bias: true,
};

// ---- recognition ----

#[test]
fn contraction_axes_split_into_m_n_batch() {
    let p = matmul(PLAIN);
    let g: Gemm = gemm::recognise(&p, &p.kernels[0]).unwrap();
    assert_eq!(
        (g.m_axis, g.n_axis, g.batch.as_slice()),
        (Some(1), Some(2), &[0][..])
    );
    assert_eq!((g.m, g.n, g.k, g.kvar), (70, 40, 20, Some(Var::Red(0))));
    assert_eq!(g.a.buf, BufId(0), "A is the operand that reads the rows");
    assert!(g.worth_tensor_cores(&p.kernels[0].domain));
    // The epilogue: the sum replaced by the stored element.
    let c = load(BufId(3), Affine::row_major(&[2, 70, 40]));
    let want = Expr::binary(
        BinaryFn::Mul,
        Expr::binary(
            BinaryFn::Add,
            c,
            load(BufId(2), aff(0, &[(Var::Out(2), 1)])),
        ),
        Expr::f32(0.5),
    );
    assert_eq!(g.epilogue(), want);
}

#[test]
fn transposed_operands_and_unit_extents() {
    let p = matmul(Shape {
        batch: 1,
        m: 1,
        n: 50,
        k: 30,
        a_t: true,
        b_t: true,
        bias: false,
    });
    let g = gemm::recognise(&p, &p.kernels[0]).unwrap();
    // M = 1 and batch = 1: no row axis, no batch axes.
    assert_eq!(
        (g.m_axis, g.n_axis, g.batch.len(), g.m, g.n),
        (None, Some(2), 0, 1, 50)
    );
    assert!(
        !g.worth_tensor_cores(&p.kernels[0].domain),
        "one row: not worth a tile"
    );
}

#[test]
fn non_contractions_are_refused() {
    let base = matmul(PLAIN);
    let refused = |edit: &dyn Fn(&mut Program)| {
        let mut p = base.clone();
        edit(&mut p);
        gemm::recognise(&p, &p.kernels[0]).is_none()
    };
    let reduce = |p: &mut Program| -> (ReduceFn, Expr) {
        let mut found = None;
        p.kernels[0].value.visit(&mut |e| {
            if let Expr::Reduce { op, body, .. } = e {
                found = Some((*op, (**body).clone()));
            }
        });
        found.unwrap()
    };
    // Max instead of Sum.
    assert!(refused(&|p| {
        let (_, body) = reduce(p);
        p.kernels[0].value = Expr::Reduce {
            op: ReduceFn::Max,
            vars: vec![(0, 20)],
            body: Box::new(body),
        };
    }));
    // A guarded operand (padding).
    assert!(refused(&|p| {
        let (_, body) = reduce(p);
        let Expr::Binary(_, x, y) = body else {
            unreachable!()
        };
        let Expr::Load { access, .. } = *x else {
            unreachable!()
        };
        let guarded = Expr::Load {
            access,
            guards: vec![varc_ir::kernel::Guard {
                index: aff(0, &[(Var::Red(0), 1)]),
                lo: 1,
                hi: 20,
            }],
            fill: 0.0,
        };
        p.kernels[0].value = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(0, 20)],
            body: Box::new(Expr::binary(BinaryFn::Mul, guarded, *y)),
        };
    }));
    // Reads its own output.
    assert!(refused(&|p| {
        let own = load(BufId(3), Affine::row_major(&[2, 70, 40]));
        let v = p.kernels[0].value.clone();
        p.kernels[0].value = Expr::binary(BinaryFn::Add, v, own);
    }));
    // Two long reduction variables.
    assert!(refused(&|p| {
        let (_, body) = reduce(p);
        p.kernels[0].value = Expr::Reduce {
            op: ReduceFn::Sum,
            vars: vec![(0, 20), (1, 2)],
            body: Box::new(body),
        };
    }));
    // An operand read out of its buffer's bounds.
    assert!(refused(&|p| {
        p.buffers[1].shape = vec![20, 39];
    }));
    assert!(!refused(&|_| {}));
}

// ---- PTX text ----

#[test]
fn matmul_ptx_has_tiles_and_mma() {
    let p = matmul(PLAIN);
    for (precision, per_step) in [(Precision::Tf32, 1), (Precision::Tf32x3, 3)] {
        let opts = Options {
            precision,
            warp_reductions: true,
        };
        let (ptx, launches) = crate::emit_module(&p, CudaTarget::SM_80, &opts).unwrap();
        assert_eq!(
            launches[0],
            Launch {
                mode: KernelMode::Mma,
                grid: [1, 2, 2],
                block: 128,
                shared_bytes: gemm::SHARED_BYTES as u32,
            }
        );
        for snippet in [
            ".shared .align 16 .b8 varc_k0_mm_sa[5120];",
            ".shared .align 16 .b8 varc_k0_mm_sb[5120];",
            ".shared .align 16 .b8 varc_k0_mm_sc[17408];",
            ".maxntid 128, 1, 1",
            "cvt.rna.tf32.f32",
            "bar.sync 0;",
            "ld.shared.f32",
        ] {
            assert!(ptx.contains(snippet), "missing {snippet}");
        }
        // 2 k-steps per slice, 2×4 tiles per warp, 1 or 3 products each.
        let mma = ptx
            .matches("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {")
            .count();
        assert_eq!(mma, 2 * 8 * per_step);
        ptxas_accepts(&ptx);
    }
    let f32_only = Options {
        precision: Precision::F32,
        warp_reductions: true,
    };
    let (ptx, l) = crate::emit_module(&p, CudaTarget::SM_80, &f32_only).unwrap();
    assert!(!ptx.contains("mma.sync") && l[0].mode == KernelMode::Thread);
}

// ---- results (interpreted PTX vs the kernel IR interpreter) ----

#[test]
fn mma_tf32x3_matches_eval() {
    check_mma(PLAIN, Precision::Tf32x3, 2e-6);
}

#[test]
fn mma_tf32_matches_eval_within_tf32_rounding() {
    let err_bound = 3e-3;
    check_mma(PLAIN, Precision::Tf32, err_bound);
}

#[test]
fn mma_transposed_operands_and_ragged_edges() {
    // A walked along m (transposed), B along k; K below one slice; M, N
    // not multiples of the tile.
    check_mma(
        Shape {
            batch: 3,
            m: 33,
            n: 17,
            k: 9,
            a_t: true,
            b_t: true,
            bias: true,
        },
        Precision::Tf32x3,
        2e-6,
    );
}

#[test]
fn mma_single_row_single_column_and_long_k() {
    for (m, n, k) in [(1, 50, 30), (45, 1, 70), (1, 1, 5), (65, 65, 33)] {
        check_mma(
            Shape {
                batch: 1,
                m,
                n,
                k,
                a_t: false,
                b_t: false,
                bias: true,
            },
            Precision::Tf32x3,
            2e-6,
        );
    }
}

#[test]
fn mma_empty_reduction_is_the_epilogue_of_zero() {
    let p = matmul(Shape {
        batch: 1,
        m: 5,
        n: 6,
        k: 0,
        a_t: false,
        b_t: false,
        bias: true,
    });
    let (ptx, l) = forced_mma(&p, Precision::Tf32);
    let ins = inputs(&p);
    assert_eq!(simulate(&p, &ptx, &[l], &ins), reference(&p, &ins));
}

// ---- warp reductions ----

/// `out[i, j] = op_{r0<e0, r1<e1} x[i, r0, j, r1]` then an epilogue.
fn row_reduce(op: ReduceFn, points: (usize, usize), ext: (usize, usize), mean: bool) -> Program {
    let mut p = Program::default();
    let (pi, pj) = points;
    let (e0, e1) = ext;
    let x = add_buf(&mut p, "x", &[pi, e0, pj, e1], BufKind::Input(0));
    let out = add_buf(&mut p, "out", &[pi, pj], BufKind::Output(0));
    let idx = aff(
        0,
        &[
            (Var::Out(0), (e0 * pj * e1) as i64),
            (Var::Red(0), (pj * e1) as i64),
            (Var::Out(1), e1 as i64),
            (Var::Red(1), 1),
        ],
    );
    let red = Expr::Reduce {
        op,
        vars: vec![(0, e0), (1, e1)],
        body: Box::new(load(x, idx)),
    };
    let value = if mean {
        Expr::binary(BinaryFn::Div, red, Expr::f32((e0 * e1) as f64))
    } else {
        red
    };
    p.kernels.push(Kernel {
        name: "rowred".into(),
        domain: vec![pi, pj],
        store: Access {
            buf: out,
            index: Affine::row_major(&[pi, pj]),
            gathers: vec![],
        },
        value,
        library: None,
    });
    p
}

#[test]
fn warp_reductions_match_eval() {
    for (op, mean, tol) in [
        (ReduceFn::Sum, true, 1e-6),
        (ReduceFn::Max, false, 0.0),
        (ReduceFn::Min, false, 0.0),
    ] {
        for (points, ext) in [((3, 4), (5, 30)), ((1, 1), (1, 64)), ((2, 5), (3, 37))] {
            let p = row_reduce(op, points, ext, mean);
            let (ptx, launches) =
                crate::emit_module(&p, CudaTarget::SM_80, &Options::default()).unwrap();
            assert_eq!(
                launches[0].mode,
                KernelMode::Warp,
                "{op:?} {points:?} {ext:?}"
            );
            assert_eq!(ptx.matches("shfl.sync.bfly.b32").count(), 5);
            let ins = inputs(&p);
            let got = simulate(&p, &ptx, &launches, &ins);
            let err = scaled_error(&got[0], &reference(&p, &ins)[0]);
            assert!(err <= tol, "{op:?} {points:?} {ext:?}: {err:e}");
            ptxas_accepts(&ptx);
        }
    }
}

#[test]
fn warp_rule_and_fallbacks() {
    // Short reductions stay in one thread; so does VARC_CUDA_WARP=0.
    let short = row_reduce(ReduceFn::Sum, (2, 2), (2, 16), false);
    let (_, l) = crate::emit_module(&short, CudaTarget::SM_80, &Options::default()).unwrap();
    assert_eq!(l[0].mode, KernelMode::Thread);
    let long = row_reduce(ReduceFn::Sum, (2, 2), (4, 16), false);
    let off = Options {
        warp_reductions: false,
        ..Options::default()
    };
    let (ptx, l) = crate::emit_module(&long, CudaTarget::SM_80, &off).unwrap();
    assert_eq!(l[0].mode, KernelMode::Thread);
    assert!(!ptx.contains("shfl"));
    // Prod is not split across lanes.
    let prod = row_reduce(ReduceFn::Prod, (2, 2), (4, 16), false);
    assert!(crate::warp::recognise(&prod, &prod.kernels[0]).is_none());
    // Thread-mode results are unchanged by the new modes.
    let ins = inputs(&long);
    let got = simulate(&long, &ptx, &l, &ins);
    assert!(scaled_error(&got[0], &reference(&long, &ins)[0]) <= 1e-6);
}

// ---- plan ----

#[test]
fn plan_round_trips_through_json_and_files() {
    let mut p = matmul(PLAIN);
    let rr = row_reduce(ReduceFn::Max, (2, 3), (2, 40), false);
    // Append the reduction as a second kernel over its own buffers.
    let off = p.buffers.len();
    for b in &rr.buffers {
        let mut b = b.clone();
        b.kind = BufKind::Temp;
        p.buffers.push(b);
    }
    let mut k = rr.kernels[0].clone();
    k.store.buf = BufId(k.store.buf.0 + off);
    k.value = Expr::Reduce {
        op: ReduceFn::Max,
        vars: vec![(0, 2), (1, 40)],
        body: Box::new(load(
            BufId(off),
            aff(
                0,
                &[
                    (Var::Out(0), 240),
                    (Var::Red(0), 120),
                    (Var::Out(1), 40),
                    (Var::Red(1), 1),
                ],
            ),
        )),
    };
    p.kernels.push(k);
    let b = crate::build_with(&p, CudaTarget::SM_90, &Options::default()).unwrap();
    assert_eq!(b.plan.format_version, 2);
    let modes: Vec<_> = b.plan.kernels.iter().map(|k| k.mode).collect();
    assert_eq!(modes, [KernelMode::Mma, KernelMode::Warp]);
    assert_eq!(b.plan.kernels[0].shared_bytes as usize, gemm::SHARED_BYTES);
    let json = serde_json::to_string(&b.plan).unwrap();
    assert!(json.contains(r#""mode":"mma""#) && json.contains(r#""grid":[1,2,2]"#));
    let back: crate::plan::LaunchPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, b.plan);
    let dir = std::env::temp_dir().join(format!("varc-cuda-plan-{}", std::process::id()));
    b.write(&dir).unwrap();
    let read = crate::CudaBuild::read(&dir).unwrap();
    assert_eq!((read.plan, read.ptx), (b.plan, b.ptx));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn precision_names() {
    assert_eq!(Precision::parse("tf32").unwrap(), Precision::Tf32);
    assert_eq!(Precision::parse("tf32x3").unwrap(), Precision::Tf32x3);
    assert_eq!(Precision::parse("f32").unwrap(), Precision::F32);
    assert!(Precision::parse("fp16").is_err());
    assert_eq!(Options::default().precision, Precision::Tf32x3);
}
