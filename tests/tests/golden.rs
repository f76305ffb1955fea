//! Every shipped model (models/manifest.json) matches its onnxruntime
//! outputs within the tolerance the manifest states, on every backend.

use varc_runtime::{compare, read_tensors};
use varc_tests::{ShippedModel, models_dir, shipped_models};

#[derive(Clone, Copy)]
enum Backend {
    Reference,
    Cpu,
}

/// Runs one shipped model; returns the outputs outside tolerance.
fn check(m: &ShippedModel, backend: Backend) -> anyhow::Result<Vec<String>> {
    let dir = models_dir();
    let inputs = read_tensors(&dir.join(&m.inputs))?;
    let wanted = read_tensors(&dir.join(&m.outputs))?;
    let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &inputs)?;
    let got = match backend {
        Backend::Reference => model.run_reference(&inputs)?,
        Backend::Cpu => model.compile_host()?.run(&inputs)?,
    };
    anyhow::ensure!(
        got.len() == wanted.len(),
        "{} outputs, golden has {}",
        got.len(),
        wanted.len()
    );
    let mut bad = Vec::new();
    for (name, g) in &got {
        let (_, w) = wanted
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| anyhow::anyhow!("golden has no output '{name}'"))?;
        let a = compare(g, w, m.rtol, m.atol).map_err(anyhow::Error::msg)?;
        println!(
            "{:<24} {name:<18} max abs {:.2e} max rel {:.2e} ({} bad of {})",
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
}

fn check_all(backend: Backend) {
    let models = shipped_models();
    assert!(!models.is_empty(), "models/manifest.json lists no models");
    let failures: Vec<String> = models
        .iter()
        .filter_map(|m| match check(m, backend) {
            Ok(bad) if bad.is_empty() => None,
            Ok(bad) => Some(format!("{}: {}", m.file, bad.join("; "))),
            Err(e) => Some(format!("{}: {e:#}", m.file)),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn shipped_models_match_goldens_on_reference_backend() {
    check_all(Backend::Reference);
}

#[test]
fn shipped_models_match_goldens_on_cpu_backend() {
    check_all(Backend::Cpu);
}
