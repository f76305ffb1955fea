//! Deterministic inputs for tests (here and in the backends' tests), so
//! that every test module draws its data the same way.

/// `n` deterministic values in [-1, 1) from `seed` (xorshift64).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
