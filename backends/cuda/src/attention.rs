//! Kernels tagged [`Library::Attention`]: a flash-attention entry.
//!
//! The tagged loop nest recomputes every score for every output element
//! (O(S_kv·d) per point, O(S_kv·d·d_v) per row): fit for the interpreter
//! only. This entry computes each output row once, in one pass over the
//! keys, with plain f32 FMAs.
//!
//! # The entry
//!
//! One block per (query tile, head, batch index): `%ctaid.x` the tile of
//! `bq` query rows, `%ctaid.y` the query head `h`, `%ctaid.z` the batch
//! index; `bq` threads, thread `t` owning query row `i = tile·bq + t`
//! (rows past `s_q` compute a clamped row and store nothing, so every
//! thread reaches every `bar.sync`). K/V head `h / (q_heads / kv_heads)`
//! (GQA). Shared memory holds the block's Q rows and output accumulators
//! (row pitch padded by one float, so the threads' row-private accesses hit
//! distinct banks), one block of `bkv` scores per row, and the current
//! key block of K and V, staged by all threads together (zero past the
//! last key). Per key block each thread:
//!
//! 1. scores `s_j = f32(scale)·(q·k_j) + bias_ij`, `−∞` past the causal
//!    limit, and their maximum;
//! 2. online softmax: `m' = max(m, max_j s_j)`, accumulators and running
//!    sum scaled by `exp(m − m')`, `p_j = exp(s_j − m')` added to the sum;
//!    while every score so far is `−∞` the reference point is 0 instead of
//!    `m'`, so nothing becomes NaN and the row's sum stays 0;
//! 3. `acc_c += Σ_j p_j·V[j, c]` (`p_j = 0` past the last key, whose V
//!    rows are staged as 0, so the sum over the block is unrolled).
//!
//! Key blocks wholly past the causal limit of the tile's last row are not
//! visited. At the end `out = acc / sum`, and 0 where the sum is 0 (a row
//! whose every score is `−∞`, as the loop nest gives).
//!
//! Every address comes from the tag, whose operands
//! `varc_ir::kernel::library::check` proved inside their buffers (through
//! `check::validate`) before this runs; indices stay within the tag's
//! extents (clamped rows, predicated staging).

use crate::emit::{Em, R, entry_name, f32_imm};
use crate::plan::{KernelMode, Launch};
use varc_ir::kernel::{AttentionCall, Kernel, Library};

/// Static shared memory an entry may declare (bytes).
const SHARED_LIMIT: usize = 48 * 1024;
const GRID_LIMIT: usize = 65_535;
/// Head sizes up to this get a fully unrolled dot product.
const UNROLL: usize = 256;

/// The attention call a kernel is tagged with, if any.
pub fn tagged(k: &Kernel) -> Option<&AttentionCall> {
    match &k.library {
        Some(Library::Attention(a)) => Some(a),
        _ => None,
    }
}

/// Tile sizes of an attention entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Query rows (= threads) per block.
    pub bq: usize,
    /// Keys per shared-memory block.
    pub bkv: usize,
}

impl Tiles {
    /// Shared bytes: Q, accumulators, scores (padded rows), K and V blocks.
    pub fn shared_bytes(&self, a: &AttentionCall) -> usize {
        let rows = (a.head_dim + 1) + (a.v_head_dim + 1) + (self.bkv + 1);
        (self.bq * rows + self.bkv * (a.head_dim + a.v_head_dim)) * 4
    }
}

/// The largest tiles whose shared memory fits, or `None` (head sizes too
/// large, or a grid the hardware cannot launch): the kernel then runs its
/// loop nest.
pub fn plan(a: &AttentionCall) -> Option<Tiles> {
    if a.q_heads > GRID_LIMIT || a.batch > GRID_LIMIT || a.s_q > i32::MAX as usize {
        return None;
    }
    if a.s_kv > i32::MAX as usize / 2 || a.head_dim.max(a.v_head_dim) > 1 << 16 {
        return None;
    }
    [(64, 32), (32, 32), (32, 16), (32, 8), (16, 8)]
        .into_iter()
        .map(|(bq, bkv)| Tiles { bq, bkv })
        .find(|t| t.shared_bytes(a) <= SHARED_LIMIT)
}

