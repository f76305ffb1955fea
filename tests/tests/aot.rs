//! Ahead-of-time artifacts end to end: `varc` builds the object (`.o`) and
//! shared library (`.so`) of shipped models with their C headers, a C
//! program (tests/aot/driver.c) is compiled against the header, linked with
//! the object (or dlopen()s the library), runs the model on its shipped
//! inputs and compares with the golden outputs within the manifest's
//! tolerance. The aarch64 objects are cross-linked with
//! gcc-aarch64-linux-gnu and run under qemu-aarch64.
//!
//! Missing tools fail the test with their name (CI installs them:
//! scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use varc::aot::{AotKind, write};
use varc_backend_cpu::Target;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Fails with a clear message when `tool` cannot be run.
fn require(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the AOT tests need `{tool}` (Debian package {package}; scripts/test.sh installs it): \
         it is not installed or does not run"
    );
}

/// Output of a command, failing the test with its stderr.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

struct Prepared {
    model: varc::LoadedModel,
    name: String,
    dir: PathBuf,
    tol: (f64, f64),
}

/// Loads a shipped model and writes its inputs and goldens as raw
/// little-endian files (in<i>.bin, want<i>.bin) into a fresh folder.
fn prepare(file: &str, tag: &str) -> Prepared {
    let path = root().join("models").join(file);
    let inputs = varc_runtime::read_tensors(&varc::sibling_file(&path, "inputs").unwrap()).unwrap();
    let wants = varc_runtime::read_tensors(&varc::sibling_file(&path, "outputs").unwrap()).unwrap();
    let model = varc::load_for_inputs(&path, &Default::default(), &inputs).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("aot")
        .join(format!(
            "{}-{tag}",
            path.file_stem().unwrap().to_string_lossy()
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (name, _)) in model.inputs().iter().enumerate() {
        let t = &inputs.iter().find(|(n, _)| n == name).unwrap().1;
        std::fs::write(dir.join(format!("in{i}.bin")), t.data().to_le_bytes()).unwrap();
    }
    for (i, name) in model.output_names().iter().enumerate() {
        let t = &wants.iter().find(|(n, _)| n == name).unwrap().1;
        std::fs::write(dir.join(format!("want{i}.bin")), t.data().to_le_bytes()).unwrap();
    }
    let tol = varc::manifest_tolerance(&path).expect("shipped models have a tolerance");
    Prepared {
        name: varc::aot::default_name(&path),
        model,
        dir,
        tol,
    }
}

/// Builds the artifact, the C driver, runs it; returns the driver's report.
fn check(file: &str, triple: &str, kind: AotKind) -> String {
    let host = triple == "host";
    let (cc, qemu) = if host {
        ("cc", None)
    } else {
        require("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
        require("qemu-aarch64", "qemu-user");
        ("aarch64-linux-gnu-gcc", Some("qemu-aarch64"))
    };
    require(cc, "gcc");
    let tag = format!(
        "{}-{}",
        if host { "host" } else { "aarch64" },
        if kind == AotKind::Object { "obj" } else { "so" }
    );
    let p = prepare(file, &tag);
    let target = Target::parse(triple).unwrap();
    let t0 = Instant::now();
    let art = p.model.compile_object(&target, &p.name).unwrap();
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let ext = if kind == AotKind::Object { "o" } else { "so" };
    let out = p.dir.join(format!("{}.{ext}", p.name));
    write(&art, kind, &target, &out).unwrap();
    let size = std::fs::metadata(&out).unwrap().len();

    let driver = root().join("tests/aot/driver.c");
    let exe = p.dir.join("driver");
    let mut build = Command::new(cc);
    build
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", p.dir.display()))
        .arg(format!("-DVARC_HEADER=\"{}.h\"", p.name))
        .arg(format!("-DVARC_MODEL={}", p.name))
        .arg(format!("-DVARC_UPPER=VARC_{}", p.name.to_ascii_uppercase()))
        .arg(&driver)
        .arg("-o")
        .arg(&exe);
    if kind == AotKind::Object {
        build.arg(&out);
    } else {
        build.arg("-DVARC_DLOPEN").arg("-ldl");
    }
    build.args(["-lm", "-Wl,-z,noexecstack"]);
    run(&mut build);

    let mut cmd = match qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg(&p.dir)
        .arg(p.tol.0.to_string())
        .arg(p.tol.1.to_string())
        .arg(if host { "5" } else { "1" });
    if kind == AotKind::Shared {
        cmd.arg(&out);
    }
    let report = run(&mut cmd);
    let summary = format!("{file} {tag}: {size} bytes, compile {compile_ms:.0} ms\n{report}");
    println!("{summary}");
    summary
}

#[test]
fn host_object_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Object);
}

#[test]
fn host_shared_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Shared);
}

#[test]
fn host_object_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Object);
}

#[test]
fn host_shared_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Shared);
}

#[test]
fn aarch64_object_minvar() {
    check(
        "minvar_dyn18.onnx",
        "aarch64-unknown-linux-gnu",
        AotKind::Object,
    );
}

#[test]
fn aarch64_shared_minvar() {
    check(
        "minvar_dyn18.onnx",
        "aarch64-unknown-linux-gnu",
        AotKind::Shared,
    );
}

#[test]
fn aarch64_object_var_tf() {
    check(
        "var_tf_dyn18.onnx",
        "aarch64-unknown-linux-gnu",
        AotKind::Object,
    );
}

/// The JIT path on the same models, for the side-by-side numbers.
#[test]
fn jit_reference_timings() {
    for file in ["minvar_dyn18.onnx", "var_tf_dyn18.onnx"] {
        let path = root().join("models").join(file);
        let inputs =
            varc_runtime::read_tensors(&varc::sibling_file(&path, "inputs").unwrap()).unwrap();
        let t0 = Instant::now();
        let model = varc::load_for_inputs(&path, &Default::default(), &inputs).unwrap();
        let exe = model.compile_host().unwrap();
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            exe.run(&inputs).unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("{file} jit: load+compile {load_ms:.1} ms, best run {best:.3} ms");
    }
}
