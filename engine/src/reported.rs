//! Values an edge reports about itself (status reports, egress answers) are the edge's word: a
//! compromised or broken edge can put anything there. The hub checks what has a form (an IP
//! address must parse and is kept in its canonical spelling) and caps free text before it keeps
//! it, shows it in its status and events, or logs it.

use std::net::IpAddr;

/// Longest free text (an error message) the hub keeps from an edge, in bytes.
pub const MAX_TEXT_LEN: usize = 512;

/// Why a reported value was refused. Never quotes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} is not an IP address")]
pub(crate) struct NotAnIp {
    pub field: &'static str,
}

/// `text` as an IP address in its canonical spelling.
pub(crate) fn ip(field: &'static str, text: &str) -> Result<String, NotAnIp> {
    text.parse::<IpAddr>()
        .map(|ip| ip.to_canonical().to_string())
        .map_err(|_| NotAnIp { field })
}

/// `text` cut to at most [`MAX_TEXT_LEN`] bytes (on a character boundary), with `…` marking a
/// cut.
pub(crate) fn capped(mut text: String) -> String {
    if text.len() > MAX_TEXT_LEN {
        let mut end = MAX_TEXT_LEN - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_are_canonical() {
        assert_eq!(ip("publicIp", "203.0.113.7"), Ok("203.0.113.7".into()));
        assert_eq!(ip("publicIp", "2001:DB8:0::7"), Ok("2001:db8::7".into()));
        assert_eq!(ip("publicIp", "::ffff:192.0.2.1"), Ok("192.0.2.1".into()));
        for bad in [
            "",
            "not-an-ip",
            "203.0.113.7\n",
            "1.2.3.4:80",
            "host.example",
        ] {
            let error = ip("publicIp", bad).unwrap_err();
            assert_eq!(error.to_string(), "publicIp is not an IP address");
        }
    }

    #[test]
    fn text_is_capped_on_a_character_boundary() {
        assert_eq!(capped("short".into()), "short");
        let exact = "x".repeat(MAX_TEXT_LEN);
        assert_eq!(capped(exact.clone()), exact);
        let long = capped("€".repeat(1000));
        assert!(long.len() <= MAX_TEXT_LEN, "{}", long.len());
        assert!(long.ends_with('…'));
        assert!(long.trim_end_matches('…').chars().all(|c| c == '€'));
    }
}
