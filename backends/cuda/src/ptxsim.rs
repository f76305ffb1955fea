//! Test-only: a small interpreter for the subset of PTX this crate emits,
//! so the emitted entries can be run (slowly) without a GPU and compared
//! with `varc_ir::kernel::eval`.
//!
//! Threads of a block run one at a time up to the next collective
//! instruction; `bar.sync` releases when every live thread of the block
//! waits at one, `mma.sync` and `shfl.sync` when all 32 lanes of the warp
//! wait at the same instruction (anything else is reported as a deadlock).
//! `mma.m16n8k8` gathers A, B and C from the lanes with the fragment
//! layouts of the PTX ISA (".tf32": a0 = (g, t), a1 = (g+8, t),
//! a2 = (g, t+4), a3 = (g+8, t+4); b0 = (k = t, n = g), b1 = (t+4, g);
//! c0..c3 = (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)), multiplies the
//! TF32 operands (low 13 bits ignored) exactly and rounds each result to
//! f32. Every global or shared access is bounds-checked (a panic names it).

use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Op {
    Reg(usize),
    Imm(u64),
    Special(&'static str),
    Mem(Box<Op>, i64),
    List(Vec<usize>),
    Label(usize),
    Param(usize),
}

#[derive(Clone, Debug)]
struct Ins {
    guard: Option<(bool, usize)>,
    op: String,
    args: Vec<Op>,
}

pub struct Entry {
    code: Vec<Ins>,
    nregs: usize,
    params: usize,
    shared_bytes: usize,
}

fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for ch in s.chars() {
        match ch {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            out.push(cur.trim().to_string());
            cur.clear();
        } else {
            cur.push(ch);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Parses entry `name` of `module`.
pub fn parse(module: &str, name: &str) -> Entry {
    let mut shared_at: HashMap<String, u64> = HashMap::new();
    let mut shared_bytes = 0usize;
    for l in module.lines() {
        if let Some(rest) = l.strip_prefix(".shared .align 16 .b8 ") {
            let (n, b) = rest.trim_end_matches("];").split_once('[').unwrap();
            shared_bytes = shared_bytes.div_ceil(16) * 16;
            shared_at.insert(n.to_string(), shared_bytes as u64);
            shared_bytes += b.parse::<usize>().unwrap();
        }
    }
    let start = module
        .find(&format!(".visible .entry {name}("))
        .expect("entry exists");
    let text = &module[start..];
    let body_start = text.find("\n{").unwrap();
    let body_end = text.find("\n}").unwrap();
    let params: Vec<String> = text[..body_start]
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".param .u64 "))
        .map(|p| p.trim_end_matches(',').to_string())
        .collect();
    let mut regs: HashMap<String, usize> = HashMap::new();
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut lines = Vec::new();
    for l in text[body_start + 2..body_end].lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with(".reg") || l.starts_with("//") {
            continue;
        }
        if let Some(lab) = l.strip_suffix(':') {
            labels.insert(lab.to_string(), lines.len());
            continue;
        }
        lines.push(l.trim_end_matches(';').to_string());
    }
    fn reg(r: &str, regs: &mut HashMap<String, usize>) -> usize {
        let n = regs.len();
        *regs.entry(r.to_string()).or_insert(n)
    }
    let mut code = Vec::new();
    for l in &lines {
        let (guard, rest) = if let Some(g) = l.strip_prefix('@') {
            let (p, rest) = g.split_once(' ').unwrap();
            let (neg, p) = match p.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, p),
            };
            (Some((neg, reg(p, &mut regs))), rest.trim())
        } else {
            (None, l.as_str())
        };
        let (op, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut parsed = Vec::new();
        for a in split_args(args) {
            let operand = |a: &str, regs: &mut HashMap<String, usize>| -> Op {
                if let Some(s) = [
                    "%tid.x",
                    "%ntid.x",
                    "%ctaid.x",
                    "%ctaid.y",
                    "%ctaid.z",
                    "%nctaid.x",
                ]
                .iter()
                .find(|s| **s == a)
                {
                    Op::Special(s)
                } else if a.starts_with('%') {
                    Op::Reg(reg(a, regs))
                } else if let Some(h) = a.strip_prefix("0f") {
                    Op::Imm(u32::from_str_radix(h, 16).unwrap() as u64)
                } else if let Some(h) = a.strip_prefix("0x") {
                    Op::Imm(u64::from_str_radix(h, 16).unwrap())
                } else if let Ok(v) = a.parse::<i64>() {
                    Op::Imm(v as u64)
                } else if let Some(&s) = shared_at.get(a) {
                    Op::Imm(s)
                } else if let Some(i) = params.iter().position(|p| p == a) {
                    Op::Param(i)
                } else {
                    Op::Label(*labels.get(a).unwrap_or_else(|| panic!("operand {a}")))
                }
            };
            if let Some(inner) = a.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                let (b, off) = match inner.split_once('+') {
                    Some((b, o)) => (b, o.parse::<i64>().unwrap()),
                    None => (inner, 0),
                };
                parsed.push(Op::Mem(Box::new(operand(b, &mut regs)), off));
            } else if let Some(inner) = a.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                parsed.push(Op::List(
                    split_args(inner)
                        .iter()
                        .map(|r| reg(r, &mut regs))
                        .collect(),
                ));
            } else {
                parsed.push(operand(&a, &mut regs));
            }
        }
        code.push(Ins {
            guard,
            op: op.to_string(),
            args: parsed,
        });
    }
    Entry {
        code,
        nregs: regs.len(),
        params: params.len(),
        shared_bytes,
    }
}

