//! registries.conf (containers v2/v1, drop-ins) and Docker's daemon.json.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::registries_conf(data));
