//! The C API: hostile calls from Rust, the signatures varc.h promises, the
//! header's declarations against the library's exports, and a C program
//! compiled against varc.h and linked with the cdylib.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use varc_capi::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> PathBuf {
    root().join("models/minvar_dyn18.onnx")
}

/// The Rust functions have exactly the C types varc.h declares.
#[test]
fn signatures_match_the_header() {
    type Exe = VarcExecutable;
    let _: unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> *mut VarcModel = varc_load;
    let _: unsafe extern "C" fn(*const VarcModel, *mut c_char, usize) -> *mut Exe = varc_compile;
    let _: unsafe extern "C" fn(*const Exe) -> usize = varc_num_inputs;
    let _: unsafe extern "C" fn(*const Exe) -> usize = varc_num_outputs;
    let _: unsafe extern "C" fn(*const Exe, usize) -> *const c_char = varc_input_name;
    let _: unsafe extern "C" fn(*const Exe, usize) -> *const c_char = varc_output_name;
    let _: unsafe extern "C" fn(*const Exe, usize) -> c_int = varc_input_dtype;
    let _: unsafe extern "C" fn(*const Exe, usize) -> c_int = varc_output_dtype;
    let _: unsafe extern "C" fn(*const Exe, usize) -> usize = varc_input_bytes;
    let _: unsafe extern "C" fn(*const Exe, usize) -> usize = varc_output_bytes;
    type Shape = unsafe extern "C" fn(*const Exe, usize, *mut i64, usize, *mut usize) -> c_int;
    let _: Shape = varc_input_shape;
    let _: Shape = varc_output_shape;
    type Run = unsafe extern "C" fn(
        *const Exe,
        *const VarcTensor,
        usize,
        *mut VarcTensor,
        usize,
        *mut c_char,
        usize,
    ) -> c_int;
    let _: Run = varc_run;
    let _: unsafe extern "C" fn(*mut VarcModel) = varc_free_model;
    let _: unsafe extern "C" fn(*mut Exe) = varc_free_executable;
    let _: extern "C" fn(c_int) -> *const c_char = varc_status_string;
    let _: extern "C" fn() -> u32 = varc_api_version;
    assert_eq!(
        std::mem::size_of::<VarcTensor>(),
        3 * std::mem::size_of::<usize>()
    );
}

fn header() -> String {
    std::fs::read_to_string(root().join("crates/capi/include/varc.h")).unwrap()
}

