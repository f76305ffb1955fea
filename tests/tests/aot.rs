//! Ahead-of-time artifacts end to end: `varc` builds the object (`.o`) and
//! shared library (`.so`) of shipped models with their C headers, a C
//! program (tests/aot/driver.c) is compiled against the header, linked with
//! the object (or dlopen()s the library), runs the model on its shipped
//! inputs and compares with the golden outputs within the manifest's
//! tolerance, then runs it again through `run_parallel` on a two-thread
//! pthread pool and requires bit-identical outputs. Variants: weights in a
//! side file (`--weights external`, with wrong blobs that must be refused),
//! and the runtime's sgemm microkernels linked in (`--ukernels link`,
//! against libvarc_capi.a). The aarch64 objects are cross-linked with
//! gcc-aarch64-linux-gnu and run under qemu-aarch64.
//!
//! Missing tools fail the test with their name (CI installs them:
//! scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use varc::aot::{AotConfig, AotKind, RUNTIME_LIB, Weights, write_with};
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

/// The C API's static library (it exports `varc_sgemm`), built by cargo
/// with this test (`varc-capi` is a dev-dependency).
fn runtime_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join(RUNTIME_LIB))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{RUNTIME_LIB} not found next to {} (cargo build -p varc-capi)",
                exe.display()
            )
        })
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

const AARCH64: &str = "aarch64-unknown-linux-gnu";

/// The C compiler and (for aarch64) the emulator for `triple`.
fn toolchain(triple: &str) -> (&'static str, Option<&'static str>) {
    let (cc, qemu) = if triple == "host" {
        ("cc", None)
    } else {
        require("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
        require("qemu-aarch64", "qemu-user");
        ("aarch64-linux-gnu-gcc", Some("qemu-aarch64"))
    };
    require(cc, "gcc");
    (cc, qemu)
}

/// Compiles tests/aot/driver.c against `dir/<name>.h`, linked with the
/// object `out` (and `runtime`) or, for a shared library, with `-ldl`.
fn build_driver(
    cc: &str,
    dir: &Path,
    name: &str,
    kind: AotKind,
    out: &Path,
    runtime: Option<&Path>,
) -> PathBuf {
    let exe = dir.join("driver");
    let mut build = Command::new(cc);
    build
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", dir.display()))
        .arg(format!("-DVARC_HEADER=\"{name}.h\""))
        .arg(format!("-DVARC_MODEL={name}"))
        .arg(format!("-DVARC_UPPER=VARC_{}", name.to_ascii_uppercase()))
        .arg(root().join("tests/aot/driver.c"))
        .arg("-o")
        .arg(&exe);
    if kind == AotKind::Object {
        build.arg(out);
        if let Some(lib) = runtime {
            build.arg(lib).arg("-ldl");
        }
    } else {
        build.arg("-DVARC_DLOPEN").arg("-ldl");
    }
    build.args(["-lm", "-lpthread", "-Wl,-z,noexecstack"]);
    run(&mut build);
    exe
}

/// `driver DIR RTOL ATOL REPEAT THREADS`, under qemu when given.
fn driver_command(
    qemu: Option<&str>,
    exe: &Path,
    dir: &Path,
    tol: (f64, f64),
    repeat: u32,
) -> Command {
    let mut cmd = match qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.args(["-L", "/usr/aarch64-linux-gnu"]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg(dir)
        .arg(tol.0.to_string())
        .arg(tol.1.to_string())
        .arg(repeat.to_string())
        .arg("2");
    cmd
}

/// Builds the artifact, the C driver, runs it; returns the driver's report.
fn check(file: &str, triple: &str, kind: AotKind, config: AotConfig) -> String {
    let host = triple == "host";
    let (cc, qemu) = toolchain(triple);
    let tag = format!(
        "{}-{}{}{}",
        if host { "host" } else { "aarch64" },
        if kind == AotKind::Object { "obj" } else { "so" },
        if config.weights == Weights::External {
            "-external"
        } else {
            ""
        },
        if config.ukernels { "-ukernels" } else { "" }
    );
    let p = prepare(file, &tag);
    let target = Target::parse(triple).unwrap();
    let t0 = Instant::now();
    let art = p
        .model
        .compile_object_with(&target, &p.name, config)
        .unwrap();
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(art.needs_runtime, config.ukernels, "sgemm calls in {file}");
    assert!(art.parallel_kernels > 0, "{file}: no kernel is split");
    let ext = if kind == AotKind::Object { "o" } else { "so" };
    let out = p.dir.join(format!("{}.{ext}", p.name));
    let runtime = config.ukernels.then(runtime_lib);
    let written = write_with(&art, kind, &target, &out, runtime.as_deref()).unwrap();
    let size = std::fs::metadata(&out).unwrap().len();
    let exe = build_driver(cc, &p.dir, &p.name, kind, &out, runtime.as_deref());

    let mut cmd = driver_command(qemu, &exe, &p.dir, p.tol, if host { 5 } else { 1 });
    if kind == AotKind::Shared {
        cmd.arg("--lib").arg(&out);
    }
    if config.weights == Weights::External {
        let w = varc::aot::weights_path(&out);
        assert!(written.contains(&w), "{written:?}");
        cmd.arg("--weights").arg(w);
    }
    let report = run(&mut cmd);
    assert!(report.contains("bit-identical"), "{report}");
    if config.weights == Weights::External {
        assert!(report.contains("weights checks: ok"), "{report}");
    }
    let summary = format!(
        "{file} {tag}: {size} bytes, {} of {} kernels split, compile {compile_ms:.0} ms\n{report}",
        art.parallel_kernels, art.kernels
    );
    println!("{summary}");
    summary
}

const PURE: AotConfig = AotConfig {
    weights: Weights::Embedded,
    ukernels: false,
};
const EXTERNAL: AotConfig = AotConfig {
    weights: Weights::External,
    ukernels: false,
};
const UKERNELS: AotConfig = AotConfig {
    weights: Weights::Embedded,
    ukernels: true,
};

#[test]
fn host_object_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Object, PURE);
}

