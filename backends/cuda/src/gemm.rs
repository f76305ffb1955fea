//! Contractions on tensor cores: a tiled matrix product with `mma.sync`.
//!
//! # What qualifies
//!
//! [`recognise`] accepts a kernel whose value holds exactly one
//! `Reduce(Sum)` with at most one reduction variable of extent ≠ 1, over
//! the product of two f32 loads without guards or gathers whose addresses
//! are provably inside their buffers; the store is f32, without gathers,
//! injective, to a buffer the kernel does not read. The rest of the value
//! is an epilogue applied to the sum (bias, activation, residual, scale,
//! the softmax division...). The domain's axes split as in the CPU
//! backend's sgemm recognition: `m`, an axis only the left operand A
//! reads; `n`, one only B reads (preferring the store's unit-stride axis,
//! so stores coalesce); every other axis is a batch axis. Each operand's
//! element `(row, k)` is then `offset + Σ batch terms + row·s_row + k·s_k`
//! with the strides read off its affine map — transposed or strided
//! operands need nothing special.
//!
//! # The entry
//!
//! A block of 128 threads (4 warps, 2×2) computes a [`BM`]×[`BN`] tile of
//! `C = A·B` for one batch index: `%ctaid.x` picks the n tile, `%ctaid.y`
//! the m tile, `%ctaid.z` the batch index (decomposed into the batch axes,
//! last fastest). Per [`BK`]-wide slice of k, every thread copies 8
//! elements of A and 8 of B from global to shared memory (predicated on
//! `row < M`, `k < K`, zero elsewhere; consecutive threads walk the
//! operand's unit-stride dimension when it has one, so loads coalesce),
//! the block synchronises, and each warp runs, per 8-wide k step, the 2×4
//! `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` that cover its
//! 32×32 quarter. Fragment layouts (PTX ISA, "Matrix Fragments for
//! mma.m16n8k8", `.tf32`; `g = lane >> 2`, `t = lane & 3`):
//!
//! * A (16×8, row): a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4)
//! * B (8×8, col): b0 = (k = t, n = g), b1 = (k = t+4, n = g)
//! * C (16×8): c0 = (g, 2t), c1 = (g, 2t+1), c2 = (g+8, 2t), c3 = (g+8, 2t+1)
//!
//! Shared tiles are stored k-contiguous (`As[m][k]`, `Bs[n][k]`) with rows
//! padded to 20 floats, so the 32 lanes' fragment reads (`g·20 + t`) hit
//! 32 distinct banks. After the last slice the accumulators go to a shared
//! C tile, and the block walks it row by row (consecutive threads on
//! consecutive columns): for each in-range `(row, col)` it binds the
//! domain's variables, evaluates the epilogue with the sum in a register
//! (the ordinary expression emitter) and stores.
//!
//! # Precision
//!
//! [`Precision::Tf32`] rounds each operand to TF32 (`cvt.rna.tf32.f32`,
//! 10-bit mantissa): relative error ~1e-3 of a contraction's magnitude.
//! [`Precision::Tf32x3`] (the default) also rounds each residual
//! `x - tf32(x)` and accumulates `lo·hi + hi·lo + hi·hi`, which keeps
//! errors at f32 level. [`Precision::F32`] never comes here.

use crate::Precision;
use crate::emit::{Em, R, entry_name};
use crate::plan::{KernelMode, Launch};
use varc_ir::DType;
use varc_ir::kernel::{Access, Affine, ConvCall, Expr, Kernel, Library, Program, ReduceFn, Var};

/// Rows of C per block.
pub const BM: usize = 64;
/// Columns of C per block.
pub const BN: usize = 64;
/// k per shared-memory slice.
pub const BK: usize = 16;
/// Threads per block: 4 warps.
pub const THREADS: usize = 128;
/// Row pitch (floats) of the shared A and B tiles: BK plus 4 of padding.
const LDS: usize = BK + 4;
/// Row pitch (floats) of the shared C tile.
const LDC: usize = BN + 4;
/// Static shared memory of one block (A, B and C tiles).
pub const SHARED_BYTES: usize = (BM * LDS + BN * LDS + BM * LDC) * 4;
/// Elements of each operand every thread copies per slice.
const SLOTS: usize = BM * BK / THREADS;
const GRID_LIMIT: usize = 65_535;

