//! Every shipped model (models/manifest.json) matches its onnxruntime
//! outputs on the reference backend, within the tolerance the manifest states.

use varc_runtime::{compare, read_tensors};
use varc_tests::{models_dir, shipped_models};

#[test]
fn shipped_models_match_goldens_on_reference_backend() {
    let models = shipped_models();
    assert!(!models.is_empty(), "models/manifest.json lists no models");
    let mut failures = Vec::new();
    for m in &models {
        let dir = models_dir();
        let result = (|| -> anyhow::Result<Vec<String>> {
            let inputs = read_tensors(&dir.join(&m.inputs))?;
            let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &inputs)?;
            let wanted = read_tensors(&dir.join(&m.outputs))?;
            let got = model.run_reference(&inputs)?;
            let mut bad = Vec::new();
            assert_eq!(got.len(), wanted.len(), "{}: output count", m.file);
            for (name, g) in &got {
                let (_, w) = wanted
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| anyhow::anyhow!("golden has no output '{name}'"))?;
                let a = compare(g, w, m.rtol, m.atol).map_err(anyhow::Error::msg)?;
                println!(
                    "{:<28} {name:<20} max abs {:.2e} max rel {:.2e} ({} bad of {})",
                    m.file, a.max_abs, a.max_rel, a.mismatches, a.count
                );
                if !a.passed() {
                    bad.push(format!(
                        "{name}: {} of {} outside tolerance, worst {:?}",
                        a.mismatches, a.count, a.worst
                    ));
                }
            }
            Ok(bad)
        })();
        match result {
            Ok(bad) if bad.is_empty() => {}
            Ok(bad) => failures.push(format!("{}: {}", m.file, bad.join("; "))),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
