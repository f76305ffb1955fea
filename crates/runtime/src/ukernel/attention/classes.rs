//! Block classes of a call's bias: each `(group of RQ query rows, key
//! block)` of each bias plane is classified once per call (skip, add
//! nothing, add the bias) before any tile runs, so that tiles skip what
//! contributes exact zeros.

use super::*;

/// Block classes of a bias: every element −∞ or past the causal limit
/// (the block is skipped), every element ±0 (nothing to add), anything
/// else.
pub(super) const SKIP: u8 = 1;
pub(super) const ZERO: u8 = 2;
pub(super) const MIXED: u8 = 3;

/// Bits of −∞, and of everything but the sign.
pub(super) const NEG_INF_BITS: u32 = 0xff80_0000;
pub(super) const MAGNITUDE: u32 = 0x7fff_ffff;

/// The class of every `(group of RQ query rows, key block)` of every bias
/// plane of a call, filled once per call before any tile runs (in parallel
/// across the pool) and then read by every tile: a bias broadcast over
/// batch and heads (VAR's block-causal mask) is scanned once, whatever the
/// number of heads and threads. (Atomics only so that classification
/// tasks can fill disjoint cells through a shared reference; every access
/// is relaxed, the pool's region end orders them before the tiles.)
pub(super) struct Classes {
    pub(super) cells: Vec<AtomicU8>,
    /// Whether planes differ per batch and per head (bias stride ≠ 0).
    pub(super) per_batch: bool,
    pub(super) per_head: bool,
    pub(super) heads: usize,
    pub(super) tiles: usize,
    pub(super) groups: usize,
    pub(super) nblocks: usize,
}

impl Classes {
    /// An unfilled table for `p`'s bias, if any.
    pub(super) fn new(p: &Problem) -> Option<Classes> {
        let bias = p.bias.as_ref()?;
        let z = p.sizes;
        let per_batch = bias.strides[0] != 0 && z.batch > 1;
        let per_head = bias.strides[1] != 0 && z.q_heads > 1;
        let planes = if per_batch { z.batch } else { 1 } * if per_head { z.q_heads } else { 1 };
        let (groups, nblocks) = (z.s_q.div_ceil(RQ), z.s_kv.div_ceil(NK));
        Some(Classes {
            cells: (0..planes * groups * nblocks)
                .map(|_| AtomicU8::new(MIXED))
                .collect(),
            per_batch,
            per_head,
            heads: z.q_heads,
            tiles: p.tiles(),
            groups,
            nblocks,
        })
    }

    pub(super) fn planes(&self) -> usize {
        self.cells.len() / (self.groups * self.nblocks).max(1)
    }

    pub(super) fn plane_of(&self, b: usize, h: usize) -> usize {
        let b = if self.per_batch { b } else { 0 };
        let h = if self.per_head { h } else { 0 };
        b * if self.per_head { self.heads } else { 1 } + h
    }

    /// The cells of `[b, h]`'s plane: `[group · nblocks + block]`.
    pub(super) fn plane(&self, b: usize, h: usize) -> &[AtomicU8] {
        let n = self.groups * self.nblocks;
        &self.cells[self.plane_of(b, h) * n..][..n]
    }

    /// Classification tasks: one per plane and query tile.
    pub(super) fn tasks(&self) -> usize {
        self.planes() * self.tiles
    }

    /// Classifies the groups of task `task`'s plane and tile. `isa` must be
    /// one of [`Isa::available`].
    pub(super) fn fill(&self, isa: Isa, p: &Problem, task: usize) {
        let Some(bias) = &p.bias else { return };
        let (plane, t) = (task / self.tiles, task % self.tiles);
        let hp = if self.per_head { self.heads } else { 1 };
        let (b, h) = (plane / hp, plane % hp);
        let g0 = t * (MQ / RQ);
        let g1 = (g0 + MQ / RQ).min(self.groups);
        let n = self.groups * self.nblocks;
        let out = &self.cells[plane * n..][..n][g0 * self.nblocks..g1 * self.nblocks];
        let job = (b, h, g0);
        match isa {
            // SAFETY: `isa` is one of `Isa::available`, which lists AVX-512F
            // only when this CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { classify_avx512(p, bias, job, out) },
            // SAFETY: as above, for AVX2.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { classify_avx2(p, bias, job, out) },
            _ => classify::<PLAIN>(p, bias, job, out),
        }
    }