/// Global memory: buffer `i` lives at `(i + 1) << 36`.
pub struct Memory {
    pub bufs: Vec<Vec<u8>>,
}

const SPAN: u64 = 1 << 36;

impl Memory {
    fn at(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let (i, off) = ((addr / SPAN) as usize - 1, (addr % SPAN) as usize);
        let b = &mut self.bufs[i];
        assert!(
            off + len <= b.len(),
            "global access at byte {off} of a {}-byte buffer",
            b.len()
        );
        &mut b[off..off + len]
    }
    pub fn address(i: usize) -> u64 {
        (i as u64 + 1) * SPAN
    }
}

struct Thread {
    r: Vec<u64>,
    pc: usize,
    done: bool,
    tid: u32,
}

fn f(x: u64) -> f32 {
    f32::from_bits(x as u32)
}
fn fb(x: f32) -> u64 {
    x.to_bits() as u64
}

/// Runs `e` over `grid` blocks of `block` threads; `params` are the
/// parameter values (addresses from [`Memory::address`]).
pub fn run(e: &Entry, grid: [u32; 3], block: u32, params: &[u64], mem: &mut Memory) {
    assert_eq!(params.len(), e.params);
    for bz in 0..grid[2] {
        for by in 0..grid[1] {
            for bx in 0..grid[0] {
                run_block(e, [bx, by, bz], grid, block, params, mem);
            }
        }
    }
}