#[test]
fn host_shared_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Shared, PURE);
}

#[test]
fn host_object_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Object, PURE);
}

#[test]
fn host_shared_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Shared, PURE);
}

#[test]
fn host_object_external_weights_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Object, EXTERNAL);
}

#[test]
fn host_shared_external_weights_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Shared, EXTERNAL);
}

#[test]
fn host_object_ukernels_minvar() {
    check("minvar_dyn18.onnx", "host", AotKind::Object, UKERNELS);
}

#[test]
fn host_object_ukernels_var_tf() {
    check("var_tf_dyn18.onnx", "host", AotKind::Object, UKERNELS);
}

#[test]
fn host_shared_ukernels_external_weights_var_tf() {
    let both = AotConfig {
        weights: Weights::External,
        ukernels: true,
    };
    check("var_tf_dyn18.onnx", "host", AotKind::Shared, both);
}

#[test]
fn aarch64_object_minvar() {
    check("minvar_dyn18.onnx", AARCH64, AotKind::Object, PURE);
}

#[test]
fn aarch64_shared_minvar() {
    check("minvar_dyn18.onnx", AARCH64, AotKind::Shared, PURE);
}

#[test]
fn aarch64_object_var_tf() {
    check("var_tf_dyn18.onnx", AARCH64, AotKind::Object, PURE);
}

#[test]
fn aarch64_object_external_weights_minvar() {
    check("minvar_dyn18.onnx", AARCH64, AotKind::Object, EXTERNAL);
}

/// A Gather whose last index is out of range: the kernel is split, and
/// only the share holding that row fails. Every run, serial or through the
/// pool, must return the gather status.
#[test]
fn a_failing_share_stops_the_run() {
    use varc_tests::build::{FLOAT, INT64, encode, f32_initializer, model, node, value};
    let (rows, cols, n) = (64usize, 512usize, 512usize);
    let table: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let m = model(
        vec![node("Gather", "g", &["table", "idx"], &["y"])],
        vec![value("idx", INT64, &[n as i64])],
        vec![value("y", FLOAT, &[n as i64, cols as i64])],
        vec![f32_initializer(
            "table",
            &[rows as i64, cols as i64],
            &table,
        )],
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aot/gather-out-of-range");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gather.onnx");
    std::fs::write(&path, encode(&m)).unwrap();
    let mut idx: Vec<i64> = (0..n as i64).map(|i| i % rows as i64).collect();
    idx[n - 1] = rows as i64 + 5;
    let bytes: Vec<u8> = idx.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(dir.join("in0.bin"), bytes).unwrap();

    let loaded = varc::load(&path, &Default::default()).unwrap();
    let art = loaded
        .compile_object_with(&Target::host(), "gather", PURE)
        .unwrap();
    assert_eq!(art.parallel_kernels, 1, "the gather kernel is split");
    let out = dir.join("gather.o");
    write_with(&art, AotKind::Object, &Target::host(), &out, None).unwrap();
    let (cc, _) = toolchain("host");
    let exe = build_driver(cc, &dir, "gather", AotKind::Object, &out, None);
    let status = varc_backend_cpu::STATUS_GATHER_OUT_OF_RANGE.to_string();
    let mut cmd = driver_command(None, &exe, &dir, (0.0, 0.0), 1);
    let report = run(cmd.args(["--expect-status", &status]));
    assert!(report.contains("expected status 1: ok"), "{report}");
}

#[test]
fn ukernels_are_refused_for_other_targets() {
    let p = prepare("minvar_dyn18.onnx", "refused");
    let target = Target::parse(AARCH64).unwrap();
    let err = p
        .model
        .compile_object_with(&target, &p.name, UKERNELS)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("only be linked into objects for this machine"),
        "{msg}"
    );
}

#[test]
fn shared_ukernels_need_an_existing_runtime_lib() {
    let p = prepare("var_tf_dyn18.onnx", "no-runtime");
    let art = p
        .model
        .compile_object_with(&Target::host(), &p.name, UKERNELS)
        .unwrap();
    let missing = p.dir.join("no/libvarc_capi.a");
    let out = p.dir.join("m.so");
    let err = write_with(&art, AotKind::Shared, &Target::host(), &out, Some(&missing)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not exist") && msg.contains("varc_sgemm"),
        "{msg}"
    );
    assert!(!out.exists());
}

/// The JIT path on the same models, for the side-by-side numbers.
#[test]
fn jit_reference_timings() {
    for file in ["minvar_dyn18.onnx", "var_tf_dyn18.onnx"] {
        let path = root().join("models").join(file);
        let inputs =
            varc_runtime::read_tensors(&varc::sibling_file(&path, "inputs").unwrap()).unwrap();
        for threads in [1, 2] {
            let t0 = Instant::now();
            let model = varc::load_for_inputs(&path, &Default::default(), &inputs).unwrap();
            let exe = model.compile_host().unwrap().with_threads(threads);
            let load_ms = t0.elapsed().as_secs_f64() * 1e3;
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                exe.run(&inputs).unwrap();
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            println!(
                "{file} jit: load+compile {load_ms:.1} ms, best run {best:.3} ms ({threads} threads)"
            );
        }
    }
}
