//! apitap: a passive API security sensor.
//!
//! The crate is laid out by pipeline stage, in the order data flows:
//! `capture → wire → flow (+ TCP reassembly) → http → transaction → cli`.
//! See ARCHITECTURE.md for the code map and its invariants.

pub mod alert;
pub mod baseline;
pub mod capture;
pub mod cli;
pub mod common;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod engine;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod inventory;
pub mod model;
pub mod synth;
pub mod telemetry;
pub mod transaction;
pub mod wire;
