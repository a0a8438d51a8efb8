use std::cmp::Ordering;
use std::fmt;

/// A Kinesis sequence number.
///
/// Sequence numbers are decimal strings of up to 128 bits' worth of digits (often
/// more than `u128` holds), so they are compared as numbers by length, then digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Accepts a non-empty string of ASCII digits; leading zeros are dropped so that
    /// equal numbers have one spelling.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let trimmed = s.trim_start_matches('0');
        Some(Self(if trimmed.is_empty() { "0" } else { trimmed }.to_owned()))
    }

    /// The number in decimal, without leading zeros.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a shard's processing stands, as stored in the lease's `checkpoint` attribute.
///
/// The sentinels are the Java KCL's, so a table written by a KCL application reads
/// the same here. `TrimHorizon`, `Latest` and `AtTimestamp` mean "nothing processed
/// yet, start there"; `ShardEnd` means the shard is closed and fully processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// `TRIM_HORIZON`: nothing processed yet; start at the oldest record the stream
    /// retains.
    TrimHorizon,
    /// `LATEST`: nothing processed yet; start at the tip of the shard, with only
    /// the records put from then on.
    Latest,
    /// Start at the timestamp the worker is configured with (`--initial-position`).
    AtTimestamp,
    /// Everything up to and including this record is durably processed: the
    /// Kinesis record `number` and, when it is a KPL aggregate, its user records
    /// up to and including `sub` (the KCL's `ExtendedSequenceNumber`; `sub` is 0
    /// for a plain record). A restart reads the shard from `number` (not after
    /// it) and skips what is at or below this position.
    Sequence {
        /// The Kinesis record's sequence number.
        number: SequenceNumber,
        /// The user record within a KPL aggregate (its sub-sequence number); 0 for a
        /// plain record.
        sub: u64,
    },
    /// `SHARD_END`: the shard is closed and every record of it is processed; its
    /// children may start.
    ShardEnd,
}

/// A checkpoint that would move a shard's position backwards; refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint {to} is behind {from}")]
pub struct CheckpointBackwards {
    /// The checkpoint the lease holds.
    pub from: Checkpoint,
    /// The checkpoint that was refused.
    pub to: Checkpoint,
}

impl Checkpoint {
    /// The stored form of [`Checkpoint::TrimHorizon`].
    pub const TRIM_HORIZON: &'static str = "TRIM_HORIZON";
    /// The stored form of [`Checkpoint::Latest`].
    pub const LATEST: &'static str = "LATEST";
    /// The stored form of [`Checkpoint::AtTimestamp`].
    pub const AT_TIMESTAMP: &'static str = "AT_TIMESTAMP";
    /// The stored form of [`Checkpoint::ShardEnd`].
    pub const SHARD_END: &'static str = "SHARD_END";