fn run_block(
    e: &Entry,
    ctaid: [u32; 3],
    grid: [u32; 3],
    block: u32,
    params: &[u64],
    mem: &mut Memory,
) {
    let mut shared = vec![0u8; e.shared_bytes];
    let mut th: Vec<Thread> = (0..block)
        .map(|tid| Thread {
            r: vec![0; e.nregs],
            pc: 0,
            done: false,
            tid,
        })
        .collect();
    loop {
        for t in th.iter_mut().filter(|t| !t.done) {
            step_until_sync(e, t, ctaid, grid, block, params, mem, &mut shared);
        }
        if th.iter().all(|t| t.done) {
            return;
        }
        let mut progress = false;
        for w in 0..block.div_ceil(32) as usize {
            let lanes = &th[w * 32..(w * 32 + 32).min(th.len())];
            let live: Vec<usize> = (0..lanes.len()).filter(|&l| !lanes[l].done).collect();
            if live.is_empty() {
                continue;
            }
            let pc = lanes[live[0]].pc;
            let ins = &e.code[pc];
            if ins.op.starts_with("bar.") || !live.iter().all(|&l| lanes[l].pc == pc) {
                continue;
            }
            assert_eq!(live.len(), 32, "{} with {} live lanes", ins.op, live.len());
            collective(ins, &mut th[w * 32..w * 32 + 32]);
            for t in &mut th[w * 32..w * 32 + 32] {
                t.pc += 1;
            }
            progress = true;
        }
        if !progress {
            let waiting: Vec<&Thread> = th.iter().filter(|t| !t.done).collect();
            assert!(
                waiting
                    .iter()
                    .all(|t| e.code[t.pc].op.starts_with("bar.sync")),
                "deadlock: threads wait at different collective instructions"
            );
            for t in th.iter_mut().filter(|t| !t.done) {
                t.pc += 1;
            }
        }
    }
}

#[allow(clippy::needless_range_loop)] // fragment index i names registers and positions
fn collective(ins: &Ins, lanes: &mut [Thread]) {
    let list = |a: &Op| match a {
        Op::List(v) => v.clone(),
        _ => panic!("operand list"),
    };
    if ins
        .op
        .starts_with("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32")
    {
        let (d, a, b, c) = (
            list(&ins.args[0]),
            list(&ins.args[1]),
            list(&ins.args[2]),
            list(&ins.args[3]),
        );
        let tf = |x: u64| f32::from_bits(x as u32 & 0xFFFF_E000) as f64;
        let (mut am, mut bm, mut cm) = ([[0f64; 8]; 16], [[0f64; 8]; 8], [[0f64; 8]; 16]);
        for (lane, t) in lanes.iter().enumerate() {
            let (g, q) = (lane >> 2, lane & 3);
            am[g][q] = tf(t.r[a[0]]);
            am[g + 8][q] = tf(t.r[a[1]]);
            am[g][q + 4] = tf(t.r[a[2]]);
            am[g + 8][q + 4] = tf(t.r[a[3]]);
            bm[q][g] = tf(t.r[b[0]]);
            bm[q + 4][g] = tf(t.r[b[1]]);
            for i in 0..4 {
                cm[g + 8 * (i >> 1)][2 * q + (i & 1)] = f(t.r[c[i]]) as f64;
            }
        }
        for (lane, t) in lanes.iter_mut().enumerate() {
            let (g, q) = (lane >> 2, lane & 3);
            for i in 0..4 {
                let (row, col) = (g + 8 * (i >> 1), 2 * q + (i & 1));
                let s: f64 = (0..8).map(|k| am[row][k] * bm[k][col]).sum::<f64>() + cm[row][col];
                t.r[d[i]] = fb(s as f32);
            }
        }
    } else if ins.op == "shfl.sync.bfly.b32" {
        let (Op::Reg(d), Op::Reg(a), Op::Imm(m)) = (&ins.args[0], &ins.args[1], &ins.args[2])
        else {
            panic!("shfl operands");
        };
        let vals: Vec<u64> = lanes.iter().map(|t| t.r[*a]).collect();
        for (lane, t) in lanes.iter_mut().enumerate() {
            t.r[*d] = vals[lane ^ *m as usize];
        }
    } else {
        panic!("collective {}", ins.op);
    }
}

