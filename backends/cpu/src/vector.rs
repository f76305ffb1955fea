//! Vector helpers: splats, lane masks and lane-by-lane library calls.

use crate::expr::Em;
use crate::math::Libm;
use crate::plan::LANES;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};

/// Flags for vector bitcasts (lane order is explicit).
pub fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

impl Em<'_, '_> {
    /// In vector code, a scalar f32 becomes an f32x4 of four copies; other
    /// values are returned as they are.
    pub fn splat_f32(&mut self, x: Value) -> Value {
        if self.lane.is_some() && self.ty(x) == types::F32 {
            self.b.ins().splat(types::F32X4, x)
        } else {
            x
        }
    }

    /// A bool as a lane mask: scalar 0/1 becomes all-zero / all-one lanes.
    pub fn mask(&mut self, x: Value) -> Value {
        if self.ty(x) == types::I32X4 {
            return x;
        }
        let n = self.b.ins().ireduce(types::I32, x);
        let m = self.b.ins().ineg(n);
        self.b.ins().splat(types::I32X4, m)
    }

    /// Calls a scalar library function, lane by lane for vectors.
    pub fn call_lanes(&mut self, f: Libm, args: &[Value]) -> Value {
        let vector = self.ty(args[0]).is_vector();
        if !vector {
            return self.call(f, args);
        }
        let mut out = args[0];
        for lane in 0..LANES as u8 {
            let scalars: Vec<Value> = args
                .iter()
                .map(|&a| self.b.ins().extractlane(a, lane))
                .collect();
            let r = self.call(f, &scalars);
            out = self.b.ins().insertlane(out, r, lane);
        }
        out
    }
}
