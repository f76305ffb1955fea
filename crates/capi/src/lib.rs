//! C API for varc (declared by hand in `include/varc.h`).
//!
//! Load a model (`varc_load`), compile it for this CPU (`varc_compile`),
//! query its inputs and outputs, and run it (`varc_run`) on caller-owned
//! buffers matched by name. Every function
//!
//! * checks its pointers (NULL is an error, never a crash), indices, names
//!   and buffer sizes, and returns a status code (or NULL / a sentinel) with
//!   a message written to the caller's `err` buffer where it has one;
//! * catches panics: nothing unwinds across the FFI boundary, a panic comes
//!   back as `VARC_ERR_PANIC`.
//!
//! An executable may be run from several threads at once (`varc::Executable`
//! is `Send + Sync`).

use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use varc::{DType, Executable, Tensor};

pub const VARC_OK: c_int = 0;
pub const VARC_ERR_NULL_ARGUMENT: c_int = 1;
pub const VARC_ERR_INVALID_ARGUMENT: c_int = 2;
pub const VARC_ERR_LOAD: c_int = 3;
pub const VARC_ERR_COMPILE: c_int = 4;
pub const VARC_ERR_SIZE: c_int = 5;
pub const VARC_ERR_RUN: c_int = 6;
pub const VARC_ERR_PANIC: c_int = 7;

/// `VARC_API_VERSION` in varc.h.
pub const VARC_API_VERSION: u32 = 1;

/// A loaded, type-checked model (opaque to C).
pub struct VarcModel {
    model: varc::LoadedModel,
}

/// A compiled model (opaque to C).
pub struct VarcExecutable {
    exe: Executable,
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    inputs: Vec<(DType, Vec<usize>)>,
    outputs: Vec<(DType, Vec<usize>)>,
}

/// `varc_tensor` in varc.h: a named, caller-owned byte buffer.
#[repr(C)]
pub struct VarcTensor {
    pub name: *const c_char,
    pub data: *mut std::ffi::c_void,
    pub size: usize,
}

/// An error: status code and message.
struct Failure(c_int, String);

fn fail<T>(code: c_int, msg: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(code, msg.into()))
}

/// Copies `msg` into `err` (NUL-terminated, truncated to `err_len`).
fn write_err(err: *mut c_char, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let n = msg.len().min(err_len - 1);
    // SAFETY: the caller promises `err` is writable for `err_len` bytes
    // (varc.h); we write `n + 1 <= err_len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Runs `f`, turning a panic into `VARC_ERR_PANIC`.
fn guard<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(VARC_ERR_PANIC, format!("internal error (panic): {what}"))
        }
    }
}

fn status(r: Result<(), Failure>, err: *mut c_char, err_len: usize) -> c_int {
    match r {
        Ok(()) => {
            write_err(err, err_len, "");
            VARC_OK
        }
        Err(Failure(code, msg)) => {
            write_err(err, err_len, &msg);
            code
        }
    }
}

/// A C string argument as UTF-8.
fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return fail(VARC_ERR_NULL_ARGUMENT, format!("{what} is NULL"));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string
    // that outlives the call (varc.h).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .or_else(|_| fail(VARC_ERR_INVALID_ARGUMENT, format!("{what} is not UTF-8")))
}

fn dtype_code(d: DType) -> c_int {
    DType::ALL
        .iter()
        .position(|&x| x == d)
        .map_or(-1, |i| i as c_int)
}

/// Loads and type-checks an ONNX model. Returns NULL on failure, with the
/// reason in `err`.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_load(
    path: *const c_char,
    err: *mut c_char,
    err_len: usize,
) -> *mut VarcModel {
    let r = guard(|| {
        let path = c_str(path, "path")?;
        let model = varc::load(Path::new(path), &Default::default())
            .or_else(|e| fail(VARC_ERR_LOAD, format!("{e:#}")))?;
        Ok(Box::into_raw(Box::new(VarcModel { model })))
    });
    match r {
        Ok(p) => {
            write_err(err, err_len, "");
            p
        }
        Err(Failure(_, msg)) => {
            write_err(err, err_len, &msg);
            std::ptr::null_mut()
        }
    }
}

