//! The bytes as a pcap file, through capture::OfflineSource and engine::Engine.
//! The harness and its byte format live in `apitap::fuzzing::pcap_engine`, shared with the replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apitap::fuzzing::pcap_engine(data));
