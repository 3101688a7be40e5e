//! Bearer tokens on the gRPC API. Whoever reaches an open gateway can send messages that
//! cost money and carry the business's name, so a gateway listening beyond loopback should
//! require `server.api_tokens`; health and reflection stay open for probes and tooling.
//!
//! Only SHA-256 digests of the tokens are kept, and a presented token's digest is compared
//! with each in constant time, so neither timing nor a memory dump gives a token away.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

#[derive(Clone)]
pub struct ApiTokens {
    digests: std::sync::Arc<[[u8; 32]]>,
}

impl ApiTokens {
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        let digests: Vec<[u8; 32]> = tokens.into_iter().map(digest).collect();
        ApiTokens { digests: digests.into() }
    }

    /// No tokens configured: every caller is let in.
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// `authorization: Bearer TOKEN` naming one of the tokens, or UNAUTHENTICATED.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if self.is_open() {
            return Ok(());
        }
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| {
                Status::unauthenticated("this gateway needs `authorization: Bearer <api token>`")
            })?;
        let presented = digest(presented.trim());
        // Every digest is compared, so the time taken does not say which one matched.
        let known = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&presented));
        if bool::from(known) {
            Ok(())
        } else {
            Err(Status::unauthenticated("the bearer token is not one of server.api_tokens"))
        }
    }

    /// The interceptor the gateway's service is wrapped in.
    pub fn interceptor(self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |request| self.check(request.metadata()).map(|()| request)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().expect("ascii"));
        m
    }

    #[test]
    fn only_a_configured_bearer_token_passes() {
        let tokens = ApiTokens::new(["first-token-0123456789", "second-token-0123456789"]);
        assert!(tokens.check(&with("Bearer second-token-0123456789")).is_ok());
        assert!(tokens.check(&with("bearer first-token-0123456789")).is_ok());
        for bad in ["Bearer first-token-012345678", "first-token-0123456789", "Basic Zm9vOmJhcg=="]
        {
            let err = tokens.check(&with(bad)).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let missing = tokens.check(&MetadataMap::new()).expect_err("no header");
        assert!(missing.message().contains("Bearer"), "{}", missing.message());
        assert!(ApiTokens::new([]).check(&MetadataMap::new()).is_ok(), "open without tokens");
    }

    /// During a rotation two entries (say, two environment variables) may hold the same
    /// token for a while; matching both must not cancel out.
    #[test]
    fn a_token_listed_twice_still_passes() {
        let tokens = ApiTokens::new(["rotating-token-0123456789", "rotating-token-0123456789"]);
        assert!(tokens.check(&with("Bearer rotating-token-0123456789")).is_ok());
    }
}
