//! `service-splitter`: weighted shares of a service's requests sent to its
//! subsets or to other services, with header changes per share.
//!
//! Weights are percentages with two decimals (the smallest share is
//! 0.01%); they must sum to 100.

use super::http::{check_header_pair, HeaderChanges};
use super::{check_default_scope, FieldError, KindSpec};
use serde::{Deserialize, Serialize, Serializer};

/// A weight in hundredths of a percent (`12.5` → 1250), rounded as Consul
/// rounds.
pub fn scaled(weight: f64) -> i64 {
    (weight * 100.0).round() as i64
}

/// Writes a weight as an integer when it is whole (`90`, not `90.0`), as Go
/// prints a float.
pub fn serialize_weight<S: Serializer>(weight: &f64, s: S) -> Result<S::Ok, S::Error> {
    if weight.fract() == 0.0 && weight.abs() < 1e15 {
        s.serialize_i64(*weight as i64)
    } else {
        s.serialize_f64(*weight)
    }
}

/// One share of the requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Split {
    /// The share in percent (0 to 100, two decimals).
    #[serde(serialize_with = "serialize_weight")]
    pub weight: f64,
    /// The service (default: the splitter's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// A subset of that service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_subset: String,
    /// Namespace (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Partition (only `default`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub partition: String,
    /// Header changes for requests taking this share.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub request_headers: HeaderChanges,
    /// Header changes for their responses.
    #[serde(default, skip_serializing_if = "HeaderChanges::is_empty")]
    pub response_headers: HeaderChanges,
}

impl Split {
    /// The service this share goes to, for a splitter named `name`.
    pub fn service_or<'a>(&'a self, name: &'a str) -> &'a str {
        if self.service.is_empty() {
            name
        } else {
            &self.service
        }
    }
}

/// A `service-splitter` entry (without the shared envelope).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ServiceSplitter {
    /// The shares, in order.
    #[serde(default)]
    pub splits: Vec<Split>,
}

impl KindSpec for ServiceSplitter {
    const KIND: &'static str = super::kind::SERVICE_SPLITTER;

    fn normalize(&mut self) {
        for s in &mut self.splits {
            s.weight = scaled(s.weight) as f64 / 100.0;
        }
    }

    fn validate(&self, name: &str) -> Result<(), FieldError> {
        if self.splits.is_empty() {
            return Err(FieldError::new("Splits", "no splits configured"));
        }
        for (i, s) in self.splits.iter().enumerate() {
            let field = format!("Splits[{i}]");
            if !s.weight.is_finite() || !(0.0..=100.0).contains(&s.weight) {
                return Err(FieldError::new(
                    format!("{field}.Weight"),
                    format!("{} is not between 0 and 100", s.weight),
                ));
            }
            check_default_scope(
                &field,
                [("Namespace", &s.namespace), ("Partition", &s.partition)],
            )?;
            let twin = self.splits[..i].iter().any(|o| {
                o.service_or(name) == s.service_or(name) && o.service_subset == s.service_subset
            });
            if twin {
                return Err(FieldError::new(
                    field,
                    format!(
                        "split destination occurs more than once: service={:?}, subset={:?}",
                        s.service_or(name),
                        s.service_subset
                    ),
                ));
            }
            check_header_pair(&field, &s.request_headers, &s.response_headers)?;
        }
        let sum: i64 = self.splits.iter().map(|s| scaled(s.weight)).sum();
        if sum != 10_000 {
            return Err(FieldError::new(
                "Splits",
                format!(
                    "the sum of all split weights must be 100, not {}",
                    sum as f64 / 100.0
                ),
            ));
        }
        Ok(())
    }
}
