//! Connections: the flow table (`table`), per-direction TCP stream reassembly (`reassembly`) and
//! wrapping sequence numbers (`seq`). Pure: time is the packet timestamp passed in.

pub mod reassembly;
pub mod seq;
pub mod table;
