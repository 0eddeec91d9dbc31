//! gRPC checks: the standard `grpc.health.v1.Health/Check` call over HTTP/2;
//! `SERVING` passes, anything else is critical.

use super::{CheckDefinition, Probe};
use crate::structs::status;

/// `host:port[/service]` → (URL of the Check method, service name).
fn target(def: &CheckDefinition) -> (String, String) {
    let (addr, service) = def.grpc.split_once('/').unwrap_or((&def.grpc, ""));
    let scheme = if def.grpc_use_tls { "https" } else { "http" };
    (
        format!("{scheme}://{addr}/grpc.health.v1.Health/Check"),
        service.to_string(),
    )
}

/// The request message: field 1 (`service`) as a length-delimited string,
/// in a gRPC frame (no compression, 4-byte big-endian length).
fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut len = service.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                msg.push(byte);
                break;
            }
            msg.push(byte | 0x80);
        }
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// Reads the `status` enum (field 1) of a framed `HealthCheckResponse`;
/// an empty message is the default status 0.
fn response_status(frame: &[u8]) -> Option<u64> {
    let msg = frame.get(5..)?;
    let Some((&key, rest)) = msg.split_first() else {
        return Some(0);
    };
    if key != 0x08 {
        return None;
    }
    let mut value = 0u64;
    for (i, b) in rest.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

const SERVING: u64 = 1;

/// Calls the health service.
pub async fn probe(client: &reqwest::Client, def: &CheckDefinition) -> Probe {
    let (url, service) = target(def);
    let resp = client
        .post(&url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(request_frame(&service))
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Probe::new(status::CRITICAL, format!("gRPC {}: {e}", def.grpc)),
    };
    let grpc_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(code) = grpc_status.filter(|c| c != "0") {
        let message = resp
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return Probe::new(
            status::CRITICAL,
            format!(
                "gRPC {} health check failed: code {code}: {message}",
                def.grpc
            ),
        );
    }
    let body = resp.bytes().await.unwrap_or_default();
    if body.is_empty() {
        // No message: the server put its error status in the trailers.
        return Probe::new(
            status::CRITICAL,
            format!(
                "gRPC check {}: no HealthCheckResponse (error status in trailers)",
                def.grpc
            ),
        );
    }
    match response_status(&body) {
        Some(SERVING) => Probe::new(status::PASSING, format!("gRPC check {}: success", def.grpc)),
        Some(other) => Probe::new(
            status::CRITICAL,
            format!("gRPC check {}: failed with status {other}", def.grpc),
        ),
        None => Probe::new(
            status::CRITICAL,
            format!("gRPC check {}: malformed response", def.grpc),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            request_frame("ab"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(response_status(&[0, 0]), None);
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 0x80]), None);
    }
}