/// Compiles a loaded model for this CPU. Returns NULL on failure.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_compile(
    model: *const VarcModel,
    err: *mut c_char,
    err_len: usize,
) -> *mut VarcExecutable {
    let r = guard(|| {
        if model.is_null() {
            return fail(VARC_ERR_NULL_ARGUMENT, "model is NULL");
        }
        // SAFETY: non-null and, per varc.h, a live pointer from varc_load.
        let model = unsafe { &*model };
        let exe = model
            .model
            .compile_host()
            .or_else(|e| fail(VARC_ERR_COMPILE, format!("{e:#}")))?;
        let names = |v: &[String]| -> Result<Vec<CString>, Failure> {
            v.iter()
                .map(|n| {
                    CString::new(n.as_str()).or_else(|_| {
                        fail(VARC_ERR_COMPILE, format!("name '{n}' contains a NUL byte"))
                    })
                })
                .collect()
        };
        Ok(Box::into_raw(Box::new(VarcExecutable {
            input_names: names(exe.input_names())?,
            output_names: names(exe.output_names())?,
            inputs: exe.input_types(),
            outputs: exe.output_types(),
            exe,
        })))
    });
    match r {
        Ok(p) => {
            write_err(err, err_len, "");
            p
        }
        Err(Failure(_, msg)) => {
            write_err(err, err_len, &msg);
            std::ptr::null_mut()
        }
    }
}

/// The executable behind `exe`, if non-null.
///
/// The lifetime is unbounded: the reference must not outlive the FFI call
/// that received `exe` (the caller keeps the executable alive that long).
fn exe_ref<'a>(exe: *const VarcExecutable) -> Option<&'a VarcExecutable> {
    // SAFETY: per varc.h, a non-null `exe` is a live pointer from
    // varc_compile, not freed during the call; it is only read.
    (!exe.is_null()).then(|| unsafe { &*exe })
}

/// Number of inputs (0 when `exe` is NULL).
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_num_inputs(exe: *const VarcExecutable) -> usize {
    guard(|| Ok(exe_ref(exe).map_or(0, |e| e.inputs.len()))).unwrap_or(0)
}

/// Number of outputs (0 when `exe` is NULL).
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_num_outputs(exe: *const VarcExecutable) -> usize {
    guard(|| Ok(exe_ref(exe).map_or(0, |e| e.outputs.len()))).unwrap_or(0)
}

fn name_of(exe: *const VarcExecutable, i: usize, output: bool) -> *const c_char {
    guard(|| {
        Ok(exe_ref(exe)
            .and_then(|e| {
                if output {
                    e.output_names.get(i)
                } else {
                    e.input_names.get(i)
                }
            })
            .map_or(std::ptr::null(), |n| n.as_ptr()))
    })
    .unwrap_or(std::ptr::null())
}

/// Name of input `i` (valid while `exe` lives), or NULL.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_input_name(exe: *const VarcExecutable, i: usize) -> *const c_char {
    name_of(exe, i, false)
}

/// Name of output `i` (valid while `exe` lives), or NULL.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_output_name(exe: *const VarcExecutable, i: usize) -> *const c_char {
    name_of(exe, i, true)
}

fn ty_of(
    exe: *const VarcExecutable,
    i: usize,
    output: bool,
) -> Option<&'static (DType, Vec<usize>)> {
    let e = exe_ref(exe)?;
    if output {
        e.outputs.get(i)
    } else {
        e.inputs.get(i)
    }
}

/// `varc_dtype` code of input `i`, or -1.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_input_dtype(exe: *const VarcExecutable, i: usize) -> c_int {
    guard(|| Ok(ty_of(exe, i, false).map_or(-1, |t| dtype_code(t.0)))).unwrap_or(-1)
}

/// `varc_dtype` code of output `i`, or -1.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_output_dtype(exe: *const VarcExecutable, i: usize) -> c_int {
    guard(|| Ok(ty_of(exe, i, true).map_or(-1, |t| dtype_code(t.0)))).unwrap_or(-1)
}

/// Byte size of input `i`, or 0.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_input_bytes(exe: *const VarcExecutable, i: usize) -> usize {
    guard(|| Ok(ty_of(exe, i, false).map_or(0, |t| t.0.size() * t.1.iter().product::<usize>())))
        .unwrap_or(0)
}

/// Byte size of output `i`, or 0.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_output_bytes(exe: *const VarcExecutable, i: usize) -> usize {
    guard(|| Ok(ty_of(exe, i, true).map_or(0, |t| t.0.size() * t.1.iter().product::<usize>())))
        .unwrap_or(0)
}

