//! Arithmetic on possibly symbolic dims and shape values.
//!
//! A dim that cannot be resolved to a number stays symbolic. Arithmetic on
//! symbols builds a readable expression name (`B*4`, `S+1`), so two values
//! computed the same way get the same name; names that grow long are replaced
//! by a short hash of the expression (`?1a2b3c4d`). Dims that are opaque to
//! this arithmetic (a convolution's output over a symbolic height, say) are
//! named after the node and axis that made them: `?node:axis`.

use crate::shape::Dim;

/// Largest element count (and dim) a value may have: anything bigger is a
/// hostile or broken model, not something to compile.
pub(crate) const MAX_ELEMS: usize = 1 << 40;

/// An integer inside a shape-valued tensor (the output of Shape, a Reshape
/// target, ...): a number, or a symbolic dim it was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SymInt {
    Int(i64),
    Sym(String),
}

impl SymInt {
    pub fn from_dim(d: &Dim) -> SymInt {
        match d {
            // Dims are bounded by MAX_ELEMS, so this never truncates.
            Dim::Known(n) => SymInt::Int(*n as i64),
            Dim::Sym(s) => SymInt::Sym(s.clone()),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            SymInt::Int(v) => Some(*v),
            SymInt::Sym(_) => None,
        }
    }

    /// The value as a dim; negative numbers are an error.
    pub fn to_dim(&self) -> Result<Dim, String> {
        match self {
            SymInt::Int(v) => usize::try_from(*v)
                .map(Dim::Known)
                .map_err(|_| format!("dimension {v} is negative")),
            SymInt::Sym(s) => Ok(Dim::Sym(s.clone())),
        }
    }

    fn text(&self) -> String {
        match self {
            SymInt::Int(v) => v.to_string(),
            SymInt::Sym(s) => wrap(s),
        }
    }
}

/// Parenthesises a compound expression before it becomes an operand.
fn wrap(s: &str) -> String {
    if s.contains(['+', '-', '*', '/']) {
        format!("({s})")
    } else {
        s.to_string()
    }
}

/// A symbol for `expr`, hashed when the expression grows unwieldy.
pub(crate) fn sym(expr: String) -> Dim {
    if expr.len() <= 40 {
        return Dim::Sym(expr);
    }
    // FNV-1a: stable across runs and platforms.
    let h = expr.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    Dim::Sym(format!("?{:08x}", h as u32))
}

/// An opaque symbol for axis `axis` of a value computed by node `node`.
pub(crate) fn opaque(node: &str, axis: usize) -> Dim {
    sym(format!("?{node}:{axis}"))
}

fn text(d: &Dim) -> String {
    match d {
        Dim::Known(n) => n.to_string(),
        Dim::Sym(s) => wrap(s),
    }
}

pub(crate) fn mul(a: &Dim, b: &Dim) -> Result<Dim, String> {
    Ok(match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(
            x.checked_mul(*y)
                .ok_or_else(|| format!("size {x} * {y} overflows"))?,
        ),
        (Dim::Known(1), d) | (d, Dim::Known(1)) => d.clone(),
        (Dim::Known(0), _) | (_, Dim::Known(0)) => Dim::Known(0),
        _ => sym(format!("{}*{}", text(a), text(b))),
    })
}

pub(crate) fn add(a: &Dim, b: &Dim) -> Result<Dim, String> {
    Ok(match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(
            x.checked_add(*y)
                .ok_or_else(|| format!("size {x} + {y} overflows"))?,
        ),
        (Dim::Known(0), d) | (d, Dim::Known(0)) => d.clone(),
        _ => sym(format!("{}+{}", text(a), text(b))),
    })
}

/// `a + k` for a possibly negative `k` (padding); a negative result is an error.
pub(crate) fn add_signed(a: &Dim, k: i64) -> Result<Dim, String> {
    match a {
        Dim::Known(n) => {
            let v = *n as i128 + k as i128;
            usize::try_from(v)
                .map(Dim::Known)
                .map_err(|_| format!("dimension {n} {k:+} is negative or too large"))
        }
        _ if k == 0 => Ok(a.clone()),
        _ if k > 0 => Ok(sym(format!("{}+{k}", text(a)))),
        _ => Ok(sym(format!("{}-{}", text(a), k.unsigned_abs()))),
    }
}

/// `a / k` where `k` must divide `a` exactly when `a` is known.
pub(crate) fn div_exact(a: &Dim, k: usize) -> Result<Dim, String> {
    match a {
        _ if k == 0 => Err("division of a dimension by zero".into()),
        Dim::Known(n) if n % k == 0 => Ok(Dim::Known(n / k)),
        Dim::Known(n) => Err(format!("dimension {n} is not divisible by {k}")),
        _ if k == 1 => Ok(a.clone()),
        _ => Ok(sym(format!("{}/{k}", text(a)))),
    }
}

