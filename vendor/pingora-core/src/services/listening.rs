// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! The listening service
//!
//! A [Service] (listening service) responds to incoming requests on its endpoints.
//! Each [Service] can be configured with custom application logic (e.g. an `HTTPProxy`) and one or
//! more endpoints to listen to.

use crate::apps::ServerApp;
use crate::listeners::tls::TlsSettings;
#[cfg(feature = "connection_filter")]
use crate::listeners::AcceptAllFilter;
use crate::listeners::{
    ConnectionFilter, ListenerConfig, Listeners, ServerAddress, TcpSocketOptions, TransportStack,
};
use crate::protocols::Stream;
#[cfg(unix)]
use crate::server::ListenFds;
use crate::server::{RuntimeOpts, ShutdownWatch};
use crate::services::Service as ServiceTrait;

use async_trait::async_trait;
use log::{debug, error, info};
use pingora_error::Result;
use pingora_runtime::current_handle;
use pingora_timeout::timeout;
use std::fs::Permissions;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Override the runtime options used to run a listening service.
pub type RuntimeOptsOverride = Arc<dyn Fn(&RuntimeOpts) -> Option<RuntimeOpts> + Send + Sync>;

// AVX Gateway patch 9: the TLS/L4 handshake timeout Pingora hard-codes, now the default.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

// AVX Gateway patch 9: a cap on the connections open at once, which services can share.
/// A cap on the number of downstream connections open at once.
///
/// Set it on one or more [`Service`]s with [`Service::set_connection_limit()`]; services given
/// the same `Arc` share the cap. Every accepted connection takes a [`ConnectionPermit`] and holds
/// it until the connection is closed (through its handshake, every keepalive request and every
/// HTTP/2 stream). A connection accepted while the cap is reached is closed at once.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    rejected: AtomicU64,
}

impl ConnectionLimit {
    /// Create a limit of `max` connections open at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max,
            open: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The maximum number of connections open at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The number of connections open now, i.e. of [`ConnectionPermit`]s not yet dropped.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The number of connections refused so far because the limit was reached.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Take a permit for one more connection. Return `None`, and count a rejection, when `max`
    /// connections are already open.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let acquired = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok();
        if acquired {
            Some(ConnectionPermit(self.clone()))
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One open connection's share of a [`ConnectionLimit`], given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<ConnectionLimit>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The type of service that is associated with a list of listening endpoints and a particular application
pub struct Service<A> {
    name: String,
    listeners: Listeners,
    app_logic: Option<A>,
    /// The number of preferred threads. `None` to follow global setting.
    pub threads: Option<usize>,
    runtime_opts_override: Option<RuntimeOptsOverride>,
    #[cfg(feature = "connection_filter")]
    connection_filter: Arc<dyn ConnectionFilter>,
    // AVX Gateway patch 9: a configurable handshake timeout and a connection cap.
    handshake_timeout: Duration,
    connection_limit: Option<Arc<ConnectionLimit>>,
}

impl<A> Service<A> {
    /// Create a new [`Service`] with the given application (see [`crate::apps`]).
    pub fn new(name: String, app_logic: A) -> Self {
        Service {
            name,
            listeners: Listeners::new(),
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT, // AVX Gateway patch 9
            connection_limit: None,
        }
    }

    /// Create a new [`Service`] with the given application (see [`crate::apps`]) and the given
    /// [`Listeners`].
    pub fn with_listeners(name: String, listeners: Listeners, app_logic: A) -> Self {
        Service {
            name,
            listeners,
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT, // AVX Gateway patch 9
            connection_limit: None,
        }
    }

    /// Set a runtime options override for this service.
    ///
    /// Returning [`None`] from the override uses the global runtime options.
    pub fn set_runtime_opts_override(&mut self, override_fn: RuntimeOptsOverride) {
        self.runtime_opts_override = Some(override_fn);
    }

    // AVX Gateway patch 9: a configurable handshake timeout and a connection cap.
    /// Set how long the transport handshake (e.g. TLS) of an accepted connection may take.
    ///
    /// A connection that has not finished it in time is closed. Default: 60 seconds.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Cap the connections of this service that are open at once, see [`ConnectionLimit`].
    ///
    /// Services given the same `limit` share it. A connection accepted while the cap is reached
    /// is closed at once, before its handshake.
    pub fn set_connection_limit(&mut self, limit: Arc<ConnectionLimit>) {
        self.connection_limit = Some(limit);
    }

    /// Set a custom connection filter for this service.
    ///
    /// The connection filter will be applied to all incoming connections
    /// on all endpoints of this service. Connections that don't pass the
    /// filter will be dropped immediately at the TCP level, before TLS
    /// handshake or any HTTP processing.
    ///
    /// # Feature Flag
    ///
    /// This method requires the `connection_filter` feature to be enabled.
    /// When the feature is disabled, this method is a no-op.
    ///
    /// # Example
    ///
    /// ```rust,no_run
    /// # use std::sync::Arc;
    /// # use pingora_core::listeners::{ConnectionFilter, AcceptAllFilter};
    /// # struct MyService;
    /// # impl MyService {
    /// #   fn new() -> Self { MyService }
    /// # }
    /// let mut service = MyService::new();
    /// let filter = Arc::new(AcceptAllFilter);
    /// service.set_connection_filter(filter);
    /// ```
    #[cfg(feature = "connection_filter")]
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.connection_filter = filter.clone();
        self.listeners.set_connection_filter(filter);
    }

    #[cfg(not(feature = "connection_filter"))]
    pub fn set_connection_filter(&mut self, _filter: Arc<dyn ConnectionFilter>) {}

    /// Get the [`Listeners`], mostly to add more endpoints.
    pub fn endpoints(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    // the follow add* function has no effect if the server is already started

    /// Add a TCP listening endpoint with the given address (e.g., `127.0.0.1:8000`).
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Add a listening endpoint configured by a [`ListenerConfig`].
    pub fn add_listener(&mut self, endpoint: ListenerConfig) {
        self.listeners.add_listener(endpoint);
    }

    /// Add a TCP listening endpoint with the given [`TcpSocketOptions`].
    pub fn add_tcp_with_settings(&mut self, addr: &str, sock_opt: TcpSocketOptions) {
        self.listeners.add_tcp_with_settings(addr, sock_opt);
    }

    /// Add a Unix domain socket listening endpoint with the given path.
    ///
    /// Optionally take a permission of the socket file. The default is read and write access for
    /// everyone (0o666).
    #[cfg(unix)]
    pub fn add_uds(&mut self, addr: &str, perm: Option<Permissions>) {
        self.listeners.add_uds(addr, perm);
    }

    /// Add a TLS listening endpoint with the given certificate and key paths.
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        self.listeners.add_tls(addr, cert_path, key_path)
    }

    /// Add a TLS listening endpoint with the given [`TlsSettings`] and [`TcpSocketOptions`].
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        sock_opt: Option<TcpSocketOptions>,
        settings: TlsSettings,
    ) {
        self.listeners
            .add_tls_with_settings(addr, sock_opt, settings)
    }

