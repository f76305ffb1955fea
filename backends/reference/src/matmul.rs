//! MatMul (numpy semantics: 1-D operands promoted and the added dim removed,
//! batch dims broadcast) and Gemm (transposes, alpha/beta, C broadcast).
//!
//! Float products accumulate in f64 in order of increasing k; integer
//! products accumulate in i64 with wrapping.

use crate::broadcast::{broadcast_shapes, index_map};
use crate::common::{R, numel, prod, same_dtype, tensor};
use varc_ir::{DType, Tensor, TensorData};

/// out[m×n] += a[m×k] · b[k×n] over row-major slices.
fn gemm_f64(a: &[f64], b: &[f64], out: &mut [f64], m: usize, k: usize, n: usize) {
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (o, &bv) in row.iter_mut().zip(brow) {
                *o += av * bv;
            }
        }
    }
}

fn gemm_i64(a: &[i64], b: &[i64], out: &mut [i64], m: usize, k: usize, n: usize) {
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (o, &bv) in row.iter_mut().zip(brow) {
                *o = o.wrapping_add(av.wrapping_mul(bv));
            }
        }
    }
}

fn numeric(t: &Tensor, what: &str) -> R<()> {
    if t.dtype() == DType::Bool {
        Err(format!("{what} is not defined for bool tensors"))
    } else {
        Ok(())
    }
}

pub fn matmul(a: &Tensor, b: &Tensor) -> R<Tensor> {
    same_dtype(a, b, "MatMul")?;
    numeric(a, "MatMul")?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul operands must have rank ≥ 1".into());
    }
    let mut ash = a.shape().to_vec();
    let mut bsh = b.shape().to_vec();
    let a_vec = ash.len() == 1;
    let b_vec = bsh.len() == 1;
    if a_vec {
        ash.insert(0, 1);
    }
    if b_vec {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(format!(
            "inner dims differ: {:?} × {:?} ({k} vs {k2})",
            a.shape(),
            b.shape()
        ));
    }
    let a_batch = &ash[..ash.len() - 2];
    let b_batch = &bsh[..bsh.len() - 2];
    let batch = broadcast_shapes(&[a_batch, b_batch])?;
    let amap = index_map(a_batch, &batch)?;
    let bmap = index_map(b_batch, &batch)?;
    let mut out_shape = batch.clone();
    if !a_vec {
        out_shape.push(m);
    }
    if !b_vec {
        out_shape.push(n);
    }
    let nb = prod(&batch);
    let total = numel(&[nb, m, n])?;
    let (am, bm, mm) = (m * k, k * n, m * n);
    let dt = a.dtype();
    let data = if dt.is_float() {
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        let mut out = vec![0.0; total];
        for t in 0..nb {
            let (ai, bi) = (amap[t], bmap[t]);
            gemm_f64(
                &av[ai * am..(ai + 1) * am],
                &bv[bi * bm..(bi + 1) * bm],
                &mut out[t * mm..(t + 1) * mm],
                m,
                k,
                n,
            );
        }
        TensorData::from_f64(dt, &out)
    } else {
        let (av, bv) = (a.to_i64_vec(), b.to_i64_vec());
        let mut out = vec![0i64; total];
        for t in 0..nb {
            let (ai, bi) = (amap[t], bmap[t]);
            gemm_i64(
                &av[ai * am..(ai + 1) * am],
                &bv[bi * bm..(bi + 1) * bm],
                &mut out[t * mm..(t + 1) * mm],
                m,
                k,
                n,
            );
        }
        TensorData::from_i64(dt, &out)
    };
    tensor(out_shape, data)
}

/// A 2-D operand, transposed when asked, as (rows, cols, row-major values).
fn matrix<T: Copy>(t: &Tensor, vals: Vec<T>, trans: bool, what: &str) -> R<(usize, usize, Vec<T>)> {
    let &[r, c] = t.shape() else {
        return Err(format!("{what} must be 2-D, got shape {:?}", t.shape()));
    };
    if !trans {
        return Ok((r, c, vals));
    }
    let mut out = Vec::with_capacity(vals.len());
    for j in 0..c {
        for i in 0..r {
            out.push(vals[i * c + j]);
        }
    }
    Ok((c, r, out))
}

