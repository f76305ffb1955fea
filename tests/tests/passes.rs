//! Optimisation passes on the shipped models: semantics kept (reference
//! interpreter before vs after, random inputs; every model on its shipped
//! inputs), the same fused-op histogram at opsets 17, 18 and 23, what
//! fuse-silu / fuse-adaln / merge-projections fire per model, the resample
//! ⊗ projection commutation on the minimal VAR model, and fold-resample on
//! the VAR glue and FlowAR AR-step models (shipped inputs).

use std::collections::BTreeMap;
use varc::{LoadedModel, PassOptions};
use varc_ir::Op;
use varc_runtime::compare;
use varc_tests::{models_dir, shipped_models};

fn load(file: &str) -> LoadedModel {
    let dims: BTreeMap<String, usize> = [("batch".to_string(), 2)].into();
    varc::load(&models_dir().join(file), &dims).unwrap_or_else(|e| panic!("{file}: {e:#}"))
}

fn opts() -> PassOptions {
    PassOptions {
        verify: true,
        ..PassOptions::default()
    }
}

fn histogram(m: &LoadedModel, kinds: &[&str]) -> Vec<(String, usize)> {
    let mut h: Vec<(String, usize)> = kinds
        .iter()
        .map(|k| {
            let n = m.graph().nodes().filter(|(_, n)| n.op.kind() == *k).count();
            (k.to_string(), n)
        })
        .collect();
    // fuse-adaln's result: a norm whose scale or bias is computed, not constant.
    let g = m.graph();
    let modulated = g
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::LayerNorm { .. } | Op::RmsNorm { .. }))
        .filter(|(_, n)| {
            n.inputs[1..]
                .iter()
                .flatten()
                .any(|v| !matches!(g.node(v.node).op, Op::Const(_)))
        })
        .count();
    h.push(("modulated norm".into(), modulated));
    h
}

#[test]
fn passes_keep_semantics_on_random_inputs() {
    let cheap = [
        "minvar_ts17.onnx",
        "minvar_dyn18.onnx",
        "flowar_head_ts17.onnx",
        "flowar_head_dyn18.onnx",
        "flowar_ar_ts17.onnx",
        "var_step_ts17.onnx",
        "var_step_dyn18.onnx",
        "vqvae_dec_ts17.onnx",
    ];
    for m in shipped_models()
        .iter()
        .filter(|m| cheap.contains(&m.file.as_str()))
    {
        let mut model = load(&m.file);
        let inputs = model.random_inputs(7).unwrap();
        let before = model.run_reference(&inputs).unwrap();
        let rep = model.optimize(&opts()).unwrap();
        assert!(
            rep.passes.iter().any(|p| p.report.changed()),
            "{}: nothing fired",
            m.file
        );
        let after = model.run_reference(&inputs).unwrap();
        for ((name, want), (_, got)) in before.iter().zip(&after) {
            let a = compare(got, want, m.rtol, m.atol).unwrap();
            assert!(a.passed(), "{} {name}: {a:?}", m.file);
        }
    }
}