/// A kernel recognised as batched matrix products plus an epilogue.
#[derive(Clone, Debug)]
pub struct Gemm {
    /// Left operand: reads the `m` axis.
    pub a: Access,
    /// Right operand: reads the `n` axis.
    pub b: Access,
    /// Domain axes of C's rows and columns (`None`: extent 1).
    pub m_axis: Option<usize>,
    pub n_axis: Option<usize>,
    /// The reduction variable of extent ≠ 1, if any.
    pub kvar: Option<Var>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Every other domain axis of extent > 1, outermost first.
    pub batch: Vec<usize>,
    /// The kernel's value (the epilogue is it with the Reduce replaced).
    value: Expr,
    store: Access,
    /// A kernel tagged `Library::Conv`: B is the im2col matrix, gathered
    /// from the image while staging, and C's columns are `oh·OW + ow`.
    conv: Option<ConvCall>,
}

/// Replaces every `Reduce` in `e` by `with`.
fn replace_reduce(e: &Expr, with: &Expr) -> Expr {
    let r = |x: &Expr| Box::new(replace_reduce(x, with));
    match e {
        Expr::Reduce { .. } => with.clone(),
        Expr::Unary(f, a) => Expr::Unary(*f, r(a)),
        Expr::Binary(f, a, b) => Expr::Binary(*f, r(a), r(b)),
        Expr::Select(c, a, b) => Expr::Select(r(c), r(a), r(b)),
        Expr::Cast(d, a) => Expr::Cast(*d, r(a)),
        Expr::Load { .. } | Expr::Const { .. } | Expr::Index(_) => e.clone(),
    }
}

/// Recognises `k` as a contraction (see the module docs), any shape.
pub fn recognise(p: &Program, k: &Kernel) -> Option<Gemm> {
    let c = varc_ir::kernel::analysis::contraction(p, k)?;
    // The tile epilogue evaluates the value with the accumulator in place
    // of the one sum.
    if c.occurrences != 1 {
        return None;
    }
    Some(Gemm {
        a: c.a,
        b: c.b,
        m_axis: c.m_axis,
        n_axis: c.n_axis,
        kvar: c.kvar,
        m: c.m,
        n: c.n,
        k: c.k,
        batch: c.batch,
        value: k.value.clone(),
        store: k.store.clone(),
        conv: None,
    })
}

/// A kernel tagged [`Library::Conv`] as an implicit GEMM: `A = W` as
/// `M × K` (`m = out channel`, `k = (c·KH + kh)·KW + kw`: the tag's W
/// strides flatten `(c, kh, kw)` with stride `w.strides[3]`, checked), `B`
/// the im2col matrix `B[k, p]` with `p = oh·OW + ow`, one product per
/// image. Trusts the tag: the caller validated the kernel, which runs
/// `varc_ir::kernel::library::check`.
pub fn recognise_conv(p: &Program, k: &Kernel) -> Option<Gemm> {
    let Some(Library::Conv(c)) = &k.library else {
        return None;
    };
    let mut sums = 0;
    let mut others = 0;
    k.value.visit(&mut |e| {
        if let Expr::Reduce { op, .. } = e {
            if *op == ReduceFn::Sum {
                sums += 1;
            } else {
                others += 1;
            }
        }
    });
    let st = &k.store;
    if (sums, others) != (1, 0) || p.buffer(st.buf).dtype != DType::F32 {
        return None;
    }
    let red = Var::Red(0);
    let a = Access {
        buf: c.w.buf,
        index: Affine {
            offset: c.w.offset,
            terms: vec![(Var::Out(1), c.w.strides[0]), (red, c.w.strides[3])],
        },
        gathers: vec![],
    };
    let b = Access {
        buf: c.x.buf,
        index: Affine {
            offset: 0,
            terms: vec![],
        },
        gathers: vec![],
    };
    let n = c.out_size[0].checked_mul(c.out_size[1])?;
    let kk = c
        .in_channels
        .checked_mul(c.kernel[0])?
        .checked_mul(c.kernel[1])?;
    if n > i32::MAX as usize || kk > i32::MAX as usize || c.out_channels > i32::MAX as usize {
        return None;
    }
    Some(Gemm {
        a,
        b,
        m_axis: Some(1),
        n_axis: None,
        kvar: Some(red),
        m: c.out_channels,
        n,
        k: kk,
        batch: if c.batch > 1 { vec![0] } else { vec![] },
        value: k.value.clone(),
        store: st.clone(),
        conv: Some(c.clone()),
    })
}

