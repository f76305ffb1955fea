//! Every kernel of every shipped model (models/manifest.json), emitted as
//! PTX and assembled by NVIDIA's ptxas for sm_80 and sm_90: no GPU needed.
//!
//! ptxas comes from the pip wheel nvidia-cuda-nvcc-cu12
//! (scripts/requirements-ptx.txt); scripts/test.sh creates that venv and
//! exports VARC_PTXAS. Without it this test fails, saying how to get it.
//!
//! Budgets: ptxas must accept every module; no kernel may use more than
//! [`MAX_REGISTERS`] registers or spill more than [`MAX_SPILL_BYTES`] bytes
//! (measured: at most 148 registers on sm_80, 150 on sm_90, no spills: the
//! flash-attention entries, whose dot products are unrolled, and the
//! implicit-GEMM convolution entries of vqvae_dec use 96–150; the other
//! tensor-core entries 79–93). The entry modes per model are printed
//! (`--nocapture`); `VARC_PTX_KEEP=1` keeps the PTX and cubins.

use std::path::{Path, PathBuf};
use std::process::Command;
use varc_backend_cuda::{CudaTarget, emit_ptx};
use varc_runtime::read_tensors;
use varc_tests::{models_dir, shipped_models};

/// ptxas's own limit per thread; a kernel at the limit usually spills.
const MAX_REGISTERS: u32 = 255;
/// Spill stores + loads per kernel (bytes) tolerated.
const MAX_SPILL_BYTES: u32 = 0;

fn ptxas() -> PathBuf {
    match std::env::var_os("VARC_PTXAS") {
        Some(p) if Path::new(&p).is_file() => PathBuf::from(p),
        Some(p) => panic!(
            "VARC_PTXAS={} is not a file; scripts/test.sh sets it (the pip wheel \
             nvidia-cuda-nvcc-cu12 ships nvidia/cuda_nvcc/bin/ptxas)",
            Path::new(&p).display()
        ),
        None => panic!(
            "VARC_PTXAS is not set: this test assembles the emitted PTX with NVIDIA's ptxas. \
             Run scripts/test.sh (it creates .venv-ptx from scripts/requirements-ptx.txt and \
             exports VARC_PTXAS), or: scripts/python-env.sh ptx, then \
             export VARC_PTXAS=$(ls .venv-ptx/lib/python3*/site-packages/nvidia/cuda_nvcc/bin/ptxas)"
        ),
    }
}

/// Per-kernel resource usage from `ptxas -v`.
#[derive(Debug, Default, Clone)]
struct Usage {
    entry: String,
    registers: u32,
    spill_bytes: u32,
}

fn parse_usage(log: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(Usage {
                entry: name,
                ..Usage::default()
            });
        } else if let Some(cur) = out.last_mut() {
            if let Some(rest) = line.split("Used ").nth(1)
                && let Some(n) = rest.split(" registers").next()
            {
                cur.registers = n.trim().parse().unwrap_or(0);
            }
            if line.contains("spill stores") {
                let num = |tag: &str| -> u32 {
                    line.split(',')
                        .find(|p| p.contains(tag))
                        .and_then(|p| p.split_whitespace().next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                cur.spill_bytes = num("spill stores") + num("spill loads");
            }
        }
    }
    out
}

struct Report {
    model: String,
    arch: String,
    kernels: usize,
    usage: Vec<Usage>,
    error: Option<String>,
}

fn assemble(ptxas: &Path, dir: &Path, model: &str, ptx: &str, arch: &str) -> Report {
    let src = dir.join(format!("{model}.{arch}.ptx"));
    let ptx = ptx.replace(".target sm_80", &format!(".target {arch}"));
    std::fs::write(&src, &ptx).expect("writes the PTX");
    let out = Command::new(ptxas)
        .args(["-v", &format!("-arch={arch}")])
        .arg(&src)
        .arg("-o")
        .arg(dir.join(format!("{model}.{arch}.cubin")))
        .output()
        .expect("runs ptxas");
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Report {
        model: model.to_string(),
        arch: arch.to_string(),
        kernels: ptx.matches(".visible .entry").count(),
        usage: parse_usage(&log),
        error: (!out.status.success()).then(|| {
            log.lines()
                .filter(|l| {
                    !l.contains("ptxas info") && !l.trim_start().starts_with(char::is_numeric)
                })
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        }),
    }
}

