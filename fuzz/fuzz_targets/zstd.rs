//! zstd layer streams (several frames, skippable frames, the window cap).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::zstd(data));
