//! Tweet decoding: the X API v2 shape (`data` + `includes.users`) and the v1.1
//! shape of the reference architecture (`id_str`, `user`, `created_at`, `text` /
//! `extended_tweet.full_text`), in one parse pass that borrows from the payload.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// A decoded tweet, the fields the tweets table keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tweet<'a> {
    /// The tweet's id: `data.id` (v2), or `id_str`, else the number `id` (v1.1).
    /// It is the tweets table's key, `Id`.
    pub id: Cow<'a, str>,
    /// The display name (v1.1 `user.name`, v2 `name`).
    pub username: Option<Cow<'a, str>>,
    /// The handle (v1.1 `user.screen_name`, v2 `username`).
    pub screen_name: Option<Cow<'a, str>>,
    /// When the tweet was posted (`created_at`: RFC 3339 in v2,
    /// `Wed Oct 10 20:19:24 +0000 2018` in v1.1); `None` when absent, and the
    /// record's arrival time stands in.
    pub created_at: Option<DateTime<Utc>>,
    /// The full text: `extended_tweet.full_text` / `full_text` (v1.1) or
    /// `note_tweet.text` (v2) when present, else `text`.
    pub message: Cow<'a, str>,
    /// The language X detected (`lang`), e.g. `en`; `None` when absent or empty.
    pub lang: Option<Cow<'a, str>>,
    /// The hashtags without `#`, sorted, without duplicates or empty ones; from
    /// the extended (v1.1) or note (v2) tweet's entities when present.
    pub hashtags: Vec<Cow<'a, str>>,
}

/// Why a payload is not a tweet. Each variant is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not JSON (a syntax error, or cut short). Holds serde_json's
    /// message.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a tweet: no id or no text, or a field of the wrong JSON type.
    /// Holds the message.
    #[error("not a tweet: {0}")]
    NotATweet(String),
    /// A field has a value it cannot take: so far, a `created_at` in neither RFC
    /// 3339 nor the v1.1 format. Holds the message.
    #[error("invalid field: {0}")]
    InvalidField(String),
}

/// A JSON string, borrowed from the payload unless it has escapes. (serde
/// borrows a `Cow` only when it is the field itself, not inside an `Option`.)
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

type Str<'a> = Option<Text<'a>>;

#[derive(Deserialize)]
struct Payload<'a> {
    // v2
    #[serde(borrow)]
    data: Option<V2Data<'a>>,
    #[serde(borrow)]
    includes: Option<V2Includes<'a>>,
    // v1.1
    #[serde(borrow)]
    id_str: Str<'a>,
    id: Option<u64>,
    #[serde(borrow)]
    created_at: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    full_text: Str<'a>,
    #[serde(borrow)]
    extended_tweet: Option<Extended<'a>>,
    #[serde(borrow)]
    user: Option<V1User<'a>>,
    #[serde(borrow)]
    lang: Str<'a>,
    #[serde(borrow)]
    entities: Option<Entities<'a>>,
}

#[derive(Deserialize)]
struct V2Data<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    created_at: Str<'a>,
    #[serde(borrow)]
    lang: Str<'a>,
    #[serde(borrow)]
    author_id: Str<'a>,
    #[serde(borrow)]
    entities: Option<Entities<'a>>,
    #[serde(borrow)]
    note_tweet: Option<NoteTweet<'a>>,
}

#[derive(Deserialize)]
struct NoteTweet<'a> {
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    entities: Option<Entities<'a>>,
}

#[derive(Deserialize)]
struct V2Includes<'a> {
    #[serde(borrow, default)]
    users: Vec<V2User<'a>>,
}

#[derive(Deserialize)]
struct V2User<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow)]
    username: Str<'a>,
}

#[derive(Deserialize)]
struct V1User<'a> {
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow)]
    screen_name: Str<'a>,
}

#[derive(Deserialize)]
struct Extended<'a> {
    #[serde(borrow)]
    full_text: Str<'a>,
    #[serde(borrow)]
    entities: Option<Entities<'a>>,
}

#[derive(Deserialize)]
struct Entities<'a> {
    #[serde(borrow, default)]
    hashtags: Vec<Hashtag<'a>>,
}

/// v1.1 names the tag `text`, v2 `tag`.
#[derive(Deserialize)]
struct Hashtag<'a> {
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    tag: Str<'a>,
}

fn hashtags(entities: Option<Entities<'_>>) -> Vec<Cow<'_, str>> {
    let mut tags: Vec<_> = entities
        .map(|e| e.hashtags)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| text(h.tag.or(h.text)))
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort_unstable();
    tags.dedup();
    tags
}

