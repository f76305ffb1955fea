//! Every kernel of every shipped model compiles for aarch64 (NEON) and
//! passes Cranelift's verifier. Running that code is the AOT issue's job
//! (under qemu).

use varc::Target;
use varc_runtime::read_tensors;
use varc_tests::{models_dir, shipped_models};

#[test]
fn shipped_models_compile_for_aarch64() {
    let target = Target::parse("aarch64-unknown-linux-gnu").expect("aarch64 is a supported triple");
    let mut failures = Vec::new();
    for m in shipped_models() {
        let dir = models_dir();
        let result = (|| -> anyhow::Result<(usize, usize)> {
            let inputs = read_tensors(&dir.join(&m.inputs))?;
            let model = varc::load_for_inputs(&dir.join(&m.file), &Default::default(), &inputs)?;
            let kernels = model.compile_for(&target)?;
            Ok((kernels.len(), kernels.iter().map(|k| k.code_size).sum()))
        })();
        match result {
            Ok((n, bytes)) => println!(
                "{:<24} {n:>4} kernels  {bytes:>8} bytes of aarch64 code",
                m.file
            ),
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "aarch64 compilation failed:\n{}",
        failures.join("\n")
    );
}