#[test]
fn every_shipped_kernel_assembles_with_ptxas() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("varc-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let models = shipped_models();
    assert!(!models.is_empty(), "models/manifest.json lists no models");
    let mut jobs = Vec::new();
    let mut failures = Vec::new();
    for m in &models {
        let path = models_dir().join(&m.file);
        let emitted = (|| -> anyhow::Result<(String, usize, usize)> {
            let inputs = read_tensors(&models_dir().join(&m.inputs))?;
            let model = varc::load_for_inputs(&path, &Default::default(), &inputs)?;
            // What `varc --target cuda` compiles (fused attention, tagged
            // convolutions).
            let program = model.lower_cuda()?;
            let tags = |attention: bool| {
                program
                    .kernels
                    .iter()
                    .filter(|k| match &k.library {
                        Some(varc_ir::kernel::Library::Attention(_)) => attention,
                        Some(varc_ir::kernel::Library::Conv(_)) => !attention,
                        None => false,
                    })
                    .count()
            };
            Ok((
                emit_ptx(&program, CudaTarget::SM_80)?,
                tags(true),
                tags(false),
            ))
        })();
        match emitted {
            Ok((ptx, att, conv)) => {
                jobs.push((m.file.trim_end_matches(".onnx").to_string(), ptx, att, conv))
            }
            Err(e) => failures.push(format!("{}: {e:#}", m.file)),
        }
    }
    // Two ptxas processes at a time.
    let work: Vec<(String, String, &str)> = jobs
        .iter()
        .flat_map(|(m, ptx, _, _)| ["sm_80", "sm_90"].map(|a| (m.clone(), ptx.clone(), a)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let reports = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((m, ptx, arch)) = work.get(i) else {
                        break;
                    };
                    let r = assemble(&ptxas, &dir, m, ptx, arch);
                    reports.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut reports = reports.into_inner().unwrap();
    reports.sort_by(|a, b| (&a.model, &a.arch).cmp(&(&b.model, &b.arch)));
    println!(
        "{:<22} {:<6} {:>7} {:>9} {:>12} {:>8}",
        "model", "arch", "kernels", "max regs", "spill bytes", "spilling"
    );
    for r in &reports {
        let max_regs = r.usage.iter().map(|u| u.registers).max().unwrap_or(0);
        let spill: u32 = r.usage.iter().map(|u| u.spill_bytes).sum();
        let spilling = r.usage.iter().filter(|u| u.spill_bytes > 0).count();
        println!(
            "{:<22} {:<6} {:>7} {:>9} {:>12} {:>8}",
            r.model, r.arch, r.kernels, max_regs, spill, spilling
        );
        if let Some(e) = &r.error {
            failures.push(format!("{} ({}): ptxas failed:\n{e}", r.model, r.arch));
            continue;
        }
        if r.usage.len() != r.kernels {
            failures.push(format!(
                "{} ({}): ptxas reported {} entries, the module has {}",
                r.model,
                r.arch,
                r.usage.len(),
                r.kernels
            ));
        }
        for u in &r.usage {
            if u.registers > MAX_REGISTERS || u.spill_bytes > MAX_SPILL_BYTES {
                failures.push(format!(
                    "{} ({}): {} uses {} registers and spills {} bytes (budget {MAX_REGISTERS} registers, {MAX_SPILL_BYTES} bytes)",
                    r.model, r.arch, u.entry, u.registers, u.spill_bytes
                ));
            }
        }
    }
    // Every shipped model has matrix products: with tensor cores on (the
    // default), each must get mma entries, or recognition has regressed.
    let mma_on = varc_backend_cuda::Options::from_env()
        .is_ok_and(|o| o.precision != varc_backend_cuda::Precision::F32);
    for (m, ptx, att, conv) in &jobs {
        let count = |mode: &str| ptx.matches(&format!(" points, {mode})")).count();
        // Every tagged kernel runs its fused entry (a fallback to the
        // tagged loop nest is O(L²) per point for attention).
        if count("Attention") != *att || (mma_on && count("Conv") != *conv) {
            failures.push(format!(
                "{m}: {att} attention and {conv} conv tags, {} attention and {} conv entries",
                count("Attention"),
                count("Conv")
            ));
        }
        if mma_on && count("Mma") + count("Conv") == 0 {
            failures.push(format!("{m}: no contraction runs on tensor cores"));
        }
        println!(
            "{m:<22} modes: {} attention, {} conv, {} mma, {} warp, {} thread, {} serial",
            count("Attention"),
            count("Conv"),
            count("Mma"),
            count("Warp"),
            count("Thread"),
            count("Serial")
        );
    }
    // VARC_PTX_KEEP=1 keeps the modules and cubins for inspection.
    if std::env::var_os("VARC_PTX_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("kept {}", dir.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ptxas_usage_parses() {
    let log = "ptxas info    : Compiling entry function 'varc_k0_add' for 'sm_80'\n\
               ptxas info    : Function properties for varc_k0_add\n    \
               8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n\
               ptxas info    : Used 12 registers, 376 bytes cmem[0]\n";
    let u = parse_usage(log);
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].entry.as_str(), u[0].registers, u[0].spill_bytes),
        ("varc_k0_add", 12, 8)
    );
}
