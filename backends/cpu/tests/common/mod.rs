//! Shared test helpers: building kernel programs, random data, comparing the
//! JIT against the kernel IR interpreter, and running kernels with every
//! buffer next to a PROT_NONE guard page.

#![allow(dead_code)]

use varc_backend_cpu::{JitProgram, Target, compile_for, compile_jit};
use varc_ir::DType;
use varc_ir::kernel::{Access, Affine, BufId, BufKind, Buffer, Expr, Kernel, Program, Var, eval};
use varc_ir::{Tensor, TensorData};

pub fn buffer(p: &mut Program, name: &str, dtype: DType, shape: &[usize], kind: BufKind) -> BufId {
    let id = p.add_buffer(Buffer {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        kind: kind.clone(),
    });
    match kind {
        BufKind::Input(_) => p.inputs.push(id),
        BufKind::Output(_) => p.outputs.push(id),
        _ => {}
    }
    id
}

pub fn input(p: &mut Program, name: &str, dtype: DType, shape: &[usize]) -> BufId {
    let n = p.inputs.len();
    buffer(p, name, dtype, shape, BufKind::Input(n))
}

pub fn output(p: &mut Program, name: &str, dtype: DType, shape: &[usize]) -> BufId {
    let n = p.outputs.len();
    buffer(p, name, dtype, shape, BufKind::Output(n))
}

pub fn strides(shape: &[usize]) -> Vec<i64> {
    varc_ir::shape::strides(shape)
        .into_iter()
        .map(|s| s as i64)
        .collect()
}

/// The row-major address of a buffer of `shape` broadcast (numpy rules) to
/// the domain `out` (`Out(i)` are the domain axes).
pub fn bcast(shape: &[usize], out: &[usize]) -> Affine {
    let lead = out.len() - shape.len();
    let st = strides(shape);
    Affine {
        offset: 0,
        terms: (0..shape.len())
            .filter(|&d| shape[d] != 1)
            .map(|d| (Var::Out(lead + d), st[d]))
            .collect(),
    }
}

pub fn load(buf: BufId, index: Affine) -> Expr {
    Expr::load(buf, index)
}

/// Appends a kernel storing `value` row-major over `out`'s shape.
pub fn emit(p: &mut Program, name: &str, out: BufId, value: Expr) {
    let shape = p.buffer(out).shape.clone();
    p.kernels.push(Kernel {
        name: name.into(),
        domain: shape.clone(),
        store: Access {
            buf: out,
            index: Affine::row_major(&shape),
            gathers: vec![],
        },
        value,
        library: None,
    });
}

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }

    pub fn tensor(&mut self, dtype: DType, shape: &[usize], lo: f64, hi: f64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let x = self.uniform(lo, hi);
                if dtype.is_float() { x } else { x.floor() }
            })
            .collect();
        Tensor::new(shape.to_vec(), TensorData::from_f64(dtype, &v)).unwrap()
    }
}

/// Allowed difference: |got − want| ≤ abs + rel·|want| (floats); ints exact.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
pub const F32: Tol = Tol {
    abs: 1e-6,
    rel: 1e-6,
};

pub fn compare(name: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tol.abs + tol.rel * b.abs()
        };
        assert!(
            ok,
            "{name}: element {i}: got {a}, want {b} (tolerance {tol:?})"
        );
    }
}

/// Compiles `p`, checks it against the interpreter on `inputs`, re-runs it
/// with guard pages, and cross-compiles it for aarch64 (verifier on).
pub fn check(p: &Program, inputs: &[Tensor], tol: Tol) -> JitProgram {
    let want = eval::run_program(p, inputs).expect("interpreter");
    let jit = compile_jit(p).expect("compile_jit");
    let got = jit.run(inputs).expect("jit run");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        compare(&format!("output {i}"), g, w, tol);
    }
    for at_end in [true, false] {
        let guarded = guard::run(&jit, inputs, at_end).expect("guarded run");
        for (g, w) in guarded.iter().zip(&got) {
            // Bitwise: the same code on the same data (NaN included).
            let same = g.shape() == w.shape() && g.data().to_le_bytes() == w.data().to_le_bytes();
            assert!(same, "guard-page run differs (at_end = {at_end})");
        }
    }
    cross_compile(p);
    jit
}

/// compile_for aarch64 and x86-64 succeed (they run Cranelift's verifier).
pub fn cross_compile(p: &Program) {
    for t in ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"] {
        let ks = compile_for(p, &Target::parse(t).unwrap()).expect(t);
        assert_eq!(ks.len(), p.kernels.len());
        assert!(ks.iter().all(|k| k.code_size > 0));
    }
}

