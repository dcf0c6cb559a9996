#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgsync::fuzz::referrers_index(data));