impl Em<'_> {
    /// `for (c = 0; c < n; c += 1) body(c)` with `n` a u32 register or
    /// immediate; `c` a u32 register.
    fn count_loop(&mut self, n: &str, body: impl FnOnce(&mut Self, &str) -> R<()>) -> R<()> {
        let c = self.r32();
        self.ins(format!("mov.u32 {c}, 0"));
        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        self.ins(format!("setp.ge.u32 {p}, {c}, {n}"));
        self.ins(format!("@{p} bra {done}"));
        body(self, &c)?;
        self.ins(format!("add.u32 {c}, {c}, 1"));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);
        Ok(())
    }

    /// `base + 4·(Σ regs[x]·strides[x])` as a new u64 register (`regs`
    /// u32, strides in elements, possibly negative).
    fn byte_addr(&mut self, base: &str, terms: &[(&str, i64)]) -> String {
        let off = self.r64();
        self.ins(format!("mov.u64 {off}, 0"));
        for &(r, s) in terms {
            if s != 0 {
                let w = self.r64();
                self.ins(format!("cvt.u64.u32 {w}, {r}"));
                self.ins(format!("mad.lo.s64 {off}, {w}, {s}, {off}"));
            }
        }
        let d = self.r64();
        self.ins(format!("mad.lo.s64 {d}, {off}, 4, {base}"));
        d
    }

    /// A shared array's address plus `4·(row·pitch)` (u32).
    fn shared_row(&mut self, array: &str, row: &str, pitch: usize) -> String {
        let base = self.r32();
        self.ins(format!("mov.u32 {base}, {array}"));
        let d = self.r32();
        self.ins(format!("mul.lo.u32 {d}, {row}, {}", pitch * 4));
        self.ins(format!("add.u32 {d}, {d}, {base}"));
        d
    }

    /// `addr + 4·idx` (u32 shared address).
    fn shared_at(&mut self, addr: &str, idx: &str) -> String {
        let d = self.r32();
        self.ins(format!("mad.lo.u32 {d}, {idx}, 4, {addr}"));
        d
    }

    /// The body of the flash-attention entry for `a` (see the module docs).
    pub fn attention(&mut self, a: &AttentionCall, t: Tiles) -> R<Launch> {
        let name = entry_name(self.index, &self.k.name);
        let (d, dv, bq, bkv) = (a.head_dim, a.v_head_dim, t.bq, t.bkv);
        let (qp, op, sp) = (d + 1, dv + 1, bkv + 1);
        let arrays = [
            ("q", bq * qp),
            ("o", bq * op),
            ("s", bq * sp),
            ("k", bkv * d),
            ("v", bkv * dv),
        ];
        let names: Vec<String> = arrays
            .iter()
            .map(|(n, len)| {
                let s = format!("{name}_{n}");
                self.shared.push((s.clone(), len.max(&1) * 4));
                s
            })
            .collect();
        let [sq_arr, so_arr, ss_arr, sk_arr, sv_arr] = [0, 1, 2, 3, 4].map(|i| names[i].clone());

        let (tid, bx, h, b) = (self.r32(), self.r32(), self.r32(), self.r32());
        self.ins(format!("mov.u32 {tid}, %tid.x"));
        self.ins(format!("mov.u32 {bx}, %ctaid.x"));
        self.ins(format!("mov.u32 {h}, %ctaid.y"));
        self.ins(format!("mov.u32 {b}, %ctaid.z"));
        let (i0, i, row, valid) = (self.r32(), self.r32(), self.r32(), self.pred());
        self.ins(format!("mul.lo.u32 {i0}, {bx}, {bq}"));
        self.ins(format!("add.u32 {i}, {i0}, {tid}"));
        self.ins(format!("setp.lt.u32 {valid}, {i}, {}", a.s_q));
        self.ins(format!("min.u32 {row}, {i}, {}", a.s_q - 1));
        let hk = self.r32();
        self.ins(format!("div.u32 {hk}, {h}, {}", a.group().max(1)));

        // Operand bases (bytes), the tag's offsets included.
        let base_of = |em: &mut Self, buf: usize, offset: i64| {
            let r = em.r64();
            let base = em.base(buf);
            em.ins(format!("add.s64 {r}, {base}, {}", offset * 4));
            r
        };
        let qb = base_of(self, a.q.buf.0, a.q.offset);
        let kb_ = base_of(self, a.k.buf.0, a.k.offset);
        let vb = base_of(self, a.v.buf.0, a.v.offset);
        let ob = base_of(self, a.out.buf.0, a.out.offset);
        let [qs, ks, vs, os] = [a.q.strides, a.k.strides, a.v.strides, a.out.strides];
        let q_row = self.byte_addr(&qb, &[(&b, qs[0]), (&h, qs[1]), (&row, qs[2])]);
        let k_head = self.byte_addr(&kb_, &[(&b, ks[0]), (&hk, ks[1])]);
        let v_head = self.byte_addr(&vb, &[(&b, vs[0]), (&hk, vs[1])]);
        let o_row = self.byte_addr(&ob, &[(&b, os[0]), (&h, os[1]), (&row, os[2])]);
        let bias_row = match &a.bias {
            Some(bias) => {
                let bb = base_of(self, bias.buf.0, bias.offset);
                let s = bias.strides;
                Some(self.byte_addr(&bb, &[(&b, s[0]), (&h, s[1]), (&row, s[2])]))
            }
            None => None,
        };

        let my_q = self.shared_row(&sq_arr, &tid, qp);
        let my_o = self.shared_row(&so_arr, &tid, op);
        let my_s = self.shared_row(&ss_arr, &tid, sp);
        let sk = self.r32();
        self.ins(format!("mov.u32 {sk}, {sk_arr}"));
        let sv = self.r32();
        self.ins(format!("mov.u32 {sv}, {sv_arr}"));

        // Q row into shared memory, accumulators to zero.
        self.count_loop(&d.to_string(), |em, e| {
            let g = em.byte_addr(&q_row, &[(e, qs[3])]);
            let x = em.rf();
            em.ins(format!("ld.global.nc.f32 {x}, [{g}]"));
            let s = em.shared_at(&my_q, e);
            em.ins(format!("st.shared.f32 [{s}], {x}"));
            Ok(())
        })?;
        self.count_loop(&dv.to_string(), |em, c| {
            let s = em.shared_at(&my_o, c);
            let z = em.rf();
            em.ins(format!("mov.f32 {z}, 0f00000000"));
            em.ins(format!("st.shared.f32 [{s}], {z}"));
            Ok(())
        })?;
        let (m, l) = (self.rf(), self.rf());
        self.ins(format!("mov.f32 {m}, 0fFF800000"));
        self.ins(format!("mov.f32 {l}, 0f00000000"));

        // Keys past the causal limit of the tile's last row are invisible
        // to the whole tile: kend = clamp(i0 + bq + offset, 0, s_kv).
        let kend = self.r32();
        match a.causal_offset {
            None => self.ins(format!("mov.u32 {kend}, {}", a.s_kv)),
            Some(o) => {
                let w = self.r64();
                self.ins(format!("cvt.u64.u32 {w}, {i0}"));
                self.ins(format!(
                    "add.s64 {w}, {w}, {}",
                    bq as i64 + o.clamp(-(1 << 40), 1 << 40)
                ));
                self.ins(format!("max.s64 {w}, {w}, 0"));
                self.ins(format!("min.s64 {w}, {w}, {}", a.s_kv));
                self.ins(format!("cvt.u32.u64 {kend}, {w}"));
            }
        }
        // Causal limit of this thread's row: key j visible iff j < lim.
        let lim = a.causal_offset.map(|o| {
            let w = self.r64();
            self.ins(format!("cvt.u64.u32 {w}, {row}"));
            self.ins(format!(
                "add.s64 {w}, {w}, {}",
                o.clamp(-(1 << 40), 1 << 40) + 1
            ));
            w
        });

        let kb = self.r32();
        self.ins(format!("mov.u32 {kb}, 0"));
        let (top, done) = (self.label(), self.label());
        let p = self.pred();
        self.put_label(&top);
        self.ins(format!("setp.ge.u32 {p}, {kb}, {kend}"));
        self.ins(format!("@{p} bra {done}"));

        // Stage K and V blocks: element idx = j·width + e, by all threads.
        for (head, strides, width, arr) in [(&k_head, ks, d, &sk), (&v_head, vs, dv, &sv)] {
            let total = bkv * width;
            let idx = self.r32();
            self.ins(format!("mov.u32 {idx}, {tid}"));
            let (stop, sdone) = (self.label(), self.label());
            let ps = self.pred();
            self.put_label(&stop);
            self.ins(format!("setp.ge.u32 {ps}, {idx}, {total}"));
            self.ins(format!("@{ps} bra {sdone}"));
            let (j, e, key) = (self.r32(), self.r32(), self.r32());
            self.ins(format!("div.u32 {j}, {idx}, {width}"));
            self.ins(format!("rem.u32 {e}, {idx}, {width}"));
            self.ins(format!("add.u32 {key}, {kb}, {j}"));
            let pin = self.pred();
            self.ins(format!("setp.lt.u32 {pin}, {key}, {kend}"));
            let g = self.byte_addr(head, &[(&key, strides[2]), (&e, strides[3])]);
            let x = self.rf();
            self.ins(format!("mov.f32 {x}, 0f00000000"));
            self.ins(format!("@{pin} ld.global.nc.f32 {x}, [{g}]"));
            let s = self.shared_at(arr, &idx);
            self.ins(format!("st.shared.f32 [{s}], {x}"));
            self.ins(format!("add.u32 {idx}, {idx}, {bq}"));
            self.ins(format!("bra.uni {stop}"));
            self.put_label(&sdone);
        }
        self.ins("bar.sync 0");

        let nk = self.r32();
        self.ins(format!("sub.u32 {nk}, {kend}, {kb}"));
        self.ins(format!("min.u32 {nk}, {nk}, {bkv}"));

        // 1. Scores and their maximum.
        let bmax = self.rf();
        self.ins(format!("mov.f32 {bmax}, 0fFF800000"));
        let scale = f32_imm(a.scale as f32);
        self.count_loop(&nk, |em, j| {
            let dot = em.rf();
            em.ins(format!("mov.f32 {dot}, 0f00000000"));
            let krow = em.r32();
            em.ins(format!("mad.lo.u32 {krow}, {j}, {}, {sk}", d * 4));
            if d <= UNROLL {
                // Constant offsets: two shared loads per FMA.
                for e in 0..d {
                    let (x, y) = (em.rf(), em.rf());
                    em.ins(format!("ld.shared.f32 {x}, [{my_q}+{}]", 4 * e));
                    em.ins(format!("ld.shared.f32 {y}, [{krow}+{}]", 4 * e));
                    em.ins(format!("fma.rn.f32 {dot}, {x}, {y}, {dot}"));
                }
            } else {
                em.count_loop(&d.to_string(), |em, e| {
                    let (qa, ka) = (em.shared_at(&my_q, e), em.shared_at(&krow, e));
                    let (x, y) = (em.rf(), em.rf());
                    em.ins(format!("ld.shared.f32 {x}, [{qa}]"));
                    em.ins(format!("ld.shared.f32 {y}, [{ka}]"));
                    em.ins(format!("fma.rn.f32 {dot}, {x}, {y}, {dot}"));
                    Ok(())
                })?;
            }
            let s = em.rf();
            em.ins(format!("mul.rn.f32 {s}, {dot}, {scale}"));
            let key = em.r32();
            em.ins(format!("add.u32 {key}, {kb}, {j}"));
            if let (Some(br), Some(bias)) = (&bias_row, &a.bias) {
                let g = em.byte_addr(br, &[(&key, bias.strides[3])]);
                let x = em.rf();
                em.ins(format!("ld.global.nc.f32 {x}, [{g}]"));
                em.ins(format!("add.rn.f32 {s}, {s}, {x}"));
            }
            if let Some(lim) = &lim {
                let (w, hidden) = (em.r64(), em.pred());
                em.ins(format!("cvt.u64.u32 {w}, {key}"));
                em.ins(format!("setp.ge.s64 {hidden}, {w}, {lim}"));
                em.ins(format!("@{hidden} mov.f32 {s}, 0fFF800000"));
            }
            let sa = em.shared_at(&my_s, j);
            em.ins(format!("st.shared.f32 [{sa}], {s}"));
            em.ins(format!("max.f32 {bmax}, {bmax}, {s}"));
            Ok(())
        })?;

        // 2. Online softmax: new maximum, rescaling, probabilities.
        let (mnew, muse, all_hidden) = (self.rf(), self.rf(), self.pred());
        self.ins(format!("max.f32 {mnew}, {m}, {bmax}"));
        self.ins(format!("setp.eq.f32 {all_hidden}, {mnew}, 0fFF800000"));
        self.ins(format!("selp.f32 {muse}, 0f00000000, {mnew}, {all_hidden}"));
        let diff = self.rf();
        self.ins(format!("sub.rn.f32 {diff}, {m}, {muse}"));
        let alpha = self.exp(&diff);
        self.ins(format!("mul.rn.f32 {l}, {l}, {alpha}"));
        self.ins(format!("mov.f32 {m}, {mnew}"));
        // Every slot of the block: p = 0 past the last key (stale or
        // uninitialised scores there are selected away), so step 3 runs a
        // constant count over zero-filled V rows.
        self.count_loop(&bkv.to_string(), |em, j| {
            let sa = em.shared_at(&my_s, j);
            let s = em.rf();
            em.ins(format!("ld.shared.f32 {s}, [{sa}]"));
            let x = em.rf();
            em.ins(format!("sub.rn.f32 {x}, {s}, {muse}"));
            let e = em.exp(&x);
            let (live, pj) = (em.pred(), em.rf());
            em.ins(format!("setp.lt.u32 {live}, {j}, {nk}"));
            em.ins(format!("selp.f32 {pj}, {e}, 0f00000000, {live}"));
            em.ins(format!("st.shared.f32 [{sa}], {pj}"));
            em.ins(format!("add.rn.f32 {l}, {l}, {pj}"));
            Ok(())
        })?;

        // 3. acc_c = acc_c·alpha + Σ_j p_j·V[j, c].
        self.count_loop(&dv.to_string(), |em, c| {
            let oa = em.shared_at(&my_o, c);
            let acc = em.rf();
            em.ins(format!("ld.shared.f32 {acc}, [{oa}]"));
            em.ins(format!("mul.rn.f32 {acc}, {acc}, {alpha}"));
            let vcol = em.shared_at(&sv, c);
            for j in 0..bkv {
                let (pj, x) = (em.rf(), em.rf());
                em.ins(format!("ld.shared.f32 {pj}, [{my_s}+{}]", 4 * j));
                em.ins(format!("ld.shared.f32 {x}, [{vcol}+{}]", 4 * j * dv));
                em.ins(format!("fma.rn.f32 {acc}, {pj}, {x}, {acc}"));
            }
            em.ins(format!("st.shared.f32 [{oa}], {acc}"));
            Ok(())
        })?;

        self.ins("bar.sync 0");
        self.ins(format!("add.u32 {kb}, {kb}, {bkv}"));
        self.ins(format!("bra.uni {top}"));
        self.put_label(&done);

        // out = acc / sum, 0 for a row without a visible score.
        let skip = self.label();
        self.ins(format!("@!{valid} bra {skip}"));
        let empty = self.pred();
        self.ins(format!("setp.eq.f32 {empty}, {l}, 0f00000000"));
        self.count_loop(&dv.to_string(), |em, c| {
            let oa = em.shared_at(&my_o, c);
            let x = em.rf();
            em.ins(format!("ld.shared.f32 {x}, [{oa}]"));
            em.ins(format!("div.rn.f32 {x}, {x}, {l}"));
            em.ins(format!("@{empty} mov.f32 {x}, 0f00000000"));
            let g = em.byte_addr(&o_row, &[(c, os[3])]);
            em.ins(format!("st.global.f32 [{g}], {x}"));
            Ok(())
        })?;
        self.put_label(&skip);

        Ok(Launch {
            mode: KernelMode::Attention,
            grid: [a.s_q.div_ceil(bq) as u32, a.q_heads as u32, a.batch as u32],
            block: bq as u32,
            shared_bytes: t.shared_bytes(a) as u32,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
