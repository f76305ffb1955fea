//! The `varc` binary as users call it.

use std::path::PathBuf;
use std::process::Command;

fn varc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_varc"))
}

fn model(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file)
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("varc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_checks_shipped_goldens() {
    let (ok, stdout, stderr) = output(varc().arg("run").arg(model("minvar_dyn18.onnx")));
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("shipped inputs"), "{stdout}");
    assert!(stdout.contains(" ok "), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn run_writes_npz_and_reads_it_back_as_inputs() {
    let dir = std::env::temp_dir().join(format!("varc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.npz");
    let (ok, stdout, stderr) = output(
        varc()
            .arg("run")
            .arg(model("minvar_dyn18.onnx"))
            .arg("--seed")
            .arg("3")
            .arg("--inputs")
            .arg(model("minvar_dyn18.inputs.safetensors"))
            .arg("--output")
            .arg(&out),
    );
    assert!(ok, "{stdout}\n{stderr}");
    let back = varc_runtime::read_tensors(&out).unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
}

#[test]
fn inspect_json_has_the_facts() {
    let (ok, stdout, stderr) = output(
        varc()
            .arg("inspect")
            .arg("--json")
            .arg(model("var_tf_dyn18.onnx")),
    );
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    assert!(v["ops"]["MatMul"]["count"].as_u64().unwrap() > 0, "{v}");
    assert!(v["flops"].as_u64().unwrap() > 0, "{v}");
    assert!(v["parameters"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["opsets"][""].as_i64(), Some(18), "{v}");
}

#[test]
fn bad_model_gives_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("varc-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.onnx");
    std::fs::write(&bad, b"definitely not protobuf \xff\xff").unwrap();
    let (ok, _, stderr) = output(varc().arg("inspect").arg(&bad));
    assert!(!ok);
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = output(varc().arg("run").arg(dir.join("missing.onnx")));
    assert!(!ok);
    assert!(stderr.contains("missing.onnx"), "{stderr}");
}

#[test]
fn main_job_compiles_runs_and_checks_goldens() {
    let (ok, stdout, stderr) = output(varc().arg(model("var_step_dyn18.onnx")));
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("backend cpu"), "{stdout}");
    assert!(stdout.contains("compile"), "{stdout}");
    assert!(stdout.contains(" ok "), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn emit_asm_for_aarch64_lists_every_kernel() {
    let (ok, stdout, stderr) = output(varc().arg("run").arg(model("minvar_dyn18.onnx")).args([
        "--target",
        "aarch64-unknown-linux-gnu",
        "--emit",
        "asm",
    ]));
    assert!(ok, "{stderr}");
    assert!(stdout.matches("; kernel ").count() > 10, "{stdout}");
    // NEON vector registers appear in the listing.
    assert!(stdout.contains(".4s") || stdout.contains("v0"), "{stdout}");
}

#[test]
fn cross_target_cannot_run() {
    let (ok, _, stderr) = output(
        varc()
            .arg("run")
            .arg(model("minvar_dyn18.onnx"))
            .args(["--target", "aarch64-unknown-linux-gnu"]),
    );
    assert!(!ok);
    assert!(stderr.contains("--emit"), "{stderr}");
}

#[test]
fn emit_kernels_for_the_host_shows_what_runs() {
    // The host JIT runs attention as one microkernel call: the listing
    // says so, rather than showing the five-kernel lowering AOT objects get.
    let (ok, host, stderr) = output(
        varc()
            .arg("run")
            .arg(model("minvar_dyn18.onnx"))
            .args(["--emit", "kernels"]),
    );
    assert!(ok, "{stderr}");
    let (ok, cross, stderr) = output(varc().arg("run").arg(model("minvar_dyn18.onnx")).args([
        "--target",
        "aarch64-unknown-linux-gnu",
        "--emit",
        "kernels",
    ]));
    assert!(ok, "{stderr}");
    assert!(host.contains("attention("), "{host}");
    assert!(!cross.contains("attention("), "{cross}");
    assert!(host.matches("\nkernel ").count() < cross.matches("\nkernel ").count());
}