fn text(s: Str<'_>) -> Option<Cow<'_, str>> {
    s.map(|t| t.0)
}

fn non_empty(s: Str<'_>) -> Option<Cow<'_, str>> {
    text(s).filter(|s| !s.is_empty())
}

/// v1.1's `Wed Oct 10 20:19:24 +0000 2018`, its format parsed once.
static V1_TIME: LazyLock<Vec<chrono::format::Item<'static>>> =
    LazyLock::new(|| chrono::format::StrftimeItems::new("%a %b %d %H:%M:%S %z %Y").parse().expect("a valid format"));

fn parse_v1_time(s: &str) -> Option<DateTime<Utc>> {
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(&mut parsed, s, V1_TIME.iter()).ok()?;
    parsed.to_datetime().ok().map(|t| t.with_timezone(&Utc))
}

/// `Wed Oct 10 20:19:24 +0000 2018` (v1.1) or RFC 3339 (v2).
fn parse_time(s: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_v1_time(s))
        .ok_or_else(|| DecodeError::InvalidField(format!("created_at {s:?} is neither RFC 3339 nor the v1.1 format")))
}

/// Decodes one record's payload.
pub fn decode(payload: &[u8]) -> Result<Tweet<'_>, DecodeError> {
    let parsed: Payload<'_> = serde_json::from_slice(payload).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::NotATweet(e.to_string()),
        _ => DecodeError::NotJson(e.to_string()),
    })?;
    match parsed.data {
        Some(data) => decode_v2(data, parsed.includes),
        None => decode_v1(parsed),
    }
}

fn decode_v2<'a>(data: V2Data<'a>, includes: Option<V2Includes<'a>>) -> Result<Tweet<'a>, DecodeError> {
    let id = non_empty(data.id).ok_or_else(|| DecodeError::NotATweet("v2 tweet without data.id".into()))?;
    let (note_text, note_entities) = match data.note_tweet {
        Some(note) => (non_empty(note.text), note.entities),
        None => (None, None),
    };
    let message = note_text
        .or(text(data.text))
        .ok_or_else(|| DecodeError::NotATweet(format!("v2 tweet {id} without data.text")))?;
    let author = text(data.author_id)
        .and_then(|author| includes?.users.into_iter().find(|u| u.id.as_ref().map(|i| &*i.0) == Some(&*author)));
    let (username, screen_name) = match author {
        Some(u) => (non_empty(u.name), non_empty(u.username)),
        None => (None, None),
    };
    let created_at = data.created_at.map(|t| parse_time(&t.0)).transpose()?;
    Ok(Tweet {
        id,
        username,
        screen_name,
        created_at,
        message,
        lang: non_empty(data.lang),
        hashtags: hashtags(note_entities.or(data.entities)),
    })
}

