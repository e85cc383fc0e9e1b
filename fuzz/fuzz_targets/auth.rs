//! `WWW-Authenticate` challenge headers and token service responses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::auth(data));
