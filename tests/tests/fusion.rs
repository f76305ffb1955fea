//! Kernel fusion (`varc_ir::kernel::fuse`) on the shipped models: the fused
//! program computes what the unfused one computes — in the kernel
//! interpreter (the specification) and through the JIT — keeps every
//! contraction on the sgemm path, and still emits PTX.
//!
//! Tolerance: the manifest's per-model rtol/atol. The programs differ only
//! in where values are rounded: a temp that fusion removes no longer rounds
//! its value to f32 in `eval` (which keeps f64 inside an expression), and
//! in compiled code a product may now meet a sum in one expression and
//! become an FMA. Both are f32 rounding differences carried through the
//! rest of the network, the same kind and size as compiled f32 against the
//! f64 reference, which is what the manifest tolerance bounds.

use varc_ir::Tensor;
use varc_ir::kernel::Program;
use varc_ir::kernel::fuse::{PASS_NAME, fuse_with_report};
use varc_ir::lower::LowerOptions;
use varc_runtime::{compare, read_tensors};
use varc_tests::{ShippedModel, models_dir, shipped_models};

/// The model's program without kernel fusion, and its golden inputs in
/// program order.
fn unfused(m: &ShippedModel) -> anyhow::Result<(Program, Vec<Tensor>)> {
    unfused_with(m, &LowerOptions::default())
}

fn unfused_with(m: &ShippedModel, opts: &LowerOptions) -> anyhow::Result<(Program, Vec<Tensor>)> {
    let dir = models_dir();
    let named = read_tensors(&dir.join(&m.inputs))?;
    let mut model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &named)?;
    if let Some(p) = model.pipeline.as_mut() {
        p.disabled.push(PASS_NAME.into());
    }
    anyhow::ensure!(!model.kernel_fusion(), "the switch turns fusion off");
    let program = model.lower_with(opts)?;
    let inputs = model
        .inputs()
        .into_iter()
        .map(|(name, _)| {
            named
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| anyhow::anyhow!("no golden input '{name}'"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((program, inputs))
}

/// `got` against `want` under the model's tolerance; the failures.
fn agree(m: &ShippedModel, what: &str, got: &[Tensor], want: &[Tensor]) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match compare(g, w, m.rtol, m.atol) {
            Ok(a) if a.passed() => {
                println!(
                    "{:<24} {what:<6} output {i}: max abs {:.2e} max rel {:.2e}",
                    m.file, a.max_abs, a.max_rel
                );
            }
            Ok(a) => bad.push(format!(
                "{} {what}: output {i}: {} of {} outside tolerance, worst {:?}",
                m.file, a.mismatches, a.count, a.worst
            )),
            Err(e) => bad.push(format!("{} {what}: output {i}: {e}", m.file)),
        }
    }
    bad
}

fn small(m: &ShippedModel) -> bool {
    ["minvar_", "flowar_head_", "var_step_", "var_glue_"]
        .iter()
        .any(|p| m.file.starts_with(p))
}

