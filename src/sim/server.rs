//! Serving the simulator on a bound listener, with the connection-reset fault and the
//! accounts' other clients (one task beside the connections, ended by the same shutdown).
//!
//! `axum::serve` gives a handler no way to reset its connection, so connections are served
//! here with hyper directly: each one keeps a duplicate of its socket's descriptor and a
//! token its handler can trigger; when triggered, the socket's linger is set to zero and the
//! connection is dropped, which sends a TCP RST instead of an answer. Only that path sets
//! the linger: a normal close stays graceful, so no answer is ever cut short by it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::routes::app;
use super::state::{SimState, SimStats};

/// How long connections get to finish their answers after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Lets a handler reset the connection it is answering on (inserted into every request's
/// extensions by [`serve`]).
#[derive(Clone, Debug)]
pub struct ConnectionControl {
    reset: CancellationToken,
}

impl ConnectionControl {
    /// Asks for the connection to be reset now, without an answer.
    pub fn reset(&self) {
        self.reset.cancel();
    }
}

/// A running simulator: its address, its state, and its task (connections and other
/// clients).
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<SimState>,
    task: JoinHandle<()>,
}

impl SimServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: an `api_base` for tenants.
    pub fn base_url(&self) -> url::Url {
        #[allow(clippy::expect_used)]
        url::Url::parse(&format!("http://{}", self.addr))
            .expect("an IP address and port always make a valid http URL")
    }

    /// The shared state (limits, webhooks, counters).
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// A snapshot of the counters, as `GET /_sim/stats` gives them.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Waits until the server has stopped (after its shutdown token is cancelled, the other
    /// clients have stopped and open connections have finished, or [`SHUTDOWN_GRACE`] has
    /// passed).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "simulator task failed");
        }
    }
}

/// The region a request arrived in (inserted into every request's extensions by [`serve`]
/// and [`serve_region`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region(pub String);

/// Serves the simulator on a bound listener until `shutdown` is cancelled, as the region
/// [`super::DEFAULT_REGION`], with the accounts' other clients.
pub fn serve(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown: CancellationToken,
) -> std::io::Result<SimServer> {
    let addr = listener.local_addr()?;
    state.set_region_base(super::DEFAULT_REGION, &format!("http://{addr}"));
    let router = app(state.clone());
    let traffic = state.clone();
    let region = Region(super::DEFAULT_REGION.to_string());
    let task = tokio::spawn(async move {
        tokio::join!(
            accept_loop(listener, router, region, shutdown.clone()),
            traffic.run_other_clients(shutdown),
        );
    });
    Ok(SimServer { addr, state, task })
}

/// Serves one more region of the same simulator (same accounts, windows and webhooks) on
/// another listener until `shutdown` is cancelled. Its accounts' other clients are played
/// by the [`serve`] of the same state, if any.
pub fn serve_region(
    listener: TcpListener,
    state: Arc<SimState>,
    region: &str,
    shutdown: CancellationToken,
) -> std::io::Result<SimServer> {
    let addr = listener.local_addr()?;
    state.set_region_base(region, &format!("http://{addr}"));
    let router = app(state.clone());
    let region = Region(region.to_string());
    let task = tokio::spawn(accept_loop(listener, router, region, shutdown));
    Ok(SimServer { addr, state, task })
}

async fn accept_loop(
    listener: TcpListener,
    router: axum::Router,
    region: Region,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            region.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("simulator connections still open after the shutdown grace period");
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    region: Region,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the same socket, to set its linger when a reset is asked while
    // hyper owns the stream.
    let (stream, dup) = match split_descriptor(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot duplicate a connection's descriptor");
            return;
        }
    };
    let control = ConnectionControl {
        reset: CancellationToken::new(),
    };
    let reset = control.reset.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(control.clone());
        req.extensions_mut().insert(region.clone());
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "simulator connection ended");
            }
        }
        _ = reset.cancelled() => reset_socket(&dup),
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = reset.cancelled() => reset_socket(&dup),
            }
        }
    }
    // Dropping `conn` and `dup` closes both descriptors: the socket closes now.
}

fn split_descriptor(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std()?;
    let dup = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, dup))
}

/// Linger zero: the close that follows sends RST.
fn reset_socket(dup: &std::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(dup).set_linger(Some(Duration::ZERO)) {
        tracing::warn!(error = %e, "cannot set linger for a reset");
    }
}
