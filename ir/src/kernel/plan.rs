//! Memory planning: every scratch buffer gets a static offset in one arena.
//!
//! A temp is live from the first kernel that touches it to the last one
//! (kernel order is execution order). Buffers whose live ranges overlap
//! never share bytes; the others may. Placement is greedy, largest first,
//! at the lowest aligned offset that clashes with nothing already placed —
//! simple, and within a few percent of the peak for chain-shaped programs.
//! Weights stay where they lie; inputs and outputs belong to the caller.

use super::{BufKind, Program};

/// Offsets are multiples of this (a cache line, and enough for any vector).
pub const ALIGN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Byte offset in the arena of each buffer (`None` unless it is a temp).
    pub offsets: Vec<Option<usize>>,
    /// `(first, last)` kernel index during which each temp is live.
    pub live: Vec<Option<(usize, usize)>>,
    pub arena_bytes: usize,
    /// The most temp bytes live at once: no plan can use a smaller arena.
    pub peak_live_bytes: usize,
    pub weight_bytes: usize,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Plans the arena for `p`.
pub fn plan(p: &Program) -> MemoryPlan {
    let n = p.buffers.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; n];
    for (k, kernel) in p.kernels.iter().enumerate() {
        let touched = kernel.reads().into_iter().chain([kernel.store.buf]);
        for b in touched {
            if p.buffers[b.0].kind == BufKind::Temp {
                let r = live[b.0].get_or_insert((k, k));
                r.0 = r.0.min(k);
                r.1 = r.1.max(k);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).filter(|&b| live[b].is_some()).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(p.buffers[b].byte_size()), b));

    let mut offsets: Vec<Option<usize>> = vec![None; n];
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (offset, size, live)
    let mut arena = 0usize;
    for b in order {
        let size = round_up(p.buffers[b].byte_size().max(1));
        let range = live[b].expect("only live temps are placed");
        let mut clashes: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, r)| r.0 <= range.1 && range.0 <= r.1)
            .map(|&(o, s, _)| (o, o + s))
            .collect();
        clashes.sort();
        let mut offset = 0;
        for (lo, hi) in clashes {
            if offset + size <= lo {
                break;
            }
            offset = offset.max(hi);
        }
        placed.push((offset, size, range));
        offsets[b] = Some(offset);
        arena = arena.max(offset + size);
    }

    let peak_live_bytes = (0..p.kernels.len())
        .map(|k| {
            (0..n)
                .filter(|&b| live[b].is_some_and(|(lo, hi)| lo <= k && k <= hi))
                .map(|b| round_up(p.buffers[b].byte_size().max(1)))
                .sum()
        })
        .max()
        .unwrap_or(0);
    let weight_bytes = p
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufKind::Weight(_)))
        .map(|b| b.byte_size())
        .sum();
    MemoryPlan {
        offsets,
        live,
        arena_bytes: arena,
        peak_live_bytes,
        weight_bytes,
    }
}

impl MemoryPlan {
    /// Checks the plan's one invariant: temps live at the same time never
    /// share a byte. Returns the first clash.
    pub fn check(&self, p: &Program) -> Result<(), String> {
        let temps: Vec<usize> = (0..self.offsets.len())
            .filter(|&b| self.offsets[b].is_some())
            .collect();
        for (i, &a) in temps.iter().enumerate() {
            for &b in &temps[i + 1..] {
                let (la, lb) = (self.live[a].unwrap(), self.live[b].unwrap());
                let (oa, ob) = (self.offsets[a].unwrap(), self.offsets[b].unwrap());
                let (sa, sb) = (p.buffers[a].byte_size(), p.buffers[b].byte_size());
                let time = la.0 <= lb.1 && lb.0 <= la.1;
                let space = oa < ob + sb && ob < oa + sa;
                if time && space && sa > 0 && sb > 0 {
                    return Err(format!(
                        "'{}' and '{}' are live together but overlap in the arena",
                        p.buffers[a].name, p.buffers[b].name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::kernel::{Access, Affine, BufId, Buffer, Expr, Kernel};

    fn chain(len: usize, sizes: &[usize]) -> Program {
        // input → t0 → t1 → ... → output, each kernel reading the previous.
        let mut p = Program::default();
        let input = p.add_buffer(Buffer {
            name: "in".into(),
            dtype: DType::F32,
            shape: vec![len],
            kind: BufKind::Input(0),
        });
        p.inputs.push(input);
        let mut prev = input;
        for (i, &s) in sizes.iter().enumerate() {
            let t = p.add_buffer(Buffer {
                name: format!("t{i}"),
                dtype: DType::F32,
                shape: vec![s],
                kind: BufKind::Temp,
            });
            p.kernels.push(Kernel {
                name: format!("k{i}"),
                domain: vec![s.min(len)],
                store: Access {
                    buf: t,
                    index: Affine::row_major(&[s.min(len)]),
                    gathers: vec![],
                },
                value: Expr::load(prev, Affine::row_major(&[s.min(len)])),
                library: None,
            });
            prev = t;
        }
        let out = p.add_buffer(Buffer {
            name: "out".into(),
            dtype: DType::F32,
            shape: vec![len],
            kind: BufKind::Output(0),
        });
        p.outputs.push(out);
        p.kernels.push(Kernel {
            name: "out".into(),
            domain: vec![len],
            store: Access {
                buf: out,
                index: Affine::row_major(&[len]),
                gathers: vec![],
            },
            value: Expr::load(prev, Affine::row_major(&[len])),
            library: None,
        });
        let _ = BufId(0);
        p
    }

    #[test]
    fn chain_reuses_memory() {
        let p = chain(16, &[16, 16, 16, 16, 16, 16]);
        let m = plan(&p);
        m.check(&p).unwrap();
        // At most two temps are live at once in a chain.
        assert_eq!(m.peak_live_bytes, 2 * 64);
        assert_eq!(m.arena_bytes, 2 * 64);
    }

    #[test]
    fn mixed_sizes_never_clash() {
        let p = chain(8, &[100, 3, 2000, 17, 64, 1, 900, 33]);
        let m = plan(&p);
        m.check(&p).unwrap();
        assert!(m.arena_bytes >= m.peak_live_bytes);
        assert!(
            m.arena_bytes
                < 100 * 4 + 3 * 64 + 2000 * 4 + 17 * 4 + 64 * 4 + 900 * 4 + 33 * 4 + 8 * 64
        );
    }
}