/// The kernel interpreter gives the same outputs before and after fusion
/// (the models small enough to interpret).
#[test]
fn fused_programs_evaluate_like_unfused_ones() {
    let mut failures = Vec::new();
    for m in shipped_models().iter().filter(|m| small(m)) {
        let result = (|| -> anyhow::Result<Vec<String>> {
            let (before, inputs) = unfused(m)?;
            let (after, rep) = fuse_with_report(before.clone());
            println!("{:<24} {rep}", m.file);
            anyhow::ensure!(
                rep.kernels_after < rep.kernels_before,
                "fusion removed no kernel"
            );
            let want =
                varc_ir::kernel::eval::run_program(&before, &inputs).map_err(anyhow::Error::msg)?;
            let got =
                varc_ir::kernel::eval::run_program(&after, &inputs).map_err(anyhow::Error::msg)?;
            Ok(agree(m, "eval", &got, &want))
        })();
        match result {
            Ok(bad) => failures.extend(bad),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every model, compiled: the same outputs, every sgemm contraction kept
/// (fused epilogues included), and the fused kernels emit PTX.
#[test]
fn fused_programs_compile_keep_sgemm_and_run_like_unfused_ones() {
    let mut failures = Vec::new();
    for m in &shipped_models() {
        let result = (|| -> anyhow::Result<Vec<String>> {
            let (before, inputs) = unfused(m)?;
            let (after, rep) = fuse_with_report(before.clone());
            let (jb, ja) = (
                varc_backend_cpu::compile_jit(&before)?,
                varc_backend_cpu::compile_jit(&after)?,
            );
            let count = |j: &varc_backend_cpu::JitProgram,
                         f: fn(&varc_backend_cpu::plan::Plan) -> bool| {
                j.plans().iter().filter(|p| f(p)).count()
            };
            let sgemm = |p: &varc_backend_cpu::plan::Plan| p.sgemm;
            let epilogue = |p: &varc_backend_cpu::plan::Plan| p.sgemm && p.epilogue;
            let (sb, sa) = (count(&jb, sgemm), count(&ja, sgemm));
            let (eb, ea) = (count(&jb, epilogue), count(&ja, epilogue));
            println!(
                "{:<24} {rep}; sgemm kernels {sb} → {sa}, with epilogue {eb} → {ea}",
                m.file
            );
            anyhow::ensure!(sa == sb, "sgemm kernels {sb} before fusion, {sa} after");
            varc_backend_cuda::emit_ptx(&after, varc_backend_cuda::CudaTarget::SM_80)?;
            let want = jb.run(&inputs).map_err(anyhow::Error::msg)?;
            let got = ja.run(&inputs).map_err(anyhow::Error::msg)?;
            Ok(agree(m, "jit", &got, &want))
        })();
        match result {
            Ok(bad) => failures.extend(bad),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The kernel-fusion switch: `--disable-pass kernel-fusion` is accepted
/// (the graph pipeline does not know the name) and lowers unfused.
#[test]
fn the_switch_turns_fusion_off() {
    let m = &shipped_models()[0];
    let (off, _) = unfused(m).unwrap();
    let dir = models_dir();
    let named = read_tensors(&dir.join(&m.inputs)).unwrap();
    let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &named).unwrap();
    assert!(model.kernel_fusion());
    let on = model.lower().unwrap();
    assert!(on.kernels.len() < off.kernels.len());
    assert_eq!(on, varc_ir::kernel::fuse::fuse(off));
}

/// A library-tagged kernel, as the facts fusion must keep: name, domain,
/// the buffers it reads and the one it writes (by name).
fn tagged(p: &Program) -> Vec<(String, Vec<usize>, Vec<String>, String)> {
    p.kernels
        .iter()
        .filter(|k| k.library.is_some())
        .map(|k| {
            let reads = k
                .reads()
                .iter()
                .map(|&b| p.buffer(b).name.clone())
                .collect();
            let store = p.buffer(k.store.buf).name.clone();
            (k.name.clone(), k.domain.clone(), reads, store)
        })
        .collect()
}

/// With attention lowered to library-tagged kernels (as the JIT does),
/// fusion leaves every tagged kernel and the buffers it reads alone, the
/// tags still check, and (on var_step) the interpreter agrees.
#[test]
fn library_tagged_kernels_are_left_alone() {
    let opts = LowerOptions {
        fused_attention: true,
        conv_library: true,
        ..Default::default()
    };
    let mut failures = Vec::new();
    let mut seen = 0;
    for m in &shipped_models() {
        let result = (|| -> anyhow::Result<Vec<String>> {
            let (before, inputs) = unfused_with(m, &opts)?;
            let after = varc_ir::kernel::fuse::fuse(before.clone());
            anyhow::ensure!(tagged(&after) == tagged(&before), "tagged kernels changed");
            seen += tagged(&before).len();
            for k in after.kernels.iter().filter(|k| k.library.is_some()) {
                varc_ir::kernel::library::check(&after, k)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", k.name))?;
            }
            if m.file != "var_step_dyn18.onnx" {
                return Ok(vec![]);
            }
            let want =
                varc_ir::kernel::eval::run_program(&before, &inputs).map_err(anyhow::Error::msg)?;
            let got =
                varc_ir::kernel::eval::run_program(&after, &inputs).map_err(anyhow::Error::msg)?;
            Ok(agree(m, "eval", &got, &want))
        })();
        match result {
            Ok(bad) => failures.extend(bad),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(seen > 0, "no shipped model has a library-tagged kernel");
}
