//! The external weights file (`--weights external`): every weight of a
//! program in one blob the host loads (typically `mmap`s) and passes to the
//! entry point, instead of `.rodata` in the object.
//!
//! Layout (all integers little-endian):
//!
//! | bytes  | field                                                    |
//! |--------|----------------------------------------------------------|
//! | 0..8   | magic `VARCWTS\0`                                        |
//! | 8..12  | [`super::AOT_ABI_VERSION`]                                |
//! | 12..16 | zero                                                     |
//! | 16..24 | the model's signature hash (the header's `_SIGNATURE`)   |
//! | 24..32 | payload bytes (file size − 64)                           |
//! | 32..40 | [`checksum`] of the payload                              |
//! | 40..64 | zero                                                     |
//! | 64..   | payload: each weight at a 64-byte aligned offset          |
//!
//! The payload is padded to a multiple of 64 bytes, so a blob loaded at a
//! 64-byte aligned address gives every weight the alignment the kernels'
//! vector loads assume (the same as `.rodata` weights and arena temps).

use varc_ir::kernel::plan::ALIGN;
use varc_ir::kernel::{BufKind, Program};

/// First eight bytes of a weights file.
pub const MAGIC: [u8; 8] = *b"VARCWTS\0";
/// Size of the file header; the payload starts here.
pub const HEADER_BYTES: usize = 64;
/// Byte offsets of the header fields the entry points check.
pub const SIGNATURE_AT: i32 = 16;
pub const CHECKSUM_AT: i32 = 32;

const CHECKSUM_INIT: u64 = 0xcbf2_9ce4_8422_2325;
pub const CHECKSUM_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of [`checksum`] (the object's `check_weights` loop does the
/// same arithmetic in generated code).
pub fn mix(h: u64, word: u64) -> u64 {
    let h = (h ^ word).wrapping_mul(CHECKSUM_PRIME);
    h ^ (h >> 32)
}

/// Checksum of a payload: its 64-bit little-endian words folded with
/// [`mix`] from a fixed start. `payload.len()` is a multiple of 8.
pub fn checksum(payload: &[u8]) -> u64 {
    debug_assert_eq!(payload.len() % 8, 0);
    payload.chunks_exact(8).fold(CHECKSUM_INIT, |h, w| {
        mix(h, u64::from_le_bytes(w.try_into().expect("8-byte chunk")))
    })
}

/// The start value of [`checksum`].
pub fn checksum_init() -> u64 {
    CHECKSUM_INIT
}

/// A program's weights laid out as a file.
pub struct Blob {
    /// The whole file (header filled in by [`Blob::seal`]).
    pub bytes: Vec<u8>,
    /// Per program buffer: the byte offset of a weight in the file.
    pub offsets: Vec<Option<usize>>,
    /// [`checksum`] of the payload.
    pub checksum: u64,
}

impl Blob {
    /// Lays out every weight of `p`; `Err` names a weight whose data does
    /// not match its buffer.
    pub fn layout(p: &Program) -> Result<Blob, String> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        let mut offsets = vec![None; p.buffers.len()];
        for (i, b) in p.buffers.iter().enumerate() {
            if let BufKind::Weight(t) = &b.kind {
                let data = t.data().to_le_bytes();
                if data.len() != b.byte_size() {
                    return Err(format!("weight '{}' does not match its buffer", b.name));
                }
                bytes.resize(bytes.len().div_ceil(ALIGN) * ALIGN, 0);
                offsets[i] = Some(bytes.len());
                bytes.extend_from_slice(&data);
            }
        }
        bytes.resize(bytes.len().div_ceil(ALIGN) * ALIGN, 0);
        let checksum = checksum(&bytes[HEADER_BYTES..]);
        Ok(Blob {
            bytes,
            offsets,
            checksum,
        })
    }

    /// Writes the header, binding the file to the model's `signature`.
    pub fn seal(&mut self, signature: u64, abi_version: u32) {
        let payload = (self.bytes.len() - HEADER_BYTES) as u64;
        let h = &mut self.bytes[..HEADER_BYTES];
        h.fill(0);
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&abi_version.to_le_bytes());
        let (s, c) = (SIGNATURE_AT as usize, CHECKSUM_AT as usize);
        h[s..s + 8].copy_from_slice(&signature.to_le_bytes());
        h[24..32].copy_from_slice(&payload.to_le_bytes());
        h[c..c + 8].copy_from_slice(&self.checksum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use varc_ir::kernel::{Buffer, Program};
    use varc_ir::{DType, Tensor};

    fn weight(name: &str, values: Vec<f32>) -> Buffer {
        let n = values.len();
        Buffer {
            name: name.into(),
            dtype: DType::F32,
            shape: vec![n],
            kind: BufKind::Weight(Tensor::from_f32(vec![n], values).unwrap()),
        }
    }

    #[test]
    fn weights_are_aligned_and_the_header_is_bound() {
        let mut p = Program::default();
        p.buffers.push(weight("a", vec![1.0; 3]));
        p.buffers.push(weight("b", vec![]));
        p.buffers.push(weight("c", vec![2.5; 17]));
        let mut blob = Blob::layout(&p).unwrap();
        assert_eq!(blob.offsets, vec![Some(64), Some(128), Some(128)]);
        assert_eq!(blob.bytes.len(), 128 + 128);
        assert_eq!(&blob.bytes[128..132], &2.5f32.to_le_bytes());
        blob.seal(0x1122_3344_5566_7788, 2);
        assert_eq!(&blob.bytes[..8], b"VARCWTS\0");
        assert_eq!(blob.bytes[8], 2);
        assert_eq!(blob.bytes[16], 0x88);
        let field = |at: usize| u64::from_le_bytes(blob.bytes[at..at + 8].try_into().unwrap());
        assert_eq!(field(24), 192);
        // An independent fold over the payload's words.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for w in blob.bytes[64..].chunks(8) {
            let v = w
                .iter()
                .enumerate()
                .fold(0u64, |v, (j, &b)| v | (b as u64) << (8 * j));
            h = (h ^ v).wrapping_mul(0x100_0000_01b3);
            h ^= h >> 32;
        }
        assert_eq!(blob.checksum, h);
        assert_eq!(field(32), h);
    }

    #[test]
    fn checksum_sees_one_bit() {
        let a = vec![0u8; 64];
        let mut b = a.clone();
        b[37] ^= 4;
        assert_ne!(checksum(&a), checksum(&b));
    }
}
