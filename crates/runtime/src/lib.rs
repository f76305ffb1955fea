//! varc-runtime