    /// Fills every cell, serially.
    pub(super) fn fill_all(&self, isa: Isa, p: &Problem) {
        for task in 0..self.tasks() {
            self.fill(isa, p, task);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn classify_avx512(
    p: &Problem,
    bias: &Operand,
    job: (usize, usize, usize),
    out: &[AtomicU8],
) {
    classify::<AVX512>(p, bias, job, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn classify_avx2(
    p: &Problem,
    bias: &Operand,
    job: (usize, usize, usize),
    out: &[AtomicU8],
) {
    classify::<AVX2>(p, bias, job, out)
}

/// Classes of the groups `g0 ..` of the bias plane `[b, h]` (as many as
/// `out` has rows of `nblocks`), over every key block, into
/// `out[(g − g0)·nblocks + block]`: OR and AND of the raw bits of each
/// block (all −∞ iff both are −∞'s bits; all ±0 iff the OR has no
/// magnitude bit), with no per-element branch, so the scan vectorises.
/// Keys past the causal limit of a group's last row are not read: no row
/// of the group sees them.
#[inline(always)]
pub(super) fn classify<const K: u8>(
    p: &Problem,
    bias: &Operand,
    (b, h, g0): (usize, usize, usize),
    out: &[AtomicU8],
) {
    let z = p.sizes;
    let nblocks = z.s_kv.div_ceil(NK);
    let mut or = vec![0u32; nblocks];
    let mut and = vec![0u32; nblocks];
    let mut buf = vec![0f32; if bias.strides[3] == 1 { 0 } else { z.s_kv }];
    for (g, cells) in (g0..).zip(out.chunks_exact(nblocks.max(1))) {
        let r0 = g * RQ;
        let n = RQ.min(z.s_q - r0);
        let seen = visible(p, r0 + n - 1, 0, z.s_kv);
        or.fill(0);
        and.fill(!0);
        for i in r0..r0 + n {
            let row = row_of(bias, [b, h, i, 0], seen, &mut buf);
            for (jb, x) in row.chunks(NK).enumerate() {
                let (o, a) = or_and::<K>(x);
                or[jb] |= o;
                and[jb] &= a;
            }
        }
        for (jb, cell) in cells.iter().enumerate() {
            let c = if jb * NK >= seen || (or[jb] == NEG_INF_BITS && and[jb] == NEG_INF_BITS) {
                SKIP
            } else if or[jb] & MAGNITUDE == 0 {
                ZERO
            } else {
                MIXED
            };
            cell.store(c, Ordering::Relaxed);
        }
    }
}

/// OR and AND of the bits of `x`.
#[inline(always)]
pub(super) fn or_and<const K: u8>(x: &[f32]) -> (u32, u32) {
    match K {
        // SAFETY: `classify::<AVX512>` runs only inside `classify_avx512`,
        // on a CPU with AVX-512F.
        #[cfg(target_arch = "x86_64")]
        AVX512 => unsafe { x86::or_and_avx512(x) },
        _ => or_and_lanes(x),
    }
}

/// [`or_and`] lane by lane over `PAD` lanes and then across them.
#[inline(always)]
pub(super) fn or_and_lanes(x: &[f32]) -> (u32, u32) {
    let (mut o, mut a) = ([0u32; PAD], [!0u32; PAD]);
    let (chunks, rest) = x.as_chunks::<PAD>();
    for c in chunks {
        for k in 0..PAD {
            o[k] |= c[k].to_bits();
            a[k] &= c[k].to_bits();
        }
    }
    for (k, y) in rest.iter().enumerate() {
        o[k] |= y.to_bits();
        a[k] &= y.to_bits();
    }
    let (mut ro, mut ra) = (0, !0);
    for k in 0..PAD {
        ro |= o[k];
        ra &= a[k];
    }
    (ro, ra)
}
