//! Synthetic tweets: reproducible from a seed, in both the v1.1 and v2 shapes,
//! with unicode, emoji, hashtags and long texts, and optionally malformed records.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::Outgoing;

const WORDS: &[&str] = &[
    "stream",
    "kinesis",
    "shard",
    "lease",
    "latency",
    "checkpoint",
    "dynamo",
    "replica",
    "rust",
    "lambda",
    "throughput",
    "failover",
    "résumé",
    "naïve",
    "café",
    "Zürich",
    "東京",
    "データ",
    "поток",
    "مرحبا",
    "😀",
    "🚀",
    "🔥",
    "👍🏽",
    "🏳️‍🌈",
    "∑",
    "—",
    "\"quoted\"",
    "back\\slash",
    "tab\there",
    "new\nline",
];
const TAGS: &[&str] = &["aws", "rustlang", "serverless", "streaming", "bigdata", "日本", "café", "100DaysOfCode"];
const LANGS: &[&str] = &["en", "fr", "de", "ja", "ru", "ar", "und"];
const NAMES: &[(&str, &str)] = &[
    ("Ada Lovelace", "ada"),
    ("Grace Hopper", "grace_h"),
    ("Zoë Müller", "zoe_m"),
    ("山田太郎", "yamada"),
    ("Jean-Luc", "jl_picard"),
    ("🦀 Ferris", "ferris"),
];

/// The kinds a synthetic record can have, as written to the put log.
pub const KIND_V1: &str = "v1";
pub const KIND_V2: &str = "v2";
pub const KIND_NOT_JSON: &str = "malformed:not_json";
pub const KIND_NOT_A_TWEET: &str = "malformed:not_a_tweet";

pub struct Synthetic {
    rng: StdRng,
    seed: u64,
    next: u64,
    malformed_ratio: f64,
}

impl Synthetic {
    pub fn new(seed: u64, malformed_ratio: f64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), seed, next: 0, malformed_ratio }
    }

    /// Tweet ids are unique per (seed, index) and look like real snowflake ids.
    fn id(&self, index: u64) -> String {
        (1_000_000_000_000_000_000u64 + (self.seed % 1_000_000) * 1_000_000_000_000 + index).to_string()
    }

    fn text(&mut self) -> (String, Vec<&'static str>) {
        // One tweet in ten is long (a note tweet / extended tweet of ~1-3 KB).
        let words = if self.rng.gen_bool(0.1) { self.rng.gen_range(150..400) } else { self.rng.gen_range(3..30) };
        let mut text: Vec<String> = (0..words).map(|_| WORDS.choose(&mut self.rng).unwrap().to_string()).collect();
        let n_tags = self.rng.gen_range(0..3);
        let tags: Vec<&str> = TAGS.choose_multiple(&mut self.rng, n_tags).copied().collect();
        text.extend(tags.iter().map(|t| format!("#{t}")));
        (text.join(" "), tags)
    }

    /// A time between 2015 and 2026.
    fn created_at(&mut self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.rng.gen_range(1_420_070_400..1_798_761_600), 0).expect("in range")
    }

    fn v1(&mut self, id: &str) -> serde_json::Value {
        let (text, tags) = self.text();
        let (name, handle) = *NAMES.choose(&mut self.rng).unwrap();
        let hashtags: Vec<_> = tags.iter().map(|t| json!({"text": t, "indices": [0, 1]})).collect();
        let truncated = text.chars().count() > 140;
        let short: String = text.chars().take(140).collect();
        let mut tweet = json!({
            "created_at": self.created_at().format("%a %b %d %H:%M:%S +0000 %Y").to_string(),
            "id": id.parse::<u64>().unwrap(),
            "id_str": id,
            "text": if truncated { format!("{short}…") } else { text.clone() },
            "truncated": truncated,
            "user": {"id": 12345, "name": name, "screen_name": handle},
            "lang": LANGS.choose(&mut self.rng).unwrap(),
            "entities": {"hashtags": if truncated { vec![] } else { hashtags.clone() }},
        });
        if truncated {
            tweet["extended_tweet"] = json!({"full_text": text, "entities": {"hashtags": hashtags}});
        }
        tweet
    }

    fn v2(&mut self, id: &str) -> serde_json::Value {
        let (text, tags) = self.text();
        let (name, handle) = *NAMES.choose(&mut self.rng).unwrap();
        let author = format!("{}", 1000 + self.rng.gen_range(0..NAMES.len()));
        let hashtags: Vec<_> = tags.iter().map(|t| json!({"start": 0, "end": 1, "tag": t})).collect();
        let long = text.chars().count() > 280;
        let short: String = text.chars().take(280).collect();
        let created = self.created_at().format("%Y-%m-%dT%H:%M:%S.000Z").to_string();
        let mut data = json!({
            "id": id,
            "text": if long { short } else { text.clone() },
            "created_at": created,
            "author_id": author,
            "lang": LANGS.choose(&mut self.rng).unwrap(),
            "entities": {"hashtags": hashtags},
        });
        if long {
            data["note_tweet"] = json!({"text": text, "entities": {"hashtags": hashtags}});
        }
        json!({
            "data": data,
            "includes": {"users": [{"id": author, "name": name, "username": handle}]},
            "matching_rules": [{"id": "1", "tag": "synthetic"}],
        })
    }

    fn malformed(&mut self, index: u64) -> Outgoing {
        let key = format!("malformed-{}-{index}", self.seed);
        if self.rng.gen_bool(0.5) {
            let mut data = br#"{"id_str": "1", "text": "cut in the mid"#.to_vec();
            data.extend((0..self.rng.gen_range(0..16)).map(|_| self.rng.gen::<u8>()));
            Outgoing { id: key, data, kind: KIND_NOT_JSON }
        } else {
            let data = json!({"limit": {"track": self.rng.gen_range(1..1000)}}).to_string().into_bytes();
            Outgoing { id: key, data, kind: KIND_NOT_A_TWEET }
        }
    }
}

