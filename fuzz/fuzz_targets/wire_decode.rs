//! Frames under a link type picked by the first byte, through wire::Decoder.
//! The harness and its byte format live in `apitap::fuzzing::wire_decode`, shared with the replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apitap::fuzzing::wire_decode(data));