    /// Reads the stored form: a KCL sentinel or a sequence number (with
    /// sub-sequence number 0; see [`with_sub`](Self::with_sub)).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            Self::TRIM_HORIZON => Some(Self::TrimHorizon),
            Self::LATEST => Some(Self::Latest),
            Self::AT_TIMESTAMP => Some(Self::AtTimestamp),
            Self::SHARD_END => Some(Self::ShardEnd),
            _ => SequenceNumber::parse(s).map(Self::at),
        }
    }

    /// The checkpoint of a whole plain record (sub-sequence number 0).
    pub fn at(number: SequenceNumber) -> Self {
        Self::Sequence { number, sub: 0 }
    }

    /// The KCL's two attributes, `checkpoint` and `checkpointSubSequenceNumber`,
    /// read together; a sentinel ignores the sub-sequence number.
    pub fn with_sub(self, sub: u64) -> Self {
        match self {
            Self::Sequence { number, .. } => Self::Sequence { number, sub },
            other => other,
        }
    }

    /// The `checkpoint` attribute: a sentinel or the sequence number.
    pub fn stored(&self) -> String {
        match self {
            Self::Sequence { number, .. } => number.to_string(),
            other => other.to_string(),
        }
    }

    /// The `checkpointSubSequenceNumber` attribute (0 for a sentinel).
    pub fn sub(&self) -> u64 {
        match self {
            Self::Sequence { sub, .. } => *sub,
            _ => 0,
        }
    }

    /// Whether this is [`Checkpoint::ShardEnd`]: the shard is closed and fully
    /// processed, and its lease is never taken again.
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Self::ShardEnd)
    }

    /// Sentinel starting positions rank below every sequence number, and
    /// `ShardEnd` above them all. Two different sentinel starts are equal in rank:
    /// neither has processed anything.
    fn rank(&self) -> (u8, Option<(&SequenceNumber, u64)>) {
        match self {
            Self::TrimHorizon | Self::Latest | Self::AtTimestamp => (0, None),
            Self::Sequence { number, sub } => (1, Some((number, *sub))),
            Self::ShardEnd => (2, None),
        }
    }

    /// The checkpoint after moving to `to`, refusing to go backwards. Moving to the
    /// same position is allowed (a re-delivered batch checkpoints again).
    pub fn advance(&self, to: Checkpoint) -> Result<Checkpoint, CheckpointBackwards> {
        if to.rank() < self.rank() {
            return Err(CheckpointBackwards { from: self.clone(), to });
        }
        Ok(to)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TrimHorizon => f.write_str(Self::TRIM_HORIZON),
            Self::Latest => f.write_str(Self::LATEST),
            Self::AtTimestamp => f.write_str(Self::AT_TIMESTAMP),
            Self::Sequence { number, sub: 0 } => number.fmt(f),
            Self::Sequence { number, sub } => write!(f, "{number}:{sub}"),
            Self::ShardEnd => f.write_str(Self::SHARD_END),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(s).unwrap())
    }

    #[test]
    fn sequence_numbers_compare_as_numbers_beyond_u128() {
        let small = SequenceNumber::parse("9").unwrap();
        let big = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap();
        let bigger = SequenceNumber::parse("49590338271490256608559692538361571095921575989136588899").unwrap();
        assert!(small < big);
        assert!(big < bigger);
        assert_eq!(SequenceNumber::parse("007").unwrap(), SequenceNumber::parse("7").unwrap());
        assert_eq!(SequenceNumber::parse("000").unwrap().as_str(), "0");
    }

    #[test]
    fn sequence_numbers_reject_non_digits() {
        for bad in ["", "12a", "-1", " 1", "1.0"] {
            assert_eq!(SequenceNumber::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn kcl_sentinels_round_trip() {
        for s in ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END", "4959033827149025660855969253836"] {
            assert_eq!(Checkpoint::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Checkpoint::parse("NOT_A_SENTINEL"), None);
    }

    #[test]
    fn checkpoints_refuse_to_go_backwards() {
        let at_10 = seq("10");
        assert_eq!(at_10.advance(seq("11")), Ok(seq("11")));
        assert_eq!(at_10.advance(seq("10")), Ok(seq("10")));
        assert!(at_10.advance(seq("9")).is_err());
        assert!(at_10.advance(Checkpoint::TrimHorizon).is_err());
        assert_eq!(at_10.advance(Checkpoint::ShardEnd), Ok(Checkpoint::ShardEnd));
        assert!(Checkpoint::ShardEnd.advance(seq("99999")).is_err());
        assert_eq!(Checkpoint::TrimHorizon.advance(seq("1")), Ok(seq("1")));
        assert_eq!(Checkpoint::Latest.advance(Checkpoint::TrimHorizon), Ok(Checkpoint::TrimHorizon));
    }

    #[test]
    fn inside_an_aggregate_the_sub_sequence_number_orders_and_never_goes_back() {
        let at_10_2 = seq("10").with_sub(2);
        assert_eq!((at_10_2.stored(), at_10_2.sub(), at_10_2.to_string()), ("10".into(), 2, "10:2".into()));
        assert_eq!(at_10_2.advance(seq("10").with_sub(3)), Ok(seq("10").with_sub(3)));
        assert_eq!(at_10_2.advance(seq("10").with_sub(2)), Ok(seq("10").with_sub(2)));
        assert!(at_10_2.advance(seq("10").with_sub(1)).is_err());
        assert!(at_10_2.advance(seq("10")).is_err(), "a whole plain record 10 is behind user record 10:2");
        assert_eq!(at_10_2.advance(seq("11")), Ok(seq("11")), "a later record, whatever its sub-sequence");
        assert!(seq("11").advance(seq("10").with_sub(99)).is_err());
        assert_eq!(Checkpoint::ShardEnd.with_sub(5), Checkpoint::ShardEnd);
        assert_eq!((Checkpoint::TrimHorizon.stored(), Checkpoint::TrimHorizon.sub()), ("TRIM_HORIZON".into(), 0));
    }
}
