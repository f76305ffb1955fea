//! Seeded random inputs, reproducible across runs and machines.

use varc_ir::{DType, Tensor, TensorData};

/// SplitMix64: tiny, well-known, and good enough for test inputs.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tensor of `shape`: floats uniform in [-1, 1), integers uniform in
/// [0, int_high) (indices into a table of that size), bools fair coins.
pub fn random_tensor(rng: &mut SplitMix64, dtype: DType, shape: &[usize], int_high: i64) -> Tensor {
    let n: usize = shape.iter().product();
    let data = if dtype.is_float() {
        let v: Vec<f64> = (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
        TensorData::from_f64(dtype, &v)
    } else if dtype == DType::Bool {
        TensorData::Bool((0..n).map(|_| rng.next_u64() & 1 == 1).collect())
    } else {
        let high = int_high.max(1) as u64;
        let v: Vec<i64> = (0..n).map(|_| (rng.next_u64() % high) as i64).collect();
        TensorData::from_i64(dtype, &v)
    };
    Tensor::new(shape.to_vec(), data).expect("element count matches shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_in_range() {
        let a = random_tensor(&mut SplitMix64::new(1), DType::F32, &[64], 0);
        let b = random_tensor(&mut SplitMix64::new(1), DType::F32, &[64], 0);
        assert_eq!(a, b);
        assert!(a.to_f64_vec().iter().all(|x| (-1.0..1.0).contains(x)));
        let i = random_tensor(&mut SplitMix64::new(2), DType::I64, &[100], 10);
        assert!(i.to_i64_vec().iter().all(|x| (0..10).contains(x)));
    }
}
