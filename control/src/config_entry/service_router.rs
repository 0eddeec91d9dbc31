//! `service-router`: HTTP routes of a service. The first route whose match
//! fits a request sends it to its destination (another service, a subset,
//! with a path rewrite, timeouts, retries and header changes); requests no
//! route matches go to the service itself.

use super::http::{
    check_header_pair, check_match, join, normalize_match, HeaderChanges, HttpMatch,
};
use super::{check_default_scope, FieldError, KindSpec};
use crate::structs::ConsulDuration;
use serde::{Deserialize, Serialize};

/// The retry conditions Consul accepts in `RetryOn`.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Which requests a route takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The HTTP conditions.
    #[serde(default, rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
}

/// Where a route sends its requests, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// The service (default: the router's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// A subset of it (then no splitter applies).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
    /// Replaces the matched path prefix.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_rewrite: String,
    /// How long the whole request, retries included, may take.
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub request_timeout: ConsulDuration,
    /// How long the request stream may stay idle.
    #[serde(default, skip_serializing_if = "ConsulDuration::is_zero")]
    pub idle_timeout: ConsulDuration,
    /// How many times to retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_retries: u32,
    /// Retry when connecting fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_on_connect_failure: bool,
    /// Envoy-style retry conditions (`5xx`, `gateway-error`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Retry on these status codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_status_codes: Vec<u32>,
    /// Request header changes.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub request_headers: HeaderChanges,
    /// Response header changes.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub response_headers: HeaderChanges,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RouteDestination {
    /// Whether a connect failure is retried, from `RetryOnConnectFailure`
    /// and the `RetryOn` conditions that mean it.
    pub fn retries_connect_failure(&self) -> bool {
        self.retry_on_connect_failure
            || self
                .retry_on
                .iter()
                .any(|r| matches!(r.as_str(), "connect-failure" | "reset" | "refused-stream"))
    }

    /// The status codes retried: `RetryOnStatusCodes` plus those the
    /// `RetryOn` conditions `5xx`, `gateway-error` and `retriable-4xx`
    /// stand for, sorted.
    pub fn retried_status_codes(&self) -> Vec<u16> {
        let mut codes: Vec<u16> = self
            .retry_on_status_codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect();
        for r in &self.retry_on {
            match r.as_str() {
                "5xx" => codes.extend(500..=599),
                "gateway-error" => codes.extend([502, 503, 504]),
                "retriable-4xx" => codes.push(409),
                _ => {}
            }
        }
        codes.sort_unstable();
        codes.dedup();
        codes
    }
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Route {
    /// Which requests take it (none: every request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<RouteMatch>,
    /// Where they go (none: the router's own service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<RouteDestination>,
}

impl Route {
    /// The HTTP match, empty when none is given.
    pub fn http_match(&self) -> HttpMatch {
        self.r#match
            .as_ref()
            .and_then(|m| m.http.clone())
            .unwrap_or_default()
    }
}

/// A `service-router` entry (without the shared envelope).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceRouter {
    /// The routes, in order.
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl KindSpec for ServiceRouter {
    const KIND: &'static str = super::kind::SERVICE_ROUTER;

    fn normalize(&mut self) {
        for route in &mut self.routes {
            if let Some(http) = route.r#match.as_mut().and_then(|m| m.http.as_mut()) {
                normalize_match(http);
            }
        }
    }

    fn validate(&self, _name: &str) -> Result<(), FieldError> {
        for (i, route) in self.routes.iter().enumerate() {
            let field = format!("Routes[{i}]");
            let http = route.http_match();
            check_match(&http, true).map_err(|e| e.within(&join(&field, "Match.HTTP")))?;
            let Some(dest) = &route.destination else {
                continue;
            };
            let dest_field = join(&field, "Destination");
            if !dest.prefix_rewrite.is_empty()
                && http.path_exact.is_none()
                && http.path_prefix.is_none()
            {
                return Err(FieldError::new(
                    join(&dest_field, "PrefixRewrite"),
                    "cannot be used without configuring either PathExact or PathPrefix",
                ));
            }
            check_default_scope(
                &dest_field,
                [
                    ("Namespace", &dest.namespace),
                    ("Partition", &dest.partition),
                ],
            )?;
            if let Some(r) = dest
                .retry_on
                .iter()
                .find(|r| !RETRY_ON.contains(&r.as_str()))
            {
                return Err(FieldError::new(
                    join(&dest_field, "RetryOn"),
                    format!("contains an invalid retry condition: {r:?}"),
                ));
            }
            if let Some(c) = dest
                .retry_on_status_codes
                .iter()
                .find(|c| !(100..=599).contains(*c))
            {
                return Err(FieldError::new(
                    join(&dest_field, "RetryOnStatusCodes"),
                    format!("{c} is not an HTTP status code"),
                ));
            }
            check_header_pair(&dest_field, &dest.request_headers, &dest.response_headers)?;
        }
        Ok(())
    }
}
