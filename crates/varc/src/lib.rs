//! varc facade
