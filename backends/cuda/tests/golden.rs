//! PTX golden-text tests: tiny kernels whose expected PTX is checked in
//! under tests/golden/. `VARC_BLESS=1 cargo test -p varc-backend-cuda`
//! rewrites the expected files (review the diff). When `VARC_PTXAS` names
//! a ptxas binary, each module is also assembled for sm_80 and sm_90.

use std::path::PathBuf;
use varc_backend_cuda::{CudaTarget, emit_ptx};
use varc_ir::DType;
use varc_ir::kernel::{
    Access, Affine, BinaryFn, BufId, BufKind, Buffer, Expr, Guard, Kernel, Program, ReduceFn,
    UnaryFn, Var,
};

fn buffer(p: &mut Program, name: &str, shape: &[usize], kind: BufKind) -> BufId {
    p.add_buffer(Buffer {
        name: name.into(),
        dtype: DType::F32,
        shape: shape.to_vec(),
        kind,
    })
}

fn store(buf: BufId, shape: &[usize]) -> Access {
    Access {
        buf,
        index: Affine::row_major(shape),
        gathers: vec![],
    }
}

/// out[i, j] = a[i, j] + b[j]  (broadcast add)
fn elementwise_add() -> Program {
    let mut p = Program::default();
    let a = buffer(&mut p, "a", &[4, 8], BufKind::Input(0));
    let b = buffer(&mut p, "b", &[8], BufKind::Input(1));
    let o = buffer(&mut p, "out", &[4, 8], BufKind::Output(0));
    p.inputs = vec![a, b];
    p.outputs = vec![o];
    let bj = Affine {
        offset: 0,
        terms: vec![(Var::Out(1), 1)],
    };
    p.kernels.push(Kernel {
        name: "add".into(),
        domain: vec![4, 8],
        store: store(o, &[4, 8]),
        value: Expr::binary(
            BinaryFn::Add,
            Expr::load(a, Affine::row_major(&[4, 8])),
            Expr::load(b, bj),
        ),
        library: None,
    });
    p
}

/// out[i] = max_j exp(x[i, j])  (a reduction with a transcendental body)
fn row_reduction() -> Program {
    let mut p = Program::default();
    let x = buffer(&mut p, "x", &[3, 5], BufKind::Input(0));
    let o = buffer(&mut p, "out", &[3], BufKind::Output(0));
    p.inputs = vec![x];
    p.outputs = vec![o];
    let xij = Affine {
        offset: 0,
        terms: vec![(Var::Out(0), 5), (Var::Red(0), 1)],
    };
    p.kernels.push(Kernel {
        name: "reduce_max_exp".into(),
        domain: vec![3],
        store: store(o, &[3]),
        value: Expr::Reduce {
            op: ReduceFn::Max,
            vars: vec![(0, 5)],
            body: Box::new(Expr::unary(UnaryFn::Exp, Expr::load(x, xij))),
        },
        library: None,
    });
    p
}

/// out[i] = x[i - 1] where 1 <= i <= 6, else 0  (zero padding by one)
fn guarded_load() -> Program {
    let mut p = Program::default();
    let x = buffer(&mut p, "x", &[6], BufKind::Input(0));
    let o = buffer(&mut p, "out", &[8], BufKind::Output(0));
    p.inputs = vec![x];
    p.outputs = vec![o];
    let idx = Affine {
        offset: -1,
        terms: vec![(Var::Out(0), 1)],
    };
    p.kernels.push(Kernel {
        name: "pad".into(),
        domain: vec![8],
        store: store(o, &[8]),
        value: Expr::Load {
            access: Box::new(Access {
                buf: x,
                index: idx.clone(),
                gathers: vec![],
            }),
            guards: vec![Guard {
                index: idx,
                lo: 0,
                hi: 6,
            }],
            fill: 0.0,
        },
        library: None,
    });
    p
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, p: &Program) {
    let ptx = emit_ptx(p, CudaTarget::SM_80).expect("emits");
    let path = golden_dir().join(format!("{name}.ptx"));
    if std::env::var("VARC_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &ptx).unwrap();
    } else {
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (VARC_BLESS=1 cargo test -p varc-backend-cuda writes it)",
                path.display()
            )
        });
        assert!(
            want == ptx,
            "{} differs from the emitted PTX (VARC_BLESS=1 to update):\n{ptx}",
            path.display()
        );
    }
    if let Some(ptxas) = std::env::var_os("VARC_PTXAS") {
        let dir = std::env::temp_dir().join(format!("varc-cuda-golden-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let src = dir.join(format!("{name}.{arch}.ptx"));
            std::fs::write(
                &src,
                ptx.replace(".target sm_80", &format!(".target {arch}")),
            )
            .unwrap();
            let out = std::process::Command::new(&ptxas)
                .arg(format!("-arch={arch}"))
                .arg(&src)
                .arg("-o")
                .arg(dir.join(format!("{name}.{arch}.cubin")))
                .output()
                .expect("runs ptxas");
            assert!(
                out.status.success(),
                "ptxas -arch={arch} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn elementwise_add_ptx() {
    check("elementwise_add", &elementwise_add());
}

#[test]
fn row_reduction_ptx() {
    check("row_reduction", &row_reduction());
}

#[test]
fn guarded_load_ptx() {
    check("guarded_load", &guarded_load());
}

#[test]
fn build_writes_and_reads_back() {
    let p = guarded_load();
    let build = varc_backend_cuda::build(&p, CudaTarget::SM_90).unwrap();
    let dir = std::env::temp_dir().join(format!("varc-cuda-build-{}", std::process::id()));
    build.write(&dir).unwrap();
    let back = varc_backend_cuda::CudaBuild::read(&dir).unwrap();
    assert_eq!(back.plan, build.plan);
    assert_eq!(back.ptx, build.ptx);
    assert_eq!(back.plan.target, "sm_90");
    assert_eq!(back.plan.kernels[0].entry, "varc_k0_pad");
    assert_eq!(back.plan.kernels[0].params, vec![0, 1]);
    let _ = std::fs::remove_dir_all(&dir);
}