/// Gemm(A, B, C?) = alpha · A' · B' + beta · C, C broadcast to [M, N].
pub fn gemm(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> R<Tensor> {
    same_dtype(a, b, "Gemm")?;
    numeric(a, "Gemm")?;
    if let Some(c) = c {
        same_dtype(a, c, "Gemm")?;
    }
    let dt = a.dtype();
    let (alpha, beta) = (alpha as f64, beta as f64);
    let (m, k, n, cmap);
    let data = if dt.is_float() {
        let (am, ak, av) = matrix(a, a.to_f64_vec(), trans_a, "A")?;
        let (bk, bn, bv) = matrix(b, b.to_f64_vec(), trans_b, "B")?;
        (m, k, n) = (am, ak, bn);
        if ak != bk {
            return Err(format!("inner dims differ ({ak} vs {bk})"));
        }
        cmap = c.map(|c| index_map(c.shape(), &[m, n])).transpose()?;
        let mut out = vec![0.0; numel(&[m, n])?];
        gemm_f64(&av, &bv, &mut out, m, k, n);
        for o in &mut out {
            *o *= alpha;
        }
        if let (Some(c), Some(map)) = (c, &cmap) {
            let cv = c.to_f64_vec();
            for (o, &i) in out.iter_mut().zip(map) {
                *o += beta * cv[i];
            }
        }
        TensorData::from_f64(dt, &out)
    } else {
        let (am, ak, av) = matrix(a, a.to_i64_vec(), trans_a, "A")?;
        let (bk, bn, bv) = matrix(b, b.to_i64_vec(), trans_b, "B")?;
        (m, k, n) = (am, ak, bn);
        if ak != bk {
            return Err(format!("inner dims differ ({ak} vs {bk})"));
        }
        cmap = c.map(|c| index_map(c.shape(), &[m, n])).transpose()?;
        let mut out = vec![0i64; numel(&[m, n])?];
        gemm_i64(&av, &bv, &mut out, m, k, n);
        let cv = c.map(|c| c.to_i64_vec());
        for (e, o) in out.iter_mut().enumerate() {
            let cterm = match (&cv, &cmap) {
                (Some(cv), Some(map)) => cv[map[e]],
                _ => 0,
            };
            *o = if alpha == 1.0 && beta == 1.0 {
                o.wrapping_add(cterm)
            } else {
                (alpha * *o as f64 + beta * cterm as f64) as i64
            };
        }
        TensorData::from_i64(dt, &out)
    };
    tensor(vec![m, n], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn matmul_2d_and_vectors() {
        let a = f32t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = f32t(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 2]);
        assert_eq!(c.as_f32().unwrap(), &[4.0, 5.0, 10.0, 11.0]);
        let v = f32t(&[3], &[1.0, 1.0, 1.0]);
        let av = matmul(&a, &v).unwrap();
        assert_eq!(av.shape(), &[2]);
        assert_eq!(av.as_f32().unwrap(), &[6.0, 15.0]);
        let vb = matmul(&v, &b).unwrap();
        assert_eq!(vb.shape(), &[2]);
        assert_eq!(vb.as_f32().unwrap(), &[2.0, 2.0]);
        let vv = matmul(&v, &v).unwrap();
        assert_eq!(vv.shape(), &[] as &[usize]);
        assert_eq!(vv.as_f32().unwrap(), &[3.0]);
        assert!(matmul(&a, &a).is_err());
    }

    #[test]
    fn matmul_batch_broadcast() {
        // [2,1,2,2] x [3,2,1] → [2,3,2,1]
        let a = f32t(&[2, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0]);
        let b = f32t(&[3, 2, 1], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3, 2, 1]);
        assert_eq!(
            c.as_f32().unwrap(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        );
        let i = Tensor::from_i64(vec![1, 2], vec![2, 3]).unwrap();
        let j = Tensor::from_i64(vec![2, 1], vec![4, 5]).unwrap();
        assert_eq!(matmul(&i, &j).unwrap().to_i64_vec(), vec![23]);
    }

    #[test]
    fn gemm_flags() {
        let a = f32t(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]); // Aᵀ = [[1,2,3],[4,5,6]]
        let b = f32t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]); // Bᵀ = [[1,0],[0,1],[1,1]]
        let c = f32t(&[2], &[10.0, 20.0]);
        let y = gemm(&a, &b, Some(&c), 2.0, 0.5, true, true).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        // AᵀBᵀ = [[4,5],[10,11]]
        assert_eq!(y.as_f32().unwrap(), &[13.0, 20.0, 25.0, 32.0]);
        let y = gemm(&a, &b, None, 1.0, 1.0, false, false).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        assert!(gemm(&a, &a, None, 1.0, 1.0, false, false).is_err());
        let bad_c = f32t(&[3], &[0.0; 3]);
        assert!(gemm(&a, &b, Some(&bad_c), 1.0, 1.0, true, true).is_err());
    }
}
