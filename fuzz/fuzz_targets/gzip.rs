//! The streaming gzip reader for layer blobs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::gzip(data));
