//! Manifests, indexes and image configs from a registry (first byte: the Content-Type), and the JSON reader/writer.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::manifest(data));
