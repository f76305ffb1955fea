//! Tensor data kept outside the model file (`data_location = EXTERNAL`).
//!
//! `external_data` holds `location` (a path relative to the model's folder),
//! and optionally `offset` and `length` in bytes (decimal strings) and a
//! `checksum` (not verified). The file must stay inside the model's folder:
//! absolute paths, `..` components and symlinks leading out are refused.

use crate::error::OnnxError;
use crate::proto::TensorProto;
use memmap2::MmapOptions;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// The parsed `external_data` entries of one tensor.
struct Spec<'a> {
    location: &'a str,
    offset: u64,
    length: Option<u64>,
}

fn parse_spec<'a>(t: &'a TensorProto, name: &str) -> Result<Spec<'a>, OnnxError> {
    let err = |r: String| OnnxError::external(name, r);
    let (mut location, mut offset, mut length) = (None, None, None);
    for kv in &t.external_data {
        let slot = match kv.key.as_str() {
            "location" => {
                if location.replace(kv.value.as_str()).is_some() {
                    return Err(err("key 'location' is given twice".into()));
                }
                continue;
            }
            "offset" => &mut offset,
            "length" => &mut length,
            "checksum" | "basepath" => continue,
            other => return Err(err(format!("unknown external_data key '{other}'"))),
        };
        let v: u64 = kv
            .value
            .trim()
            .parse()
            .map_err(|_| err(format!("{} '{}' is not a byte count", kv.key, kv.value)))?;
        if slot.replace(v).is_some() {
            return Err(err(format!("key '{}' is given twice", kv.key)));
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| err("no 'location' key".into()))?;
    Ok(Spec {
        location,
        offset: offset.unwrap_or(0),
        length,
    })
}

/// Resolves `location` inside `dir`, refusing anything that leaves it.
fn resolve(dir: &Path, location: &str, name: &str) -> Result<PathBuf, OnnxError> {
    let err = |r: String| OnnxError::external(name, r);
    let rel = Path::new(location);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(err(format!(
                    "location '{location}' contains '..': it must stay inside the model's folder"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(err(format!(
                    "location '{location}' is absolute: it must be relative to the model's folder"
                )));
            }
        }
    }
    let root = dir
        .canonicalize()
        .map_err(|e| err(format!("model folder '{}': {e}", dir.display())))?;
    let path = dir.join(rel);
    let full = path
        .canonicalize()
        .map_err(|e| err(format!("cannot open '{}': {e}", path.display())))?;
    if !full.starts_with(&root) {
        return Err(err(format!(
            "location '{location}' resolves to '{}', outside the model's folder '{}'",
            full.display(),
            root.display()
        )));
    }
    Ok(full)
}

/// Reads the `nbytes` bytes of an external tensor.
pub(crate) fn read(
    t: &TensorProto,
    name: &str,
    nbytes: usize,
    model_dir: Option<&Path>,
) -> Result<Vec<u8>, OnnxError> {
    let err = |r: String| OnnxError::external(name, r);
    let spec = parse_spec(t, name)?;
    let dir = model_dir.ok_or_else(|| {
        err(format!(
            "stored in '{}', but no model folder is known to find it in (load the model from a file)",
            spec.location
        ))
    })?;
    let path = resolve(dir, spec.location, name)?;
    let want = nbytes as u64;
    let length = spec.length.unwrap_or(want);
    if length != want {
        return Err(err(format!(
            "length is {length} bytes but the tensor's dims need {want}"
        )));
    }
    let file =
        File::open(&path).map_err(|e| err(format!("cannot open '{}': {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat '{}': {e}", path.display())))?;
    if !meta.is_file() {
        return Err(err(format!("'{}' is not a regular file", path.display())));
    }
    let end = spec.offset.checked_add(length);
    if end.is_none_or(|end| end > meta.len()) {
        return Err(err(format!(
            "offset {} + length {length} runs past the end of '{}' ({} bytes)",
            spec.offset,
            path.display(),
            meta.len()
        )));
    }
    if length == 0 {
        return Ok(Vec::new());
    }
    map_copy(&file, spec.offset, nbytes)
        .map_err(|e| err(format!("cannot map '{}': {e}", path.display())))
}

/// Copies `len` bytes at `offset` of `file` through a read-only memory map.
#[allow(unsafe_code)]
fn map_copy(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    // SAFETY: `Mmap::map` is unsafe because the mapped bytes are seen as a
    // `&[u8]` that another process could change or truncate underneath us.
    // Here the map is read-only and private to this function: it is created,
    // copied once into an owned Vec and dropped, with no reference escaping.
    // The range [offset, offset+len) was checked against the file's length
    // just above, so every page touched exists. What no mmap user can rule out
    // is a concurrent writer truncating the file during the copy; model files
    // are not written while being loaded, the same assumption every
    // memory-mapping model loader makes.
    let map = unsafe { MmapOptions::new().offset(offset).len(len).map(file)? };
    Ok(map.to_vec())
}
