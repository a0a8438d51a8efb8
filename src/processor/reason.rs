//! Why a record is dead-lettered: the reasons, their labels (the metric's
//! `reason`) and the reason each decoding error comes to.

use super::tweet::DecodeError;
use crate::metrics as m;

/// Why a record went to the dead-letter table; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The data is not JSON
    /// ([`DecodeError::NotJson`](crate::processor::tweet::DecodeError::NotJson)).
    NotJson,
    /// JSON, but not a tweet
    /// ([`DecodeError::NotATweet`](crate::processor::tweet::DecodeError::NotATweet)).
    NotATweet,
    /// A field has a value it cannot take
    /// ([`DecodeError::InvalidField`](crate::processor::tweet::DecodeError::InvalidField)).
    InvalidField,
    /// The tweet's item is over DynamoDB's item size limit
    /// ([`MAX_ITEM_BYTES`](crate::processor::MAX_ITEM_BYTES)).
    TooLarge,
    /// The tweets table refused the tweet's item with an error that retrying
    /// cannot fix.
    RejectedBySink,
}

impl Reason {
    /// Every reason, for registering each label's counter at zero.
    pub const ALL: [Reason; 5] =
        [Self::NotJson, Self::NotATweet, Self::InvalidField, Self::TooLarge, Self::RejectedBySink];

    /// The reason's label: the `reason` label of the `DEAD_LETTERED` metric and
    /// the dead letter's `Reason` attribute, e.g. `not_json`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::NotATweet => "not_a_tweet",
            Self::InvalidField => "invalid_field",
            Self::TooLarge => "too_large",
            Self::RejectedBySink => "rejected_by_sink",
        }
    }
}

/// Registers the dead-letter counter of every reason at zero, so that a
/// dashboard's rate has a series before the first dead letter.
pub fn register_metrics() {
    for reason in Reason::ALL {
        metrics::counter!(m::DEAD_LETTERED, "reason" => reason.label()).absolute(0);
    }
}

impl From<&DecodeError> for Reason {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::NotJson(_) => Self::NotJson,
            DecodeError::NotATweet(_) => Self::NotATweet,
            DecodeError::InvalidField(_) => Self::InvalidField,
        }
    }
}