fn decode_v1(p: Payload<'_>) -> Result<Tweet<'_>, DecodeError> {
    let id = non_empty(p.id_str)
        .or_else(|| p.id.map(|id| Cow::Owned(id.to_string())))
        .ok_or_else(|| DecodeError::NotATweet("neither a v2 `data` object nor a v1.1 `id_str`".into()))?;
    let (ext_text, ext_entities) = match p.extended_tweet {
        Some(ext) => (non_empty(ext.full_text), ext.entities),
        None => (None, None),
    };
    let message = ext_text
        .or(non_empty(p.full_text))
        .or(text(p.text))
        .ok_or_else(|| DecodeError::NotATweet(format!("v1.1 tweet {id} without text")))?;
    let (username, screen_name) = match p.user {
        Some(u) => (non_empty(u.name), non_empty(u.screen_name)),
        None => (None, None),
    };
    let created_at = p.created_at.map(|t| parse_time(&t.0)).transpose()?;
    Ok(Tweet {
        id,
        username,
        screen_name,
        created_at,
        message,
        lang: non_empty(p.lang),
        hashtags: hashtags(ext_entities.or(p.entities)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r##"{"created_at":"Wed Oct 10 20:19:24 +0000 2018","id":1050118621198921728,
        "id_str":"1050118621198921728","text":"To make room for more expression, we will now count all emojis as equal\u2014including those with gender\u200d\u200d and skin t\u2026 https://t.co/MkGjXf9aXm",
        "truncated":true,"user":{"id":6253282,"name":"Twitter API","screen_name":"TwitterAPI"},
        "extended_tweet":{"full_text":"To make room for more expression, we will now count all emojis as equal\u2014including those with gender\u200d\u200d and skin tone modifiers \ud83d\udc4d\ud83c\udffb\ud83d\udc4d\ud83c\udffd\ud83d\udc4d\ud83c\udfff. This is now reflected in Twitter-Text, our Open Source library. #emoji #TwitterText",
          "entities":{"hashtags":[{"text":"emoji","indices":[1,2]},{"text":"TwitterText","indices":[3,4]}]}},
        "entities":{"hashtags":[]},"lang":"en"}"##;

    const V2: &str = r##"{"data":{"id":"1445880548472328192","text":"Ünïcødé 🚀 #launch",
        "created_at":"2021-10-06T22:01:04.000Z","author_id":"2244994945","lang":"de",
        "entities":{"hashtags":[{"start":12,"end":19,"tag":"launch"}]}},
        "includes":{"users":[{"id":"1","name":"Someone Else","username":"else"},
                             {"id":"2244994945","name":"Twitter Dev","username":"TwitterDev"}]},
        "matching_rules":[{"id":"1","tag":"rockets"}]}"##;

    #[test]
    fn v1_truncated_tweets_use_the_full_text() {
        let t = decode(V1.as_bytes()).unwrap();
        assert_eq!(t.id, "1050118621198921728");
        assert_eq!(t.username.as_deref(), Some("Twitter API"));
        assert_eq!(t.screen_name.as_deref(), Some("TwitterAPI"));
        assert_eq!(t.created_at.unwrap().to_rfc3339(), "2018-10-10T20:19:24+00:00");
        assert!(t.message.ends_with("our Open Source library. #emoji #TwitterText"), "{}", t.message);
        assert!(t.message.contains("👍🏻👍🏽👍🏿"));
        assert_eq!(t.hashtags, vec!["TwitterText", "emoji"]);
        assert_eq!(t.lang.as_deref(), Some("en"));
    }

    #[test]
    fn v2_tweets_take_the_author_from_includes() {
        let t = decode(V2.as_bytes()).unwrap();
        assert_eq!(t.id, "1445880548472328192");
        assert_eq!(t.username.as_deref(), Some("Twitter Dev"));
        assert_eq!(t.screen_name.as_deref(), Some("TwitterDev"));
        assert_eq!(t.message, "Ünïcødé 🚀 #launch");
        assert_eq!(t.hashtags, vec!["launch"]);
        assert_eq!(t.lang.as_deref(), Some("de"));
        assert_eq!(t.created_at.unwrap().to_rfc3339(), "2021-10-06T22:01:04+00:00");
    }

    #[test]
    fn v2_long_tweets_use_the_note_tweet() {
        let long = "x".repeat(3000);
        let json = format!(
            r#"{{"data":{{"id":"7","text":"short…","note_tweet":{{"text":"{long}","entities":{{"hashtags":[{{"tag":"long"}}]}}}}}}}}"#
        );
        let t = decode(json.as_bytes()).unwrap();
        assert_eq!(t.message.len(), 3000);
        assert_eq!(t.hashtags, vec!["long"]);
        assert_eq!((t.username, t.created_at), (None, None));
    }

    #[test]
    fn v1_with_a_numeric_id_only_and_no_user() {
        let t = decode(br#"{"id": 18446744073709551615, "text": ""}"#).unwrap();
        assert_eq!(t.id, "18446744073709551615");
        assert_eq!(t.message, "");
        assert_eq!(t.username, None);
    }

    #[test]
    fn strings_without_escapes_borrow_the_payload() {
        let t = decode(V2.as_bytes()).unwrap();
        for s in [&t.id, &t.message, t.username.as_ref().unwrap(), t.screen_name.as_ref().unwrap(), &t.hashtags[0]] {
            assert!(matches!(s, Cow::Borrowed(_)), "{s:?} was copied");
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let t = decode(br#"{"id_str":"1","text":"line\nbreak \"quoted\" \u00e9"}"#).unwrap();
        assert_eq!(t.message, "line\nbreak \"quoted\" é");
    }

    #[test]
    fn what_is_not_a_tweet_says_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not JSON"),
            (b"{\"id_str\": \"1\", \"text\": ", "not JSON"),
            (b"\xff\xfe binary", "not JSON"),
            (b"hello world", "not JSON"),
            (b"[1,2,3]", "not a tweet"),
            (b"42", "not a tweet"),
            (br#"{"delete":{"status":{"id_str":"1"}}}"#, "not a tweet"),
            (br#"{"id_str":"1"}"#, "not a tweet"),
            (br#"{"data":{"text":"no id"}}"#, "not a tweet"),
            (br#"{"id_str": 5, "text":"wrong type"}"#, "not a tweet"),
            (br#"{"id_str":"1","text":"t","created_at":"yesterday"}"#, "invalid field"),
        ];
        for (payload, prefix) in cases {
            let err = decode(payload).unwrap_err().to_string();
            assert!(err.starts_with(prefix), "{:?} -> {err}", String::from_utf8_lossy(payload));
        }
    }
}