#[allow(clippy::too_many_arguments)]
fn step_until_sync(
    e: &Entry,
    t: &mut Thread,
    ctaid: [u32; 3],
    grid: [u32; 3],
    block: u32,
    params: &[u64],
    mem: &mut Memory,
    shared: &mut [u8],
) {
    loop {
        let ins = &e.code[t.pc];
        if let Some((neg, p)) = ins.guard
            && (t.r[p] != 0) == neg
        {
            t.pc += 1;
            continue;
        }
        let op = ins.op.as_str();
        if op.starts_with("bar.sync") || op.starts_with("mma.sync") || op.starts_with("shfl.sync") {
            return;
        }
        let val = |t: &Thread, a: &Op| -> u64 {
            match a {
                Op::Reg(r) => t.r[*r],
                Op::Imm(v) => *v,
                Op::Special(s) => match *s {
                    "%tid.x" => t.tid as u64,
                    "%ntid.x" => block as u64,
                    "%ctaid.x" => ctaid[0] as u64,
                    "%ctaid.y" => ctaid[1] as u64,
                    "%ctaid.z" => ctaid[2] as u64,
                    _ => grid[0] as u64,
                },
                Op::Param(i) => params[*i],
                _ => panic!("value of {a:?}"),
            }
        };
        let addr = |t: &Thread, a: &Op| -> u64 {
            match a {
                Op::Mem(b, off) => val(t, b).wrapping_add(*off as u64),
                _ => panic!("address {a:?}"),
            }
        };
        let dst = |a: &Op| match a {
            Op::Reg(r) => *r,
            _ => panic!("destination {a:?}"),
        };
        let a = &ins.args;
        let v = |i: usize| val(t, &a[i]);
        let parts: Vec<&str> = op.split('.').collect();
        let ty = *parts.last().unwrap();
        let w32 = |x: u64| x as u32 as u64;
        let result: Option<u64> = match parts[0] {
            "ret" | "exit" => {
                t.done = true;
                return;
            }
            "bra" => {
                let Op::Label(l) = a[0] else { panic!("label") };
                t.pc = l;
                continue;
            }
            "ld" if parts[1] == "param" => {
                let Op::Mem(b, _) = &a[1] else { panic!() };
                Some(val(t, b))
            }
            "ld" if parts[1] == "shared" => {
                let at = addr(t, &a[1]) as usize;
                assert!(at + 4 <= shared.len(), "shared load at {at}");
                Some(u32::from_le_bytes(shared[at..at + 4].try_into().unwrap()) as u64)
            }
            "st" if parts[1] == "shared" => {
                let at = addr(t, &a[0]) as usize;
                assert!(at + 4 <= shared.len(), "shared store at {at}");
                shared[at..at + 4].copy_from_slice(&(v(1) as u32).to_le_bytes());
                None
            }
            "ld" => {
                assert_eq!(ty, "f32", "only f32 global loads are simulated");
                let at = addr(t, &a[1]);
                Some(u32::from_le_bytes(mem.at(at, 4).try_into().unwrap()) as u64)
            }
            "st" => {
                assert_eq!(ty, "f32");
                let at = addr(t, &a[0]);
                let x = v(1) as u32;
                mem.at(at, 4).copy_from_slice(&x.to_le_bytes());
                None
            }
            "cvta" | "mov" => Some(v(1)),
            "cvt" => Some(match (parts[1], parts[2]) {
                ("rna", "tf32") => {
                    let x = v(1) as u32;
                    let r = if f32::from_bits(x).is_finite() {
                        x.wrapping_add(0x1000) & 0xFFFF_E000
                    } else {
                        x
                    };
                    r as u64
                }
                ("rni", "f32") => fb(f(v(1)).round_ties_even()),
                ("rzi", "s32") => w32(f(v(1)).trunc() as i32 as u32 as u64),
                ("u64", "u32") => w32(v(1)),
                ("u32", "u64") => w32(v(1)),
                _ => panic!("cvt {op}"),
            }),
            "mul" if parts[1] == "wide" => Some(w32(v(1)) * w32(v(2))),
            "mul" if ty == "f32" => Some(fb(f(v(1)) * f(v(2)))),
            "mul" => Some(if ty == "u32" {
                w32(v(1).wrapping_mul(v(2)))
            } else {
                v(1).wrapping_mul(v(2))
            }),
            "mad" => {
                let r = v(1).wrapping_mul(v(2)).wrapping_add(v(3));
                Some(if ty == "u32" { w32(r) } else { r })
            }
            "add" if ty == "f32" => Some(fb(f(v(1)) + f(v(2)))),
            "sub" if ty == "f32" => Some(fb(f(v(1)) - f(v(2)))),
            "div" if ty == "f32" => Some(fb(f(v(1)) / f(v(2)))),
            "fma" => Some(fb(f(v(1)).mul_add(f(v(2)), f(v(3))))),
            "max" | "min" if ty != "f32" => {
                let (x, y) = (v(1), v(2));
                let (x, y) = match ty {
                    "u32" => (w32(x) as i128, w32(y) as i128),
                    "s32" => (x as u32 as i32 as i128, y as u32 as i32 as i128),
                    "s64" => (x as i64 as i128, y as i64 as i128),
                    _ => (x as i128, y as i128),
                };
                let r = if parts[0] == "max" {
                    x.max(y)
                } else {
                    x.min(y)
                };
                Some(if ty.ends_with("32") {
                    w32(r as u64)
                } else {
                    r as u64
                })
            }
            "selp" => Some(if v(3) != 0 { v(1) } else { v(2) }),
            "ex2" => Some(fb(f(v(1)).exp2())),
            "shl" => Some(if ty.ends_with("32") {
                w32(v(1) << v(2))
            } else {
                v(1) << v(2)
            }),
            "shr" if ty == "s32" => Some(w32(((v(1) as u32 as i32) >> v(2)) as u32 as u64)),
            "add" if ty == "s32" => Some(w32(v(1).wrapping_add(v(2)))),
            "sub" if ty == "s32" || ty == "u32" => Some(w32(v(1).wrapping_sub(v(2)))),
            "max" | "min" => {
                let (x, y) = (f(v(1)), f(v(2)));
                Some(fb(if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else if parts[0] == "max" {
                    x.max(y)
                } else {
                    x.min(y)
                }))
            }
            "add" => Some(if ty == "u32" {
                w32(v(1).wrapping_add(v(2)))
            } else {
                v(1).wrapping_add(v(2))
            }),
            "sub" => Some(v(1).wrapping_sub(v(2))),
            "shr" => Some(if ty == "u32" {
                w32(v(1)) >> v(2)
            } else {
                v(1) >> v(2)
            }),
            "and" if ty == "pred" => Some(((v(1) != 0) && (v(2) != 0)) as u64),
            "and" => Some(v(1) & v(2)),
            "rem" => Some(if ty == "u32" {
                w32(v(1)) % w32(v(2))
            } else {
                v(1) % v(2)
            }),
            "div" => Some(if ty == "u32" {
                w32(v(1)) / w32(v(2))
            } else {
                v(1) / v(2)
            }),
            "setp" => {
                let (x, y) = (v(1), v(2));
                let ord = match ty {
                    "u32" => w32(x).partial_cmp(&w32(y)),
                    "u64" => x.partial_cmp(&y),
                    "s64" => (x as i64).partial_cmp(&(y as i64)),
                    "f32" => f(x).partial_cmp(&f(y)),
                    _ => panic!("setp {op}"),
                };
                use std::cmp::Ordering::*;
                Some(match (parts[1], ord) {
                    ("lt", Some(Less)) | ("le", Some(Less | Equal)) | ("eq", Some(Equal)) => 1,
                    ("gt", Some(Greater)) | ("ge", Some(Greater | Equal)) => 1,
                    ("ne", o) | ("neu", o) => (o != Some(Equal)) as u64,
                    _ => 0,
                })
            }
            "sqrt" => Some(fb(f(v(1)).sqrt())),
            "rcp" => Some(fb(1.0 / f(v(1)))),
            _ => panic!("instruction {op} is not simulated"),
        };
        if let Some(x) = result {
            t.r[dst(&a[0])] = x;
        }
        t.pc += 1;
    }
}
