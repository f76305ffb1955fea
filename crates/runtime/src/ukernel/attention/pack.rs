//! K and V packed for the block products: one cell per `(batch, K/V
//! head, key block)`, packed once per call, and the packing itself (K
//! transposed by register tiles on AVX-512).

use super::*;

/// K and V of a call packed for the block products, one cell per
/// `(batch, K/V head, key block)`: on a pool the C entry packs every cell
/// up front, one task per cell, before the tiles run; serially each tile
/// packs the cells it needs first (blocks no tile sees are then never
/// packed). Either way no block is packed twice however many threads
/// share a head (each used to pack its own copy). A cell holds `Kᵀ` of the block,
/// one row of `NK` keys per depth step, then V of the block in column
/// panels (see [`panel_width`]): the panel at column `c0`, `w` wide, is
/// `NK` rows of `w` at `d·NK + NK·c0`; 0 past `s_kv` and `v_head_dim`, so
/// that zero probabilities of padding keys add exact zeros.
pub(super) struct Packs {
    pub(super) cells: Vec<OnceLock<Box<[f32]>>>,
    pub(super) nblocks: usize,
}

/// Packed blocks of finished calls, for the next ones: a fresh
/// allocation per block and call costs page faults once the allocator has
/// handed the memory back to the system (up to a tenth of the call).
pub(super) static SPARE: Mutex<Vec<Box<[f32]>>> = Mutex::new(Vec::new());

/// Floats kept in [`SPARE`] at most (16 MB); the oldest go first.
pub(super) const SPARE_MAX: usize = 1 << 22;

/// A block of `len` floats, from [`SPARE`] when it has one (contents
/// arbitrary).
pub(super) fn take_block(len: usize) -> Box<[f32]> {
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    match spare.iter().rposition(|x| x.len() == len) {
        // (`remove`, not `swap_remove`: the eviction keeps age order.)
        Some(i) => spare.remove(i),
        None => {
            drop(spare);
            vec![0f32; len].into_boxed_slice()
        }
    }
}

impl Drop for Packs {
    fn drop(&mut self) {
        if self.cells.is_empty() {
            return;
        }
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        spare.extend(self.cells.drain(..).filter_map(OnceLock::into_inner));
        let mut total: usize = spare.iter().map(|x| x.len()).sum();
        let mut evict = 0;
        while total > SPARE_MAX {
            total -= spare[evict].len();
            evict += 1;
        }
        spare.drain(..evict);
    }
}

impl Packs {
    pub(super) fn new(p: &Problem) -> Packs {
        let z = p.sizes;
        let nblocks = z.s_kv.div_ceil(NK);
        // (The direct path packs nothing.)
        let n = if z.s_q <= DIRECT_MAX_ROWS {
            0
        } else {
            z.batch * z.kv_heads * nblocks
        };
        Packs {
            cells: (0..n).map(|_| OnceLock::new()).collect(),
            nblocks,
        }
    }

    /// Packs cell `i` (`(batch · kv_heads + K/V head) · nblocks + block`)
    /// unless done: the C entry packs every cell this way up front, one
    /// pool task per cell, so that no tile waits for a block another
    /// thread is packing (a parked thread wakes up late). `isa` must be
    /// one of [`Isa::available`], the one the tiles run.
    pub(super) fn fill(&self, isa: Isa, p: &Problem, i: usize) {
        let Some(cell) = self.cells.get(i) else {
            return;
        };
        let hkv = p.sizes.kv_heads.max(1);
        let (bh, jb) = (i / self.nblocks, i % self.nblocks);
        let (b, hk) = (bh / hkv, bh % hkv);
        let dvp = p.sizes.v_head_dim.div_ceil(PAD) * PAD;
        cell.get_or_init(|| match isa {
            // SAFETY: `isa` is one of `Isa::available`, which lists
            // AVX-512F only when this CPU has it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { pack_avx512(p, b, hk, jb, dvp) },
            // SAFETY: as above, for AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => unsafe { pack_avx2(p, b, hk, jb, dvp) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => pack_block::<FMA>(p, b, hk, jb, dvp),
            _ => pack_block::<PLAIN>(p, b, hk, jb, dvp),
        });
    }

