//! The stream's line protocol: lines across chunks, and what each line is.

use serde::Deserialize;

use super::KIND_X_API;
use crate::producer::Outgoing;

/// One line of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    KeepAlive,
    Tweet(Outgoing),
    /// X closes the connection (`operational-disconnect`): reconnect.
    Disconnect(String),
    /// Another error object without a tweet: logged and counted.
    Error(String),
    /// Not JSON, or JSON without `data` or `errors`: still put, so that the
    /// worker dead-letters it with its reason and nothing received is lost.
    Unexpected(Outgoing),
}

/// A line that is not a tweet: an error object has `errors` and no `data`.
#[derive(Deserialize)]
struct Peek {
    data: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

/// What a line of the stream is; a tweet line is put as it came.
///
/// A tweet is a line with a non-empty string at `data.id`, found by a lazy
/// lookup that skips the rest of the line unread (decoding all of it to find
/// the id was the producer's largest cost per tweet after the socket). So a
/// tweet line is not validated here: the consumers decode it, and dead-letter
/// what does not decode, with its reason.
pub fn classify_line(line: Vec<u8>, fallback_id: impl FnOnce() -> String) -> Line {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::KeepAlive;
    }
    if let Ok(id) = sonic_rs::get(&line[..], ["data", "id"]) {
        if let Some(id) = sonic_rs::JsonValueTrait::as_str(&id).filter(|id| !id.is_empty()) {
            return Line::Tweet(Outgoing { id: id.to_owned(), data: line, kind: KIND_X_API });
        }
    }
    match serde_json::from_slice::<Peek>(&line) {
        Ok(Peek { data: None, errors }) if !errors.is_empty() => {
            // `operational-disconnect` in `title` or `type`, or a `disconnect_type`.
            let disconnect = errors.iter().any(|e| {
                ["title", "type", "disconnect_type"].iter().any(|k| {
                    e.get(*k).and_then(|v| v.as_str()).is_some_and(|v| v.to_ascii_lowercase().contains("disconnect"))
                })
            });
            let text = serde_json::Value::Array(errors).to_string();
            if disconnect {
                Line::Disconnect(text)
            } else {
                Line::Error(text)
            }
        }
        _ => Line::Unexpected(Outgoing { id: fallback_id(), data: line, kind: "x-api:unexpected" }),
    }
}

/// Splits a byte stream into lines (`\n`, with an optional `\r` before it); a
/// line may span chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..at]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
            rest = &rest[at + 1..];
        }
        self.partial.extend_from_slice(rest);
        lines
    }

    /// Bytes of a line not yet complete (lost if the connection ends now).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_may_span_chunks_and_end_in_crlf() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"data\":{\"id\":").is_empty());
        assert_eq!(s.pending(), 14);
        assert_eq!(s.push(b"\"1\"}}\r\n\r\n{\"da"), vec![b"{\"data\":{\"id\":\"1\"}}".to_vec(), Vec::new()]);
        assert_eq!(s.push(b"ta\":{}}\n"), vec![b"{\"data\":{}}".to_vec()]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn lines_are_keep_alives_tweets_disconnects_errors_or_unexpected() {
        let none = || "fallback".to_owned();
        assert_eq!(classify_line(b"".to_vec(), none), Line::KeepAlive);
        assert_eq!(classify_line(b"  ".to_vec(), none), Line::KeepAlive);
        let tweet =
            br#"{"data":{"id":"42","text":"hi"},"includes":{"users":[]},"matching_rules":[{"id":"1","tag":null}]}"#;
        assert_eq!(
            classify_line(tweet.to_vec(), none),
            Line::Tweet(Outgoing { id: "42".into(), data: tweet.to_vec(), kind: KIND_X_API })
        );
        // A tweet with partial errors (an author X could not expand) is a tweet.
        let partial = br#"{"data":{"id":"43","text":"x"},"errors":[{"title":"Not Found Error"}]}"#;
        assert!(matches!(classify_line(partial.to_vec(), none), Line::Tweet(o) if o.id == "43"));
        let disconnect = br#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","detail":"This stream has been disconnected upstream for operational reasons.","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        assert!(
            matches!(classify_line(disconnect.to_vec(), none), Line::Disconnect(e) if e.contains("UpstreamOperational"))
        );
        let error = br#"{"errors":[{"title":"ConnectionException","detail":"too many"}]}"#;
        assert!(matches!(classify_line(error.to_vec(), none), Line::Error(e) if e.contains("too many")));
        assert!(matches!(classify_line(b"{not json".to_vec(), none), Line::Unexpected(o) if o.id == "fallback"));
        assert!(matches!(classify_line(br#"{"data":{"text":"no id"}}"#.to_vec(), none), Line::Unexpected(_)));
        assert!(matches!(classify_line(br#"{"data":{"id":""}}"#.to_vec(), none), Line::Unexpected(_)));
        assert!(matches!(classify_line(br#"{"data":{"id":42}}"#.to_vec(), none), Line::Unexpected(_)));
        // The id is found wherever it is in `data`, and escapes are decoded.
        let late = br#"{"includes":{"users":[{"id":"7"}]},"data":{"text":"a \"q\" {","id":"4\u0034"}}"#;
        assert!(matches!(classify_line(late.to_vec(), none), Line::Tweet(o) if o.id == "44" && o.data == late));
    }
}
