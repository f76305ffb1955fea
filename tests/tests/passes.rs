//! Optimisation passes on the shipped models: semantics kept (reference
//! interpreter before vs after, random inputs), the same fused-op histogram
//! at opsets 17, 18 and 23, and the resample ⊗ projection commutation on
//! the minimal VAR model.

use std::collections::BTreeMap;
use varc::{LoadedModel, PassOptions};
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
    kinds
        .iter()
        .map(|k| {
            let n = m.graph().nodes().filter(|(_, n)| n.op.kind() == *k).count();
            (k.to_string(), n)
        })
        .collect()
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
    let kinds = [
        "Attention",
        "Gelu",
        "RMSNormalization",
        "GroupNormalization",
        "LayerNormalization",
        "Softmax",
        "Erf",
        "Tanh",
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
        let hs: Vec<_> = ["ts17", "dyn18", "dyn23"]
            .iter()
            .map(|e| {
                let mut m = load(&format!("{fam}_{e}.onnx"));
                m.optimize(&opts()).unwrap();
                histogram(&m, &kinds)
            })
            .collect();
        assert_eq!(hs[0], hs[1], "{fam}: ts17 vs dyn18");
        assert_eq!(hs[1], hs[2], "{fam}: dyn18 vs dyn23");
        if fam.starts_with("var_") || fam.starts_with("flowar") {
            assert_eq!(hs[2][0], ("Attention".to_string(), 2), "{fam}");
        }
    }
}

#[test]
fn minvar_projections_move_before_the_resamples() {
    for e in ["ts17", "dyn18", "dyn23"] {
        let mut m = load(&format!("minvar_{e}.onnx"));
        let rep = m.optimize(&opts()).unwrap();
        let c = rep
            .passes
            .iter()
            .find(|p| p.report.pass == "commute-resample-projection")
            .unwrap();
        // Q, K and V each over the 8 resampled pyramid levels.
        assert_eq!(c.report.fired.len(), 24, "{e}: {:?}", c.report);
        let note = c.report.notes.join("; ");
        assert!(note.contains("commuted projections"), "{note}");
        println!("minvar_{e}: {note}");
    }
}
