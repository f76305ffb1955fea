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

/// Runs on two threads give bit-identical outputs to one-thread runs (each
/// output element is computed by one thread in the same order).
#[test]
fn shipped_models_are_bit_identical_on_one_and_two_threads() {
    let dir = models_dir();
    let mut failures = Vec::new();
    for m in shipped_models() {
        let run = || -> anyhow::Result<Vec<(String, Vec<u8>)>> {
            let inputs = read_tensors(&dir.join(&m.inputs))?;
            let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &inputs)?;
            let one = model.compile_host()?;
            let got1 = one.run(&inputs)?;
            let two = one.with_threads(2);
            // Twice: the second run reuses the workers and the arena.
            two.run(&inputs)?;
            let got2 = two.run(&inputs)?;
            let mut diff = Vec::new();
            for ((n, a), (_, b)) in got1.iter().zip(&got2) {
                let (x, y) = (a.data().to_le_bytes(), b.data().to_le_bytes());
                if x != y {
                    diff.push((n.clone(), x));
                }
            }
            Ok(diff)
        };
        match run() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => failures.push(format!(
                "{}: outputs {:?} differ",
                m.file,
                d.iter().map(|x| &x.0).collect::<Vec<_>>()
            )),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
