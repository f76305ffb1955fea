//! `varc MODEL.onnx --emit obj|so -o FILE` (and `varc run ... --emit-to
//! FILE`): the CLI side of AOT (the C round trip is tests/tests/aot.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name)
}

fn varc(args: &[&str], out: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_varc"))
        .arg("run")
        .arg(model("minvar_dyn18.onnx"))
        .args(args)
        .arg("--emit-to")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn emit_obj_and_so_write_artifact_and_header() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    for (args, file, elf_type) in [
        (vec!["--emit", "obj"], "m.o", 1u16),
        (vec!["--emit", "so"], "m.so", 3u16),
        (
            vec!["--emit", "obj", "--target", "aarch64-unknown-linux-gnu"],
            "m64.o",
            1u16,
        ),
    ] {
        let out = dir.join(file);
        let (ok, stderr) = varc(&args, &out);
        assert!(ok, "{stderr}");
        assert!(stderr.contains("entry varc_minvar_dyn18_run"), "{stderr}");
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(
            u16::from_le_bytes([bytes[16], bytes[17]]),
            elf_type,
            "{file}"
        );
        let header = std::fs::read_to_string(out.with_extension("h")).unwrap();
        assert!(header.contains("static inline int varc_minvar_dyn18_check_abi(void)"));
        assert!(header.contains("#define VARC_MINVAR_DYN18_OUTPUT_0_SHAPE {1, 679, 64}"));
    }
}

#[test]
fn emit_obj_needs_a_file() {
    let o = Command::new(env!("CARGO_BIN_EXE_varc"))
        .arg("run")
        .arg(model("minvar_dyn18.onnx"))
        .args(["--emit", "obj"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--emit-to"));
}

#[test]
fn emit_to_a_header_path_is_refused() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, stderr) = varc(&["--emit", "obj"], &dir.join("x.h"));
    assert!(!ok);
    assert!(stderr.contains(".h"), "{stderr}");
}

#[test]
fn external_weights_go_beside_the_artifact() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("ext.o");
    let (ok, stderr) = varc(&["--emit", "obj", "--weights", "external"], &out);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("(external)"), "{stderr}");
    let weights = std::fs::read(dir.join("ext.weights")).unwrap();
    assert_eq!(&weights[..8], b"VARCWTS\0");
    let header = std::fs::read_to_string(dir.join("ext.h")).unwrap();
    assert!(header.contains(&format!(
        "#define VARC_MINVAR_DYN18_WEIGHTS_FILE_BYTES UINT64_C({})",
        weights.len()
    )));
    assert!(header.contains(
        "int varc_minvar_dyn18_check_weights(const void *weights, uint64_t weights_bytes);"
    ));
}

#[test]
fn ukernels_link_is_refused_for_cross_targets() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let args = [
        "--emit",
        "obj",
        "--ukernels",
        "link",
        "--target",
        "aarch64-unknown-linux-gnu",
    ];
    let (ok, stderr) = varc(&args, &dir.join("uk64.o"));
    assert!(!ok);
    assert!(stderr.contains("this machine"), "{stderr}");
}

#[test]
fn shared_ukernels_with_a_missing_runtime_lib_fail() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nowhere/libvarc_capi.a");
    let args = [
        "--emit",
        "so",
        "--ukernels",
        "link",
        "--runtime-lib",
        missing.to_str().unwrap(),
    ];
    let (ok, stderr) = varc(&args, &dir.join("uk.so"));
    assert!(!ok);
    assert!(stderr.contains("nowhere/libvarc_capi.a"), "{stderr}");
}

#[test]
fn aot_options_need_emit_obj_or_so() {
    let o = Command::new(env!("CARGO_BIN_EXE_varc"))
        .arg("run")
        .arg(model("minvar_dyn18.onnx"))
        .args(["--weights", "external"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--emit obj|so"));
}

/// The form: `varc MODEL.onnx --target T --emit obj -o OUT` (the short
/// form takes every `varc run` option, and `-o` names the artifact).
#[test]
fn short_form_with_dash_o_writes_the_object() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot-cli-short");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("short.o");
    let _ = std::fs::remove_file(&out);
    let o = Command::new(env!("CARGO_BIN_EXE_varc"))
        .arg(model("minvar_dyn18.onnx"))
        .args([
            "--target",
            "aarch64-unknown-linux-gnu",
            "--emit",
            "obj",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    // e_machine 183 = AArch64.
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 183);
    assert!(out.with_extension("h").exists());
}
