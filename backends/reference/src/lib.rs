//! varc-backend-ref: the reference interpreter (to be written).

pub mod attention;
pub mod conv;
pub mod pool;
pub mod resize;
