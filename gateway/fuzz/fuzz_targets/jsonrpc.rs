//! The strict parser never panics; what it accepts is strict JSON, and forwarding without
//! rewrites gives back the exact bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = mcp_gateway::jsonrpc::parse(bytes::Bytes::copy_from_slice(data), 16) {
        assert_eq!(parsed.forward(&[]), data);
        assert!(mcp_gateway::jsonrpc::check_strict(data).is_ok());
        for m in &parsed.messages {
            assert!(m.span.end <= data.len() && m.span.start < m.span.end);
        }
    }
});
