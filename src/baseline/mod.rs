//! Baselines: what normal traffic looks like per endpoint and per caller, learned from
//! transactions and kept in bounded, mergeable streaming sketches.
//!
//! - [`sketch`]: quantiles, distinct counts, heavy hitters, hour-of-week rates.
//! - [`shape`]: the value-shape lattice of a parameter or JSON field, and how a new value
//!   deviates from it.
//! - [`profile`]: endpoint profiles keyed by (host, method, template, GraphQL operation).
//! - [`caller`]: per-identity profiles.
//!
//! Invariants: pure (no I/O, no clock: time is the packet [`Timestamp`](crate::common::Timestamp)
//! passed in, no threads); every structure has a size bounded by a named config field, with a
//! counter for what a cap turned away; every profile and sketch is `Serialize + Deserialize`
//! and has `merge`, so profiles learned by different workers or on different days combine.

pub mod profile;
pub mod shape;
pub mod sketch;
