//! `--target cuda[:sm_80|sm_90]` as users call it: without a GPU the files
//! are written and nothing runs; with one, the run is checked against the
//! shipped goldens.

use std::path::PathBuf;
use std::process::Command;

fn varc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_varc"))
}

fn model(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(file)
        .canonicalize()
        .expect("the shipped model exists")
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("varc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("varc-cuda-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn main_job_writes_ptx_plan_and_weights() {
    let dir = scratch("main");
    let (ok, stdout, stderr) = output(
        varc()
            .current_dir(&dir)
            .arg(model("minvar_dyn18.onnx"))
            .args(["--target", "cuda"]),
    );
    assert!(ok, "{stdout}\n{stderr}");
    let out = dir.join("minvar_dyn18.cuda");
    let ptx = std::fs::read_to_string(out.join("model.ptx")).expect("model.ptx");
    assert!(ptx.contains(".version 7.8") && ptx.contains(".target sm_80"));
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("plan.json")).expect("plan.json")).unwrap();
    assert_eq!(plan["format_version"], 2);
    let kernels = plan["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), ptx.matches(".visible .entry").count());
    // Contractions run on tensor cores by default.
    assert!(kernels.iter().any(|k| k["mode"] == "mma"), "{plan}");
    assert!(ptx.contains("mma.sync.aligned.m16n8k8"));
    // Attention is one fused flash-attention entry, launched a block per
    // (query tile, head, batch index) with its shared memory recorded.
    let att: Vec<_> = kernels
        .iter()
        .filter(|k| k["mode"] == "attention")
        .collect();
    assert_eq!(att.len(), 1, "{plan}");
    assert!(att[0]["shared_bytes"].as_u64().unwrap() > 0, "{plan}");
    assert!(att[0]["block"].as_u64().unwrap() <= 64, "{plan}");
    let weights = std::fs::metadata(out.join("weights.bin")).unwrap().len();
    assert_eq!(plan["weights_bytes"].as_u64(), Some(weights));
    // Either a device ran it (and the goldens were checked) or it says so.
    assert!(
        stdout.contains("no CUDA driver/device found")
            || (stdout.contains("backend cuda") && !stdout.contains("FAIL")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_emit_to_and_sm_90() {
    let dir = scratch("run");
    let out = dir.join("out");
    let (ok, stdout, stderr) = output(
        varc()
            .arg("run")
            .arg(model("var_step_dyn18.onnx"))
            .args(["--target", "cuda:sm_90", "--emit-to"])
            .arg(&out),
    );
    assert!(ok, "{stdout}\n{stderr}");
    let ptx = std::fs::read_to_string(out.join("model.ptx")).expect("model.ptx");
    assert!(ptx.contains(".target sm_90"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emit_ptx_prints_the_module() {
    let (ok, stdout, stderr) = output(varc().arg("run").arg(model("minvar_dyn18.onnx")).args([
        "--target",
        "cuda:sm_80",
        "--emit",
        "ptx",
    ]));
    assert!(ok, "{stderr}");
    assert!(stdout.matches(".visible .entry").count() > 10, "{stdout}");
}

#[test]
fn unknown_cuda_arch_is_a_clear_error() {
    let (ok, _, stderr) = output(
        varc()
            .arg("run")
            .arg(model("minvar_dyn18.onnx"))
            .args(["--target", "cuda:sm_70"]),
    );
    assert!(!ok);
    assert!(stderr.contains("cuda:sm_80"), "{stderr}");
}

#[test]
fn cuda_precision_chooses_the_contraction_code() {
    let dir = scratch("precision");
    let (ok, stdout, stderr) = output(varc().arg(model("minvar_dyn18.onnx")).args([
        "--target",
        "cuda",
        "--cuda-precision",
        "f32",
        "--emit",
        "ptx",
    ]));
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(".entry") && !stdout.contains("mma.sync"));
    let (ok, _, stderr) = output(varc().arg(model("minvar_dyn18.onnx")).args([
        "--target",
        "cuda",
        "--cuda-precision",
        "fp8",
        "--emit",
        "ptx",
    ]));
    assert!(
        !ok && stderr.contains("expected f32, tf32 or tf32x3"),
        "{stderr}"
    );
    let (ok, _, stderr) = output(
        varc()
            .arg(model("minvar_dyn18.onnx"))
            .args(["--cuda-precision", "tf32"]),
    );
    assert!(!ok && stderr.contains("--target cuda only"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
