//! Docker/podman auth files (`~/.docker/config.json`, `auth.json`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::credentials(data));
