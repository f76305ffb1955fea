//! The launch plan: everything a CUDA runtime needs, besides the PTX and
//! the weights blob, to run a program — kernel order and entry names,
//! launch shapes, per-kernel buffer bindings, and where every buffer lives.
//! Written as `plan.json` beside `model.ptx` and `weights.bin`.

use crate::emit::{entry_name, kernel_buffers};
use serde::{Deserialize, Serialize};
use varc_ir::kernel::plan::MemoryPlan;
use varc_ir::kernel::{BufKind, Program};

/// Bumped whenever a field changes meaning or is removed. 2: `grid` is
/// three-dimensional; `mode` and `shared_bytes` per kernel.
pub const FORMAT_VERSION: u32 = 2;

/// Threads per block of every parallel kernel.
pub const BLOCK: u32 = 256;
/// Grid-size cap; larger domains are covered by the grid-stride loop.
pub const MAX_GRID: u64 = 65_535;

/// Weights start at multiples of this in the blob (and so on the device).
pub const WEIGHT_ALIGN: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub format_version: u32,
    /// The PTX target, e.g. `sm_80`.
    pub target: String,
    /// File names, relative to the plan's folder.
    pub ptx: String,
    pub weights: String,
    pub weights_bytes: usize,
    /// Bytes of the device arena that holds every temp.
    pub arena_bytes: usize,
    /// A failing kernel writes `kernel_index << 8 | code` to the status word
    /// (first failure wins); codes are listed here.
    pub status_codes: Vec<(u32, String)>,
    pub buffers: Vec<BufferPlan>,
    /// Program inputs and outputs (buffer indices), in the graph's order.
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// In execution order.
    pub kernels: Vec<KernelPlan>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferPlan {
    pub name: String,
    /// `f32`, `i64`, `i32`, `i8`, `u8`, `bool` (one byte).
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
    #[serde(flatten)]
    pub kind: BufferKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BufferKind {
    /// The n-th program input (a caller's device allocation).
    Input { index: usize },
    /// The n-th program output.
    Output { index: usize },
    /// Bytes `[offset, offset + bytes)` of the weights blob.
    Weight { offset: usize },
    /// At `offset` in the arena; `None` for a temp no kernel touches.
    Temp { offset: Option<usize> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelPlan {
    /// The `.entry` name in the PTX.
    pub entry: String,
    /// The kernel IR name (graph node and op).
    pub name: String,
    pub domain: Vec<usize>,
    pub points: usize,
    /// How the entry maps work to threads.
    pub mode: KernelMode,
    /// Blocks in x, y, z; a 0 anywhere = nothing to launch.
    pub grid: [u32; 3],
    /// Threads per block (x only).
    pub block: u32,
    /// Static shared memory the entry declares (informational: the
    /// driver sizes static shared memory itself).
    pub shared_bytes: u32,
    /// The kernel runs on one thread, in order: its store is not provably
    /// injective, or it reads its own output elsewhere than where it writes.
    pub serial: bool,
    /// Buffer index of each `.param .u64`, in order; a last parameter (not
    /// listed) is the status word's address.
    pub params: Vec<usize>,
}

/// How an entry maps its work to threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelMode {
    /// An empty domain: nothing is launched.
    Empty,
    /// One thread, the points in order (the kernel is not parallel-safe).
    Serial,
    /// One thread per point (grid-stride loop), reductions as loops.
    Thread,
    /// One warp per point: lanes split the reduction, a shuffle butterfly
    /// combines it, lane 0 stores (`crate::warp`).
    Warp,
    /// A contraction tiled over blocks with `mma.sync` on tensor cores
    /// (`crate::gemm`).
    Mma,
    /// A kernel tagged `Library::Attention`: flash attention, a block per
    /// (query tile, head, batch index) (`crate::attention`).
    Attention,
    /// A kernel tagged `Library::Conv`: the `mma` tile entry with the
    /// im2col operand gathered from the image while staging (`crate::gemm`).
    Conv,
}

/// The launch shape of one entry, decided when it is emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub mode: KernelMode,
    pub grid: [u32; 3],
    pub block: u32,
    pub shared_bytes: u32,
}

impl Launch {
    pub const EMPTY: Launch = Launch {
        mode: KernelMode::Empty,
        grid: [0, 1, 1],
        block: BLOCK,
        shared_bytes: 0,
    };
}

/// The launch shape of a kernel over `points` points.
pub fn launch_shape(points: usize, serial: bool) -> (u32, u32) {
    match (points, serial) {
        (0, _) => (0, BLOCK),
        (_, true) => (1, 1),
        _ => {
            let blocks = (points as u64).div_ceil(BLOCK as u64).min(MAX_GRID);
            (blocks as u32, BLOCK)
        }
    }
}

/// The launch of a one-thread-per-point (or serial) entry.
pub fn thread_launch(points: usize, serial: bool) -> Launch {
    let (grid, block) = launch_shape(points, serial);
    Launch {
        mode: match (points, serial) {
            (0, _) => KernelMode::Empty,
            (_, true) => KernelMode::Serial,
            _ => KernelMode::Thread,
        },
        grid: [grid, 1, 1],
        block,
        shared_bytes: 0,
    }
}

/// Lays the weights out in one blob; returns each buffer's offset.
pub fn weights_blob(p: &Program) -> (Vec<u8>, Vec<Option<usize>>) {
    let mut blob = Vec::new();
    let mut offsets = vec![None; p.buffers.len()];
    for (i, b) in p.buffers.iter().enumerate() {
        if let BufKind::Weight(t) = &b.kind {
            blob.resize(blob.len().div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN, 0);
            offsets[i] = Some(blob.len());
            blob.extend_from_slice(&t.data().to_le_bytes());
        }
    }
    (blob, offsets)
}

/// The plan for `p` with its arena plan `mem` and weight offsets.
pub fn build(
    p: &Program,
    mem: &MemoryPlan,
    weight_offsets: &[Option<usize>],
    weights_bytes: usize,
    target: &str,
    launches: &[Launch],
) -> LaunchPlan {
    let buffers = p
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| BufferPlan {
            name: b.name.clone(),
            dtype: b.dtype.name().to_string(),
            shape: b.shape.clone(),
            bytes: b.byte_size(),
            kind: match &b.kind {
                BufKind::Input(index) => BufferKind::Input { index: *index },
                BufKind::Output(index) => BufferKind::Output { index: *index },
                BufKind::Weight(_) => BufferKind::Weight {
                    offset: weight_offsets[i].expect("every weight is in the blob"),
                },
                BufKind::Temp => BufferKind::Temp {
                    offset: mem.offsets[i],
                },
            },
        })
        .collect();
    let kernels = p
        .kernels
        .iter()
        .enumerate()
        .zip(launches)
        .map(|((i, k), l)| KernelPlan {
            entry: entry_name(i, &k.name),
            name: k.name.clone(),
            domain: k.domain.clone(),
            points: k.points(),
            mode: l.mode,
            grid: l.grid,
            block: l.block,
            shared_bytes: l.shared_bytes,
            serial: l.mode == KernelMode::Serial,
            params: kernel_buffers(k),
        })
        .collect();
    LaunchPlan {
        format_version: FORMAT_VERSION,
        target: target.to_string(),
        ptx: crate::PTX_FILE.into(),
        weights: crate::WEIGHTS_FILE.into(),
        weights_bytes,
        arena_bytes: mem.arena_bytes,
        status_codes: crate::STATUS_CODES
            .iter()
            .map(|&(c, m)| (c, m.to_string()))
            .collect(),
        buffers,
        inputs: p.inputs.iter().map(|b| b.0).collect(),
        outputs: p.outputs.iter().map(|b| b.0).collect(),
        kernels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes() {
        assert_eq!(launch_shape(0, false), (0, BLOCK));
        assert_eq!(launch_shape(1, false), (1, BLOCK));
        assert_eq!(launch_shape(257, false), (2, BLOCK));
        assert_eq!(launch_shape(1 << 40, false), (MAX_GRID as u32, BLOCK));
        assert_eq!(launch_shape(1000, true), (1, 1));
    }

    #[test]
    fn kinds_serialise_tagged() {
        let b = BufferPlan {
            name: "w".into(),
            dtype: "f32".into(),
            shape: vec![2],
            bytes: 8,
            kind: BufferKind::Weight { offset: 256 },
        };
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(
            s,
            r#"{"name":"w","dtype":"f32","shape":[2],"bytes":8,"kind":"weight","offset":256}"#
        );
        assert_eq!(serde_json::from_str::<BufferPlan>(&s).unwrap(), b);
    }
}
