pub mod aot;
pub mod bench;
pub mod cuda;
pub mod inspect;
pub mod passes;
pub mod run;