#[test]
fn opsets_17_18_23_end_with_the_same_fused_ops() {
    // Everything the passes produce, and what they consume.
    let kinds = [
        "Attention",
        "Gelu",
        "Silu",
        "RMSNormalization",
        "GroupNormalization",
        "LayerNormalization",
        "Resample",
        "MatMul",
        "Gemm",
        "Conv",
        "Softmax",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Resize",
        "AveragePool",
        "ReduceMean",
    ];
    let families = [
        "minvar",
        "var_tf",
        "var_step",
        "flowar_head",
        "flowar_ar",
        "vqvae_dec",
    ];
    for fam in families {
        let mut kernels = vec![];
        let hs: Vec<_> = ["ts17", "dyn18", "dyn23"]
            .iter()
            .map(|e| {
                let mut m = load(&format!("{fam}_{e}.onnx"));
                m.optimize(&opts()).unwrap();
                kernels.push(m.lower().unwrap().kernels.len());
                histogram(&m, &kinds)
            })
            .collect();
        // Printed, not asserted: kernel counts also depend on kernel fusion
        // (VARC_KERNEL_FUSION). With it they agree for every family; without
        // it var_tf/var_step ts17 keep 3/2 more kernels (the lvl_embed
        // Gather over a constant index too large to fold, and ts17's `q · 1`
        // explicit SDPA scale per attention block, which no pass removes).
        println!("{fam}: kernels ts17/dyn18/dyn23 = {kernels:?}; {:?}", hs[2]);
        assert_eq!(hs[0], hs[1], "{fam}: ts17 vs dyn18");
        assert_eq!(hs[1], hs[2], "{fam}: dyn18 vs dyn23");
        if fam.starts_with("var_") || fam.starts_with("flowar") {
            assert_eq!(hs[2][0], ("Attention".to_string(), 2), "{fam}");
        }
    }
}

#[test]
fn minvar_projection_commutation_is_reported_but_does_not_pay() {
    for e in ["ts17", "dyn18", "dyn23"] {
        let mut m = load(&format!("minvar_{e}.onnx"));
        let rep = m.optimize(&opts()).unwrap();
        let c = rep
            .passes
            .iter()
            .find(|p| p.report.pass == "commute-resample-projection")
            .unwrap();
        // Q, K and V each over the 8 resampled pyramid levels are legal,
        // saving ~37 % of the projection FLOPs; but each would add its own
        // resample chain, whose tap kernels cost more than the GEMM FLOPs
        // saved, so the cost model applies none.
        let note = c.report.notes.join("; ");
        assert!(
            note.contains("legal commutations (24 token pieces)"),
            "{note}"
        );
        assert!(note.contains("(37.1 % saved if all were applied"), "{note}");
        assert!(c.report.fired.is_empty(), "{e}: {:?}", c.report.fired);
        assert_eq!(
            c.report
                .skipped
                .iter()
                .filter(|s| s.what.starts_with("does not pay"))
                .count(),
            24,
            "{e}: {:?}",
            c.report
        );
        println!("minvar_{e}: {note}");
    }
}

/// fold-resample on the shipped VAR glue and FlowAR AR-step models: what it
/// turns into Resample, the kernel count, and the reference interpreter's
/// outputs on the shipped inputs before vs after, within each model's
/// tolerance.
#[test]
fn fold_resample_on_shipped_inputs() {
    // (model, Resize/AveragePool converted, area subgraphs, compositions)
    let cases = [
        ("var_glue_dyn18.onnx", 13, 5, 0),
        ("flowar_ar_dyn18.onnx", 2, 0, 1),
    ];
    for (file, converted, linear, composed) in cases {
        let m = shipped_models()
            .into_iter()
            .find(|m| m.file == file)
            .unwrap();
        let dir = models_dir();
        let inputs = varc_runtime::read_tensors(&dir.join(&m.inputs)).unwrap();
        let mut model = varc::load_for_inputs(&dir.join(file), &BTreeMap::new(), &inputs).unwrap();
        let mut off = varc::load_for_inputs(&dir.join(file), &BTreeMap::new(), &inputs).unwrap();
        off.pipeline = None;
        let kernels_off = off.lower().unwrap().kernels.len();
        let before = model.run_reference(&inputs).unwrap();
        let rep = model.optimize(&opts()).unwrap();
        let f = &rep
            .passes
            .iter()
            .find(|p| p.report.pass == "fold-resample")
            .unwrap()
            .report;
        let count = |s: &str| f.fired.iter().filter(|x| x.what.contains(s)).count();
        assert_eq!(
            (
                count("→ Resample ("),
                count("linear subgraph"),
                count("composed with")
            ),
            (converted + linear, linear, composed),
            "{file}: {:?}",
            f.fired
        );
        assert_eq!(
            m_kinds(&model, &["GatherND", "Resize", "AveragePool"]),
            0,
            "{file}"
        );
        let kernels_on = model.lower().unwrap().kernels.len();
        assert!(
            kernels_on < kernels_off,
            "{file}: {kernels_off} → {kernels_on}"
        );
        println!(
            "{file}: FLOPs {} → {}, kernels {kernels_off} → {kernels_on}",
            rep.flops_before, rep.flops_after
        );
        let after = model.run_reference(&inputs).unwrap();
        for ((name, want), (_, got)) in before.iter().zip(&after) {
            let a = compare(got, want, m.rtol, m.atol).unwrap();
            assert!(a.passed(), "{file} {name}: {a:?}");
        }
    }
}

