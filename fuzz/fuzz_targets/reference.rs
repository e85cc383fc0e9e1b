//! Image references and registry names, as typed by a user or found in an auth file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::reference(data));
