//! Every shipped model (models/manifest.json) run on a GPU through the CUDA
//! backend (PTX JIT-compiled by the driver) matches its onnxruntime outputs
//! within the manifest's tolerance.
//!
//! These tests need a CUDA device, so they are `#[ignore]`d and never count
//! as passes on machines without one. On a GPU machine:
//! `cargo test -p varc-tests --test cuda_golden -- --ignored`.
//! Run there without a device, they print "skipped: no CUDA device" and
//! return.

use varc::cuda::{CudaTarget, open_device, run_cuda};
use varc_runtime::{compare, read_tensors};
use varc_tests::{models_dir, shipped_models};

#[test]
#[ignore = "needs a CUDA device"]
fn shipped_models_match_goldens_on_cuda() {
    let device = match open_device() {
        Ok(d) => d,
        Err(why) => {
            println!("skipped: no CUDA device ({why})");
            return;
        }
    };
    let target = if device.sm >= 90 {
        CudaTarget::SM_90
    } else {
        CudaTarget::SM_80
    };
    println!("device {}", device.name);
    let models = shipped_models();
    assert!(!models.is_empty(), "models/manifest.json lists no models");
    let mut failures = Vec::new();
    for m in &models {
        let result = (|| -> anyhow::Result<Vec<String>> {
            let dir = models_dir();
            let inputs = read_tensors(&dir.join(&m.inputs))?;
            let wanted = read_tensors(&dir.join(&m.outputs))?;
            let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &inputs)?;
            let build = model.compile_cuda(target)?;
            let got = run_cuda(&device, &model, &build, &inputs)?;
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
        })();
        match result {
            Ok(bad) if bad.is_empty() => {}
            Ok(bad) => failures.push(format!("{}: {}", m.file, bad.join("; "))),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "CUDA golden mismatches:\n{}",
        failures.join("\n")
    );
}
