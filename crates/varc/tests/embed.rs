//! The embedding facade: `varc::Compiler` → `Executable`, shared across
//! threads; the `examples/embed.rs` program; AOT through the facade.

use std::path::{Path, PathBuf};
use std::process::Command;

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name)
}

type Named = Vec<(String, varc::Tensor)>;

fn shipped(name: &str) -> (Named, Named) {
    let m = model(name);
    let read = |s| varc_runtime::read_tensors(&varc::sibling_file(&m, s).unwrap()).unwrap();
    (read("inputs"), read("outputs"))
}

#[test]
fn executable_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<varc::Executable>();
}

#[test]
fn eight_threads_give_identical_results() {
    let exe = varc::Compiler::new()
        .threads(1)
        .compile(model("var_tf_dyn18.onnx"))
        .unwrap();
    let (inputs, wants) = shipped("var_tf_dyn18.onnx");
    let first = exe.run(&inputs).unwrap();
    let (rtol, atol) = varc::manifest_tolerance(&model("var_tf_dyn18.onnx")).unwrap();
    for (name, got) in &first {
        let want = &wants.iter().find(|(n, _)| n == name).unwrap().1;
        let a = varc_runtime::compare(got, want, rtol, atol).unwrap();
        assert!(a.passed(), "{name}: {a:?}");
    }
    let bytes = |o: &[(String, varc::Tensor)]| -> Vec<Vec<u8>> {
        o.iter().map(|(_, t)| t.data().to_le_bytes()).collect()
    };
    let reference = bytes(&first);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..3)
                        .map(|_| bytes(&exe.run(&inputs).unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for run in h.join().unwrap() {
                assert!(run == reference, "a concurrent run differs");
            }
        }
    });
}

#[test]
fn compiler_reports_bad_settings() {
    let m = model("minvar_dyn18.onnx");
    let e = varc::Compiler::new().threads(0).compile(&m).err().unwrap();
    assert!(format!("{e:#}").contains("threads"), "{e:#}");
    let e = varc::Compiler::new()
        .target("aarch64-unknown-linux-gnu")
        .compile(&m)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("Compiler::emit"), "{e:#}");
    let e = varc::Compiler::new()
        .target("no-such-triple")
        .compile(&m)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("no-such-triple"), "{e:#}");
    let e = varc::Compiler::new()
        .compile(model("missing.onnx"))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("missing.onnx"), "{e:#}");
}

#[test]
fn executable_rejects_wrong_inputs() {
    let exe = varc::Compiler::new()
        .compile(model("minvar_dyn18.onnx"))
        .unwrap();
    assert_eq!(exe.input_names(), ["r"]);
    assert_eq!(exe.output_names(), ["y"]);
    let wrong_shape = varc::Tensor::from_f32(vec![1, 64, 2, 3], vec![0.0; 384]).unwrap();
    let e = exe.run(&[("r".into(), wrong_shape)]).err().unwrap();
    assert!(format!("{e:#}").contains("'r'"), "{e:#}");
    let ok = varc::Tensor::from_f32(vec![1, 64, 2, 2], vec![0.0; 256]).unwrap();
    let e = exe.run(&[("nope".into(), ok)]).err().unwrap();
    assert!(format!("{e:#}").contains("missing"), "{e:#}");
}

#[test]
fn compiler_emits_objects() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("embed-emit");
    std::fs::create_dir_all(&dir).unwrap();
    for target in ["host", "aarch64-unknown-linux-gnu"] {
        let out = dir.join(format!("minvar-{}.o", target.split('-').next().unwrap()));
        let written = varc::Compiler::new()
            .target(target)
            .emit(model("minvar_dyn18.onnx"), varc::aot::AotKind::Object, &out)
            .unwrap();
        assert_eq!(written.len(), 2);
        let obj = std::fs::read(&out).unwrap();
        assert_eq!(&obj[..4], b"\x7fELF");
        let header = std::fs::read_to_string(out.with_extension("h")).unwrap();
        assert!(header.contains("int varc_minvar_dyn18_run(const void *const *inputs"));
        assert!(header.contains("#define VARC_MINVAR_DYN18_INPUT_0_SHAPE {1, 64, 2, 2}"));
    }
}

#[test]
fn example_program_runs() {
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "-p", "varc", "--example", "embed", "--"])
        .arg(model("minvar_dyn18.onnx"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("y: f32[1, 679, 64] checksum"), "{stdout}");
    assert!(stdout.contains("4 concurrent runs agree"), "{stdout}");
}