impl Gemm {
    /// Number of independent products (the grid's z extent).
    pub fn batch_count(&self, domain: &[usize]) -> usize {
        self.batch.iter().map(|&ax| domain[ax]).product()
    }

    /// The selection rule: big enough for 64×64 tiles to pay off, and a
    /// grid the hardware can launch.
    pub fn worth_tensor_cores(&self, domain: &[usize]) -> bool {
        self.m >= 16
            && self.n >= 16
            && self.k >= 16
            && self.m.div_ceil(BM) <= GRID_LIMIT
            && self.n.div_ceil(BN) <= i32::MAX as usize
            && self.batch_count(domain) <= GRID_LIMIT
    }

    /// The epilogue in the CPU backend's form: the value with the sum
    /// replaced by a load of the stored element.
    pub fn epilogue(&self) -> Expr {
        replace_reduce(
            &self.value,
            &Expr::load(self.store.buf, self.store.index.clone()),
        )
    }

    /// Whether this is a convolution ([`recognise_conv`]).
    pub fn is_conv(&self) -> bool {
        self.conv.is_some()
    }

    /// A grid the hardware can launch (a convolution takes the tile entry
    /// at any size: its loop nest has no tensor-core alternative).
    pub fn launchable(&self, domain: &[usize]) -> bool {
        self.m.div_ceil(BM) <= GRID_LIMIT
            && self.n.div_ceil(BN) <= i32::MAX as usize
            && self.batch_count(domain) <= GRID_LIMIT
    }

    /// The launch: n tiles × m tiles × batch.
    pub fn launch(&self, domain: &[usize]) -> Launch {
        Launch {
            mode: if self.conv.is_some() {
                KernelMode::Conv
            } else {
                KernelMode::Mma
            },
            grid: [
                self.n.div_ceil(BN) as u32,
                self.m.div_ceil(BM) as u32,
                self.batch_count(domain) as u32,
            ],
            block: THREADS as u32,
            shared_bytes: SHARED_BYTES as u32,
        }
    }
}

/// One operand's tile loader: `BM`(or `BN`)×`BK` elements per slice.
struct Loader {
    /// Byte address of this thread's first element of the current slice.
    ptr: String,
    /// Shared byte address of this thread's first element.
    shared: String,
    /// `tile origin + r0` (u32) and `c0` (u32): the first slot's row / k.
    row: String,
    c0: String,
    /// Consecutive threads walk k (else rows).
    kfast: bool,
    /// Rows (M or N) and the operand's byte strides.
    rows: usize,
    s_row: i64,
    s_k: i64,
}

