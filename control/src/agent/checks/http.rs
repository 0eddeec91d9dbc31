//! HTTP checks: 2xx passes, 429 warns, anything else is critical.

use super::{CheckDefinition, Probe};
use crate::structs::status;
use std::time::Duration;

/// The client a check reuses across probes.
pub fn client(def: &CheckDefinition, timeout: Duration, http2_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(def.tls_skip_verify || def.grpc_use_tls);
    if def.disable_redirects {
        b = b.redirect(reqwest::redirect::Policy::none());
    }
    if http2_only {
        b = b.http2_prior_knowledge();
    }
    b.build().unwrap_or_default()
}

/// Sends the check's request and judges the response.
pub async fn probe(client: &reqwest::Client, def: &CheckDefinition, max_output: usize) -> Probe {
    let method = if def.method.is_empty() {
        "GET"
    } else {
        def.method.as_str()
    };
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return Probe::new(status::CRITICAL, format!("invalid method {method:?}"));
    };
    let mut req = client
        .request(m, &def.http)
        .header("User-Agent", "Consul Health Check");
    let mut has_accept = false;
    for (name, values) in &def.header {
        has_accept |= name.eq_ignore_ascii_case("accept");
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    if !has_accept {
        req = req.header("Accept", "text/plain, text/*, */*");
    }
    if !def.body.is_empty() {
        req = req.body(def.body.clone());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Probe::new(status::CRITICAL, format!("Get {:?}: {e}", def.http)),
    };
    let code = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body[..body.len().min(max_output)]).into_owned();
    let output = format!(
        "HTTP {method} {}: {} {} Output: {body}",
        def.http,
        code.as_u16(),
        code.canonical_reason().unwrap_or("")
    );
    let s = if code.is_success() {
        status::PASSING
    } else if code.as_u16() == 429 {
        status::WARNING
    } else {
        status::CRITICAL
    };
    Probe::new(s, output)
}
