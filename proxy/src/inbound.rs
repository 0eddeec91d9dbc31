//! The inbound path of the public listener: terminate mTLS → identify the
//! peer → authorise by intentions → connect to the local app → forward.
//! An L7 listener hands the identified connection to
//! [`crate::inbound_http`] instead, which authorises each request.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::forward::{forward, Outcome};
use crate::inbound_http;
use crate::metrics::INBOUND;
use crate::proxy::Shared;

/// Serves one connection accepted on the public listener.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let stats = &shared.stats.inbound;
    let snapshot = shared.snapshot();
    let handshake = snapshot.tls.acceptor.accept(stream);
    let tls = match timeout(snapshot.config.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            stats.on_failed();
            shared.metrics.handshake_failures(INBOUND).inc();
            debug!(%peer, %error, "inbound TLS handshake refused");
            return;
        }
        Err(_) => {
            stats.on_failed();
            shared.metrics.handshake_failures(INBOUND).inc();
            debug!(%peer, "inbound TLS handshake timed out");
            return;
        }
    };
    drop(snapshot);

    // The verifier accepted the chain and required a service identity; read
    // it back for the decision.
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let source = match mesh_ca::peer_spiffe_id(certs) {
        Ok(id) => id,
        Err(error) => {
            stats.on_failed();
            warn!(%peer, %error, "inbound peer has no usable identity");
            return;
        }
    };
    let source_service = source.service_name().unwrap_or_default();

    // Decide with the newest intentions: an update that landed during the
    // handshake already applies.
    let snapshot = shared.snapshot();
    if snapshot
        .config
        .public_listener
        .as_ref()
        .is_some_and(|public| public.protocol.is_l7())
    {
        drop(snapshot);
        stats.on_established();
        debug!(source = source_service, %peer, "inbound HTTP connection established");
        inbound_http::serve(tls, source_service.to_owned(), shared.clone()).await;
        return;
    }
    let decision = snapshot.authz.decide(source_service);
    if !decision.allow {
        stats.on_denied();
        info!(
            source = source_service,
            %peer,
            rule = decision.rule.as_deref().unwrap_or("default"),
            destination = %snapshot.config.service,
            "connection denied by intention"
        );
        return;
    }
    let Some(public) = snapshot.config.public_listener.as_ref() else {
        // The listener was removed by an update while this connection
        // was being set up.
        stats.on_failed();
        return;
    };
    let local_app = public.local_app;
    let connect_timeout = snapshot.config.connect_timeout;
    let idle_timeout = snapshot.config.idle_timeout;
    drop(snapshot);

    let app = match timeout(connect_timeout, TcpStream::connect(local_app)).await {
        Ok(Ok(app)) => app,
        Ok(Err(error)) => {
            stats.on_failed();
            warn!(%local_app, %error, "cannot reach the local app");
            return;
        }
        Err(_) => {
            stats.on_failed();
            warn!(%local_app, "connecting to the local app timed out");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    stats.on_established();
    debug!(source = source_service, %peer, "inbound connection established");
    match forward(tls, app, idle_timeout).await {
        Ok(Outcome::Closed { a_to_b, b_to_a }) => {
            let (request_bytes, response_bytes) = shared.metrics.bytes(INBOUND, "");
            request_bytes.inc_by(a_to_b);
            response_bytes.inc_by(b_to_a);
            debug!(%peer, bytes_in = a_to_b, bytes_out = b_to_a, "inbound connection closed");
        }
        Ok(Outcome::Idle) => debug!(%peer, "inbound connection closed: idle"),
        Err(error) => debug!(%peer, %error, "inbound connection ended with an error"),
    }
}
