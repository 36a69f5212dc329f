#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| remoteingress::fuzzing::firewall_snapshot(data));
