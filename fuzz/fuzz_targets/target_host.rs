//! The request-target classifier and the Host normalizer: they never panic, accepted targets
//! have a usable path, and a normalized host is in normal form.
#![no_main]

use avx_gateway::edge::target::{normalize_host, parse_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    if let Ok(t) = parse_target(input, mode & 1 != 0) {
        let p = t.path();
        assert!(p == b"*" || p.first() == Some(&b'/'), "{input:?} -> {t:?}");
    }
    let default_port = if mode & 2 != 0 { 443 } else { 80 };
    let Ok(n) = normalize_host(input, default_port) else {
        return;
    };
    let text: &[u8] = n.rewritten.as_deref().map_or(input, str::as_bytes);
    assert!(
        text.is_ascii() && !text.iter().any(u8::is_ascii_uppercase),
        "{text:?}"
    );
    assert!(n.name_len <= text.len());
    let name = &text[..n.name_len];
    assert!(!name.ends_with(b"."), "{text:?}");
    let suffix = format!(":{default_port}");
    assert!(
        !text.ends_with(suffix.as_bytes()),
        "default port kept: {text:?}"
    );
    let again = normalize_host(text, default_port).expect("a normal host normalizes");
    assert_eq!(
        again.rewritten, None,
        "not a fixed point: {input:?} -> {text:?}"
    );
    assert_eq!(again.name_len, n.name_len);
});
