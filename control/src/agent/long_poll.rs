//! How a client agent follows something only the servers hold (the CA
//! roots, a proxy's view): the same long poll, asked again as soon as it
//! answers, for as long as anyone listens.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// How long to wait before asking again after a failed request.
const RETRY: Duration = Duration::from_secs(1);

/// Follows `ask`: starts from `initial`; each answer that differs from the
/// value held replaces it. `ask` gets the value held, to say what the
/// client already knows. A failed request is logged as `what`, handed to
/// `on_error` (which may change the value and says whether it did), and
/// asked again a moment later. The task ends when every receiver is gone.
pub(crate) fn follow<T, F, Fut, E>(
    initial: T,
    what: &'static str,
    mut ask: F,
    mut on_error: E,
) -> watch::Receiver<T>
where
    T: PartialEq + Send + Sync + 'static,
    F: FnMut(&T) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>> + Send,
    E: FnMut(&mut T, String) -> bool + Send + 'static,
{
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        loop {
            let asked = ask(&tx.borrow());
            let answer = tokio::select! {
                answer = asked => answer,
                _ = tx.closed() => return,
            };
            match answer {
                Ok(next) => {
                    tx.send_if_modified(|cur| {
                        let differs = *cur != next;
                        if differs {
                            *cur = next;
                        }
                        differs
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "{what} failed; retrying");
                    tx.send_if_modified(|cur| on_error(cur, e));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        }
    });
    rx
}
