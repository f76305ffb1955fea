//! `VARC_TIMING=1`: one stderr line per load/compile stage with its wall
//! time and the process's resident and peak resident memory, so that where
//! a large model's load time and memory go can be read off one run.

use std::sync::Mutex;
use std::time::Instant;

static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Whether `VARC_TIMING=1` is set.
pub(crate) fn enabled() -> bool {
    std::env::var("VARC_TIMING").is_ok_and(|v| v == "1")
}

/// Starts the clock the next [`mark`] measures from.
pub(crate) fn start() {
    if enabled() {
        *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

/// Prints the time since the previous mark (or [`start`]) for `stage`.
pub fn mark(stage: &str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let ms = last.map_or(0.0, |t| (now - t).as_secs_f64() * 1e3);
    *last = Some(now);
    let (rss, hwm) = memory_mb();
    eprintln!("VARC_TIMING {stage:<28} {ms:>9.1} ms   rss {rss:>7.0} MB   peak {hwm:>7.0} MB");
}

/// Each pass's time from `report`, then a mark for all of them.
pub(crate) fn passes(report: &varc_ir::passes::PipelineReport) {
    if enabled() {
        for p in &report.passes {
            let ms = p.time.as_secs_f64() * 1e3;
            eprintln!("VARC_TIMING   pass {:<24} {ms:>9.1} ms", p.report.pass);
        }
    }
    mark("graph passes");
}

/// Resident and peak resident memory in MB (0 where /proc is unavailable).
fn memory_mb() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return (0.0, 0.0);
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
