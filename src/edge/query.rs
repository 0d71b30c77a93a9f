//! Query-string values (`application/x-www-form-urlencoded`), decoded for the admin
//! listener's parameters and for plugins' query credentials.

/// Percent-decodes a query key or value, `+` as a space; a malformed escape stays as it is,
/// and bytes that are not UTF-8 become U+FFFD.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_and_plus_are_decoded_and_bad_escapes_kept() {
        assert_eq!(super::decode("x%2By+z"), "x+y z");
        assert_eq!(super::decode("%zz%4"), "%zz%4");
        assert_eq!(super::decode("https%3A%2F%2Fa"), "https://a");
    }
}
