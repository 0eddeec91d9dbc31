//! What both L7 paths share: the body type, the proxy's own responses,
//! hop-by-hop header handling, byte-counting bodies, and serving one
//! connection with hyper's automatic HTTP/1.1 + HTTP/2 server under the
//! idle timeout.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, TE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

use crate::forward::{Activity, Tracked};

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response the proxy sends.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "trailer",
];

/// A response of the proxy's own, with a plain-text body.
pub(crate) fn respond(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A complete body from bytes.
pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Removes the hop-by-hop headers: those `Connection` names, `Connection`
/// itself, and the fixed list. `TE: trailers` stays (gRPC needs it).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// `http://<authority><path?query>` for `uri`'s path, with `Host` kept: an
/// HTTP/2 request carries its authority in the URI only, which the next hop
/// would otherwise lose.
pub(crate) fn retarget<B>(
    req: &mut Request<B>,
    authority: &str,
    path_and_query: Option<&str>,
) -> bool {
    if !req.headers().contains_key(HOST) {
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(HOST, host);
        }
    }
    let path = path_and_query
        .or_else(|| req.uri().path_and_query().map(|pq| pq.as_str()))
        .unwrap_or("/");
    match Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

// === Counted ===

/// A body that adds the size of every data frame to a counter.
pub(crate) struct Counted<B> {
    inner: B,
    counter: Counter,
}

/// `body`, boxed, counting its bytes into `counter`.
pub(crate) fn counted<B>(body: B, counter: Counter) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    Counted {
        inner: body,
        counter,
    }
    .boxed()
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.counter.inc_by(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === serving ===

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on `io` with `handle` until
/// the client closes, the connection breaks, or nothing moves for `idle`.
/// Once `draining` turns true the connection finishes the requests in
/// flight and closes (HTTP/1.1 stops keep-alive, HTTP/2 sends GOAWAY).
pub(crate) async fn serve_connection<I, F, Fut>(
    io: I,
    idle: Duration,
    mut draining: watch::Receiver<bool>,
    handle: F,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let activity = Activity::new();
    let io = Tracked::new(io, activity.clone());
    let service = service_fn(move |req| {
        let response = handle(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut drain_started = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "HTTP connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(idle) => {
                debug!("HTTP connection closed: idle");
                return;
            }
            _ = draining.wait_for(|draining| *draining), if !drain_started => {
                drain_started = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
