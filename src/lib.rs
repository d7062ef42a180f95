//! apitap: a passive API security sensor.
//!
//! The crate is laid out by pipeline stage, in the order data flows:
//! `capture → wire → flow (+ TCP reassembly) → http → transaction → cli`.
//! See ARCHITECTURE.md for the code map and its invariants.

pub mod capture;
pub mod common;
pub mod identity;
pub mod synth;
pub mod transaction;
pub mod wire;
