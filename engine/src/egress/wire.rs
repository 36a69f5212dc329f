//! The egress stream's protocol: the hub opens a QUIC stream whose first line is a JSON
//! [`Request`]; the edge answers with one JSON [`Answer`] line; after `connected`, raw bytes
//! flow both ways (with half-close), otherwise the edge ends the stream after the answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use remoteingress_ipc_schema::{AddressFamily, EgressOutcome};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest request or answer line (the edge's first-line cap for hub-opened streams).
pub(crate) const MAX_LINE: usize = 4096;

/// A request line that is not a [`Request`]; the edge sends this text back as the `failed`
/// answer's error.
#[derive(Debug, thiserror::Error)]
#[error("bad egress request: {0}")]
pub(crate) struct BadRequest(#[source] serde_json::Error);

/// Why the hub got no usable answer line; the hub reports this text as the egress' error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    /// The line is not an [`Answer`].
    #[error("bad egress answer from the edge: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The answer's `ip` is not an IP address.
    #[error("bad egress answer from the edge: {0}")]
    BadIp(#[source] crate::reported::NotAnIp),
    /// No newline within [`MAX_LINE`] bytes.
    #[error("egress answer longer than {MAX_LINE} bytes")]
    TooLong,
    /// Reading the stream failed before the answer was complete.
    #[error("the edge ended the egress stream: {0}")]
    Read(#[source] std::io::Error),
    /// The stream ended before a whole line.
    #[error("the edge ended the egress stream without an answer")]
    Ended,
}

/// What the hub asks the edge to dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Request {
    pub host: String,
    pub port: u16,
    pub connect_timeout_ms: u64,
    #[serde(default)]
    pub address_family: AddressFamily,
}

impl Request {
    /// The request line, with its newline.
    pub(crate) fn encode(&self) -> Bytes {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// Parses the stream's first line (with or without its newline).
    pub(crate) fn parse(line: &[u8]) -> Result<Self, BadRequest> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        serde_json::from_slice(line).map_err(BadRequest)
    }

    /// The dial deadline the edge applies: the request's, at most a minute.
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.clamp(1, 60_000))
    }
}

/// The edge's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Answer {
    pub outcome: EgressOutcome,
    /// The address dialled (connected) or tried last (failed, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The policy rule that refused (denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What went wrong (failed, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    pub(crate) fn connected(ip: std::net::IpAddr) -> Self {
        Self {
            outcome: EgressOutcome::Connected,
            ip: Some(ip.to_string()),
            rule: None,
            error: None,
        }
    }

    pub(crate) fn denied(rule: impl Into<String>) -> Self {
        Self {
            outcome: EgressOutcome::Denied,
            ip: None,
            rule: Some(rule.into()),
            error: None,
        }
    }

    pub(crate) fn failed(
        outcome: EgressOutcome,
        ip: Option<std::net::IpAddr>,
        error: impl Into<String>,
    ) -> Self {
        Self {
            outcome,
            ip: ip.map(|ip| ip.to_string()),
            rule: None,
            error: Some(error.into()),
        }
    }

    /// The answer as the hub may show it: `ip` an IP address (canonical), `rule` and `error`
    /// capped (the edge's word, see [`crate::reported`]).
    fn checked(mut self) -> Result<Self, crate::reported::NotAnIp> {
        use crate::reported::{capped, ip};
        if let Some(text) = &self.ip {
            self.ip = Some(ip("ip", text)?);
        }
        self.rule = self.rule.map(capped);
        self.error = self.error.map(capped);
        Ok(self)
    }

    /// The answer line, with its newline.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Reads the answer line from the start of `stream`; returns it and the bytes that came after
/// it (the remote's first bytes, which belong to the client).
pub(crate) async fn read_answer<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<(Answer, Bytes), AnswerError> {
    let mut buffer = BytesMut::with_capacity(512);
    loop {
        if let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line = buffer.split_to(end + 1);
            let answer = serde_json::from_slice::<Answer>(&line[..end])
                .map_err(AnswerError::NotJson)?
                .checked()
                .map_err(AnswerError::BadIp)?;
            return Ok((answer, buffer.freeze()));
        }
        if buffer.len() > MAX_LINE {
            return Err(AnswerError::TooLong);
        }
        let read = stream
            .read_buf(&mut buffer)
            .await
            .map_err(AnswerError::Read)?;
        if read == 0 {
            return Err(AnswerError::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_line_and_what_follows_it() {
        let mut bytes = Answer::connected("10.0.0.1".parse().unwrap()).encode();
        bytes.extend_from_slice(b"220 banner\r\n");
        let (answer, rest) = read_answer(&mut &bytes[..]).await.unwrap();
        assert_eq!(answer.outcome, EgressOutcome::Connected);
        assert_eq!(answer.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(&rest[..], b"220 banner\r\n");
    }

    #[tokio::test]
    async fn no_answer_or_a_huge_one_is_an_error() {
        assert!(read_answer(&mut &b""[..]).await.is_err());
        assert!(read_answer(&mut &vec![b'x'; 10_000][..]).await.is_err());
        assert!(read_answer(&mut &b"not json\n"[..]).await.is_err());
    }

    #[tokio::test]
    async fn an_answer_ip_must_be_an_address_and_texts_are_capped() {
        let bogus = br#"{"outcome":"connected","ip":"not-an-ip"}"#.to_vec();
        let error = read_answer(&mut &[bogus, b"\n".to_vec()].concat()[..])
            .await
            .unwrap_err()
            .to_string();
        assert!(error.ends_with("ip is not an IP address"), "{error}");
        let long = Answer::failed(EgressOutcome::Failed, None, "e".repeat(3000)).encode();
        let (answer, _) = read_answer(&mut &long[..]).await.unwrap();
        assert!(answer.error.unwrap().len() <= crate::reported::MAX_TEXT_LEN);
    }

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let request = Request {
            host: "mail.example.net".into(),
            port: 25,
            connect_timeout_ms: 5000,
            address_family: AddressFamily::PreferIpv4,
        };
        assert_eq!(Request::parse(&request.encode()).unwrap(), request);
        assert!(Request::parse(br#"{"host":"a","port":1,"connectTimeoutMs":1,"x":1}"#).is_err());
    }
}