impl Em<'_> {
    /// The body of a tensor-core entry for `g` (see the module docs).
    pub fn gemm(&mut self, g: &Gemm, precision: Precision) -> R<Launch> {
        let name = entry_name(self.index, &self.k.name);
        let (sa, sb, sc) = (
            format!("{name}_sa"),
            format!("{name}_sb"),
            format!("{name}_sc"),
        );
        self.shared.push((sa.clone(), BM * LDS * 4));
        self.shared.push((sb.clone(), BN * LDS * 4));
        self.shared.push((sc.clone(), BM * LDC * 4));
        let domain = self.k.domain.clone();

        let tid = self.r32();
        self.ins(format!("mov.u32 {tid}, %tid.x"));
        let (bx, by, bz) = (self.r32(), self.r32(), self.r32());
        self.ins(format!("mov.u32 {bx}, %ctaid.x"));
        self.ins(format!("mov.u32 {by}, %ctaid.y"));
        self.ins(format!("mov.u32 {bz}, %ctaid.z"));
        let (bm, bn) = (self.r32(), self.r32());
        self.ins(format!("mul.lo.u32 {bm}, {by}, {BM}"));
        self.ins(format!("mul.lo.u32 {bn}, {bx}, {BN}"));

        // Batch index → batch axes (last fastest), each a .b64 value.
        let mut batch_vals: Vec<(usize, String)> = Vec::new();
        {
            let rest = self.r32();
            self.ins(format!("mov.u32 {rest}, {bz}"));
            for (j, &ax) in g.batch.iter().enumerate().rev() {
                let n = domain[ax];
                let v = self.r64();
                if j == 0 {
                    self.ins(format!("cvt.u64.u32 {v}, {rest}"));
                } else {
                    let d = self.r32();
                    self.ins(format!("rem.u32 {d}, {rest}, {n}"));
                    self.ins(format!("div.u32 {rest}, {rest}, {n}"));
                    self.ins(format!("cvt.u64.u32 {v}, {d}"));
                }
                batch_vals.push((ax, v));
            }
        }

        let coeff = |a: &Access, v: Option<Var>| v.map_or(0, |v| a.index.coeff(v));
        let la = self.loader(
            &g.a,
            &batch_vals,
            &bm,
            &tid,
            &sa,
            g.m,
            coeff(&g.a, g.m_axis.map(Var::Out)),
            coeff(&g.a, g.kvar),
        );
        let lb = self.loader(
            &g.b,
            &batch_vals,
            &bn,
            &tid,
            &sb,
            g.n,
            coeff(&g.b, g.n_axis.map(Var::Out)),
            coeff(&g.b, g.kvar),
        );

        // Warp geometry: 2×2 warps, each 32×32 of the tile.
        let (warp, lane, gq, tq, wm, wn) = (
            self.r32(),
            self.r32(),
            self.r32(),
            self.r32(),
            self.r32(),
            self.r32(),
        );
        self.ins(format!("shr.u32 {warp}, {tid}, 5"));
        self.ins(format!("and.b32 {lane}, {tid}, 31"));
        self.ins(format!("shr.u32 {gq}, {lane}, 2"));
        self.ins(format!("and.b32 {tq}, {lane}, 3"));
        self.ins(format!("shr.u32 {wm}, {warp}, 1"));
        self.ins(format!("and.b32 {wn}, {warp}, 1"));
        // Fragment bases: As[(wm·32 + g)·LDS + t], Bs[(wn·32 + g)·LDS + t].
        let frag_base = |em: &mut Self, w: &str, arr: &str| {
            let r = em.r32();
            em.ins(format!("mad.lo.u32 {r}, {w}, 32, {gq}"));
            em.ins(format!("mad.lo.u32 {r}, {r}, {LDS}, {tq}"));
            let base = em.r32();
            em.ins(format!("mov.u32 {base}, {arr}"));
            em.ins(format!("mad.lo.u32 {r}, {r}, 4, {base}"));
            r
        };
        let fa = frag_base(self, &wm, &sa);
        let fb = frag_base(self, &wn, &sb);

        let acc: Vec<String> = (0..32).map(|_| self.rf()).collect();
        for a in &acc {
            self.ins(format!("mov.f32 {a}, 0f00000000"));
        }

        // The k loop over slices.
        let k0 = self.r32();
        self.ins(format!("mov.u32 {k0}, 0"));
        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        self.ins(format!("setp.ge.u32 {p}, {k0}, {}", g.k));
        self.ins(format!("@{p} bra {done}"));
        self.load_slice(&la, &k0, g.k);
        match &g.conv {
            Some(c) => self.gather_slice(c, &lb, &batch_vals, &k0, g.k, g.n),
            None => self.load_slice(&lb, &k0, g.k),
        }
        self.ins("bar.sync 0");
        for ks in 0..BK / 8 {
            self.mma_step(&fa, &fb, ks, &acc, precision);
        }
        self.ins("bar.sync 0");
        self.ins(format!("add.u32 {k0}, {k0}, {BK}"));
        for l in [&la, &lb] {
            let step = l.s_k * BK as i64;
            if step != 0 {
                self.ins(format!("add.s64 {}, {}, {step}", l.ptr, l.ptr));
            }
        }
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);

        // Accumulators → the shared C tile.
        let fc = {
            let r = self.r32();
            self.ins(format!("mad.lo.u32 {r}, {wm}, 32, {gq}"));
            self.ins(format!("mul.lo.u32 {r}, {r}, {LDC}"));
            let col = self.r32();
            self.ins(format!("mad.lo.u32 {col}, {wn}, 32, {r}"));
            self.ins(format!("mad.lo.u32 {col}, {tq}, 2, {col}"));
            let base = self.r32();
            self.ins(format!("mov.u32 {base}, {sc}"));
            self.ins(format!("mad.lo.u32 {col}, {col}, 4, {base}"));
            col
        };
        for mi in 0..2 {
            for ni in 0..4 {
                for i in 0..4 {
                    let off = ((mi * 16 + 8 * (i >> 1)) * LDC + ni * 8 + (i & 1)) * 4;
                    let a = &acc[(mi * 4 + ni) * 4 + i];
                    self.ins(format!("st.shared.f32 [{fc}+{off}], {a}"));
                }
            }
        }
        self.ins("bar.sync 0");
        self.epilogue_loop(g, &tid, &bm, &bn, &sc, &batch_vals)?;
        Ok(g.launch(&domain))
    }

    /// Sets up one operand's loader: this thread's global pointer for
    /// slice 0 and its shared address.
    #[allow(clippy::too_many_arguments)]
    fn loader(
        &mut self,
        a: &Access,
        batch_vals: &[(usize, String)],
        origin: &str,
        tid: &str,
        shared: &str,
        rows: usize,
        s_row: i64,
        s_k: i64,
    ) -> Loader {
        let kfast = s_k != 0 && (s_row == 0 || s_k.abs() <= s_row.abs());
        let (r0, c0) = (self.r32(), self.r32());
        if kfast {
            self.ins(format!("shr.u32 {r0}, {tid}, {}", BK.trailing_zeros()));
            self.ins(format!("and.b32 {c0}, {tid}, {}", BK - 1));
        } else {
            self.ins(format!("and.b32 {r0}, {tid}, {}", BM - 1));
            self.ins(format!("shr.u32 {c0}, {tid}, {}", BM.trailing_zeros()));
        }
        let row = self.r32();
        self.ins(format!("add.u32 {row}, {origin}, {r0}"));
        // Element offset: offset + Σ batch terms + row·s_row + c0·s_k.
        let off = self.r64();
        self.ins(format!("mov.u64 {off}, {}", a.index.offset));
        for (ax, v) in batch_vals {
            let c = a.index.coeff(Var::Out(*ax));
            if c != 0 {
                self.ins(format!("mad.lo.s64 {off}, {v}, {c}, {off}"));
            }
        }
        for (r, s) in [(&row, s_row), (&c0, s_k)] {
            if s != 0 {
                let w = self.r64();
                self.ins(format!("cvt.u64.u32 {w}, {r}"));
                self.ins(format!("mad.lo.s64 {off}, {w}, {s}, {off}"));
            }
        }
        let base = self.base(a.buf.0);
        let ptr = self.r64();
        self.ins(format!("mad.lo.s64 {ptr}, {off}, 4, {base}"));
        // Shared: tile[r0][c0] at (r0·LDS + c0)·4.
        let sh = self.r32();
        self.ins(format!("mad.lo.u32 {sh}, {r0}, {LDS}, {c0}"));
        let sbase = self.r32();
        self.ins(format!("mov.u32 {sbase}, {shared}"));
        self.ins(format!("mad.lo.u32 {sh}, {sh}, 4, {sbase}"));
        Loader {
            ptr,
            shared: sh,
            row,
            c0,
            kfast,
            rows,
            s_row: s_row * 4,
            s_k: s_k * 4,
        }
    }

    /// Copies this thread's [`SLOTS`] elements of the slice at `k0` into
    /// shared memory, zero where `row ≥ rows` or `k ≥ k_total`.
    fn load_slice(&mut self, l: &Loader, k0: &str, k_total: usize) {
        let kk = self.r32();
        self.ins(format!("add.u32 {kk}, {k0}, {}", l.c0));
        for i in 0..SLOTS {
            // Slot i: 8 rows further (kfast) or 2 k further (rows fast).
            let (dr, dc) = if l.kfast {
                (i * (THREADS / BK), 0)
            } else {
                (0, i * (THREADS / BM))
            };
            let (pr, pk, pv) = (self.pred(), self.pred(), self.pred());
            let t = self.r32();
            self.ins(format!("add.u32 {t}, {}, {dr}", l.row));
            self.ins(format!("setp.lt.u32 {pr}, {t}, {}", l.rows));
            let t2 = self.r32();
            self.ins(format!("add.u32 {t2}, {kk}, {dc}"));
            self.ins(format!("setp.lt.u32 {pk}, {t2}, {k_total}"));
            self.ins(format!("and.pred {pv}, {pr}, {pk}"));
            let addr = self.r64();
            let delta = dr as i64 * l.s_row + dc as i64 * l.s_k;
            self.ins(format!("add.s64 {addr}, {}, {delta}", l.ptr));
            let v = self.rf();
            self.ins(format!("mov.f32 {v}, 0f00000000"));
            self.ins(format!("@{pv} ld.global.nc.f32 {v}, [{addr}]"));
            let soff = (dr * LDS + dc) * 4;
            self.ins(format!("st.shared.f32 [{}+{soff}], {v}", l.shared));
        }
    }

    /// A convolution's B slice at `k0`: this thread's [`SLOTS`] elements
    /// `B[k, p]` of the im2col matrix (the loader `l` walks rows fast: one
    /// pixel `p = l.row` per thread, `k = k0 + c0 + 2i`), read from the
    /// image, zero outside it and past `n_total` / `k_total`.
    fn gather_slice(
        &mut self,
        c: &ConvCall,
        l: &Loader,
        batch_vals: &[(usize, String)],
        k0: &str,
        k_total: usize,
        n_total: usize,
    ) {
        let [sh, sw] = c.strides.map(|x| x as i64);
        let [dh, dw] = c.dilations.map(|x| x as i64);
        let [ph, pw] = c.pads.map(|x| x as i64);
        let [ih, iw] = c.in_size;
        let [kh, kw] = c.kernel;
        let [xs0, xs1, xs2, xs3] = c.x.strides;
        let pp = self.pred();
        self.ins(format!("setp.lt.u32 {pp}, {}, {n_total}", l.row));
        // Window origin of this pixel: (oh·sh − ph, ow·sw − pw), in s64.
        let (oh, ow) = (self.r32(), self.r32());
        self.ins(format!("div.u32 {oh}, {}, {}", l.row, c.out_size[1]));
        self.ins(format!("rem.u32 {ow}, {}, {}", l.row, c.out_size[1]));
        let (y0, x0) = (self.r64(), self.r64());
        self.ins(format!("cvt.u64.u32 {y0}, {oh}"));
        self.ins(format!("mul.lo.s64 {y0}, {y0}, {sh}"));
        self.ins(format!("sub.s64 {y0}, {y0}, {ph}"));
        self.ins(format!("cvt.u64.u32 {x0}, {ow}"));
        self.ins(format!("mul.lo.s64 {x0}, {x0}, {sw}"));
        self.ins(format!("sub.s64 {x0}, {x0}, {pw}"));
        // This image's base: x + 4·(offset + n·xs0).
        let img = self.r64();
        self.ins(format!("mov.u64 {img}, {}", c.x.offset));
        if let Some((_, n)) = batch_vals.iter().find(|(ax, _)| *ax == 0) {
            self.ins(format!("mad.lo.s64 {img}, {n}, {xs0}, {img}"));
        }
        let base = self.base(c.x.buf.0);
        self.ins(format!("mad.lo.s64 {img}, {img}, 4, {base}"));
        let kk = self.r32();
        self.ins(format!("add.u32 {kk}, {k0}, {}", l.c0));
        for i in 0..SLOTS {
            let dc = i * (THREADS / BM);
            let r = self.r32();
            self.ins(format!("add.u32 {r}, {kk}, {dc}"));
            let (pk, pv) = (self.pred(), self.pred());
            self.ins(format!("setp.lt.u32 {pk}, {r}, {k_total}"));
            self.ins(format!("and.pred {pv}, {pp}, {pk}"));
            // r = (ch·KH + y)·KW + x.
            let (ch, rest, ky, kx) = (self.r32(), self.r32(), self.r32(), self.r32());
            self.ins(format!("div.u32 {ch}, {r}, {}", kh * kw));
            self.ins(format!("rem.u32 {rest}, {r}, {}", kh * kw));
            self.ins(format!("div.u32 {ky}, {rest}, {kw}"));
            self.ins(format!("rem.u32 {kx}, {rest}, {kw}"));
            let (y, x, t) = (self.r64(), self.r64(), self.r64());
            self.ins(format!("cvt.u64.u32 {t}, {ky}"));
            self.ins(format!("mad.lo.s64 {y}, {t}, {dh}, {y0}"));
            self.ins(format!("cvt.u64.u32 {t}, {kx}"));
            self.ins(format!("mad.lo.s64 {x}, {t}, {dw}, {x0}"));
            // Unsigned compares also reject negative coordinates.
            let (py, px) = (self.pred(), self.pred());
            self.ins(format!("setp.lt.u64 {py}, {y}, {ih}"));
            self.ins(format!("setp.lt.u64 {px}, {x}, {iw}"));
            self.ins(format!("and.pred {pv}, {pv}, {py}"));
            self.ins(format!("and.pred {pv}, {pv}, {px}"));
            let off = self.r64();
            self.ins(format!("cvt.u64.u32 {t}, {ch}"));
            self.ins(format!("mul.lo.s64 {off}, {t}, {xs1}"));
            self.ins(format!("mad.lo.s64 {off}, {y}, {xs2}, {off}"));
            self.ins(format!("mad.lo.s64 {off}, {x}, {xs3}, {off}"));
            let addr = self.r64();
            self.ins(format!("mad.lo.s64 {addr}, {off}, 4, {img}"));
            let v = self.rf();
            self.ins(format!("mov.f32 {v}, 0f00000000"));
            self.ins(format!("@{pv} ld.global.nc.f32 {v}, [{addr}]"));
            self.ins(format!("st.shared.f32 [{}+{}], {v}", l.shared, dc * 4));
        }
    }

    /// One 8-wide k step of this warp's 2×4 tiles of 16×8.
    fn mma_step(&mut self, fa: &str, fb: &str, ks: usize, acc: &[String], precision: Precision) {
        // Each fragment element as (hi, lo) TF32 parts; lo only for 3xTF32.
        let split = |em: &mut Self, addr: &str, off: usize| -> (String, Option<String>) {
            let x = em.rf();
            em.ins(format!("ld.shared.f32 {x}, [{addr}+{off}]"));
            let hi = em.r32();
            em.ins(format!("cvt.rna.tf32.f32 {hi}, {x}"));
            if precision != Precision::Tf32x3 {
                return (hi, None);
            }
            let hf = em.rf();
            em.ins(format!("mov.b32 {hf}, {hi}"));
            let rest = em.rf();
            em.ins(format!("sub.rn.f32 {rest}, {x}, {hf}"));
            let lo = em.r32();
            em.ins(format!("cvt.rna.tf32.f32 {lo}, {rest}"));
            (hi, Some(lo))
        };
        let mut a_frags = Vec::new();
        for mi in 0..2 {
            let base = (mi * 16 * LDS + ks * 8) * 4;
            let offs = [base, base + 8 * LDS * 4, base + 16, base + 8 * LDS * 4 + 16];
            a_frags.push(offs.map(|o| split(self, fa, o)));
        }
        let mut b_frags = Vec::new();
        for ni in 0..4 {
            let base = (ni * 8 * LDS + ks * 8) * 4;
            b_frags.push([base, base + 16].map(|o| split(self, fb, o)));
        }
        type Frag = (String, Option<String>);
        let hi = |f: &Frag| f.0.clone();
        let lo = |f: &Frag| f.1.clone().unwrap_or_default();
        for (mi, af) in a_frags.iter().enumerate() {
            for (ni, bf) in b_frags.iter().enumerate() {
                let c = &acc[(mi * 4 + ni) * 4..(mi * 4 + ni) * 4 + 4];
                let c = c.join(", ");
                let mut products: Vec<([String; 4], [String; 2])> = Vec::new();
                if precision == Precision::Tf32x3 {
                    // Small terms first: they are the ones rounding loses.
                    products.push((af.each_ref().map(lo), bf.each_ref().map(hi)));
                    products.push((af.each_ref().map(hi), bf.each_ref().map(lo)));
                }
                products.push((af.each_ref().map(hi), bf.each_ref().map(hi)));
                for (a, b) in products {
                    self.ins(format!(
                        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {{{c}}}, {{{}}}, {{{}}}, {{{c}}}",
                        a.join(", "),
                        b.join(", ")
                    ));
                }
            }
        }
    }

    /// Every in-range element of the block's C tile: epilogue and store.
    fn epilogue_loop(
        &mut self,
        g: &Gemm,
        tid: &str,
        bm: &str,
        bn: &str,
        sc: &str,
        batch_vals: &[(usize, String)],
    ) -> R<()> {
        let (r, c, row, col) = (self.r32(), self.r32(), self.r32(), self.r32());
        let per_row = THREADS / BN;
        self.ins(format!("shr.u32 {r}, {tid}, {}", BN.trailing_zeros()));
        self.ins(format!("and.b32 {c}, {tid}, {}", BN - 1));
        self.ins(format!("add.u32 {row}, {bm}, {r}"));
        self.ins(format!("add.u32 {col}, {bn}, {c}"));
        let pc = self.pred();
        self.ins(format!("setp.lt.u32 {pc}, {col}, {}", g.n));
        // Shared address of (r, c).
        let sh = self.r32();
        self.ins(format!("mad.lo.u32 {sh}, {r}, {LDC}, {c}"));
        let sbase = self.r32();
        self.ins(format!("mov.u32 {sbase}, {sc}"));
        self.ins(format!("mad.lo.u32 {sh}, {sh}, 4, {sbase}"));
        let (row64, col64, zero) = (self.r64(), self.r64(), self.r64());
        self.ins(format!("cvt.u64.u32 {col64}, {col}"));
        self.ins(format!("mov.u64 {zero}, 0"));
        // A convolution's column is (oh, ow).
        let (oh64, ow64) = (self.r64(), self.r64());
        if let Some(cv) = &g.conv {
            self.ins(format!("div.u64 {oh64}, {col64}, {}", cv.out_size[1]));
            self.ins(format!("rem.u64 {ow64}, {col64}, {}", cv.out_size[1]));
        }

        let bound = self.vars.len();
        for (a, &n) in self.k.domain.clone().iter().enumerate() {
            let reg = if g.conv.is_some() && a == 2 {
                oh64.clone()
            } else if g.conv.is_some() && a == 3 {
                ow64.clone()
            } else if Some(a) == g.m_axis {
                row64.clone()
            } else if Some(a) == g.n_axis {
                col64.clone()
            } else if let Some((_, v)) = batch_vals.iter().find(|(ax, _)| *ax == a) {
                v.clone()
            } else {
                zero.clone()
            };
            self.vars.push((Var::Out(a), reg));
            self.extents.push((Var::Out(a), n));
        }

        let (top, next, done) = (self.label(), self.label(), self.label());
        let (p, pr, pv) = (self.pred(), self.pred(), self.pred());
        self.put_label(&top);
        self.ins(format!("setp.ge.u32 {p}, {r}, {BM}"));
        self.ins(format!("@{p} bra {done}"));
        self.ins(format!("setp.lt.u32 {pr}, {row}, {}", g.m));
        self.ins(format!("and.pred {pv}, {pr}, {pc}"));
        self.ins(format!("@!{pv} bra {next}"));
        self.ins(format!("cvt.u64.u32 {row64}, {row}"));
        let sum = self.rf();
        self.ins(format!("ld.shared.f32 {sum}, [{sh}]"));
        self.reduce_value = Some(sum);
        let value = self.k.value.clone();
        let v = self.expr(&value);
        self.reduce_value = None;
        self.store(v?)?;
        self.put_label(&next);
        self.ins(format!("add.u32 {r}, {r}, {per_row}"));
        self.ins(format!("add.u32 {row}, {row}, {per_row}"));
        self.ins(format!("add.u32 {sh}, {sh}, {}", per_row * LDC * 4));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);
        self.vars.truncate(bound);
        Ok(())
    }
}