/// Product of dims (1 for none).
pub(crate) fn product(dims: &[Dim]) -> Result<Dim, String> {
    dims.iter().try_fold(Dim::Known(1), |acc, d| mul(&acc, d))
}

/// The more precise of two dims that must be equal: `None` when both are
/// known and differ.
pub(crate) fn unify(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => (x == y).then_some(a.clone()),
        (Dim::Known(_), Dim::Sym(_)) => Some(a.clone()),
        (Dim::Sym(_), Dim::Known(_)) => Some(b.clone()),
        (Dim::Sym(_), Dim::Sym(_)) => Some(a.clone()),
    }
}

/// Integer arithmetic on shape values, as ONNX integer Add/Sub/Mul/Div do it.
pub(crate) fn int_binary(op: char, a: &SymInt, b: &SymInt) -> Result<SymInt, String> {
    use SymInt::Int;
    if let (Int(x), Int(y)) = (a, b) {
        let r = match op {
            '+' => x.checked_add(*y),
            '-' => x.checked_sub(*y),
            '*' => x.checked_mul(*y),
            _ if *y == 0 => return Err("integer division by zero".into()),
            _ => x.checked_div(*y),
        };
        return r
            .map(Int)
            .ok_or_else(|| format!("integer {x} {op} {y} overflows"));
    }
    Ok(match (op, a, b) {
        ('*', Int(1), v) | ('*' | '/', v, Int(1)) | ('+', Int(0), v) | ('+' | '-', v, Int(0)) => {
            v.clone()
        }
        ('*', Int(0), _) | ('*', _, Int(0)) => Int(0),
        _ => match sym(format!("{}{op}{}", a.text(), b.text())) {
            Dim::Sym(s) => SymInt::Sym(s),
            Dim::Known(_) => unreachable!("sym() always names a symbol"),
        },
    })
}

/// Cancels the symbols two dim lists share: returns (known product, leftover
/// symbols) for each side.
/// A dim list split into its known product and its symbols.
pub(crate) type Factored = (usize, Vec<String>);

pub(crate) fn cancel(a: &[Dim], b: &[Dim]) -> Option<(Factored, Factored)> {
    let split = |ds: &[Dim]| -> Option<Factored> {
        let mut k = 1usize;
        let mut syms = Vec::new();
        for d in ds {
            match d {
                Dim::Known(n) => k = k.checked_mul(*n)?,
                Dim::Sym(s) => syms.push(s.clone()),
            }
        }
        Some((k, syms))
    };
    let (ka, mut sa) = split(a)?;
    let (kb, mut sb) = split(b)?;
    sa.retain(|s| match sb.iter().position(|t| t == s) {
        Some(i) => {
            sb.remove(i);
            false
        }
        None => true,
    });
    Some(((ka, sa), (kb, sb)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Dim {
        Dim::Sym(x.into())
    }

    #[test]
    fn symbolic_arithmetic() {
        assert_eq!(mul(&s("B"), &Dim::Known(4)).unwrap(), s("B*4"));
        assert_eq!(mul(&s("B"), &Dim::Known(1)).unwrap(), s("B"));
        assert_eq!(
            mul(&add(&s("S"), &Dim::Known(1)).unwrap(), &s("H")).unwrap(),
            s("(S+1)*H")
        );
        assert_eq!(add_signed(&s("H"), -2).unwrap(), s("H-2"));
        assert!(add_signed(&Dim::Known(1), -2).is_err());
        assert_eq!(div_exact(&Dim::Known(12), 4).unwrap(), Dim::Known(3));
        assert!(div_exact(&Dim::Known(10), 4).is_err());
        assert!(mul(&Dim::Known(1 << 62), &Dim::Known(8)).is_err());
        let long = sym("x".repeat(60));
        assert!(matches!(long, Dim::Sym(ref n) if n.starts_with('?') && n.len() == 9));
    }

    #[test]
    fn shape_value_arithmetic() {
        use SymInt::*;
        assert_eq!(int_binary('*', &Int(3), &Int(4)).unwrap(), Int(12));
        assert_eq!(
            int_binary('*', &Sym("B".into()), &Int(1)).unwrap(),
            Sym("B".into())
        );
        assert_eq!(
            int_binary('/', &Sym("N".into()), &Int(2)).unwrap(),
            Sym("N/2".into())
        );
        assert!(int_binary('/', &Int(1), &Int(0)).is_err());
        assert!(int_binary('*', &Int(i64::MAX), &Int(2)).is_err());
    }

    #[test]
    fn cancellation() {
        let ((ka, sa), (kb, sb)) = cancel(
            &[s("B"), Dim::Known(4), Dim::Known(8)],
            &[s("B"), Dim::Known(8)],
        )
        .unwrap();
        assert_eq!((ka, kb), (32, 8));
        assert!(sa.is_empty() && sb.is_empty());
    }
}
