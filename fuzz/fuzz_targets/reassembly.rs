//! A schedule of SYNs, segments and ACKs near 2^32 through two reassembly streams.
//! The harness and its byte format live in `apitap::fuzzing::reassembly`, shared with the replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apitap::fuzzing::reassembly(data));
