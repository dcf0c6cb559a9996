#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgsync::fuzz::image_config(data));
