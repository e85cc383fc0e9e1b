//! oci-archive and docker-archive files: tar index, index.json / manifest.json, blobs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::archive(data));