impl Iterator for Synthetic {
    type Item = Outgoing;

    fn next(&mut self) -> Option<Outgoing> {
        let index = self.next;
        self.next += 1;
        if self.malformed_ratio > 0.0 && self.rng.gen_bool(self.malformed_ratio) {
            return Some(self.malformed(index));
        }
        let id = self.id(index);
        let (tweet, kind) = if self.rng.gen_bool(0.5) { (self.v1(&id), KIND_V1) } else { (self.v2(&id), KIND_V2) };
        Some(Outgoing { id, data: tweet.to_string().into_bytes(), kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::tweet::decode;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_tweets_and_ids_are_unique() {
        let a: Vec<_> = Synthetic::new(7, 0.1).take(300).map(|o| o.data).collect();
        let b: Vec<_> = Synthetic::new(7, 0.1).take(300).map(|o| o.data).collect();
        assert_eq!(a, b);
        let keys: HashSet<_> = Synthetic::new(7, 0.1).take(2000).map(|o| o.id).collect();
        assert_eq!(keys.len(), 2000);
        let other: HashSet<_> = Synthetic::new(8, 0.0).take(2000).map(|o| o.id).collect();
        assert!(keys.is_disjoint(&other));
    }

    #[test]
    fn tweets_decode_and_malformed_records_do_not() {
        let mut kinds = HashSet::new();
        let mut long = 0;
        for out in Synthetic::new(3, 0.05).take(2000) {
            kinds.insert(out.kind);
            match out.kind {
                KIND_V1 | KIND_V2 => {
                    let tweet =
                        decode(&out.data).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.data)));
                    assert_eq!(tweet.id, out.id);
                    assert!(tweet.username.is_some() && tweet.created_at.is_some());
                    if tweet.message.len() > 1000 {
                        long += 1;
                    }
                }
                _ => assert!(decode(&out.data).is_err(), "{}", String::from_utf8_lossy(&out.data)),
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(long > 50, "{long}");
    }

    #[test]
    fn malformed_ratio_is_respected() {
        let bad = Synthetic::new(1, 0.05).take(10_000).filter(|o| o.kind.starts_with("malformed")).count();
        assert!((400..=600).contains(&bad), "{bad}");
        assert_eq!(Synthetic::new(1, 0.0).take(1000).filter(|o| o.kind.starts_with("malformed")).count(), 0);
    }
}
