//! Why a record is dead-lettered: the reasons, their labels (the metric's
//! `reason`) and the reason each decoding error comes to.

use super::tweet::DecodeError;
use crate::metrics as m;

/// Why a record went to the dead-letter table; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotJson,
    NotATweet,
    InvalidField,
    TooLarge,
    RejectedBySink,
}

impl Reason {
    pub const ALL: [Reason; 5] =
        [Self::NotJson, Self::NotATweet, Self::InvalidField, Self::TooLarge, Self::RejectedBySink];

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
