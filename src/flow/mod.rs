pub mod reassembly;
pub mod seq;