fn shape_of(
    exe: *const VarcExecutable,
    i: usize,
    output: bool,
    dims: *mut i64,
    max_dims: usize,
    rank: *mut usize,
) -> c_int {
    let r = guard(|| {
        if exe.is_null() {
            return fail(VARC_ERR_NULL_ARGUMENT, "exe is NULL");
        }
        if rank.is_null() {
            return fail(VARC_ERR_NULL_ARGUMENT, "rank is NULL");
        }
        let Some((_, shape)) = ty_of(exe, i, output) else {
            return fail(VARC_ERR_INVALID_ARGUMENT, "index out of range");
        };
        // SAFETY: `rank` is non-null and, per varc.h, writable.
        unsafe { *rank = shape.len() };
        if shape.len() > max_dims {
            return fail(VARC_ERR_SIZE, "dims has room for fewer than rank entries");
        }
        if shape.is_empty() {
            return Ok(());
        }
        if dims.is_null() {
            return fail(VARC_ERR_NULL_ARGUMENT, "dims is NULL");
        }
        for (k, &d) in shape.iter().enumerate() {
            // SAFETY: `dims` is non-null and writable for `max_dims >= rank`
            // entries (varc.h).
            unsafe { *dims.add(k) = d as i64 };
        }
        Ok(())
    });
    match r {
        Ok(()) => VARC_OK,
        Err(Failure(c, _)) => c,
    }
}

/// Writes input `i`'s shape into `dims[0..rank]` and its rank into `*rank`.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_input_shape(
    exe: *const VarcExecutable,
    i: usize,
    dims: *mut i64,
    max_dims: usize,
    rank: *mut usize,
) -> c_int {
    shape_of(exe, i, false, dims, max_dims, rank)
}

/// Writes output `i`'s shape into `dims[0..rank]` and its rank into `*rank`.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_output_shape(
    exe: *const VarcExecutable,
    i: usize,
    dims: *mut i64,
    max_dims: usize,
    rank: *mut usize,
) -> c_int {
    shape_of(exe, i, true, dims, max_dims, rank)
}

/// Views the caller's tensor array (empty when `n == 0`).
fn tensors<'a>(p: *const VarcTensor, n: usize, what: &str) -> Result<&'a [VarcTensor], Failure> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return fail(VARC_ERR_NULL_ARGUMENT, format!("{what} is NULL"));
    }
    // SAFETY: non-null, and per varc.h `p` points to `n` initialised
    // varc_tensor structs that outlive the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn run_inner(
    e: &VarcExecutable,
    inputs: &[VarcTensor],
    outputs: &[VarcTensor],
) -> Result<(), Failure> {
    let names = e.exe.input_names();
    if inputs.len() != names.len() {
        return fail(
            VARC_ERR_INVALID_ARGUMENT,
            format!("expected {} inputs, got {}", names.len(), inputs.len()),
        );
    }
    let mut named: Vec<(String, Tensor)> = Vec::with_capacity(inputs.len());
    for (k, t) in inputs.iter().enumerate() {
        let name = c_str(t.name, &format!("inputs[{k}].name"))?;
        let Some(i) = names.iter().position(|n| n == name) else {
            return fail(
                VARC_ERR_INVALID_ARGUMENT,
                format!("'{name}' is not an input (inputs: {})", names.join(", ")),
            );
        };
        if named.iter().any(|(n, _)| n == name) {
            return fail(
                VARC_ERR_INVALID_ARGUMENT,
                format!("input '{name}' given twice"),
            );
        }
        let (dtype, shape) = &e.inputs[i];
        let want = dtype.size() * shape.iter().product::<usize>();
        if t.size != want {
            return fail(
                VARC_ERR_SIZE,
                format!(
                    "input '{name}' ({dtype}{shape:?}) needs {want} bytes, got {}",
                    t.size
                ),
            );
        }
        let bytes: &[u8] = if want == 0 {
            &[]
        } else if t.data.is_null() {
            return fail(
                VARC_ERR_NULL_ARGUMENT,
                format!("input '{name}' data is NULL"),
            );
        } else {
            // SAFETY: non-null, and per varc.h readable for `size` bytes
            // for the duration of the call.
            unsafe { std::slice::from_raw_parts(t.data.cast::<u8>(), want) }
        };
        let data = varc_ir::TensorData::from_le_bytes(*dtype, bytes)
            .or_else(|m| fail(VARC_ERR_INVALID_ARGUMENT, format!("input '{name}': {m}")))?;
        let tensor = Tensor::new(shape.clone(), data)
            .or_else(|m| fail(VARC_ERR_INVALID_ARGUMENT, format!("input '{name}': {m}")))?;
        named.push((name.to_string(), tensor));
    }
    // Check every output buffer before running.
    let onames = e.exe.output_names();
    let mut targets: Vec<(usize, &VarcTensor)> = Vec::with_capacity(outputs.len());
    for (k, t) in outputs.iter().enumerate() {
        let name = c_str(t.name, &format!("outputs[{k}].name"))?;
        let Some(i) = onames.iter().position(|n| n == name) else {
            return fail(
                VARC_ERR_INVALID_ARGUMENT,
                format!("'{name}' is not an output (outputs: {})", onames.join(", ")),
            );
        };
        if targets.iter().any(|&(j, _)| j == i) {
            return fail(
                VARC_ERR_INVALID_ARGUMENT,
                format!("output '{name}' given twice"),
            );
        }
        let (dtype, shape) = &e.outputs[i];
        let want = dtype.size() * shape.iter().product::<usize>();
        if t.size != want {
            return fail(
                VARC_ERR_SIZE,
                format!(
                    "output '{name}' ({dtype}{shape:?}) needs {want} bytes, got {}",
                    t.size
                ),
            );
        }
        if want > 0 && t.data.is_null() {
            return fail(
                VARC_ERR_NULL_ARGUMENT,
                format!("output '{name}' data is NULL"),
            );
        }
        targets.push((i, t));
    }
    let results = e
        .exe
        .run(&named)
        .or_else(|err| fail(VARC_ERR_RUN, format!("{err:#}")))?;
    for (i, t) in targets {
        let bytes = results[i].1.data().to_le_bytes();
        if bytes.len() != t.size {
            return fail(VARC_ERR_RUN, "output size changed while running");
        }
        // SAFETY: `t.data` is non-null when `size > 0` (checked above) and,
        // per varc.h, writable for `size` bytes; `bytes` is our own buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), t.data.cast::<u8>(), bytes.len()) };
    }
    Ok(())
}