/// Expects the program to fail in both the interpreter and the JIT.
pub fn check_fails(p: &Program, inputs: &[Tensor], msg: &str) {
    assert!(
        eval::run_program(p, inputs).is_err(),
        "interpreter should fail"
    );
    let jit = compile_jit(p).expect("compile_jit");
    let err = jit.run(inputs).expect_err("jit should fail");
    assert!(err.contains(msg), "error '{err}' should mention '{msg}'");
    for at_end in [true, false] {
        let err = guard::run(&jit, inputs, at_end).expect_err("guarded run should fail");
        assert!(err.contains(msg), "error '{err}' should mention '{msg}'");
    }
}

pub mod guard {
    //! Every buffer placed against a PROT_NONE page: any out-of-bounds
    //! access by a kernel faults the test process.

    use super::*;

    /// One mapping: [guard page][data pages][guard page].
    struct Guarded {
        map: *mut u8,
        map_len: usize,
        data: *mut u8,
    }

    impl Guarded {
        fn new(bytes: usize, at_end: bool) -> Guarded {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            let data_pages = bytes.div_ceil(page).max(1);
            let map_len = (data_pages + 2) * page;
            // SAFETY: an anonymous private mapping of fresh memory; the
            // result is checked against MAP_FAILED before use.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED, "mmap");
            let map = map as *mut u8;
            // SAFETY: both ranges are whole pages inside the mapping just
            // created, which nothing else references.
            unsafe {
                assert_eq!(libc::mprotect(map as *mut _, page, libc::PROT_NONE), 0);
                let tail = map.add((data_pages + 1) * page);
                assert_eq!(libc::mprotect(tail as *mut _, page, libc::PROT_NONE), 0);
            }
            let offset = if at_end {
                page + data_pages * page - bytes
            } else {
                page
            };
            // SAFETY: `offset + bytes` lies within the readable data pages.
            let data = unsafe { map.add(offset) };
            Guarded { map, map_len, data }
        }

        fn bytes(&mut self, len: usize) -> &mut [u8] {
            // SAFETY: `data..data+len` is inside the read-write pages of the
            // mapping, owned by `self` (borrowed mutably for the slice).
            unsafe { std::slice::from_raw_parts_mut(self.data, len) }
        }

        fn read(&self, len: usize) -> Vec<u8> {
            // SAFETY: as for `bytes`, read-only.
            unsafe { std::slice::from_raw_parts(self.data, len) }.to_vec()
        }
    }

    impl Drop for Guarded {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping created in `new`; no
            // references into it outlive `self`.
            unsafe { libc::munmap(self.map as *mut _, self.map_len) };
        }
    }

    /// Runs `jit` with guarded buffers; `at_end` puts each buffer's last byte
    /// just before the trailing guard page, otherwise its first byte just
    /// after the leading one.
    pub fn run(jit: &JitProgram, inputs: &[Tensor], at_end: bool) -> Result<Vec<Tensor>, String> {
        let p = jit.program();
        let mut mems: Vec<Guarded> = p
            .buffers
            .iter()
            .map(|b| Guarded::new(b.byte_size(), at_end))
            .collect();
        for (i, (b, m)) in p.buffers.iter().zip(&mut mems).enumerate() {
            let data = match &b.kind {
                // Read only through its packed copy: left zero, so a read
                // of it would change the results.
                _ if jit.released_weights().contains(&BufId(i)) => vec![0; b.byte_size()],
                BufKind::Weight(t) => t.data().to_le_bytes(),
                _ => vec![0; b.byte_size()],
            };
            m.bytes(b.byte_size()).copy_from_slice(&data);
        }
        for (&id, t) in p.inputs.iter().zip(inputs) {
            let b = p.buffer(id);
            mems[id.0]
                .bytes(b.byte_size())
                .copy_from_slice(&t.data().to_le_bytes());
        }
        let ptrs: Vec<*mut u8> = mems.iter().map(|m| m.data).collect();
        // SAFETY: each pointer addresses a distinct mapping with at least
        // the buffer's byte size readable and writable, initialised above.
        unsafe { jit.run_kernels(&ptrs) }.map_err(|(i, s)| {
            format!(
                "kernel '{}': {}",
                p.kernels[i].name,
                varc_backend_cpu::status_message(s)
            )
        })?;
        Ok(p.outputs
            .iter()
            .map(|&id| {
                let b = p.buffer(id);
                let bytes = mems[id.0].read(b.byte_size());
                Tensor::new(
                    b.shape.clone(),
                    TensorData::from_le_bytes(b.dtype, &bytes).unwrap(),
                )
                .unwrap()
            })
            .collect())
    }
}
