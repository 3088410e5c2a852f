//! The HTTP side of the metrics endpoint: hyper 1 (HTTP/1.1 with keep-alive, pipelining,
//! HEAD) on a current-thread tokio runtime in a thread of its own, so the measuring loop
//! never waits on a client and no client waits on another. Every connection has deadlines:
//! its request head must arrive within [`HEADER_TIMEOUT`] and it is shut down after
//! [`CONNECTION_DEADLINE`]. At most [`MAX_CONNECTIONS`] are open at once, which bounds the
//! file descriptors idle clients can hold; beyond that new ones wait in the listen backlog
//! until a slot frees (within the header timeout), rather than being reset.
//!
//! `GET` and `HEAD` of `/metrics` (any query string) answer the exposition, `/` a pointer to
//! it; other paths 404, other methods 405.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, thread::JoinHandle, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Bytes, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, oneshot};

use super::Shared;

pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);
/// After the deadline, time left to finish a response under way.
const GRACE: Duration = Duration::from_secs(5);
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Connections the kernel queues for us (std's bind uses 128).
const BACKLOG: i32 = 1024;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One listener and the thread serving it; dropping it closes both (and the connections).
pub(crate) struct Server {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` here, so a failure is the caller's to report, and serves from a thread.
    pub(crate) fn start(addr: SocketAddr, shared: Shared) -> std::io::Result<Server> {
        let listener = listen(addr)?;
        raise_fd_limit();
        let local = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, shared, stopped).await,
                        Err(e) => log::error!("metrics on {local}: {e}"),
                    }
                });
                // Dropping the runtime here cancels the connections' tasks.
            })?;
        Ok(Server {
            local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Shared,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first: while all are taken, new clients wait in the backlog.
        let slot = tokio::select! {
            _ = &mut stopped => return,
            s = Arc::clone(&slots).acquire_owned() => s,
        };
        let Ok(slot) = slot else {
            return; // closed: never, we hold the semaphore
        };
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    connection(stream, shared).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning on a full table.
                log::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A non-blocking listener on `addr` with a backlog of [`BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std does: a restarted daemon rebinds while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Raises the soft limit of open files so [`MAX_CONNECTIONS`] fit beside the daemon's own
/// (systemd's default soft limit is 1024); never above the hard limit.
fn raise_fd_limit() {
    let want = (MAX_CONNECTIONS as libc::rlim_t) * 2;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!(
                    "metrics: raising the open file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, shared: Shared) {
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(&req, &shared)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("metrics: connection: {e}");
            }
        }
        _ = tokio::time::sleep(CONNECTION_DEADLINE) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, conn).await;
        }
    }
}

fn respond<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(CONTENT_TYPE),
        );
        r
    };
    let body = match req.uri().path() {
        "/metrics" => None,
        "/" => Some("balancer: the metrics are at /metrics\n".to_string()),
        _ => return text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let body = match body {
        Some(b) => b,
        // A poisoned lock means the daemon panicked while recording: say so, not zeros.
        None => match shared.lock() {
            Ok(m) => m.render(),
            Err(_) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics state lost\n".into(),
                );
            }
        },
    };
    // hyper leaves the body out for HEAD and keeps its Content-Length.
    text(StatusCode::OK, body)
}