/// `varc_*` function names declared in varc.h (an identifier followed by
/// `(`, outside comments).
fn declared() -> Vec<String> {
    let h = header();
    let mut names = Vec::new();
    for line in h.lines() {
        let t = line.trim_start();
        if t.starts_with('*') || t.starts_with("/*") || t.starts_with('#') {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("varc_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if tail[end..].starts_with('(') {
                names.push(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Whether `name` is a function the runtime or code generator defines for
/// generated code (microkernels), not part of the C API.
fn internal_symbol(name: &str) -> bool {
    let pat = format!("fn {name}(");
    ["crates/runtime/src", "backends/cpu/src"].iter().any(|d| {
        let mut stack = vec![root().join(d)];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if std::fs::read_to_string(&p).is_ok_and(|s| s.contains(&pat)) {
                return true;
            }
        }
        false
    })
}

fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libvarc_capi.so");
        if p.exists() {
            return p;
        }
    }
    panic!("libvarc_capi.so not found next to {}", exe.display());
}

#[test]
fn header_declares_exactly_the_exports() {
    let lib = cdylib();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("the C API tests need `nm` (binutils)");
    assert!(out.status.success());
    let mut exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("varc_"))
        .map(String::from)
        .collect();
    exported.sort();
    let declared = declared();
    assert!(declared.len() >= 17, "{declared:?}");
    let missing: Vec<_> = declared.iter().filter(|d| !exported.contains(d)).collect();
    assert!(
        missing.is_empty(),
        "declared in varc.h, not exported: {missing:?}"
    );
    let extra: Vec<_> = exported
        .iter()
        .filter(|e| !declared.contains(e) && !internal_symbol(e))
        .collect();
    assert!(
        extra.is_empty(),
        "exported, not declared in varc.h: {extra:?}"
    );
    // Status codes and dtype codes agree.
    let h = header();
    for (name, v) in [
        ("VARC_OK", VARC_OK),
        ("VARC_ERR_NULL_ARGUMENT", VARC_ERR_NULL_ARGUMENT),
        ("VARC_ERR_INVALID_ARGUMENT", VARC_ERR_INVALID_ARGUMENT),
        ("VARC_ERR_LOAD", VARC_ERR_LOAD),
        ("VARC_ERR_COMPILE", VARC_ERR_COMPILE),
        ("VARC_ERR_SIZE", VARC_ERR_SIZE),
        ("VARC_ERR_RUN", VARC_ERR_RUN),
        ("VARC_ERR_PANIC", VARC_ERR_PANIC),
    ] {
        assert!(h.contains(&format!("#define {name} {v}\n")), "{name}");
    }
    for (i, d) in varc::DType::ALL.iter().enumerate() {
        let c = format!("    VARC_{} = {i}", d.name().to_ascii_uppercase());
        assert!(h.contains(&c), "{c}");
    }
    assert!(h.contains(&format!("#define VARC_API_VERSION {VARC_API_VERSION}u")));
}

fn msg(buf: &[c_char]) -> String {
    // SAFETY: the API always NUL-terminates within the buffer.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn hostile_calls_return_errors() {
    let mut err = [0 as c_char; 256];
    let (e, n) = (err.as_mut_ptr(), err.len());
    // SAFETY: every pointer passed is NULL or valid for its documented use.
    unsafe {
        assert!(varc_load(std::ptr::null(), e, n).is_null());
        assert!(msg(&err).contains("path is NULL"));
        let bad = CString::new("/nonexistent/model.onnx").unwrap();
        assert!(varc_load(bad.as_ptr(), e, n).is_null());
        assert!(msg(&err).contains("nonexistent"), "{}", msg(&err));
        let not_utf8 = [0xffu8 as c_char, 0];
        assert!(varc_load(not_utf8.as_ptr(), e, n).is_null());
        assert!(msg(&err).contains("UTF-8"));
        assert!(varc_compile(std::ptr::null(), e, n).is_null());
        assert_eq!(varc_num_inputs(std::ptr::null()), 0);
        assert!(varc_input_name(std::ptr::null(), 0).is_null());
        assert_eq!(varc_output_dtype(std::ptr::null(), 0), -1);
        let r = varc_run(
            std::ptr::null(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            e,
            n,
        );
        assert_eq!(r, VARC_ERR_NULL_ARGUMENT);
        varc_free_model(std::ptr::null_mut());
        varc_free_executable(std::ptr::null_mut());

        let path = CString::new(model().to_str().unwrap()).unwrap();
        let m = varc_load(path.as_ptr(), e, n);
        assert!(!m.is_null(), "{}", msg(&err));
        let x = varc_compile(m, e, n);
        assert!(!x.is_null(), "{}", msg(&err));
        varc_free_model(m);
        assert_eq!(varc_input_bytes(x, 0), 1024);
        assert_eq!(varc_output_bytes(x, 0), 679 * 64 * 4);
        assert_eq!(varc_input_bytes(x, 1), 0);
        let mut dims = [0i64; 4];
        let mut rank = 0usize;
        assert_eq!(
            varc_input_shape(x, 0, dims.as_mut_ptr(), 4, &mut rank),
            VARC_OK
        );
        assert_eq!((rank, dims), (4, [1, 64, 2, 2]));
        assert_eq!(
            varc_input_shape(x, 0, dims.as_mut_ptr(), 3, &mut rank),
            VARC_ERR_SIZE
        );

        let mut input = vec![0.25f32; 256];
        let mut output = vec![0f32; 679 * 64];
        let r_name = CString::new("r").unwrap();
        let y_name = CString::new("y").unwrap();
        let wrong = CString::new("x").unwrap();
        let tensor = |name: &CString, p: *mut f32, bytes: usize| VarcTensor {
            name: name.as_ptr(),
            data: p.cast::<c_void>(),
            size: bytes,
        };
        let ins = [tensor(&r_name, input.as_mut_ptr(), 1024)];
        let mut outs = [tensor(&y_name, output.as_mut_ptr(), output.len() * 4)];
        let cases: Vec<(Vec<VarcTensor>, c_int, &str)> = vec![
            (
                vec![tensor(&wrong, input.as_mut_ptr(), 1024)],
                VARC_ERR_INVALID_ARGUMENT,
                "'x' is not an input",
            ),
            (
                vec![tensor(&r_name, input.as_mut_ptr(), 1020)],
                VARC_ERR_SIZE,
                "needs 1024 bytes, got 1020",
            ),
            (
                vec![tensor(&r_name, input.as_mut_ptr(), 4096)],
                VARC_ERR_SIZE,
                "got 4096",
            ),
            (
                vec![tensor(&r_name, std::ptr::null_mut(), 1024)],
                VARC_ERR_NULL_ARGUMENT,
                "data is NULL",
            ),
            (
                vec![],
                VARC_ERR_INVALID_ARGUMENT,
                "expected 1 inputs, got 0",
            ),
        ];
        for (ins, code, text) in &cases {
            let r = varc_run(x, ins.as_ptr(), ins.len(), outs.as_mut_ptr(), 1, e, n);
            assert_eq!(r, *code, "{}", msg(&err));
            assert!(msg(&err).contains(text), "{} / {text}", msg(&err));
        }
        let mut bad_out = [tensor(&y_name, output.as_mut_ptr(), 17)];
        let r = varc_run(x, ins.as_ptr(), 1, bad_out.as_mut_ptr(), 1, e, n);
        assert_eq!(r, VARC_ERR_SIZE);
        assert!(
            output.iter().all(|&v| v == 0.0),
            "outputs untouched on error"
        );

        let r = varc_run(x, ins.as_ptr(), 1, outs.as_mut_ptr(), 1, e, n);
        assert_eq!(r, VARC_OK, "{}", msg(&err));
        assert!(output.iter().any(|&v| v != 0.0));
        assert!(msg(&err).is_empty());
        varc_free_executable(x);
    }
}

#[test]
fn c_program_against_the_cdylib() {
    let have_cc = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_cc,
        "the C API tests need a C compiler `cc` (Debian package gcc)"
    );
    let lib = cdylib();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).unwrap();
    // Shipped input and golden output as raw little-endian files.
    let m = model();
    let read = |s| varc_runtime::read_tensors(&varc::sibling_file(&m, s).unwrap()).unwrap();
    let (ins, outs) = (read("inputs"), read("outputs"));
    std::fs::write(dir.join("in.bin"), ins[0].1.data().to_le_bytes()).unwrap();
    std::fs::write(dir.join("want.bin"), outs[0].1.data().to_le_bytes()).unwrap();
    let (rtol, atol) = varc::manifest_tolerance(&m).unwrap();

    let exe = dir.join("capi_test");
    let libdir = lib.parent().unwrap();
    let build = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg(format!(
            "-I{}",
            root().join("crates/capi/include").display()
        ))
        .arg(root().join("crates/capi/tests/c/capi_test.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", libdir.display()))
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .args(["-lvarc_capi", "-lm"])
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    // The header also compiles as C++ (extern "C", no C-only constructs).
    let cxx = Command::new("c++").arg("--version").output();
    if cxx.is_ok_and(|o| o.status.success()) {
        let probe = dir.join("probe.cc");
        std::fs::write(
            &probe,
            "#include \"varc.h\"\nint main() { return varc_api_version() == 0; }\n",
        )
        .unwrap();
        let out = Command::new("c++")
            .args(["-fsyntax-only", "-Wall", "-Werror"])
            .arg(format!(
                "-I{}",
                root().join("crates/capi/include").display()
            ))
            .arg(&probe)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let run = Command::new(&exe)
        .arg(&m)
        .arg(dir.join("in.bin"))
        .arg(dir.join("want.bin"))
        .arg(rtol.to_string())
        .arg(atol.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("0 of 43456 outside tolerance"), "{stdout}");
}
