//! Model files memory-mapped as shared [`Bytes`].
//!
//! Decoding a model from a `Bytes` that owns the map makes every tensor's
//! `raw_data` a view of the file's pages (see `proto::TensorProto`), so
//! loading a large model costs neither a read of the whole file into memory
//! nor a copy of each tensor's bytes: the pages come from the page cache and
//! are mapped as the importer reads them, once, into the tensors it builds.
//! Once a tensor is converted its pages are unmapped again
//! ([`FileMap::release`]), so that the file and the tensors are not both
//! resident. The map lives as long as a view of it does: until the decoded
//! `ModelProto` is dropped, after the import.

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};
use std::fs::File;
use std::sync::Arc;

/// A read-only, private map of a whole model file.
pub(crate) struct FileMap {
    map: Arc<Mmap>,
}

/// Owns the map for the `Bytes` views of it.
struct Owner(Arc<Mmap>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Alignment of the ranges [`FileMap::release`] unmaps: a multiple of every
/// page size Linux uses (4, 16 and 64 KiB), so the range is page-aligned.
const RELEASE_ALIGN: usize = 64 << 10;

impl FileMap {
    /// Maps all of `file`, which must be a regular file and not empty.
    #[allow(unsafe_code)]
    pub(crate) fn new(file: &File) -> std::io::Result<FileMap> {
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes are seen as
        // a `&[u8]` that another process could change or truncate underneath
        // us. The map is private (copy-on-write) and read-only, so nothing in
        // this process writes it. What no user of mmap can rule out is
        // another process writing or truncating the file while it is loaded
        // (a truncation would fault); model files are not written while being
        // loaded, the assumption that every memory-mapping model loader
        // (onnxruntime, safetensors, llama.cpp) makes. The caller checked that
        // the file is regular and not empty, which mapping needs.
        let map = unsafe { MmapOptions::new().map_copy_read_only(file)? };
        // Advice only: the file is read front to back, once.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(FileMap { map: Arc::new(map) })
    }

    /// The whole file, as bytes that keep the map alive.
    pub(crate) fn bytes(&self) -> Bytes {
        Bytes::from_owner(Owner(Arc::clone(&self.map)))
    }

    /// Unmaps the whole pages inside `b` (a view of this map, whose bytes
    /// were converted and are not needed again), so that they stop counting
    /// towards the process's memory. Views of other maps are ignored. The
    /// bytes stay readable: a later read maps the file's pages again.
    #[allow(unsafe_code)]
    pub(crate) fn release(&self, b: &[u8]) {
        let base = self.map.as_ptr() as usize;
        let Some(off) = (b.as_ptr() as usize).checked_sub(base) else {
            return;
        };
        if off
            .checked_add(b.len())
            .is_none_or(|end| end > self.map.len())
        {
            return;
        }
        let start = off.next_multiple_of(RELEASE_ALIGN);
        let end = (off + b.len()) / RELEASE_ALIGN * RELEASE_ALIGN;
        if end <= start {
            return;
        }
        // SAFETY: [start, end) lies inside the map (checked above) and is
        // page-aligned (RELEASE_ALIGN is a multiple of the page size; the map
        // itself starts on a page). MADV_DONTNEED is unsafe in general
        // because on a private mapping it discards what the process wrote
        // there, changing memory that Rust references may point to. This map
        // is read-only and never written, so its pages only ever hold the
        // file's bytes, and a read after the advice maps the same bytes of
        // the file again: no reference sees a change (under the same
        // assumption as the map itself, that the file is not modified while
        // it is loaded). Failure leaves the pages mapped, which is harmless.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_pages_read_back_the_file() {
        let dir = std::env::temp_dir().join(format!("varc-onnx-mmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.bin");
        let data: Vec<u8> = (0..(3 * RELEASE_ALIGN + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let map = FileMap::new(&File::open(&path).unwrap()).unwrap();
        let bytes = map.bytes();
        assert_eq!(&bytes[..], &data[..]);
        // An unaligned view spanning whole pages, the whole map, a view of
        // other memory, and a range too short to hold a whole page.
        map.release(&bytes[100..3 * RELEASE_ALIGN]);
        map.release(&bytes);
        map.release(&data);
        map.release(&bytes[5..10]);
        assert_eq!(&bytes[..], &data[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
