#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remoteingress::fuzzing::proxy_headers(data));
