//! Every shipped model (models/manifest.json) run on a GPU through the CUDA
//! backend (PTX JIT-compiled by the driver) matches its onnxruntime outputs
//! within the manifest's tolerance.
//!
//! These tests need a CUDA device, so they are `#[ignore]`d and never count
//! as passes on machines without one. On a GPU machine:
//! `cargo test -p varc-tests --test cuda_golden -- --ignored`.
//! Run there without a device, they print "skipped: no CUDA device" and
//! return.
//!
//! Tolerances, per contraction precision (`varc_backend_cuda::Precision`):
//! * `tf32x3` (the default) and `f32`: the manifest's own `rtol`/`atol`
//!   (the same as the CPU backends'). 3xTF32 keeps ~22 bits of each
//!   operand, so its error stays within a small factor of f32 rounding,
//!   far below those tolerances (checked against the kernel IR interpreter
//!   by the backend's PTX-interpreter tests).
//! * `tf32`: TF32 keeps 11 significant bits (relative rounding 2^-11 ≈
//!   4.9e-4 per operand), so a contraction is off by ~1e-3 of its
//!   magnitude and the models chain several. We accept `rtol` 1e-2 and
//!   `atol` 100× the manifest's (atol there is 1e-5 of the output's scale,
//!   so this is 1e-3 of it). These bounds are an estimate: they have not
//!   been measured on a GPU yet; the test prints the observed errors.

use varc::cuda::{CudaTarget, open_device, run_cuda};
use varc_backend_cuda::{Options, Precision};
use varc_runtime::{compare, read_tensors};
use varc_tests::{models_dir, shipped_models};

#[test]
#[ignore = "needs a CUDA device"]
fn shipped_models_match_goldens_on_cuda() {
    check_models(Precision::Tf32x3, 1.0, 1.0);
}

#[test]
#[ignore = "needs a CUDA device"]
fn shipped_models_match_goldens_on_cuda_f32_fma() {
    check_models(Precision::F32, 1.0, 1.0);
}

#[test]
#[ignore = "needs a CUDA device"]
fn shipped_models_match_goldens_on_cuda_tf32() {
    // rtol 1e-4 × 100 = 1e-2; atol × 100 (see the module docs).
    check_models(Precision::Tf32, 100.0, 100.0);
}

/// Every shipped model with contractions at `precision`, within the
/// manifest's tolerances scaled by `rtol_x`, `atol_x`.
fn check_models(precision: Precision, rtol_x: f64, atol_x: f64) {
    let opts = Options {
        precision,
        ..Options::default()
    };
    println!("precision {precision:?}");
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
            let build = varc_backend_cuda::build_with(&model.lower()?, target, &opts)?;
            let got = run_cuda(&device, &model, &build, &inputs)?;
            let mut bad = Vec::new();
            for (name, g) in &got {
                let (_, w) = wanted
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| anyhow::anyhow!("golden has no output '{name}'"))?;
                let a =
                    compare(g, w, m.rtol * rtol_x, m.atol * atol_x).map_err(anyhow::Error::msg)?;
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
