//! The 2-D convolution routine ([`ConvCall`]) and its check.

use super::{Operand4, check_operands, check_store};
use crate::kernel::{Affine, Kernel, Program, Var};

/// 2-D convolution, f32, one group, zero padding:
///
/// `out[n, m, oh, ow] = Σ_{c, kh, kw} w[m, c, kh, kw] ·
/// x[n, c, oh·sh + kh·dh − ph, ow·sw + kw·dw − pw]`,
/// terms whose input index falls outside `0..in_h` / `0..in_w` being 0.
/// The sum is the kernel's single `Reduce`; the rest of its value (a
/// bias, say) is applied to the sum in place afterwards.
///
/// Shapes: x `[batch, in_channels, in_h, in_w]`, w `[out_channels,
/// in_channels, kernel[0], kernel[1]]`, out `[batch, out_channels,
/// out_h, out_w]`. W's `(c, kh, kw)` and out's `(oh, ow)` axes are each
/// one strided run (so the routine sees plain matrices), also where an
/// axis has extent 1: checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvCall {
    pub x: Operand4,
    pub w: Operand4,
    pub out: Operand4,
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_size: [usize; 2],
    pub out_size: [usize; 2],
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Padding before the first row and column (the padding after them is
    /// implied by `out_size`).
    pub pads: [usize; 2],
}

impl ConvCall {
    /// The operands with their extents, and what each is called in errors.
    pub fn operands(&self) -> [(&'static str, &Operand4, [usize; 4]); 3] {
        let [ih, iw] = self.in_size;
        let [oh, ow] = self.out_size;
        let [kh, kw] = self.kernel;
        let (n, c, m) = (self.batch, self.in_channels, self.out_channels);
        [
            ("x", &self.x, [n, c, ih, iw]),
            ("w", &self.w, [m, c, kh, kw]),
            ("out", &self.out, [n, m, oh, ow]),
        ]
    }

    /// The store address of `out[n, m, oh, ow]` over the domain
    /// `[batch, out_channels, out_h, out_w]`.
    fn out_address(&self) -> Affine {
        Affine {
            offset: self.out.offset,
            terms: (0..4).map(|a| (Var::Out(a), self.out.strides[a])).collect(),
        }
    }
}

pub(super) fn check(p: &Program, k: &Kernel, c: &ConvCall) -> Result<(), String> {
    let geometry = [c.strides, c.dilations].concat();
    if geometry.contains(&0) {
        return Err(format!(
            "strides {:?} and dilations {:?} must be ≥ 1",
            c.strides, c.dilations
        ));
    }
    for i in 0..2 {
        // Index arithmetic in the routine is i64.
        let reach = (c.out_size[i].saturating_sub(1))
            .checked_mul(c.strides[i])
            .and_then(|a| {
                c.kernel[i]
                    .saturating_sub(1)
                    .checked_mul(c.dilations[i])
                    .and_then(|b| a.checked_add(b))
            })
            .and_then(|r| r.checked_add(c.pads[i]));
        if reach.is_none_or(|r| r > i64::MAX as usize / 4) {
            return Err("window reach overflows".into());
        }
    }
    check_operands(p, k, &c.operands(), c.out.buf)?;
    let want = vec![c.batch, c.out_channels, c.out_size[0], c.out_size[1]];
    if k.domain != want {
        return Err(format!("domain {:?}, call sizes {want:?}", k.domain));
    }
    let [_, ws_c, ws_h, ws_w] = c.w.strides;
    let [kh, kw] = c.kernel;
    if ws_c != kh as i64 * ws_h || ws_h != kw as i64 * ws_w {
        return Err(format!(
            "w strides {:?} do not flatten (c, kh, kw)",
            c.w.strides
        ));
    }
    let [_, _, os_h, os_w] = c.out.strides;
    if os_h != c.out_size[1] as i64 * os_w {
        return Err(format!(
            "out strides {:?} do not flatten (oh, ow)",
            c.out.strides
        ));
    }
    check_store(k, c.out.buf, &c.out_address())
}