/// Runs `exe`: `inputs[0..n]` must name every input once, each with exactly
/// its byte size; `outputs[0..m]` names any outputs wanted, each buffer of
/// exactly its byte size. Returns a `VARC_*` status, message in `err`.
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_run(
    exe: *const VarcExecutable,
    inputs: *const VarcTensor,
    n: usize,
    outputs: *mut VarcTensor,
    m: usize,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    let r = guard(|| {
        let Some(e) = exe_ref(exe) else {
            return fail(VARC_ERR_NULL_ARGUMENT, "exe is NULL");
        };
        let ins = tensors(inputs, n, "inputs")?;
        let outs = tensors(outputs, m, "outputs")?;
        run_inner(e, ins, outs)
    });
    status(r, err, err_len)
}

/// Frees a model from `varc_load` (NULL is fine).
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_free_model(model: *mut VarcModel) {
    if !model.is_null() {
        // SAFETY: per varc.h, `model` came from varc_load and is freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// Frees an executable from `varc_compile` (NULL is fine).
///
/// # Safety
///
/// Pointer arguments must satisfy the contract in `include/varc.h`
/// (NULL is always allowed and reported as an error).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn varc_free_executable(exe: *mut VarcExecutable) {
    if !exe.is_null() {
        // SAFETY: per varc.h, `exe` came from varc_compile and is freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(exe) })));
    }
}

/// A static description of a status code.
#[unsafe(no_mangle)]
pub extern "C" fn varc_status_string(status: c_int) -> *const c_char {
    let s: &'static CStr = match status {
        VARC_OK => c"ok",
        VARC_ERR_NULL_ARGUMENT => c"a required pointer argument is NULL",
        VARC_ERR_INVALID_ARGUMENT => c"invalid argument (index, name or count)",
        VARC_ERR_LOAD => c"the model could not be loaded",
        VARC_ERR_COMPILE => c"the model could not be compiled",
        VARC_ERR_SIZE => c"a buffer has the wrong size",
        VARC_ERR_RUN => c"the run failed",
        VARC_ERR_PANIC => c"internal error",
        _ => c"unknown status",
    };
    s.as_ptr()
}

/// `VARC_API_VERSION` of the library (compare with the header's).
#[unsafe(no_mangle)]
pub extern "C" fn varc_api_version() -> u32 {
    VARC_API_VERSION
}
