//! A script of data, gaps, FINs and flags through http::HttpConn, run whole and split.
//! The harness and its byte format live in `apitap::fuzzing::http_conn`, shared with the replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| apitap::fuzzing::http_conn(data));
