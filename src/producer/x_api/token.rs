//! The bearer token, kept out of every log line.

/// The bearer token. Its `Debug` and `Display` print no secret.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into().trim().to_owned();
        if token.is_empty() {
            return Err("the bearer token is empty".into());
        }
        Ok(Self(token))
    }

    /// The secret, for the one place that sends it.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_never_printed() {
        let token = BearerToken::new(" AAAA-secret-token ").unwrap();
        assert_eq!(token.expose(), "AAAA-secret-token");
        assert!(!format!("{token:?}").contains("secret"));
        assert!(BearerToken::new("  ").is_err());
    }
}
