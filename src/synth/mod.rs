//! Deterministic synthetic traffic: pcap captures of an invented REST/JSON API with a
//! ground-truth file of every transaction, for golden tests, conformance checks and benchmarks.
//!
//! Layers, bottom up: `rng` (seeded SplitMix64), `pcap_writer` (streaming pcap output), `frame`
//! (Ethernet/VLAN/IP/TCP and tunnel serialisation), `tcp` (one conversation with capture
//! impairments).
//!
//! Invariant: nothing here reads a clock or the OS; the same options and seed give
//! byte-identical output.

pub mod frame;
pub mod pcap_writer;
pub mod rng;
pub mod tcp;
