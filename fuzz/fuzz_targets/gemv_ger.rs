#![no_main]
// Placeholder until this target is written.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