fn m_kinds(m: &LoadedModel, kinds: &[&str]) -> usize {
    m.graph()
        .nodes()
        .filter(|(_, n)| kinds.contains(&n.op.kind()))
        .count()
}

/// What fuse-silu, fuse-adaln and merge-projections fire per model family,
/// the same at every opset/exporter: `[silu, adaln, merged groups]`.
const NEW_PASS_FIRES: [(&str, [usize; 3]); 7] = [
    // Q, K and V: one group of three MatMuls.
    ("minvar", [0, 0, 1]),
    // SiLU of the class embedding; ln_wo_grad·(1+scale)+shift in 2 blocks
    // ×2 and the head's norm; the three ada_lin Gemms of that SiLU.
    ("var_tf", [1, 5, 1]),
    ("var_step", [1, 5, 1]),
    // time-embed, block-condition and final-layer SiLUs; 2 blocks ×2 + the
    // final norm take their shift; ada_lin ×2, fc1_g/fc1_x ×2.
    ("flowar_head", [3, 5, 3]),
    // 4 adaLN shifts + the decoder's position-embedding add; ada_lin of the
    // two blocks, fc1_g/fc1_x ×2.
    ("flowar_ar", [1, 5, 3]),
    // ResnetBlock SiLUs; its q/k/v are already one 1×1 Conv.
    ("vqvae_dec", [13, 0, 0]),
    ("var_glue", [0, 0, 0]),
];

/// Every shipped model on its shipped inputs: the three passes fire where
/// expected, and the reference interpreter's outputs before and after the
/// whole pipeline agree within the model's tolerance.
#[test]
fn silu_adaln_and_merge_fire_as_expected_and_keep_semantics() {
    let dir = models_dir();
    for m in shipped_models() {
        let fam = m.file.rsplit_once('_').map_or("", |(f, _)| f);
        let want = NEW_PASS_FIRES
            .iter()
            .find(|(f, _)| *f == fam)
            .unwrap_or_else(|| panic!("{}: no expected counts", m.file))
            .1;
        let inputs = varc_runtime::read_tensors(&dir.join(&m.inputs)).unwrap();
        let mut model =
            varc::load_for_inputs(&dir.join(&m.file), &BTreeMap::new(), &inputs).unwrap();
        let before = model.run_reference(&inputs).unwrap();
        let rep = model.optimize(&opts()).unwrap();
        let fired = |pass: &str| -> usize {
            rep.passes
                .iter()
                .filter(|p| p.report.pass == pass)
                .map(|p| p.report.fired.len())
                .sum()
        };
        let got = [
            fired("fuse-silu"),
            fired("fuse-adaln"),
            fired("merge-projections"),
        ];
        assert_eq!(got, want, "{}: [silu, adaln, merge]", m.file);
        assert_eq!(m_kinds(&model, &["Sigmoid"]), 0, "{}", m.file);
        let after = model.run_reference(&inputs).unwrap();
        for ((name, want), (name_after, got)) in before.iter().zip(&after) {
            assert_eq!(name, name_after, "{}: outputs keep their names", m.file);
            let a = compare(got, want, m.rtol, m.atol).unwrap();
            assert!(a.passed(), "{} {name}: {a:?}", m.file);
        }
    }
}