    /// The cells of `[b, hk]`, by key block (empty on the direct path).
    pub(super) fn head(&self, p: &Problem, b: usize, hk: usize) -> &[OnceLock<Box<[f32]>>] {
        let at = (b * p.sizes.kv_heads + hk) * self.nblocks;
        self.cells.get(at..at + self.nblocks).unwrap_or(&[])
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pack_avx512(p: &Problem, b: usize, hk: usize, jb: usize, dvp: usize) -> Box<[f32]> {
    pack_block::<AVX512>(p, b, hk, jb, dvp)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pack_avx2(p: &Problem, b: usize, hk: usize, jb: usize, dvp: usize) -> Box<[f32]> {
    pack_block::<AVX2>(p, b, hk, jb, dvp)
}

/// Packs key block `jb` of K/V head `hk` of batch `b` (layout in
/// [`Packs`]).
#[inline(always)]
pub(super) fn pack_block<const K: u8>(
    p: &Problem,
    b: usize,
    hk: usize,
    jb: usize,
    dvp: usize,
) -> Box<[f32]> {
    let z = p.sizes;
    let (d, dv) = (z.head_dim, z.v_head_dim);
    let j0 = jb * NK;
    let nk = NK.min(z.s_kv.saturating_sub(j0));
    let mut out = take_block((d + dvp) * NK);
    let (kt, v) = out.split_at_mut(d * NK);
    let (kt, _) = kt.as_chunks_mut::<NK>();
    if nk < NK {
        kt.iter_mut().for_each(|x| x[nk..].fill(0.0));
    }
    // Whole 16 × 16 tiles of contiguous rows go through registers on
    // AVX-512 (a scatter per row costs one store per element).
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    #[cfg(target_arch = "x86_64")]
    let done = if K == AVX512 && p.k.strides[3] == 1 {
        for jj in (0..nk / PAD * PAD).step_by(PAD) {
            let rows: [&[f32]; PAD] =
                std::array::from_fn(|r| &p.k.data[p.k.at([b, hk, j0 + jj + r, 0])..][..d]);
            for e0 in (0..d / PAD * PAD).step_by(PAD) {
                let src: [&[f32; PAD]; PAD] =
                    rows.map(|row| row[e0..e0 + PAD].try_into().expect("PAD elements"));
                let dst: &mut [[f32; NK]; PAD] =
                    (&mut kt[e0..e0 + PAD]).try_into().expect("PAD rows");
                // SAFETY: `pack_block::<AVX512>` runs only for
                // `Isa::Avx512` (from `pack_avx512` and `tile_avx512`),
                // which `Isa::available` lists only when this CPU has
                // AVX-512F.
                unsafe { x86::transpose16_avx512(src, dst, jj) };
            }
        }
        d / PAD * PAD
    } else {
        0
    };
    for jj in 0..nk {
        let full = K == AVX512 && jj < nk / PAD * PAD;
        let from = if full { done } else { 0 };
        let at = p.k.at([b, hk, j0 + jj, from]) as isize;
        for (e, x) in kt[from..d].iter_mut().enumerate() {
            x[jj] = p.k.data[(at + e as isize * p.k.strides[3]) as usize];
        }
    }
    let mut c0 = 0;
    while c0 < dvp {
        let w = panel_width::<K>(dvp - c0);
        let cols = dv.saturating_sub(c0).min(w);
        for (jj, row) in v[NK * c0..][..NK * w].chunks_exact_mut(w).enumerate() {
            if jj < nk {
                let at = p.v.at([b, hk, j0 + jj, 0]) as isize + c0 as isize * p.v.strides[3];
                gather(&mut row[..cols], p.v.data, at as usize, p.v.strides[3]);
                row[cols..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
        c0 += w;
    }
    out
}
