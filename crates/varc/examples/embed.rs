//! Embedding varc in a Rust program: compile a model once, run it from
//! several threads at once.
//!
//!     cargo run -p varc --example embed -- models/minvar_dyn18.onnx
//!
//! Prints each output's dtype, shape and checksum, then checks that four
//! concurrent runs of the same `Executable` give bit-identical outputs.

use anyhow::{Result, ensure};

fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../models/minvar_dyn18.onnx"
        )
        .to_string()
    });

    // Compile for this CPU. `.dim("batch", 2)` would bind a symbolic dim.
    let exe = varc::Compiler::new()
        .target("host")
        .threads(1)
        .compile(&path)?;

    // Inputs by name: small deterministic ramps of each input's dtype/shape.
    let mut inputs = Vec::new();
    for (name, (dtype, shape)) in exe.input_names().iter().zip(exe.input_types()) {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 0.1).collect();
        let t = varc::Tensor::from_f64_as(dtype, shape, &values).map_err(anyhow::Error::msg)?;
        inputs.push((name.clone(), t));
    }

    let outputs = exe.run(&inputs)?;
    for (name, t) in &outputs {
        let sum: f64 = t.to_f64_vec().iter().sum();
        println!("{name}: {}{:?} checksum {sum:.6}", t.dtype(), t.shape());
    }

    // `Executable` is Send + Sync: share it by reference across threads.
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| exe.run(&inputs))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panics"))
            .collect()
    });
    for r in results {
        let r = r?;
        for ((_, a), (_, b)) in r.iter().zip(&outputs) {
            ensure!(
                a.data().to_le_bytes() == b.data().to_le_bytes(),
                "runs disagree"
            );
        }
    }
    println!("4 concurrent runs agree");
    Ok(())
}
