//! HTTP response heads and bodies (Content-Length, chunked, until close) read off a connection.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| barge::fuzzing::http_response(data));
