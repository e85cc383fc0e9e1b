//! The tar unpacker applied to a scratch root, checking that nothing outside the root changes.
#![no_main]
use std::sync::Mutex;

use barge::fuzzing::UnpackScratch;

/// One scratch directory per process, wiped between inputs.
static SCRATCH: Mutex<Option<UnpackScratch>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    scratch
        .get_or_insert_with(|| UnpackScratch::new().expect("making the scratch directory"))
        .apply(data);
});
