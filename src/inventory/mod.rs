//! The API inventory: which endpoints a service exposes and what kind of data crosses them.
//!
//! - [`template`] turns concrete request paths into route templates (`GET /users/{id}`), from
//!   typed segment recognisers, per-position cardinality learned from traffic, an OpenAPI
//!   spec's paths and operator overrides.
//! - [`sensitive`] reports which sensitive data *types* (card numbers, IBANs, credentials,
//!   tokens) occur in bytes or JSON fields, and how often, without keeping any value.
//!
//! Invariants: both modules are pure functions of their inputs and learned state: no I/O, no
//! clock, no threads. Every growing structure has a named limit in its config and a counter
//! for what the limit turned away.

pub mod params;
pub mod report;
pub mod sensitive;
pub mod spec;
pub mod template;