    /// Add an endpoint according to the given [`ServerAddress`]
    pub fn add_address(&mut self, addr: ServerAddress) {
        self.listeners.add_address(addr);
    }

    /// Get a reference to the application inside this service
    pub fn app_logic(&self) -> Option<&A> {
        self.app_logic.as_ref()
    }

    /// Get a mutable reference to the application inside this service
    pub fn app_logic_mut(&mut self) -> Option<&mut A> {
        self.app_logic.as_mut()
    }
}

impl<A: ServerApp + Send + Sync + 'static> Service<A> {
    pub async fn handle_event(event: Stream, app_logic: Arc<A>, shutdown: ShutdownWatch) {
        debug!("new event!");
        let mut reuse_event = app_logic.process_new(event, &shutdown).await;
        while let Some(event) = reuse_event {
            // TODO: with no steal runtime, consider spawn() the next event on
            // another thread for more evenly load balancing
            debug!("new reusable event!");
            reuse_event = app_logic.process_new(event, &shutdown).await;
        }
    }

    async fn run_endpoint(
        app_logic: Arc<A>,
        mut stack: TransportStack,
        mut shutdown: ShutdownWatch,
        // AVX Gateway patch 9: see `Service::set_handshake_timeout/set_connection_limit()`
        handshake_timeout: Duration,
        connection_limit: Option<Arc<ConnectionLimit>>,
    ) {
        // the accept loop, until the system is shutting down
        loop {
            let new_io = tokio::select! { // TODO: consider biased for perf reason?
                new_io = stack.accept() => new_io,
                shutdown_signal = shutdown.changed() => {
                    match shutdown_signal {
                        Ok(()) => {
                            if !*shutdown.borrow() {
                                // happen in the initial read
                                continue;
                            }
                            info!("Shutting down {}", stack.as_str());
                            break;
                        }
                        Err(e) => {
                            error!("shutdown_signal error {e}");
                            break;
                        }
                    }
                }
            };
            match new_io {
                Ok(io) => {
                    // AVX Gateway patch 9: over the cap, close the connection at once; else hold
                    // a permit for the connection's whole life.
                    let permit = match &connection_limit {
                        Some(limit) => match limit.try_acquire() {
                            Some(permit) => Some(permit),
                            None => {
                                debug!(
                                    "Connection limit {} reached, closing connection from {:?}",
                                    limit.max(),
                                    io.peer_addr()
                                );
                                drop(io);
                                continue;
                            }
                        },
                        None => None,
                    };
                    let app = app_logic.clone();
                    let shutdown = shutdown.clone();
                    current_handle().spawn(async move {
                        let _permit = permit; // AVX Gateway patch 9: until the connection closes
                        let peer_addr = io.peer_addr();
                        match timeout(handshake_timeout, io.handshake()).await {
                            Ok(handshake) => {
                                match handshake {
                                    Ok(io) => Self::handle_event(io, app, shutdown).await,
                                    Err(e) => {
                                        // TODO: Maybe IOApp trait needs a fn to handle/filter out this error
                                        if let Some(addr) = peer_addr {
                                            error!("Downstream handshake error from {}: {e}", addr);
                                        } else {
                                            error!("Downstream handshake error: {e}");
                                        }
                                    }
                                }
                            }
                            Err(_) => {
                                // AVX Gateway patch 9: client-caused, so not logged above debug
                                debug!("Downstream handshake timeout from {peer_addr:?}");
                            }
                        }
                    });
                }
                Err(e) => {
                    error!("Accept() failed {e}");
                    if let Some(io_error) = e
                        .root_cause()
                        .downcast_ref::<std::io::Error>()
                        .and_then(|e| e.raw_os_error())
                    {
                        // 24: too many open files. In this case accept() will continue return this
                        // error without blocking, which could use up all the resources
                        if io_error == 24 {
                            // call sleep to calm the thread down and wait for others to release
                            // some resources
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }

        stack.cleanup();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for Service<A> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let runtime = current_handle();
        let endpoints = self
            .listeners
            .build(
                #[cfg(unix)]
                fds,
            )
            .await
            .expect("Failed to build listeners");

        let app_logic = self
            .app_logic
            .take()
            .expect("can only start_service() once");
        let app_logic = Arc::new(app_logic);

        let mut handlers = Vec::new();

        endpoints.into_iter().for_each(|endpoint| {
            for _ in 0..listeners_per_fd {
                let shutdown = shutdown.clone();
                let my_app_logic = app_logic.clone();
                let endpoint = endpoint.clone();
                // AVX Gateway patch 9
                let handshake_timeout = self.handshake_timeout;
                let connection_limit = self.connection_limit.clone();

                let jh = runtime.spawn(async move {
                    Self::run_endpoint(
                        my_app_logic,
                        endpoint,
                        shutdown,
                        handshake_timeout,
                        connection_limit,
                    )
                    .await;
                });

                handlers.push(jh);
            }
        });

        futures::future::join_all(handlers).await;
        self.listeners.cleanup();
        app_logic.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.runtime_opts_override
            .as_ref()
            .and_then(|override_fn| override_fn(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.listeners.addresses())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // AVX Gateway patch 9: permits up to `max`, a rejection counted beyond it, a drop releases.
    #[test]
    fn test_connection_limit_counts() {
        let limit = ConnectionLimit::new(2);
        assert_eq!(limit.max(), 2);
        let first = limit.try_acquire().unwrap();
        let second = limit.try_acquire().unwrap();
        assert_eq!(limit.open(), 2);
        assert!(limit.try_acquire().is_none());
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.open(), 2);
        assert_eq!(limit.rejected(), 2);

        drop(first);
        assert_eq!(limit.open(), 1);
        let third = limit.try_acquire().unwrap();
        assert_eq!(limit.open(), 2);
        drop(second);
        drop(third);
        assert_eq!(limit.open(), 0);
        assert_eq!(limit.rejected(), 2);

        let none = ConnectionLimit::new(0);
        assert!(none.try_acquire().is_none());
        assert_eq!(none.open(), 0);
        assert_eq!(none.rejected(), 1);
    }

    // AVX Gateway patch 9: an app that holds each connection until the client closes it.
    #[cfg(unix)]
    struct HoldApp;

    #[cfg(unix)]
    #[async_trait]
    impl ServerApp for HoldApp {
        async fn process_new(
            self: &Arc<Self>,
            mut session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 1];
            while session.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            None
        }
    }

    #[cfg(unix)]
    async fn wait_for_open(limit: &ConnectionLimit, open: usize) {
        for _ in 0..200 {
            if limit.open() == open {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} connections open, expected {open}", limit.open());
    }

    // AVX Gateway patch 9: over the cap the accepted connection is closed at once, and the
    // permit of a closed connection is given back.
    #[cfg(unix)]
    #[tokio::test]
    async fn test_run_endpoint_connection_limit() {
        use tokio::io::AsyncReadExt;
        use tokio::net::UnixStream;

        let path = std::env::temp_dir().join(format!(
            "pingora-connection-limit-{}.sock",
            std::process::id()
        ));
        let path = path.to_str().unwrap().to_string();
        let _ = std::fs::remove_file(&path);
        let stack = Listeners::uds(&path, None)
            .build(None)
            .await
            .unwrap()
            .pop()
            .unwrap();
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let limit = ConnectionLimit::new(1);
        let endpoint = tokio::spawn(Service::run_endpoint(
            Arc::new(HoldApp),
            stack,
            shutdown,
            DEFAULT_HANDSHAKE_TIMEOUT,
            Some(limit.clone()),
        ));

        let first = UnixStream::connect(&path).await.unwrap();
        wait_for_open(&limit, 1).await;

        let mut second = UnixStream::connect(&path).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
            .await
            .expect("a connection over the limit is closed at once");
        assert!(read.map_or(true, |n| n == 0));
        assert_eq!(limit.rejected(), 1);
        assert_eq!(limit.open(), 1);

        drop(first);
        wait_for_open(&limit, 0).await;
        let _third = UnixStream::connect(&path).await.unwrap();
        wait_for_open(&limit, 1).await;
        assert_eq!(limit.rejected(), 1);

        shutdown_tx.send(true).unwrap();
        endpoint.await.unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
