//! Text form of kernel IR, for `--emit kernels`, listings and golden tests.

use super::{Access, Affine, BufKind, Expr, Guard, Kernel, Library, Operand4, Program, Var};
use std::fmt::Write;

fn var(v: &Var) -> String {
    match v {
        Var::Out(i) => format!("i{i}"),
        Var::Red(i) => format!("r{i}"),
    }
}

fn affine(a: &Affine) -> String {
    let mut parts: Vec<String> = a
        .terms
        .iter()
        .map(|(v, c)| {
            if *c == 1 {
                var(v)
            } else {
                format!("{c}*{}", var(v))
            }
        })
        .collect();
    if a.offset != 0 || parts.is_empty() {
        parts.push(a.offset.to_string());
    }
    parts.join("+")
}

fn access(p: &Program, a: &Access) -> String {
    let mut idx = affine(&a.index);
    for g in &a.gathers {
        let _ = write!(idx, "+{}*idx({}, {})", g.stride, expr(p, &g.index), g.dim);
    }
    format!("%{}[{idx}]", p.buffer(a.buf).name)
}

fn guard(g: &Guard) -> String {
    format!("{}<={}<{}", g.lo, affine(&g.index), g.hi)
}

/// One expression, fully parenthesised.
pub fn expr(p: &Program, e: &Expr) -> String {
    match e {
        Expr::Const { value, dtype } => format!("{value}{dtype}"),
        Expr::Load {
            access: a,
            guards,
            fill,
        } if guards.is_empty() => {
            let _ = fill;
            access(p, a)
        }
        Expr::Load {
            access: a,
            guards,
            fill,
        } => {
            let g: Vec<String> = guards.iter().map(guard).collect();
            format!("({} ? {} : {fill})", g.join(" && "), access(p, a))
        }
        Expr::Index(v) => var(v),
        Expr::Unary(f, a) => format!("{f:?}({})", expr(p, a)),
        Expr::Binary(f, a, b) => format!("{f:?}({}, {})", expr(p, a), expr(p, b)),
        Expr::Select(c, a, b) => format!("select({}, {}, {})", expr(p, c), expr(p, a), expr(p, b)),
        Expr::Cast(d, a) => format!("cast<{d}>({})", expr(p, a)),
        Expr::Reduce { op, vars, body } => {
            let vs: Vec<String> = vars.iter().map(|(id, n)| format!("r{id}<{n}")).collect();
            format!("{op:?}[{}]({})", vs.join(","), expr(p, body))
        }
    }
}

pub fn kernel_to_text(p: &Program, k: &Kernel) -> String {
    let dom: Vec<String> = k
        .domain
        .iter()
        .enumerate()
        .map(|(i, n)| format!("i{i}<{n}"))
        .collect();
    let mut text = format!(
        "kernel {} [{}]\n  {} = {}\n",
        k.name,
        dom.join(", "),
        access(p, &k.store),
        expr(p, &k.value)
    );
    if let Some(lib) = &k.library {
        let _ = writeln!(text, "  library {}", library(p, lib));
    }
    text
}

fn operand(p: &Program, o: &Operand4) -> String {
    let s: Vec<String> = o.strides.iter().map(i64::to_string).collect();
    format!("%{}[{}; {}]", p.buffer(o.buf).name, o.offset, s.join(","))
}

/// A library tag: the routine, its operands as `%buf[offset; strides]`,
/// and its sizes.
fn library(p: &Program, lib: &Library) -> String {
    match lib {
        Library::Attention(a) => {
            let mut ops: Vec<String> = a
                .operands()
                .iter()
                .map(|(what, o, _)| format!("{what}={}", operand(p, o)))
                .collect();
            ops.push(format!(
                "b={} hq={} hkv={} sq={} skv={} d={} dv={} scale={}",
                a.batch, a.q_heads, a.kv_heads, a.s_q, a.s_kv, a.head_dim, a.v_head_dim, a.scale
            ));
            if let Some(o) = a.causal_offset {
                ops.push(format!("causal j<=i+{o}"));
            }
            format!("attention({})", ops.join(", "))
        }
        Library::Conv(c) => {
            let mut ops: Vec<String> = c
                .operands()
                .iter()
                .map(|(what, o, _)| format!("{what}={}", operand(p, o)))
                .collect();
            ops.push(format!(
                "n={} c={} m={} in={:?} out={:?} kernel={:?} strides={:?} dilations={:?} pads={:?}",
                c.batch,
                c.in_channels,
                c.out_channels,
                c.in_size,
                c.out_size,
                c.kernel,
                c.strides,
                c.dilations,
                c.pads
            ));
            format!("conv2d({})", ops.join(", "))
        }
    }
}

pub fn program_to_text(p: &Program) -> String {
    let mut out = String::new();
    for b in &p.buffers {
        let kind = match &b.kind {
            BufKind::Input(i) => format!("input {i}"),
            BufKind::Output(i) => format!("output {i}"),
            BufKind::Weight(_) => "weight".to_string(),
            BufKind::Temp => "temp".to_string(),
        };
        let _ = writeln!(
            out,
            "buffer %{}: {}{:?}  ({kind})",
            b.name, b.dtype, b.shape
        );
    }
    for k in &p.kernels {
        out.push_str(&kernel_to_text(p, k));
    }
    out
}
